"""The tick pipeline shared by embedded and distributed modes.

points → window store → (every step) detector scores → anomaly events → incident tracker →
database. The stages are plain functions that both modes call:

- :func:`detect` — the detector over the windows of some metrics at a step (per metric, the
  expensive part: the distributed mode runs it once per shard, in parallel);
- :func:`track` — what needs every metric of the step at once: scores → anomaly events (and
  any stage that looks across metrics, such as collective evidence, belongs here);
- :func:`correlate` — anomalies → incidents; :func:`touched_incidents` — what to write.

:class:`Pipeline` runs them in one process over all metrics; the distributed mode
(:mod:`workers.distributed`) runs ``detect`` in one Celery task per shard and the others in one
task per step. Same code, so the same input gives the same incidents.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from stormeye.core.errors import Unavailable
from stormeye.detectors import AnomalyTracker, Detector, Scores, default_detector, for_ledger
from stormeye.detectors.base import Status
from stormeye.detectors.calibration import TailLedger, ledger_config
from stormeye.detectors.collective import WATCH, CollectiveEvidence
from stormeye.detectors.ensemble import Ensemble
from stormeye.detectors.events import Anomaly, TrackerUpdate
from stormeye.detectors.rules import CompiledRules
from stormeye.detectors.seasonal import WRITE_BUCKETS, bucket_means
from stormeye.grouping.incidents import Incident, IncidentChange, IncidentTracker
from stormeye.grouping.names import NAME_KEY, NameIndex, normalize, parse
from stormeye.grouping.topology import Topology
from stormeye.workers.actions import PeopleSync
from stormeye.workers.alerts import AlertBook, windows_with_alerts
from stormeye.workers.db import Database
from stormeye.workers.settings import Settings
from stormeye.workers.store import MemoryWindowStore, WindowStore, last_of_each


class MetricRegistry:
    """Canonical metric names and their dense rows in the window store."""

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self.names: list[str] = []

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def rows(self, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of ``names``, registering unknown ones; returns (rows, newly registered names).

        A name not registered as given is normalized first (labels in canonical order, as accepted
        points' names are), so one metric has one row whichever order its labels were written in;
        registered names are canonical. An invalid name raises :class:`MetricNameError`.
        """
        out = np.empty(len(names), dtype=np.int64)
        new: list[str] = []
        get = self._rows.get
        for i, n in enumerate(names):
            r = get(n)
            if r is None:
                n = normalize(n)
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


@dataclass
class Detected:
    """The detector's scores of some metric rows at one step."""

    rows: np.ndarray
    scores: Scores
    with_newest: int  # windows whose newest point (the step scored) was present


def due_slot(now: float, step: int, grace_s: float) -> int:
    """The newest step that is complete at ``now``: its points have had the whole step plus the grace to arrive."""
    return math.floor((now - grace_s) / step) - 1


def detect(
    detector: Detector, store: WindowStore, rows: np.ndarray, at: float, seasons: WindowStore | None = None
) -> Detected:
    """Score the step ending at ``at`` for metric ``rows`` (each metric on its own).

    ``seasons``: the coarse seasonal history (:func:`season_store`) when the detector reads one
    (``Ensemble.season``); each time a bucket completes, its mean and those of the few buckets
    before it are written there from the windows just read, then the history is read back (not
    while nothing was ever written as far back as the oldest earlier day: a new deployment's
    first two days cost no read).
    """
    rows = np.asarray(rows, dtype=np.int64)
    windows = store.windows(rows, at, detector.history + 1)
    season = getattr(detector, "season", None)
    if season is None or seasons is None or not isinstance(detector, Ensemble):
        scores = detector.score(windows)
    else:
        end_slot = math.floor(at / store.step)
        f = season.factor
        if len(rows) and (end_slot + 1) % f == 0:
            first, means = season.bucket_means(windows, end_slot)
            write_buckets(seasons, rows, first, means)
        spans = season.spans(end_slot)
        oldest = seasons.oldest()
        if oldest is None or oldest > spans[-1][0] * seasons.step:
            coarse = None  # nothing was written as far back as the oldest earlier day: skip the read
        else:
            coarse = seasons.segments(rows, [(float(last * seasons.step), count) for last, count in spans])
        scores = detector.score_season(windows, coarse, end_slot)
    return Detected(rows, scores, int(np.isfinite(windows[:, -1]).sum()) if len(rows) else 0)


