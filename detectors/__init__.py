"""Anomaly detectors: pure, vectorized scoring of metric windows (no I/O, no clock)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stormeye.detectors.base import Detector, Scores, Status
from stormeye.detectors.calibration import CalibrationConfig, calibrate_series, ledger_config
from stormeye.detectors.deviation import PercentDeviation
from stormeye.detectors.ensemble import DeciderConfig, Ensemble, default_members
from stormeye.detectors.esd import GeneralizedESD
from stormeye.detectors.events import Anomaly, AnomalyTracker, TrackerUpdate
from stormeye.detectors.iforest import IsolationForestDetector
from stormeye.detectors.robust_z import RobustZScore
from stormeye.detectors.seasonal import CoarseSeasonalReference, HoltWinters, SeasonalReference, bucket_means
from stormeye.detectors.shifts import LevelShift, TrendChange
from stormeye.detectors.spot import DSPOT, SPOT
from stormeye.detectors.twosample import KSTest, MannWhitney

__all__ = [
    "DSPOT",
    "SPOT",
    "Anomaly",
    "AnomalyTracker",
    "CoarseSeasonalReference",
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
    "SeriesScores",
    "Status",
    "TrackerUpdate",
    "TrendChange",
    "available",
    "default_detector",
    "default_window_points",
    "for_ledger",
    "opt_in",
    "score_series",
    "score_series_info",
    "season_bucket",
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


#: the most points of retention the service's default grows to, to hold the seasonal members' windows
MAX_AUTO_RETENTION = 1024


def default_window_points(step: int, season_s: int = DAY_S, default: int = 480) -> int:
    """The window store's default retention at ``step``: ``default``, or what the seasonal members'
    windows need when that costs at most :data:`MAX_AUTO_RETENTION` points.

    At a 5-minute step a day is 288 points: two seasons plus the calibration part are 723 points
    (2.9 kB a metric in the float32 store instead of 1.9 kB). At one minute a day is 1,440
    points: two days would be 11.6 kB a metric (12 GB for a million metrics), so retention stays
    at ``default`` and the ensemble reads earlier days from the coarse seasonal history instead.
    """
    season_s = season_s or DAY_S
    if not seasonal_members_fit(step, season_s):
        return default
    period = season_s // step
    need = max(SeasonalReference(period=period).history, HoltWinters(period=period).history) + 1
    return max(default, need) if need <= MAX_AUTO_RETENTION else default


def default_detector(
    step: int = 60,
    season_s: int = DAY_S,
    max_points: int | None = None,
    seasonal_rule: str = "lead",
    seasonal_split: float | None = 4.0,
    memory: int | None = None,
    season_step: int | None = 300,
) -> Detector:
    """The detector the pipeline uses unless configured otherwise: the :class:`Ensemble`.

    Its seasonal members (period ``season_s`` at ``step`` seconds) join when windows of
    ``max_points`` points (the window store's retention; None: unbounded) hold their history.
    Otherwise, at steps finer than ``season_step`` seconds, the seasonal reference reads the earlier
    days from a coarse history of bucket means (:class:`CoarseSeasonalReference`, buckets of
    :func:`season_bucket` seconds; the caller keeps that history, see ``Ensemble.season``);
    failing that the decider has the robust z-score alone for every metric. ``seasonal_rule``:
    ``lead`` (default), ``cauchy`` or ``consensus`` for seasonal metrics (see :mod:`detectors.ensemble`).
    ``seasonal_split``: the seasonal reference's ``split`` (None: always the mean of the earlier days).
    ``memory``: points the robust z-score's recurrence rule looks back over (None: its own history;
    ``STORMEYE_RECURRENCE_MEMORY_S`` in the service).
    """
    if step <= 0 or season_s <= 0:
        raise ValueError(f"step and season_s must be positive seconds, got step={step}, season_s={season_s}")
    rules = {**DeciderConfig().rules, "seasonal": seasonal_rule}
    if seasonal_members_fit(step, season_s, max_points):
        period = season_s // step
        members = default_members(period, seasonal_split, memory)
        return Ensemble(period=period, members=members, decider=DeciderConfig(rules=rules))
    bucket = season_bucket(step, season_s, season_step)
    if bucket is not None:
        coarse = CoarseSeasonalReference(period=season_s // bucket, factor=bucket // step, split=seasonal_split)
        members = [RobustZScore(memory=memory), coarse]
        return Ensemble(period=season_s // step, members=members, decider=DeciderConfig(rules=rules))
    return Ensemble(members=[RobustZScore(memory=memory)])


def for_ledger(detector: Detector) -> Detector:
    """``detector`` as the tail ledger wants it: its residual members without the window's
    recurrence rule (set to None, in place; returned for chaining).

    The recurrence rule silences a deviation seen twice in the window (hours) by replacing its
    probability with the episodes' rate, taken at 70% of the newest deviation: a repeat-silencer,
    not a calibration (on Gaussian noise it scores a one-in-100 point as one in 13). The ledger
    does the silencing of routine moves over days, from the levels actually reached, so with the
    ledger on the rule would only count a repeat twice and bend the scale (docs/detectors.md).
    """
    for member in getattr(detector, "members", [detector]):
        cfg = getattr(member, "calibration", None)
        if isinstance(cfg, CalibrationConfig):
            member.calibration = replace(cfg, recurrence=None)
    return detector


def season_bucket(step: int, season_s: int = DAY_S, season_step: int | None = 300) -> int | None:
    """Seconds of one bucket of the coarse seasonal history at ``step`` (None: none).

    The smallest multiple of ``step`` of at least ``season_step`` seconds that divides the
    season into at least 48 buckets; None when ``season_step`` is None or 0, when the step is
    already that coarse, or when no such bucket exists.
    """
    if not season_step or step >= season_step:
        return None
    k = -(-season_step // step)
    while k * step * 48 <= season_s:
        if season_s % (k * step) == 0:
            return k * step
        k += 1
    return None


@dataclass(frozen=True)
class SeriesScores:
    """What :func:`score_series_info` returns: one score per input point, and what was merged.

    ``merged``: points that shared a step (a repeated timestamp, or two timestamps within one
    step) with a point given after them; the last one given stands for the step, and each of
    them gets the score of its step. ``reordered``: points whose timestamp is earlier than the
    point given just before them (they were sorted into place). ``step``: the step in seconds.
    """

    scores: np.ndarray
    merged: int = 0
    reordered: int = 0
    step: int = 60
    #: the detector's level of each input point (its score not clipped at 1; before the ledger)
    levels: np.ndarray | None = None
    #: which input points the detector analysed (warming-up and missing points were not)
    counted: np.ndarray | None = None


def _as_floats(what: str, raw: object) -> np.ndarray:
    try:
        return np.asarray(raw, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numbers ({exc})") from None


def _grid(values: np.ndarray, timestamps: object) -> tuple[np.ndarray, np.ndarray, int, int, int, int]:
    """Put a timestamped series on its regular step grid.

    Returns (grid values, grid index of each input point, step, merged, reordered, the grid's first
    slot: ``floor(timestamp / step)`` of its first point). Points are
    sorted by time; points sharing a step are merged, the last one given (in input order) with
    a value standing for the step (NaN marks a missing point: it replaces nothing).
    """
    ts = _as_floats("timestamps", timestamps)
    if ts.shape != values.shape:
        raise ValueError(f"timestamps must match values: got {ts.shape[0]} timestamps for {values.shape[0]} values")
    if not np.all(np.isfinite(ts)):
        bad = int(np.flatnonzero(~np.isfinite(ts))[0])
        raise ValueError(f"timestamps must be finite epoch seconds; timestamps[{bad}] is {ts[bad]}")
    reordered = int(np.sum(np.diff(ts) < 0)) if len(ts) > 1 else 0
    distinct = np.unique(ts)
    if len(distinct) < 2:
        step = 60
    else:
        step = round(float(np.median(np.diff(distinct))))
        if step <= 0:
            raise ValueError("distinct timestamps must be at least one second apart")
    slot = np.floor(ts / step).astype(np.int64)
    first_slot = int(slot.min()) if len(slot) else 0
    slot -= first_slot
    order = np.argsort(slot, kind="stable")  # equal steps keep their input order
    s_sorted = slot[order]
    steps = int(np.count_nonzero(np.diff(s_sorted))) + 1 if len(ts) else 0
    merged = len(ts) - steps
    if len(ts) and s_sorted[-1] > 50 * steps + 10_000:
        raise ValueError("timestamps are too sparse for their median step; resample the series first")
    grid = np.full(int(s_sorted[-1]) + 1 if len(ts) else 0, np.nan)
    # the last value given in each step stands for it; NaN (a missing point) replaces nothing
    v_sorted = values[order]
    finite = ~np.isnan(v_sorted)
    last = np.ones(len(ts), dtype=bool)
    if len(ts) > 1:
        kept_slots = s_sorted[finite]
        last_f = np.ones(len(kept_slots), dtype=bool)
        last_f[:-1] = kept_slots[1:] != kept_slots[:-1]
        last = np.zeros(len(ts), dtype=bool)
        last[np.flatnonzero(finite)[last_f]] = True
    grid[s_sorted[last]] = v_sorted[last]
    return grid, slot, step, merged, reordered, first_slot


def score_series(
    values: object,
    timestamps: object = None,
    detector: str | Detector = "default",
    season_s: int = DAY_S,
    calibration_halflife_s: float = 0.0,
) -> np.ndarray:
    """Per-point scores in [0, 1] of a whole series, strictly causal (streaming semantics).

    ``timestamps`` (epoch seconds) place the points on their step grid, so gaps are gaps and
    the seasonal members know where yesterday is; without them the points are taken as
    consecutive one-minute steps. Points given out of time order are sorted; points sharing a
    step (a repeated timestamp) are merged, the last one given winning, and each gets the score
    of its step (:func:`score_series_info` also says how many were merged). ``detector``:
    ``"default"`` (the ensemble for that step), a strategy name of :func:`available`, or a
    :class:`Detector`. ``calibration_halflife_s`` > 0 calibrates the scores against the series' own
    record with the tail ledger, as the service does with ``STORMEYE_CALIBRATION_HALFLIFE_S``
    (:func:`score_series_info`; 0, the default as in the service: the detector's scores).
    """
    return score_series_info(values, timestamps, detector, season_s, calibration_halflife_s).scores


def score_series_info(
    values: object,
    timestamps: object = None,
    detector: str | Detector = "default",
    season_s: int = DAY_S,
    calibration_halflife_s: float = 0.0,
) -> SeriesScores:
    """:func:`score_series`, with how many points were merged and reordered (:class:`SeriesScores`).

    ``calibration_halflife_s``: the memory of the tail ledger that calibrates the detector's
    levels against the series' own record (:class:`~stormeye.detectors.calibration.TailLedger`,
    as the service does with every metric's when ``STORMEYE_CALIBRATION_HALFLIFE_S`` is set; 0:
    the detector's scores as they are). A detector given by name then runs without the window's
    recurrence rule, as the service runs it with the ledger (:func:`for_ledger`)."""
    x = _as_floats("values", values)
    if timestamps is None:
        grid, idx, step, merged, reordered, first_slot = x, np.arange(len(x)), 60, 0, 0, 0
    else:
        grid, idx, step, merged, reordered, first_slot = _grid(x, timestamps)
    named = not isinstance(detector, Detector)
    if isinstance(detector, Detector):
        det = detector
    elif detector in ("default", "ensemble"):
        det = default_detector(step, season_s, default_window_points(step, season_s))
    elif isinstance(detector, str) and detector in available():
        cls = available()[detector]
        det = cls(period=season_s // step) if cls in (SeasonalReference, HoltWinters) else cls()
    else:
        raise ValueError(f"unknown detector {detector!r}; use 'default', one of {sorted(available())} or a Detector")
    if named and calibration_halflife_s > 0:
        det = for_ledger(det)
    if not len(grid):
        return SeriesScores(scores=np.zeros(0), merged=merged, reordered=reordered, step=step)
    if isinstance(det, Ensemble) and det.season is not None:
        out = _score_with_season(det, grid, first_slot)
    else:
        out = det.series(grid)
    scores = out.score
    counted = (out.status == Status.OK) | (out.status == Status.CONSTANT)
    if calibration_halflife_s > 0:
        cal = calibrate_series(out.raw["level"], counted, ledger_config(step, calibration_halflife_s))
        scores = np.where(counted, np.minimum(cal, 1.0), scores)
    return SeriesScores(
        scores=scores[idx],
        merged=merged,
        reordered=reordered,
        step=step,
        levels=out.raw["level"][idx],
        counted=counted[idx],
    )


def _score_with_season(det: Ensemble, grid: np.ndarray, first_slot: int, budget: int = 500_000) -> Scores:
    """Per-step scores, levels and statuses of a series by an ensemble that reads a coarse seasonal
    history (:class:`CoarseSeasonalReference`), the history being the series' own bucket means.

    What the service keeps beside its window store (``workers.pipeline``: the means of each
    bucket as it completes) is here computed from the whole series at once; every step reads
    only buckets a season or more before it, so the scores stay causal. ``grid[j]`` is slot
    ``first_slot + j``. Windows are scored about 2,000 at a time (``budget`` values).
    """
    season = det.season
    assert season is not None
    f, n = season.factor, len(grid)
    points = det.history + 1
    b0, b1 = first_slot // f, (first_slot + n) // f + 1
    means = bucket_means(grid[None, :], first_slot, f, b0, b1)[0]
    count = season.spans(first_slot)[0][1]
    padded = np.concatenate([np.full(points - 1, np.nan), grid])
    view = sliding_window_view(padded, points)
    score, level = np.empty(n), np.empty(n)
    status = np.empty(n, dtype=np.uint8)
    chunk = max(1, budget // points)
    offsets = np.arange(count) - count + 1
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        ends = first_slot + np.arange(lo, hi)
        coarse = []
        for k in range(1, season.seasons + 1):
            idx = ((ends - k * season.period * f) // f + 1 - b0)[:, None] + offsets  # buckets read
            ok = (idx >= 0) & (idx < len(means))
            seg = np.where(ok, means[np.clip(idx, 0, len(means) - 1)], np.nan)
            coarse.append(seg)
        part = det.score_season(np.ascontiguousarray(view[lo:hi]), coarse, ends)
        score[lo:hi], status[lo:hi] = part.score, part.status
        level[lo:hi] = part.raw.get("level", part.score)
    return Scores(score=score, direction=np.zeros(n, dtype=np.int8), status=status, raw={"level": level})
