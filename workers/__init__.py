"""The runtime: settings, window stores, the database, the tick pipeline, ingest and the simulator.

All I/O lives here; the pure stages are in detectors/ and grouping/.
"""
