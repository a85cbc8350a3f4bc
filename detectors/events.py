"""From per-step scores to anomaly events: open, extend, close — vectorized over metrics.

An anomaly opens when a metric's score reaches ``threshold`` and stays open while its score
is at least ``release`` (hysteresis, so a score hovering around the threshold does not flap).
It closes after ``quiet_steps`` consecutive steps below ``release``; its end is the last step
at or above ``release``. The peak score, the time of the peak and the direction at the peak
are kept as evidence.

**Symptoms**: rows the caller names (``symptom_rows``: metrics of a machine that has an
open incident, not yet in one) open at ``release`` instead of ``threshold``. Such an anomaly is a
*symptom* (``symptom=True``) while its score stays below ``threshold``: evidence that belongs to
an incident already open, never one on its own (grouping attaches it, see
:mod:`grouping.incidents`). When a symptom's score reaches ``threshold`` it closes there and a
new anomaly of its own opens at that step, so a real failure starting on a metric that was a
symptom is dated from its own onset.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from stormeye.detectors.base import Scores


@dataclass
class Anomaly:
    """A scored event on one metric."""

    metric: str
    start: float
    end: float
    peak_score: float
    peak_at: float
    direction: int
    detector: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    open: bool = True
    #: opened below the threshold on a metric of a machine with an open incident (see the module doc)
    symptom: bool = False
    #: the highest uncapped level (``-log10(p) / 10``, the detector's ``raw["level"]``; its score
    #: where it gives none) of any point of the anomaly: 1.0 and 20.0 both score 1.0, this tells them apart
    peak_level: float = 0.0

    @property
    def key(self) -> tuple[str, float]:
        """Stable identity: a metric has at most one anomaly starting at a given time."""
        return (self.metric, self.start)


@dataclass
class TrackerUpdate:
    """What one step changed: anomalies that opened, grew (new peak or later end) and closed."""

    opened: list[Anomaly] = field(default_factory=list)
    updated: list[Anomaly] = field(default_factory=list)
    closed: list[Anomaly] = field(default_factory=list)

    @property
    def changed(self) -> list[Anomaly]:
        return self.opened + self.updated + self.closed


class AnomalyTracker:
    """Keeps the open anomaly of every metric row across steps."""

    def __init__(self, threshold: float = 0.5, release: float = 0.3, quiet_steps: int = 5, detector: str = "") -> None:
        if not 0.0 < release <= threshold <= 1.0:
            raise ValueError(f"need 0 < release <= threshold <= 1 (got release={release}, threshold={threshold})")
        if quiet_steps < 1:
            raise ValueError(f"quiet_steps must be at least 1, got {quiet_steps}")
        self.threshold = threshold
        self.release = release
        self.quiet_steps = quiet_steps
        self.detector = detector
        self._open: dict[int, Anomaly] = {}
        self._quiet = np.zeros(0, dtype=np.int32)
        self._is_open = np.zeros(0, dtype=bool)
        self._is_symptom = np.zeros(0, dtype=bool)

    def _grow(self, n: int) -> None:
        if n > len(self._quiet):
            extra = n - len(self._quiet)
            self._quiet = np.concatenate([self._quiet, np.zeros(extra, dtype=np.int32)])
            self._is_open = np.concatenate([self._is_open, np.zeros(extra, dtype=bool)])
            self._is_symptom = np.concatenate([self._is_symptom, np.zeros(extra, dtype=bool)])

    @property
    def open_anomalies(self) -> dict[int, Anomaly]:
        """Open anomalies by metric row."""
        return self._open

    def update(
        self,
        t: float,
        rows: np.ndarray,
        scores: Scores,
        names: Any,
        evidence_keys: tuple[str, ...] = (),
        symptom_rows: np.ndarray | None = None,
    ) -> TrackerUpdate:
        """Apply the scores of step ``t`` for metric ``rows``; ``names[row]`` gives a row's metric.
        ``symptom_rows`` (bool per entry of ``rows``): those that may open a symptom at ``release``."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows):
            self._grow(int(rows.max()) + 1)
        s = scores.score
        level = scores.raw.get("level", s)
        hot = s >= self.threshold
        warm = s >= self.release
        is_open = self._is_open[rows]
        out = TrackerUpdate()
        # a symptom whose score reaches the threshold ends; an anomaly of its own opens below
        for i in np.flatnonzero(hot & is_open & self._is_symptom[rows]):
            row = int(rows[i])
            a = self._open.pop(row)
            self._is_open[row] = self._is_symptom[row] = False
            a.open = False
            out.closed.append(a)
            is_open[i] = False
        opening = hot if symptom_rows is None else hot | (np.asarray(symptom_rows, dtype=bool) & warm)
        # rows that need Python attention: opening, open ones above release (peak/end), closing
        for i in np.flatnonzero(opening & ~is_open):
            row = int(rows[i])
            symptom = not bool(hot[i])
            a = Anomaly(
                metric=names[row],
                start=t,
                end=t,
                peak_score=float(s[i]),
                peak_at=t,
                direction=int(scores.direction[i]),
                detector=self.detector,
                evidence=self._evidence(scores, int(i), evidence_keys),
                symptom=symptom,
                peak_level=_level(level[i], s[i]),
            )
            self._open[row] = a
            self._quiet[row] = 0
            self._is_open[row] = True
            self._is_symptom[row] = symptom
            out.opened.append(a)
        for i in np.flatnonzero(is_open & warm):  # (symptoms stay below the threshold here)
            row = int(rows[i])
            a = self._open[row]
            self._quiet[row] = 0
            a.end = t
            a.peak_level = max(a.peak_level, _level(level[i], s[i]))
            if s[i] > a.peak_score:
                a.peak_score, a.peak_at = float(s[i]), t
                a.direction = int(scores.direction[i])
                a.evidence = self._evidence(scores, int(i), evidence_keys)
            out.updated.append(a)
        quiet_rows = np.unique(rows[is_open & ~warm])  # a row given twice closes once
        if len(quiet_rows):
            self._quiet[quiet_rows] += 1
            for row in quiet_rows[self._quiet[quiet_rows] >= self.quiet_steps]:
                a = self._open.pop(int(row))
                self._is_open[row] = self._is_symptom[row] = False
                a.open = False
                out.closed.append(a)
        return out

    def close_all(self) -> list[Anomaly]:
        """Close every open anomaly (end of a replay)."""
        closed = list(self._open.values())
        for a in closed:
            a.open = False
        self._open.clear()
        self._is_open[:] = False
        self._is_symptom[:] = False
        return closed

    def to_state(self) -> dict[str, Any]:
        """What a restarted process needs to go on: the open anomalies and their quiet counts (JSON-ready)."""
        return {
            "open": [
                {"row": row, "quiet": int(self._quiet[row]), "anomaly": asdict(a)}
                for row, a in sorted(self._open.items())
            ]
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the tracker's state with one from :meth:`to_state`."""
        self._open = {}
        self._quiet = np.zeros(0, dtype=np.int32)
        self._is_open = np.zeros(0, dtype=bool)
        self._is_symptom = np.zeros(0, dtype=bool)
        items = state.get("open", [])
        if items:
            self._grow(max(int(it["row"]) for it in items) + 1)
        for it in items:
            row = int(it["row"])
            self._open[row] = Anomaly(**it["anomaly"])
            self._quiet[row] = int(it["quiet"])
            self._is_open[row] = True
            self._is_symptom[row] = self._open[row].symptom

    @staticmethod
    def _evidence(scores: Scores, i: int, keys: tuple[str, ...]) -> dict[str, Any]:
        ev: dict[str, Any] = {}
        for k in keys or tuple(scores.raw):
            if k in scores.raw:
                v = scores.raw[k][i]
                ev[k] = round(float(v), 6) if np.isfinite(v) else None
        return ev


def _level(level: float, score: float) -> float:
    """A point's uncapped level: the detector's, or its score where that is missing or not finite."""
    v = float(level)
    return v if math.isfinite(v) else float(score)
