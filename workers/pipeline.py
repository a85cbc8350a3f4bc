"""The tick pipeline shared by embedded and distributed modes.

points → window store → (every step) detector scores → anomaly events → incident tracker →
database. :class:`Pipeline` wires one of each stage; the distributed mode runs the same
stages split across Celery tasks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from detectors import AnomalyTracker, Detector, default_detector
from detectors.collective import CollectiveEvidence
from detectors.events import Anomaly
from grouping.incidents import IncidentChange, IncidentTracker
from grouping.names import NAME_KEY, NameIndex
from workers.db import Database
from workers.settings import Settings
from workers.store import MemoryWindowStore, WindowStore


class MetricRegistry:
    """Canonical metric names and their dense rows in the window store."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self.names: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of ``names``, registering unknown ones; returns (rows, newly registered names)."""
        out = np.empty(len(names), dtype=np.int64)
        new: list[str] = []
        get = self._rows.get
        for i, n in enumerate(names):
            r = get(n)
            if r is None:
                r = self._rows[n] = len(self.names)
                self.names.append(n)
                new.append(n)
            out[i] = r
        return out, new

    def row(self, name: str) -> int:
        return self._rows[name]


@dataclass
class TickResult:
    at: float
    scored: int
    opened: int = 0
    closed: int = 0
    changes: list[IncidentChange] = field(default_factory=list)


def make_detector(settings: Settings) -> Detector:
    if settings.detector == "default":
        return default_detector()
    import detectors

    factory = getattr(detectors, settings.detector, None)
    if factory is None or not isinstance(factory, type) or not issubclass(factory, Detector):
        raise ValueError(f"STORMEYE_DETECTOR={settings.detector!r} is not a detector class of detectors/")
    return factory()