@dataclass
class BlockScores:
    """The detector's scores of a block of consecutive steps for the same metric rows, in parts.

    Each part holds some of the block's steps (``steps``: their indexes in the block) and their
    scores, step-major (step ``steps[i]`` is rows ``i * m`` to ``(i + 1) * m``). Steps go to the
    part whose call the step-by-step :func:`detect` would have made (a seasonal detector skips
    its combination while no metric has its earlier days), so every step's scores are those of
    :func:`detect`.
    """

    rows: np.ndarray
    parts: list[tuple[np.ndarray, Scores]]

    def step(self, j: int) -> Scores:
        """The :class:`Scores` of the block's step ``j`` (rows in ``rows`` order)."""
        m = len(self.rows)
        for steps, sc in self.parts:
            hit = np.flatnonzero(steps == j)
            if len(hit):
                lo, hi = int(hit[0]) * m, (int(hit[0]) + 1) * m
                return Scores(
                    score=sc.score[lo:hi],
                    direction=sc.direction[lo:hi],
                    status=sc.status[lo:hi],
                    raw={k: v[lo:hi] for k, v in sc.raw.items()},
                )
        raise IndexError(f"step {j} is not in the block")

    def calibrate(self, ledger: TailLedger) -> None:
        """Calibrate every step's scores by the tail ledger in step order, as the step-by-step tick
        does (:func:`calibrate_step`: each step calibrated with the record of the steps before it,
        then recorded), so that the block's steps may then be handed over or skipped."""
        m = len(self.rows)
        where: dict[int, tuple[int, int]] = {}
        for k, (steps, _) in enumerate(self.parts):
            for i, j in enumerate(steps.tolist()):
                where[j] = (k, i)
        parts = []
        for steps, sc in self.parts:
            level = sc.raw.get("level", sc.score)
            raw = {**sc.raw, "detector_score": sc.score.copy(), "level": np.array(level, dtype=np.float64)}
            parts.append((steps, Scores(sc.score.copy(), sc.direction.copy(), sc.status, raw)))
        for j in sorted(where):
            k, i = where[j]
            lo, hi = i * m, (i + 1) * m
            cal = calibrate_step(ledger, self.rows, self.step(j))
            out = parts[k][1]
            out.score[lo:hi] = cal.score
            out.direction[lo:hi] = cal.direction
            out.raw["level"][lo:hi] = cal.raw["level"]
        self.parts = parts


def block_windows(strip: np.ndarray, points: int) -> np.ndarray:
    """The windows of ``points`` points ending at each of the strip's last columns, step-major:
    ``strip`` (rows x (points - 1 + steps)) → (steps * rows) x points, a contiguous copy."""
    m, width = strip.shape
    steps = width - points + 1
    view = np.lib.stride_tricks.sliding_window_view(strip, points, axis=1)  # rows x steps x points
    return np.ascontiguousarray(view.transpose(1, 0, 2)).reshape(steps * m, points)


