"""Anomaly detectors: pure, vectorized scoring of metric windows (no I/O, no clock)."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.base import Detector, Scores, Status
from detectors.deviation import PercentDeviation
from detectors.ensemble import DeciderConfig, Ensemble, default_members
from detectors.esd import GeneralizedESD
from detectors.events import Anomaly, AnomalyTracker, TrackerUpdate
from detectors.iforest import IsolationForestDetector
from detectors.robust_z import RobustZScore
from detectors.seasonal import HoltWinters, SeasonalReference
from detectors.shifts import LevelShift, TrendChange
from detectors.spot import DSPOT, SPOT
from detectors.twosample import KSTest, MannWhitney

__all__ = [
    "DSPOT",
    "SPOT",
    "Anomaly",
    "AnomalyTracker",
    "DeciderConfig",
    "Detector",
    "Ensemble",
    "GeneralizedESD",
    "HoltWinters",
    "IsolationForestDetector",
    "KSTest",
    "LevelShift",
    "MannWhitney",
    "PercentDeviation",
    "RobustZScore",
    "Scores",
    "SeasonalReference",
    "Status",
    "TrackerUpdate",
    "TrendChange",
    "available",
    "default_detector",
    "opt_in",
    "score_series",
    "seasonal_members_fit",
]

DAY_S = 86_400


def available() -> dict[str, type[Detector]]:
    """Every detector strategy by name (the shared contract test runs them all)."""
    return {
        cls.name: cls
        for cls in (
            RobustZScore,
            KSTest,
            MannWhitney,
            PercentDeviation,
            GeneralizedESD,
            SPOT,
            DSPOT,
            LevelShift,
            TrendChange,
            SeasonalReference,
            HoltWinters,
            Ensemble,
        )
    }


def opt_in() -> dict[str, type[Detector]]:
    """Strategies kept out of :func:`available` (and so out of any default choice) because they
    have not earned a place there; see each one's docstring for the measurement."""
    return {cls.name: cls for cls in (IsolationForestDetector,)}


def seasonal_members_fit(step: int, season_s: int = DAY_S, max_points: int | None = None) -> bool:
    """Whether windows of ``max_points`` points at ``step`` seconds hold the seasonal members' history."""
    if season_s % step:
        return False
    period = season_s // step
    if period < 2:
        return False
    need = max(SeasonalReference(period=period).history, HoltWinters(period=period).history) + 1
    return max_points is None or need <= max_points


def default_detector(
    step: int = 60,
    season_s: int = DAY_S,
    max_points: int | None = None,
    seasonal_rule: str = "lead",
    seasonal_split: float | None = 4.0,
) -> Detector:
    """The detector the pipeline uses unless configured otherwise: the :class:`Ensemble`.

    Its seasonal members (period ``season_s`` at ``step`` seconds) join only when windows of
    ``max_points`` points (the window store's retention; None: unbounded) hold their history;
    otherwise the decider has the robust z-score alone for every metric. ``seasonal_rule``:
    ``lead`` (default), ``cauchy`` or ``consensus`` for seasonal metrics (see :mod:`detectors.ensemble`).
    ``seasonal_split``: the seasonal reference's ``split`` (None: always the mean of the earlier days).
    """
    if step <= 0 or season_s <= 0:
        raise ValueError(f"step and season_s must be positive seconds, got step={step}, season_s={season_s}")
    if seasonal_members_fit(step, season_s, max_points):
        rules = {**DeciderConfig().rules, "seasonal": seasonal_rule}
        period = season_s // step
        members = default_members(period, seasonal_split)
        return Ensemble(period=period, members=members, decider=DeciderConfig(rules=rules))
    return Ensemble(members=[RobustZScore()])


def _grid(values: np.ndarray, timestamps: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Put a timestamped series on its regular step grid: (grid values, index of each point, step)."""
    ts = np.asarray(timestamps, dtype=np.float64).ravel()
    if ts.shape != values.shape:
        raise ValueError(f"timestamps must match values: got {ts.shape[0]} timestamps for {values.shape[0]} values")
    if not np.all(np.isfinite(ts)):
        raise ValueError("timestamps must be finite epoch seconds")
    if len(ts) > 1 and np.any(np.diff(ts) <= 0):
        raise ValueError("timestamps must be strictly increasing (one value per time, oldest first)")
    if len(ts) < 2:
        return values.copy(), np.arange(len(values)), 60
    step = round(float(np.median(np.diff(ts))))
    if step <= 0:
        raise ValueError("timestamps must be at least one second apart")
    slot = np.floor(ts / step).astype(np.int64)
    slot -= slot[0]
    if np.any(np.diff(slot) <= 0):
        raise ValueError(f"two timestamps fall in one step of {step} s; resample the series to a regular step first")
    if slot[-1] > 50 * len(ts) + 10_000:
        raise ValueError("timestamps are too sparse for their median step; resample the series first")
    grid = np.full(int(slot[-1]) + 1, np.nan)
    grid[slot] = values
    return grid, slot, step


def score_series(
    values: object, timestamps: object = None, detector: str | Detector = "default", season_s: int = DAY_S
) -> np.ndarray:
    """Per-point scores in [0, 1] of a whole series, strictly causal (streaming semantics).

    ``timestamps`` (epoch seconds, increasing) place the points on their step grid, so gaps are
    gaps and the seasonal members know where yesterday is; without them the points are taken
    as consecutive one-minute steps. ``detector``: ``"default"`` (the ensemble for that step),
    a strategy name of :func:`available`, or a :class:`Detector`.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if timestamps is None:
        grid, idx, step = x, np.arange(len(x)), 60
    else:
        grid, idx, step = _grid(x, timestamps)
    if isinstance(detector, Detector):
        det = detector
    elif detector == "default":
        det = default_detector(step, season_s)
    elif isinstance(detector, str) and detector in available() and detector != "ensemble":
        cls = available()[detector]
        det = cls(period=season_s // step) if cls in (SeasonalReference, HoltWinters) else cls()
    elif detector == "ensemble":
        det = default_detector(step, season_s)
    else:
        raise ValueError(f"unknown detector {detector!r}; use 'default', one of {sorted(available())} or a Detector")
    return det.score_series(grid)[idx]