class Pipeline:
    """One process running every stage: the embedded mode, and the reference for the distributed one."""

    def __init__(
        self,
        settings: Settings,
        database: Database | None = None,
        store: WindowStore | None = None,
        detector: Detector | None = None,
        clock: Callable[[], float] = time.time,
        keep_archive: bool = False,
    ) -> None:
        self.settings = settings
        self.database = database
        self.detector = detector or make_detector(settings)
        self.store: WindowStore = store or MemoryWindowStore(settings.step_s, settings.retention_points)
        self.registry = MetricRegistry()
        self.index = NameIndex(graphite=settings.graphite)
        self.collective = (
            CollectiveEvidence(threshold=settings.threshold, halflife=settings.collective_halflife_steps)
            if settings.collective
            else None
        )
        self._membership: sp.csr_matrix | None = None
        self.anomalies = AnomalyTracker(
            settings.threshold,
            settings.release,
            settings.quiet_steps,
            detector=getattr(self.detector, "name", type(self.detector).__name__),
        )
        self.incidents = IncidentTracker(
            self.index, settings.grouping_config(), settings.priority_model, step=settings.step_s
        )
        self.clock = clock
        self.last_scored: int | None = None  # slot number of the newest step scored
        self.rejected_too_old = 0
        # replays (demo, ingest) keep a snapshot of every incident they touched, even after
        # the tracker forgets it; the live service reads incidents from the database instead
        self.archive: dict[str, dict[str, Any]] | None = {} if keep_archive else None

    @property
    def step(self) -> int:
        return self.settings.step_s

    # -- ingest --------------------------------------------------------------------------

    def membership(self) -> sp.csr_matrix:
        """(metrics x property pairs): which group each metric belongs to, for collective evidence.

        Groups are the metrics' label pairs except the metric name (a measure is not an entity).
        Rows are the registry's rows; the matrix is rebuilt when metrics were registered.
        """
        n = len(self.registry)
        if self._membership is None or self._membership.shape[0] != n:
            cols = [self.index.token_columns(m) for m in self.registry.names]
            indptr = np.r_[0, np.cumsum([len(c) for c in cols])]
            indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
            vocab = len(self.index.idf())
            keep = np.array([not self.index.column_token(int(c)).startswith(NAME_KEY + "=") for c in range(vocab)])
            mat = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, vocab))
            self._membership = sp.csr_matrix(mat[:, np.flatnonzero(keep)])
        return self._membership

    def register(self, names: Sequence[str]) -> np.ndarray:
        rows, new = self.registry.rows(names)
        if new:
            self.index.add(new)
            if self.database is not None:
                self.database.ensure_metrics(new)
        return rows

    def ingest(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> int:
        """Store validated points (canonical names, epoch seconds, finite floats); returns how many were kept.

        Points older than the store's retention, or for a step already scored, are counted in
        ``rejected_too_old`` and reported by the caller.
        """
        rows = self.register(names)
        ts = np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
        res = self.store.append(rows, ts, vals)
        self.rejected_too_old += res.too_old
        return res.accepted

    def load_history(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> None:
        """Bulk-load a matrix of past points (names x timestamps) without scoring it."""
        rows = self.register(names)
        load = getattr(self.store, "load", None)
        if load is not None:
            load(rows, timestamps, values)
        else:
            r = np.repeat(rows, len(timestamps))
            t = np.tile(np.asarray(timestamps, dtype=np.float64), len(rows))
            self.store.append(r, t, np.asarray(values).reshape(-1))
        self.last_scored = math.floor(float(np.max(timestamps)) / self.step)

    # -- the tick ------------------------------------------------------------------------

    def windows_at(self, end: float, points: int) -> Callable[[Sequence[str]], np.ndarray]:
        def read(metrics: Sequence[str]) -> np.ndarray:
            rows = np.fromiter((self.registry.row(m) for m in metrics), np.int64, len(metrics))
            return self.store.windows(rows, end, points)

        return read

    def tick(self, until: float | None = None) -> list[TickResult]:
        """Score every step not yet scored up to ``until`` (default: now minus the grace)."""
        if until is None:
            until = self.clock() - self.settings.grace_s
        top = math.floor(until / self.step)
        if self.last_scored is None:
            newest = self.store.newest()
            if newest is None:
                return []
            self.last_scored = min(top, int(newest // self.step)) - 1
        results = []
        for slot in range(self.last_scored + 1, top + 1):
            results.append(self.score_step(slot * self.step))
            self.last_scored = slot
        return results

    def score_step(self, at: float) -> TickResult:
        n = len(self.registry)
        if n == 0:
            return TickResult(at, 0)
        rows = np.arange(n)
        windows = self.store.windows(rows, at, self.detector.history + 1)
        scores = self.detector.score(windows)
        if self.collective is not None:
            scores, _ = self.collective.update(scores, self.membership())
        upd = self.anomalies.update(at, rows, scores, self.registry.names)
        return self.group(at, upd.changed, len(upd.opened), len(upd.closed), n)

    def group(self, at: float, changed: list[Anomaly], opened: int, closed: int, scored: int) -> TickResult:
        changes: list[IncidentChange] = []
        if changed or self.incidents.open_incidents():
            changes = self.incidents.update(at, changed, self.windows_at(at, self.settings.shape_points))
        self._persist(changed, changes)
        return TickResult(at, scored, opened, closed, changes)

    def finish(self, at: float | None = None) -> list[IncidentChange]:
        """End of a replay: close open anomalies and resolve open incidents."""
        at = self.clock() if at is None else at
        closed = self.anomalies.close_all()
        changes = self.incidents.update(at, closed, self.windows_at(at, self.settings.shape_points))
        changes += self.incidents.resolve_all(at)
        self._persist(closed, changes)
        return changes

    def _persist(self, anomalies: list[Anomaly], changes: list[IncidentChange]) -> None:
        if not (anomalies or changes) or (self.database is None and self.archive is None):
            return
        ids = dict.fromkeys(c.incident for c in changes)
        for a in anomalies:
            inc = self.incidents.incident_of(a.metric, a.start)
            if inc is not None:
                ids[inc.id] = None
        incs = [self.incidents.incidents[i] for i in ids if i in self.incidents.incidents]
        if self.archive is not None:
            for inc in incs:
                self.archive[inc.id] = inc.to_dict()
        if self.database is not None:
            self.database.save_tick(anomalies, incs, changes)

    # -- views ---------------------------------------------------------------------------

    def incident_list(self, include_merged: bool = False) -> list[dict[str, Any]]:
        """Incidents of this run as dicts: the archive when kept, else those held in memory."""
        held = (
            self.archive.values()
            if self.archive is not None
            else [i.to_dict() for i in self.incidents.incidents.values()]
        )
        out = [d for d in held if include_merged or d["status"] != "merged"]
        return sorted(out, key=lambda d: (d["priority"], -d["priority_score"], d["start"], d["id"]))
