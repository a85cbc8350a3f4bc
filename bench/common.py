"""Pieces the benches share: recording the anomaly stream of a run, and regrouping it."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stormeye.detectors.events import Anomaly
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import IncidentTracker
from stormeye.grouping.names import NameIndex
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings


class Recorder(Pipeline):
    """The embedded pipeline, keeping the anomaly stream each tick handed to grouping and the
    incident each anomaly first joined (to measure id churn)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, keep_archive=True)
        self.stream: list[tuple[float, list[Anomaly]]] = []
        self.first_incident: dict[tuple[str, float], str] = {}

    def group(self, at: float, changed: list[Anomaly], opened: int, closed: int, scored: int) -> Any:
        self.stream.append((at, [copy.copy(a) for a in changed]))  # as they were at this tick
        out = super().group(at, changed, opened, closed, scored)
        for a in changed:
            inc = self.incidents.incident_of(a.metric, a.start)
            if inc is not None:
                self.first_incident.setdefault(a.key, inc.id)
        return out


class MatrixWindows:
    """Windows straight from a (metrics x steps) matrix, as the window store would give them."""

    def __init__(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> None:
        self.row = {n: i for i, n in enumerate(names)}
        self.t0 = float(timestamps[0])
        self.step = float(timestamps[1] - timestamps[0])
        self.values = values

    def at(self, end: float, points: int) -> Callable[[Sequence[str]], np.ndarray]:
        j = round((end - self.t0) / self.step)

        def read(metrics: Sequence[str]) -> np.ndarray:
            rows = [self.row[m] for m in metrics]
            out = np.full((len(rows), points), np.nan)
            src = self.values[rows, max(j - points + 1, 0) : j + 1]
            if src.shape[1]:
                out[:, points - src.shape[1] :] = src
            return out

        return read


def regroup(
    names: Sequence[str],
    windows: MatrixWindows,
    stream: list[tuple[float, list[Anomaly]]],
    config: GroupingConfig,
    settings: Settings,
    step: float,
) -> list[dict[str, Any]]:
    """Replay a recorded anomaly stream through a fresh tracker with another grouping config."""
    index = NameIndex()
    index.add(names)
    tracker = IncidentTracker(index, config, settings.priority_model, step=step)
    archive: dict[str, dict[str, Any]] = {}
    for at, snaps in stream:
        changes = tracker.update(at, snaps, windows.at(at, config.shape_points))
        for iid in {c.incident for c in changes}:
            if iid in tracker.incidents:
                archive[iid] = tracker.incidents[iid].to_dict()
    for c in tracker.resolve_all(stream[-1][0] if stream else 0.0):
        archive[c.incident] = tracker.incidents[c.incident].to_dict()
    for inc in tracker.incidents.values():
        archive[inc.id] = inc.to_dict()
    return [d for d in archive.values() if d["status"] != "merged"]
