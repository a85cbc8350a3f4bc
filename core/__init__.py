"""The bottom of stormeye: what every other part shares and nothing else.

``api → workers → {grouping, detectors} → core``. Pure Python and numpy at most: no socket, file or
clock. ``core.errors`` holds the root of stormeye's own errors.
"""