def detect_block(
    detector: Detector,
    rows: np.ndarray,
    strip: np.ndarray,
    first_slot: int,
    seasons: WindowStore | None = None,
) -> BlockScores:
    """Score consecutive steps from slot ``first_slot`` for metric ``rows`` in one vectorized pass.

    ``strip``: rows x (``detector.history`` + steps) values as the window store gives them (float32
    precision, NaN missing): the history before ``first_slot``, then the block. Each step's window
    is the strip's slice ending at it, so each step's scores are those :func:`detect` gives from
    the store. ``seasons``: the coarse seasonal history as it is before the block; it is read, not
    written (the caller writes the block's buckets, :func:`block_buckets`). The block must be short
    enough that its reads of earlier days only reach buckets complete before it
    (:func:`max_block_steps`).
    """
    rows = np.asarray(rows, dtype=np.int64)
    m = len(rows)
    points = detector.history + 1
    steps = strip.shape[1] - points + 1
    season = getattr(detector, "season", None)
    idx = np.arange(steps)
    if not m or steps <= 0:
        return BlockScores(rows, [])
    if season is None or seasons is None or not isinstance(detector, Ensemble):
        return BlockScores(rows, [(idx, detector.score(block_windows(strip, points)))])
    slots = first_slot + idx
    f = season.factor
    oldest = seasons.oldest()
    oldest_at = np.full(steps, np.inf if oldest is None else oldest)
    if oldest is None:  # the block's first bucket write marks it, from that step on
        for j in np.flatnonzero((slots + 1) % f == 0):
            end = int(slots[j])
            first, means = season.bucket_means(strip[:, j : j + points], end)
            written = np.flatnonzero(np.isfinite(means).any(axis=0))
            if len(written):
                oldest_at[j:] = float((first + written[0]) * seasons.step)
                break
    count = season.spans(int(slots[0]))[0][1]
    # per season back (nearest first), the last bucket each step reads (season.spans)
    lasts_k = np.array([(slots - k * season.period * f) // f + 1 for k in range(1, season.seasons + 1)])
    # detect reads no coarse history while nothing was written as far back as the oldest day
    has_coarse = oldest_at <= lasts_k[-1] * float(seasons.step)
    windows = block_windows(strip, points)
    parts: list[tuple[np.ndarray, Scores]] = []
    if (~has_coarse).any():
        none = np.flatnonzero(~has_coarse)
        parts.append((none, detector.score_season(windows[_step_rows(none, m)], None, np.repeat(slots[none], m))))
    with_coarse = np.flatnonzero(has_coarse)
    if len(with_coarse):
        coarse = []
        for k in range(season.seasons):
            lasts = lasts_k[k][with_coarse]
            lo, hi = int(lasts.min()) - count + 1, int(lasts.max())
            wide = seasons.windows(rows, float(hi * seasons.step), hi - lo + 1)  # rows x buckets
            view = np.lib.stride_tricks.sliding_window_view(wide, count, axis=1)[:, lasts - count + 1 - lo, :]
            coarse.append(np.ascontiguousarray(view.transpose(1, 0, 2)).reshape(len(with_coarse) * m, count))
        ready = season.ready(coarse).reshape(len(with_coarse), m).any(axis=1)
        for pick in (~ready, ready):  # the call :func:`detect` makes with no metric ready, and with some
            if not pick.any():
                continue
            sel = with_coarse[pick]
            r = _step_rows(np.flatnonzero(pick), m)
            parts.append(
                (
                    sel,
                    detector.score_season(
                        windows[_step_rows(sel, m)], [c[r] for c in coarse], np.repeat(slots[sel], m)
                    ),
                )
            )
    return BlockScores(rows, parts)


def _step_rows(steps: np.ndarray, m: int) -> np.ndarray:
    """The rows of ``steps`` in a step-major stack of ``m`` rows a step."""
    return (np.asarray(steps, dtype=np.int64)[:, None] * m + np.arange(m)).reshape(-1)


def block_buckets(
    detector: Detector, seasons: WindowStore | None, rows: np.ndarray, strip: np.ndarray, first_slot: int
) -> None:
    """Write what :func:`detect` writes into the coarse seasonal history at the block's steps: at
    each step that completes a bucket, the means of the last few buckets (from the strip of
    :func:`detect_block`)."""
    season = getattr(detector, "season", None)
    if season is None or seasons is None or not isinstance(detector, Ensemble) or not len(rows):
        return
    points = detector.history + 1
    steps = strip.shape[1] - points + 1
    f = season.factor
    ends = [first_slot + j for j in range(steps) if (first_slot + j + 1) % f == 0]
    if not ends:
        return
    # each write covers the newest WRITE_BUCKETS buckets from the window ending at that step; a
    # bucket written twice gets the same mean (its points are all in the strip), so one write of
    # every bucket of those windows, oldest first, leaves what the writes one by one leave
    last = (ends[-1] + 1) // f - 1
    first = (ends[0] + 1) // f - 1 - WRITE_BUCKETS + 1
    strip_first = first_slot - points + 1
    means = bucket_means(strip, strip_first, f, first, last + 1)
    write_buckets(seasons, rows, first, means)


def max_block_steps(detector: Detector, rows: int, budget: int = 500_000) -> int:
    """How many steps :func:`detect_block` may score at once for ``rows`` metrics: the windows'
    copy bounded to ``budget`` values (4 MB: about 2,000 windows, where the detector runs fastest;
    larger calls leave the caches), and for a detector with a coarse seasonal history,
    short enough that every earlier day it reads was complete before the block."""
    points = detector.history + 1
    n = max(1, budget // max(1, rows * points))
    season = getattr(detector, "season", None)
    if season is not None and isinstance(detector, Ensemble):
        f = season.factor
        n = min(n, season.period * f - (WRITE_BUCKETS + 3) * f)
    return max(1, n)


def write_buckets(seasons: WindowStore, rows: np.ndarray, first: int, means: np.ndarray) -> None:
    """Write bucket means (rows x buckets from bucket ``first``) into the seasonal history; NaN is skipped."""
    b = np.arange(first, first + means.shape[1])
    r = np.repeat(rows, len(b))
    t = np.tile(b * float(seasons.step), len(rows))
    v = means.reshape(-1)
    ok = np.isfinite(v)
    if ok.any():
        seasons.append(r[ok], t[ok], v[ok])
        seasons.mark_oldest(float(t[ok].min()))


def season_store(detector: Detector, step: int) -> MemoryWindowStore | None:
    """The embedded mode's coarse seasonal history for ``detector`` (None when it reads none)."""
    season = getattr(detector, "season", None)
    if season is None:
        return None
    return MemoryWindowStore(step * season.factor, season.season_points)


def load_seasons(
    detector: Detector, seasons: WindowStore | None, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray
) -> None:
    """Fill the coarse seasonal history from bulk-loaded history (rows x timestamps, on the step grid)."""
    season = getattr(detector, "season", None)
    ts = np.asarray(timestamps, dtype=np.float64)
    if season is None or seasons is None or not len(ts) or not len(rows):
        return
    f = season.factor
    step = seasons.step // f
    slots = np.floor(ts / step).astype(np.int64)
    first_slot, last_slot = int(slots.min()), int(slots.max())
    b0 = -(-first_slot // f)  # the first whole bucket
    b1 = (last_slot + 1) // f  # one past the last whole bucket
    if b1 <= b0:
        return
    keep = min(b1 - b0, season.season_points)
    vals = np.asarray(values)
    width = last_slot - first_slot + 1
    chunk = max(1, 4_000_000 // width)  # rows at a time: about 32 MB of grid, however many metrics
    for lo in range(0, len(rows), chunk):
        grid = np.full((min(chunk, len(rows) - lo), width), np.nan)
        grid[:, slots - first_slot] = vals[lo : lo + chunk]
        means = bucket_means(grid, first_slot, f, b0, b1)
        write_buckets(seasons, rows[lo : lo + chunk], b1 - keep, means[:, -keep:])


def track(
    tracker: AnomalyTracker,
    at: float,
    detected: Detected,
    names: Any,
    collective: CollectiveEvidence | None = None,
    membership: sp.csr_matrix | None = None,
    rules: CompiledRules | None = None,
    symptoms: Callable[[list[str]], np.ndarray] | None = None,
    ledger: TailLedger | None = None,
) -> TrackerUpdate:
    """The step's scores of every metric → anomaly events (``names[row]``: a row's metric).

    Stages that look across metrics go here, before the tracker: in distributed mode this runs
    once per step over all shards' scores, in row order. ``ledger`` calibrates every metric's
    scores against how often it reached them over its last days (:func:`calibrate_step`); it
    comes first, so rules and the collective layer see calibrated scores. ``collective`` raises metrics that move
    with a surprising crowd of their group (``membership``: rows x groups, see
    :func:`group_membership`). ``rules`` (per-metric settings, :func:`compile_rules`) come first.
    ``symptoms`` (the incident tracker's :meth:`~grouping.incidents.IncidentTracker.symptom_candidates`)
    says which metrics scoring between the release level and the threshold may open a symptom of
    an open incident on their machine (:mod:`detectors.events`).
    """
    scores = detected.scores
    if ledger is not None and len(detected.rows):
        scores = calibrate_step(ledger, detected.rows, scores)
    if rules is not None and len(detected.rows):
        scores = rules.apply(scores, detected.rows, scores.raw.get("present"))
    if collective is not None and membership is not None and len(detected.rows):
        rows = detected.rows
        if len(rows) == membership.shape[0] and np.array_equal(rows, np.arange(len(rows))):
            scores, _ = collective.update(scores, membership)
        else:
            scores, _ = collective.update(scores, membership[rows])
    symptom_rows = None
    if symptoms is not None and len(detected.rows):
        warm = np.flatnonzero((scores.score >= tracker.release) & (scores.score < tracker.threshold))
        if len(warm):
            symptom_rows = np.zeros(len(detected.rows), dtype=bool)
            symptom_rows[warm] = symptoms([names[int(detected.rows[i])] for i in warm])
    return tracker.update(at, detected.rows, scores, names, symptom_rows=symptom_rows)


def calibrate_step(ledger: TailLedger, rows: np.ndarray, scores: Scores) -> Scores:
    """One step's scores calibrated by the tail ledger, which then records them (one call per step).

    The detector's uncapped level (``raw["level"]``) is what the ledger reads; rows the detector
    could not analyse keep their score (0) and teach the ledger nothing. The detector's own
    score stays in ``raw["detector_score"]``, for evidence.
    """
    level = scores.raw.get("level", scores.score)
    counted = (scores.status == Status.OK) | (scores.status == Status.CONSTANT)
    cal = ledger.calibrate(rows, level)
    ledger.update(rows, level, counted)
    score = np.where(counted, np.minimum(cal, 1.0), scores.score)
    direction = np.where(score > 0, scores.direction, 0).astype(np.int8)
    raw = {**scores.raw, "detector_score": scores.score, "level": np.where(counted, cal, level)}
    return Scores(score=score, direction=direction, status=scores.status, raw=raw)


def make_ledger(settings: Settings) -> TailLedger | None:
    """The tail ledger the settings ask for (None when ``STORMEYE_CALIBRATION_HALFLIFE_S`` is 0)."""
    if settings.calibration_halflife_s <= 0:
        return None
    return TailLedger(ledger_config(settings.step_s, settings.calibration_halflife_s))


def group_membership(index: NameIndex, names: Sequence[str]) -> sp.csr_matrix:
    """(metrics x property pairs): the groups of collective evidence, rows in ``names`` order.

    Groups are the metrics' label pairs except the metric name (a measure is not an entity);
    the metric-name columns are empty, so a column is the index's vocabulary column.
    """
    return index.incidence(names, skip_keys=(NAME_KEY,))


def correlate(
    incidents: IncidentTracker, at: float, changed: list[Anomaly], windows: Callable[[Sequence[str]], np.ndarray]
) -> list[IncidentChange]:
    """Group one step's changed anomalies into incidents (in a fixed order, whichever shard found them)."""
    changed = sorted(changed, key=lambda a: (a.metric, a.start))
    if changed or incidents.open_incidents():
        return incidents.update(at, changed, windows)
    return []


def touched_incidents(
    incidents: IncidentTracker, anomalies: list[Anomaly], changes: list[IncidentChange]
) -> list[Incident]:
    """The incidents a step changed or whose members changed: what the database must write."""
    ids = dict.fromkeys(c.incident for c in changes)
    for a in anomalies:
        inc = incidents.incident_of(a.metric, a.start)
        if inc is not None:
            ids[inc.id] = None
    return [incidents.incidents[i] for i in ids if i in incidents.incidents]


def compile_rules(settings: Settings, names: Sequence[str]) -> CompiledRules | None:
    """The per-metric detector settings (``STORMEYE_DETECTOR_RULES_FILE``) resolved for ``names`` (None: no rules)."""
    rules = settings.detector_rules
    if not len(rules):
        return None
    return rules.compile([parse(n) for n in names], settings.threshold)


def make_collective(settings: Settings) -> CollectiveEvidence | None:
    """The collective-evidence layer the settings ask for (None when turned off).

    Its watch level is :data:`~stormeye.detectors.collective.WATCH` (0.2), or 0.8 of the threshold
    when the threshold is 0.25 or lower: the layer watches members below the threshold, and a low
    ``STORMEYE_THRESHOLD`` (with calibrated scores, say 0.2) must not stop the service from starting.
    """
    if not settings.collective:
        return None
    watch = min(WATCH, 0.8 * settings.threshold)
    return CollectiveEvidence(watch=watch, threshold=settings.threshold, halflife=settings.collective_halflife_steps)


def make_detector(settings: Settings) -> Detector:
    """The detector ``STORMEYE_DETECTOR`` names: ``default`` (the ensemble sized to the step and the
    store's retention), a strategy name of :func:`detectors.available` (``robust_z``, ``seasonal``,
    ``holt_winters``, ...: one strategy alone, for an ablation) or a detector class name; with the
    tail ledger on (``STORMEYE_CALIBRATION_HALFLIFE_S``) without the window's recurrence rule."""
    det = _named_detector(settings)
    return for_ledger(det) if settings.calibration_halflife_s > 0 else det


def _named_detector(settings: Settings) -> Detector:
    from stormeye import detectors

    step, season = settings.step_s, settings.season_s
    if settings.detector in ("default", "ensemble"):
        split = settings.seasonal_split or None
        memory = settings.recurrence_memory_points or None
        return default_detector(
            step, season, settings.retention_points, settings.seasonal_rule, split, memory, settings.season_step_s
        )
    strategies = detectors.available()
    cls = strategies.get(settings.detector)
    if cls is None:
        factory = getattr(detectors, settings.detector, None)
        if isinstance(factory, type) and issubclass(factory, Detector):
            cls = factory
    if cls is None:
        raise ValueError(
            f"STORMEYE_DETECTOR={settings.detector!r} is not a detector: use 'default' or one of {sorted(strategies)}"
        )
    if "period" in inspect.signature(cls).parameters:
        if season % step:
            raise ValueError(f"STORMEYE_SEASON_S={season} must be a whole number of steps of {step} s")
        periodic: Callable[..., Detector] = cls
        det = periodic(period=season // step)
        if det.history + 1 > settings.retention_points:
            raise ValueError(
                f"STORMEYE_DETECTOR={settings.detector!r} needs {det.history + 1} points of history at a "
                f"{step} s step; raise STORMEYE_RETENTION_POINTS (now {settings.retention_points})"
            )
        return det
    return cls()


@dataclass
class Trackers:
    """The stateful stages after the detector: anomaly events, collective evidence, incidents."""

    anomalies: AnomalyTracker
    incidents: IncidentTracker
    collective: CollectiveEvidence | None
    ledger: TailLedger | None = None


def build_trackers(settings: Settings, detector: Detector, index: NameIndex, topology: Topology) -> Trackers:
    """The trackers both modes run, built from the settings in this one place (the embedded
    :class:`Pipeline` once; the distributed runtime each time it loads their state from Redis)."""
    return Trackers(
        anomalies=AnomalyTracker(
            settings.threshold,
            settings.release,
            settings.quiet_steps,
            detector=getattr(detector, "name", type(detector).__name__),
        ),
        incidents=IncidentTracker(
            index, settings.grouping_config(), settings.priority_model, step=settings.step_s, topology=topology
        ),
        collective=make_collective(settings),
        ledger=make_ledger(settings),
    )


class MetricStages:
    """The per-metric stages over the registered metrics, resolved again when metrics arrive: the
    detector rules (:func:`compile_rules`) and the groups of collective evidence (:func:`group_membership`)."""

    def __init__(self, settings: Settings, index: NameIndex) -> None:
        self.settings = settings
        self.index = index
        self._membership: sp.csr_matrix | None = None
        self._rules: CompiledRules | None = None

    def membership(self, names: Sequence[str]) -> sp.csr_matrix:
        if self._membership is None or self._membership.shape[0] != len(names):
            self._membership = group_membership(self.index, names)
        return self._membership

    def rules(self, names: Sequence[str]) -> CompiledRules | None:
        if self._rules is None or len(self._rules.factor) != len(names):
            self._rules = compile_rules(self.settings, names)
        return self._rules


class UnsavedTick(Unavailable):
    """The database refused a tick's writes; they are kept and written first at the next tick."""


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
        #: the coarse seasonal history, at steps too fine for the store to hold earlier days (docs/detectors.md)
        self.seasons = season_store(self.detector, settings.step_s)
        self.registry = MetricRegistry()
        self.index = NameIndex(graphite=settings.graphite)
        trackers = build_trackers(settings, self.detector, self.index, settings.topology())
        self.anomalies, self.incidents, self.collective = trackers.anomalies, trackers.incidents, trackers.collective
        self.ledger = trackers.ledger
        self.per_metric = MetricStages(settings, self.index)
        # people's actions and feedback (workers.actions): replayed on the tracker every tick
        self.people = PeopleSync(database, settings.priority_model) if database is not None else None
        self.clock = clock
        #: alerts other systems fired (workers/alerts.py): grouped with the detector's anomalies each tick
        self.alerts = AlertBook(settings.step_s, settings.alert_fingerprint_ignore)
        self.last_scored: int | None = None  # slot number of the newest step scored
        self.rejected_too_old = 0
        self.late_points = 0
        self.merged_points = 0  # replaced by a later point of the same metric and step in the same call
        # replays (demo, ingest) keep a snapshot of every incident they touched, even after
        # the tracker forgets it; the live service reads incidents from the database instead
        self.archive: dict[str, dict[str, Any]] | None = {} if keep_archive else None
        # ... and every anomaly they detected, paged or not (metric, start -> end, peak score)
        self.anomaly_archive: dict[tuple[str, float], dict[str, Any]] | None = {} if keep_archive else None
        # called after each write of a tick's results (embedded notifications wake up; must return at once)
        self.after_persist: list[Callable[[], None]] = []
        self.skipped_steps = 0  # steps a bounded catch-up left unscored (tick's max_steps)
        #: a tick with several steps due scores their windows in one detector call (False: one by
        #: one, the reference the block paths are compared with)
        self.block_ticks = True
        #: ticks scored whose writes the database refused, oldest first: written before anything is scored again
        self.unsaved: list[tuple[list[Anomaly], list[Any], list[IncidentChange]]] = []

    @property
    def step(self) -> int:
        return self.settings.step_s

    @property
    def topology(self) -> Topology:
        """The incident tracker's service topology (declared, read from names, learnt from history)."""
        return self.incidents.topology

    # -- ingest --------------------------------------------------------------------------

    def membership(self) -> sp.csr_matrix:
        """The groups of collective evidence for the registered metrics (rebuilt when metrics arrive)."""
        return self.per_metric.membership(self.registry.names)

    def rules(self) -> CompiledRules | None:
        """The per-metric detector settings of the registered metrics (resolved again when metrics arrive)."""
        return self.per_metric.rules(self.registry.names)

    def register(self, names: Sequence[str]) -> np.ndarray:
        rows, new = self.registry.rows(names)
        if new:
            self.index.add(new)
            self.incidents.learn_names(new)  # service-graph metrics name dependencies
            if self.database is not None:
                self.database.ensure_metrics(new)
        return rows

    def ingest(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> int:
        """Store validated points (canonical names, epoch seconds, finite floats); returns how many were kept.

        Points older than the store's retention are refused and counted in ``rejected_too_old``.
        Points of one metric sharing a step (a repeated timestamp) are merged, the last one given
        winning; the others are counted in ``merged_points``.
        A point for a step already scored (it arrived after its tick) is kept as history for
        later windows, but its own step is not scored again; it is counted in ``late_points`` so
        the caller can tell the sender (distributed mode refuses such points instead, see
        ``STORMEYE_GRACE_S``).
        """
        rows = self.register(names)
        ts = np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
        res = self.store.append(rows, ts, vals)
        self.rejected_too_old += res.too_old
        self.merged_points += res.merged
        if self.last_scored is not None and len(ts):
            late = np.floor(ts / self.step) <= self.last_scored
            self.late_points += max(0, int(late.sum()) - res.too_old)
        return res.accepted

    def load_history(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> None:
        """Bulk-load a matrix of past points (names x timestamps) without scoring it.

        Names are normalized as accepted points' are (:meth:`MetricRegistry.rows`), so a history and the
        points that follow it land on one row whichever order the labels were written in.
        """
        rows = self.register(names)
        load = getattr(self.store, "load", None)
        if load is not None:
            load(rows, timestamps, values)
        else:
            r = np.repeat(rows, len(timestamps))
            t = np.tile(np.asarray(timestamps, dtype=np.float64), len(rows))
            self.store.append(r, t, np.asarray(values).reshape(-1))
        load_seasons(self.detector, self.seasons, rows, timestamps, values)
        self.last_scored = math.floor(float(np.max(timestamps)) / self.step)

    # -- the tick ------------------------------------------------------------------------

    def windows_at(self, end: float, points: int) -> Callable[[Sequence[str]], np.ndarray]:
        def read(metrics: Sequence[str]) -> np.ndarray:
            if not len(self.alerts) or self.alerts.metrics().isdisjoint(metrics):
                rows = np.fromiter((self.registry.row(m) for m in metrics), np.int64, len(metrics))
                return self.store.windows(rows, end, points)
            return self._windows_with_alerts(metrics, end, points)

        return read

    def tick(
        self, until: float | None = None, max_steps: int | None = None, chunk: int | None = None
    ) -> list[TickResult]:
        """Score every step not yet scored up to the step of ``until`` (default: the newest complete step).

        ``max_steps`` bounds a catch-up (the live tick): when more steps are due, the older ones are
        left unscored (their points stay as history) and counted in ``skipped_steps``. ``chunk``: score
        at most that many steps in this call (the rest at the next).

        Live (no ``until``), alerts that arrived since the last tick are grouped at once, at the
        step in progress, without waiting for it to complete: an alert is already confirmed by its
        sender, so its incident opens in the first tick after it arrives (the step is scored
        again, metrics and alerts, when it completes); a chunked catch-up does that once caught up.
        """
        live = until is None
        if until is None:
            until = due_slot(self.clock(), self.step, self.settings.grace_s) * self.step
        top = math.floor(until / self.step)
        if self.last_scored is None:
            newest = self.store.newest()
            newest = self.alerts.newest() if newest is None else newest
            if newest is None:
                return []
            self.last_scored = min(top, int(newest // self.step)) - 1
        if max_steps is not None and top - self.last_scored > max_steps:
            self.skipped_steps += top - max_steps - self.last_scored
            self.last_scored = top - max_steps
        self.flush()  # the writes a database error left, before anything more is scored
        due = top
        if chunk is not None:
            top = min(top, self.last_scored + chunk)
        results: list[TickResult] = []
        slot = self.last_scored + 1
        while slot <= top:
            count = min(top - slot + 1, self._block_steps())
            try:
                if count > 1:  # several steps due (a catch-up): their windows scored in one call
                    results.extend(self.score_steps(slot, count))
                    slot += count
                    continue
                results.append(self.score_step(slot * self.step))
            except UnsavedTick:  # scored: its writes wait in self.unsaved for the next tick
                self.last_scored = slot if count == 1 else self.last_scored
                raise
            self.last_scored = slot
            slot += 1
        if live and top == due and self.alerts.fresh():
            at = (top + 1) * self.step  # the step in progress
            results.append(self.group(at, self.alerts.changed(at), 0, 0, 0))
        return results

    def _block_steps(self) -> int:
        """Steps a tick may score in one detector call (1: one at a time; ``block_ticks`` False: always)."""
        n = len(self.registry)
        if n == 0 or not self.block_ticks or self.detector.history + 1 > self.store.length:
            return 1
        return max_block_steps(self.detector, n)

    def score_steps(self, first_slot: int, count: int) -> list[TickResult]:
        """Score ``count`` due steps from ``first_slot`` whose points are all in the store: the
        detector scores their windows in one call (:func:`detect_block`, the same windows the store
        gives each step), then each step goes to the trackers as :meth:`score_step` does."""
        n = len(self.registry)
        rows = np.arange(n)
        last = first_slot + count - 1
        strip = self.store.windows(rows, float(last * self.step), self.detector.history + count)
        block = detect_block(self.detector, rows, strip, first_slot, self.seasons)
        block_buckets(self.detector, self.seasons, rows, strip, first_slot)
        membership = self.membership() if self.collective is not None else None
        symptoms = self.incidents.symptom_candidates if self.settings.symptoms else None
        results = []
        for j in range(count):
            slot = first_slot + j
            at = float(slot * self.step)
            alerts = self.alerts.changed(at)
            detected = Detected(rows, block.step(j), 0)
            try:
                upd = track(
                    self.anomalies,
                    at,
                    detected,
                    self.registry.names,
                    self.collective,
                    membership,
                    self.rules(),
                    symptoms,
                    self.ledger,
                )
                results.append(self.group(at, upd.changed + alerts, len(upd.opened), len(upd.closed), n))
            except UnsavedTick:
                self.last_scored = slot
                raise
            self.last_scored = slot
        return results

    def score_step(self, at: float) -> TickResult:
        n = len(self.registry)
        alerts = self.alerts.changed(at)
        if n == 0:
            # alerts only (no series yet): open incidents still get their tick, to resolve
            busy = alerts or self.incidents.open_incidents()
            return self.group(at, alerts, 0, 0, 0) if busy else TickResult(at, 0)
        detected = detect(self.detector, self.store, np.arange(n), at, self.seasons)
        membership = self.membership() if self.collective is not None else None
        symptoms = self.incidents.symptom_candidates if self.settings.symptoms else None
        upd = track(
            self.anomalies,
            at,
            detected,
            self.registry.names,
            self.collective,
            membership,
            self.rules(),
            symptoms,
            self.ledger,
        )
        return self.group(at, upd.changed + alerts, len(upd.opened), len(upd.closed), n)

    # -- replay: many steps at once ------------------------------------------------------

    def can_replay_block(self, first_slot: int) -> bool:
        """Whether :meth:`replay_block` may score steps from ``first_slot``: the embedded store, the
        previous step scored and stored, no alerts (they join ticks by the clock) and nothing unsaved.
        The tail ledger, when on, learns from every step of the block before any is handed over
        (:meth:`BlockScores.calibrate`), quiet ones included, as step by step."""
        return (
            isinstance(self.store, MemoryWindowStore)
            and self.last_scored == first_slot - 1
            and self.store.newest() == float((first_slot - 1) * self.step)
            and self.detector.history + 1 <= self.store.length
            and not len(self.alerts)
            and not self.unsaved
            and len(self.registry) > 0
        )

    def replay_block(
        self,
        rows: np.ndarray,
        timestamps: np.ndarray,
        values: np.ndarray,
        first_slot: int,
        steps: int,
        scored: BlockScores | None = None,
    ) -> int:
        """Store and score ``steps`` consecutive steps from ``first_slot`` whose points (registered
        ``rows``, sorted by step) are given at once: the same anomalies, incidents and writes as
        storing each step's points and ticking it (:func:`workers.ingest.replay` step by step).

        The detector scores the whole block in one vectorized pass (:func:`detect_block`); then
        every step goes to the trackers in order. A step where no metric reaches the collective
        watch level (or the release level without collective evidence) while no anomaly and no
        incident is open changes nothing but the groups' learned counts: it is not handed over
        one by one (:meth:`CollectiveEvidence.idle`), and people's actions are read at the next
        step that is (they can only act on what is open). Points enter the window store when a
        step needs it (incident shapes read it) and at the end. Returns the points merged
        (a later point of the same metric and step given after them).

        ``scored``: the detector's scores of this block as :meth:`score_replay_block` gave them
        from the same state (another process scoring the next blocks while this one groups,
        :func:`workers.ingest.replay`); None: scored here.
        """
        n = len(self.registry)
        step = self.step
        rows, ts, vals, slots, merged, strip = self._replay_strip(rows, timestamps, values, first_slot, steps)
        all_rows = np.arange(n)
        block = scored if scored is not None else detect_block(self.detector, all_rows, strip, first_slot, self.seasons)
        block_buckets(self.detector, self.seasons, all_rows, strip, first_slot)
        if self.ledger is not None:
            block.calibrate(self.ledger)  # first, as track() does step by step
        rules = self.rules()
        watch = self.anomalies.release
        if self.collective is not None:
            watch = min(watch, self.collective.watch)
        busy = np.zeros(steps, dtype=bool)
        for k, (idx, sc) in enumerate(block.parts):
            if rules is not None:
                sc = rules.apply(sc, np.tile(all_rows, len(idx)), sc.raw.get("present"))
                block.parts[k] = (idx, sc)
            busy[idx] = (sc.score.reshape(len(idx), n) >= watch).any(axis=1)
        membership = self.membership() if self.collective is not None else None
        symptoms = self.incidents.symptom_candidates if self.settings.symptoms else None
        stored = 0  # points of the block in the store so far
        idle = 0  # steps skipped since the last one handed over
        skipping = False
        names = self.registry.names
        for j in range(steps):
            slot = first_slot + j
            if not busy[j] and (skipping or not (self.anomalies.open_anomalies or self.incidents.open_incidents())):
                skipping = True
                idle += 1
                self.last_scored = slot
                continue
            skipping = False
            if idle and self.collective is not None and membership is not None:
                self.collective.idle(membership, idle)
            idle = 0
            stored = self._store_block(rows, ts, vals, slots, stored, slot)
            scores = block.step(j)
            try:
                upd = track(
                    self.anomalies,
                    slot * step,
                    Detected(all_rows, scores, 0),
                    names,
                    self.collective,
                    membership,
                    None,
                    symptoms,
                )
                self.group(float(slot * step), upd.changed, len(upd.opened), len(upd.closed), n)
            except UnsavedTick:
                self._store_block(rows, ts, vals, slots, stored, first_slot + steps - 1)
                self.last_scored = slot
                raise
            self.last_scored = slot
        if idle and self.collective is not None and membership is not None:
            self.collective.idle(membership, idle)
        self._store_block(rows, ts, vals, slots, stored, first_slot + steps - 1)
        self.last_scored = first_slot + steps - 1
        return merged

    def _replay_strip(
        self, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray, first_slot: int, steps: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
        """A block's points as arrays with their slots, the points merged, and the strip the
        detector scores (every metric's history before the block from the store, then the block)."""
        n = len(self.registry)
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
        slots = np.floor(ts / self.step).astype(np.int64)
        last, merged = last_of_each(rows, slots)
        grid = np.full((n, steps), np.nan)
        grid[rows[last], slots[last] - first_slot] = vals[last].astype(np.float32)
        past = self.store.windows(np.arange(n), float((first_slot - 1) * self.step), self.detector.history)
        return rows, ts, vals, slots, merged, np.concatenate([past, grid], axis=1)

    def score_replay_block(
        self,
        rows: np.ndarray,
        timestamps: np.ndarray,
        values: np.ndarray,
        first_slot: int,
        steps: int,
        score: bool = True,
    ) -> BlockScores | None:
        """The detection half of :meth:`replay_block`: the block's scores (before the tail ledger
        and the per-metric rules, which the grouping half applies), with the window store and the
        coarse seasonal history left as :meth:`replay_block` leaves them (``score`` False: only
        that, no detector, None returned). Trackers, ledger and database are not touched: a
        process that only scores (:func:`workers.ingest.replay`'s prefetch) calls it block after
        block on its own copy of the pipeline."""
        rows, ts, vals, slots, _, strip = self._replay_strip(rows, timestamps, values, first_slot, steps)
        all_rows = np.arange(len(self.registry))
        block = detect_block(self.detector, all_rows, strip, first_slot, self.seasons) if score else None
        block_buckets(self.detector, self.seasons, all_rows, strip, first_slot)
        self._store_block(rows, ts, vals, slots, 0, first_slot + steps - 1)
        self.last_scored = first_slot + steps - 1
        return block

    def _store_block(
        self, rows: np.ndarray, ts: np.ndarray, vals: np.ndarray, slots: np.ndarray, done: int, upto: int
    ) -> int:
        """Append the block's points from index ``done`` up to slot ``upto`` (those the store still keeps)."""
        hi = int(np.searchsorted(slots, upto, side="right"))
        if hi > done:
            lo = done + int(np.searchsorted(slots[done:hi], upto - self.store.length, side="right"))
            if hi > lo:
                self.store.append(rows[lo:hi], ts[lo:hi], vals[lo:hi])
        return max(hi, done)

    def _windows_with_alerts(self, metrics: Sequence[str], end: float, points: int) -> np.ndarray:
        def series(names: Sequence[str]) -> np.ndarray:
            return self.store.windows(np.array([self.registry.row(m) for m in names], dtype=np.int64), end, points)

        return windows_with_alerts(metrics, end, points, self.registry.__contains__, series, self.alerts)

    def group(self, at: float, changed: list[Anomaly], opened: int, closed: int, scored: int) -> TickResult:
        if self.people is not None:
            self.people.sync(self.incidents, at)
        changes = correlate(self.incidents, at, changed, self.windows_at(at, self.settings.shape_points))
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
        if self.anomaly_archive is not None:
            for a in anomalies:
                self.anomaly_archive[a.key] = {
                    "metric": a.metric,
                    "start": a.start,
                    "end": a.end,
                    "peak_score": a.peak_score,
                    "peak_level": a.peak_level,
                }
        incs = touched_incidents(self.incidents, anomalies, changes)
        if self.archive is not None:
            for inc in incs:
                self.archive[inc.id] = inc.to_dict()
        if self.database is not None:
            self.unsaved.append((anomalies, incs, changes))
            self.flush()

    def flush(self) -> None:
        """Write the scored ticks not yet written, oldest first; :class:`UnsavedTick` when the database
        refuses (they stay queued, and the tick that scored them counts as scored)."""
        while self.unsaved and self.database is not None:
            anomalies, incs, changes = self.unsaved[0]
            try:
                self.database.save_tick(anomalies, incs, changes)
            except Exception as exc:
                raise UnsavedTick(
                    f"{len(self.unsaved)} scored tick(s) not written to the database: {type(exc).__name__}: {exc}"
                ) from exc
            self.unsaved.pop(0)
            for hook in self.after_persist:
                hook()

    # -- views ---------------------------------------------------------------------------

    def anomaly_list(self) -> list[dict[str, Any]]:
        """Every anomaly of this run, paged or not (kept with the archive), by start."""
        held = self.anomaly_archive.values() if self.anomaly_archive is not None else []
        return sorted(held, key=lambda d: (d["start"], d["metric"]))

    def incident_list(self, include_merged: bool = False) -> list[dict[str, Any]]:
        """Incidents of this run as dicts: the archive when kept, else those held in memory."""
        held = (
            self.archive.values()
            if self.archive is not None
            else [i.to_dict() for i in self.incidents.incidents.values()]
        )
        out = [d for d in held if include_merged or d["status"] != "merged"]
        return sorted(out, key=lambda d: (d["priority"], -d["priority_score"], d["start"], d["id"]))
