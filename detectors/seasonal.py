"""Seasonal strategies: judge a point against the same time of day (or week) on earlier periods.

A 4-hour median lags a strong daily cycle: every evening ramp looks like a level shift, and a
real departure from the cycle hides inside its swing. Both strategies here compute, for every
recent point of the window, a *seasonal residual* (the value minus what the season predicts),
then calibrate the newest residual against the metric's own recent residuals
(:mod:`detectors.calibration`: tail stretch, recurrence and the quantum floor). Windows are aligned to the step,
so "the same time yesterday" is simply ``period`` points back; ``period`` is in points
(``workers`` converts ``STORMEYE_SEASON_S`` with the step).

Where the seasonal history lives: in the window store. The windows must hold
``seasons * period + calibration_points`` points; rows with less are ``TOO_FEW_POINTS``. At a
5-minute step the default retention grows to hold two days. At a 60-second step, where 480
points of retention hold 8 hours, :class:`CoarseSeasonalReference` takes the seasonal
reference's place and reads the earlier days from a second, small history of 5-minute means
that ``workers`` keeps beside the window store.

:class:`SeasonalReference` — for point ``s``, the reference is the median over the last
``seasons`` periods ``k`` of the mean of the ``2 * halfwidth + 1`` points around ``s - k * period``
(the neighbourhood absorbs a little phase jitter and noise) or of the exact point ``s - k * period``,
whichever is nearer to the value (so a job that spikes at the same minute every day matches
its own spike). The residual's own median over the
calibration points removes a day-to-day level offset; its MAD is the scale.
Cost: two cumulative sums and one small sort per row, ``O(points)`` per metric.

:class:`HoltWinters` — additive Holt-Winters (level, trend, seasonal index) run over the
window, vectorized over metrics (a loop over time, none over metrics). The first period
initialises the seasonal indexes; innovations are clipped at ``clip`` robust scales so an
anomaly does not bend the forecast towards itself. The one-step forecast errors of the last
``calibration_points`` points are the residuals. Cost: ``O(points)`` vector updates per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from stormeye.detectors.base import Detector, Scores, pvalue_to_level
from stormeye.detectors.calibration import CalibrationConfig, calibrated_log_p, robust_location_scale, value_quantum
from stormeye.detectors.rowstats import nan_median

#: buckets :meth:`CoarseSeasonalReference.bucket_means` gives each time a bucket completes (late points)
WRITE_BUCKETS = 6


def bucket_means(values: np.ndarray, first_slot: int, factor: int, b0: int, b1: int) -> np.ndarray:
    """Means of buckets ``b0`` to ``b1 - 1`` of every row (rows x buckets; NaN: under half its points).

    Column ``j`` of ``values`` is slot ``first_slot + j``; bucket ``b`` holds slots ``b * factor``
    to ``b * factor + factor - 1``. Slots outside ``values`` count as missing.
    """
    m, n = values.shape
    cols = np.arange(b0 * factor, b1 * factor) - first_slot
    ok = (cols >= 0) & (cols < n)
    flat = np.full((m, len(cols)), np.nan)
    flat[:, ok] = values[:, cols[ok]]
    block = flat.reshape(m, b1 - b0, factor)
    cnt = np.isfinite(block).sum(axis=2)
    with np.errstate(invalid="ignore"):
        return np.where(cnt * 2 >= factor, np.nansum(block, axis=2) / np.maximum(cnt, 1), np.nan)


def _check_period(period: int, seasons: int, calibration_points: int) -> None:
    if not isinstance(period, (int, np.integer)) or period < 2:
        raise ValueError(f"period must be a whole number of points >= 2, got {period!r}")
    if seasons < 1:
        raise ValueError(f"seasons must be at least 1, got {seasons}")
    if calibration_points < 10:
        raise ValueError(f"calibration_points must be at least 10, got {calibration_points}")


def neighbourhood_means(x: np.ndarray, halfwidth: int) -> np.ndarray:
    """Row-wise NaN-aware centred moving mean of width ``2 * halfwidth + 1`` (NaN where empty)."""
    if halfwidth == 0:
        return x.copy()
    finite = np.isfinite(x)
    v = np.where(finite, x, 0.0)
    w = 2 * halfwidth + 1
    pad = np.zeros((x.shape[0], 1))
    cs = np.concatenate([pad, np.cumsum(v, axis=1)], axis=1)
    cn = np.concatenate([pad, np.cumsum(finite, axis=1, dtype=np.float64)], axis=1)
    n = x.shape[1]
    lo = np.clip(np.arange(n) - halfwidth, 0, n)
    hi = np.clip(np.arange(n) - halfwidth + w, 0, n)
    s = cs[:, hi] - cs[:, lo]
    c = cn[:, hi] - cn[:, lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


#: the seasonal members' calibration (:class:`CalibrationConfig`): the robust z-score's but a lag of
#: 12 points (an hour at 5 minutes) and the exponential tail on
SEASONAL_CALIBRATION = CalibrationConfig(lag=12)


class _ResidualDetector(Detector):
    """A seasonal model's residuals, scored by the shared calibration layer (settings: the subclass's)."""

    calibration_points: int
    min_scale: float
    calibration: CalibrationConfig

    def residuals(self, windows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _score_residuals(
        self,
        windows: np.ndarray,
        status: np.ndarray,
        resid: np.ndarray | None = None,
        quantum: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(newest residual, residual median, z, scale, score, status) of every row (``resid``: the
        residuals, when the caller has them; else :meth:`residuals` of ``windows``; ``quantum``:
        :func:`value_quantum` of the windows' history, when the caller has it)."""
        if resid is None:
            resid = self.residuals(windows)
        hist, new = resid[:, :-1], resid[:, -1]
        # rows whose season is not covered (short window, gaps a period back) are warming up
        known = np.isfinite(hist).sum(axis=1)
        short = (known < self.min_points) | ~np.isfinite(new)
        med, scale = robust_location_scale(hist, self.min_scale)
        # the residual's scale must not collapse below a share of the series' own level noise
        level = nan_median(np.abs(windows[:, -self.calibration_points - 1 : -1]), overwrite=True)
        scale = np.maximum(scale, self.min_scale * np.nan_to_num(level, nan=0.0) + 1e-12)
        cfg = replace(self.calibration, min_points=self.min_points)
        # the residuals of a rounded series are no finer than its values
        if cfg.quantum_floor is None:
            quantum = None
        elif quantum is None:
            quantum = value_quantum(windows[:, :-1])
        log_p, z = calibrated_log_p(hist - med[:, None], new - med, scale, cfg, quantum)
        score = np.where(short, 0.0, pvalue_to_level(log_p))
        status = status.copy()
        status[short & (status == 0)] = 1  # Status.TOO_FEW_POINTS
        return new, med, z, scale, score, status


class SeasonalReference(_ResidualDetector):
    """The newest point against the same phase of the last ``seasons`` periods."""

    name = "seasonal"

    def __init__(
        self,
        period: int = 288,
        seasons: int = 2,
        halfwidth: int = 2,
        calibration_points: int = 144,
        min_points: int = 30,
        min_scale: float = 0.01,
        calibration: CalibrationConfig | None = None,
        nearest: bool = False,
        split: float | None = 4.0,
    ) -> None:
        _check_period(period, seasons, calibration_points)
        if split is not None and not (split > 0 and np.isfinite(split)):
            raise ValueError(f"split must be a positive number of scales or None, got {split!r}")
        self.split = split
        self.period = int(period)
        self.seasons = seasons
        self.halfwidth = halfwidth
        self.calibration_points = calibration_points
        self.history = seasons * period + halfwidth + calibration_points
        self.min_points = min_points
        self.min_scale = min_scale
        self.calibration = SEASONAL_CALIBRATION if calibration is None else calibration
        self.nearest = nearest

    def residuals(self, windows: np.ndarray) -> np.ndarray:
        """Seasonal residuals of the last ``calibration_points + 1`` points of every row (NaN where unknown)."""
        m, n = windows.shape
        c = min(self.calibration_points + 1, n)
        means = neighbourhood_means(windows, self.halfwidth)
        pos = np.arange(n - c, n)
        refs = np.full((self.seasons, m, c), np.nan)
        cur = windows[:, n - c :]
        for k in range(1, self.seasons + 1):
            src = pos - k * self.period
            ok = src >= 0
            mean_k = means[:, src[ok]]
            exact_k = windows[:, src[ok]]
            # the neighbourhood mean smooths noise; the exact phase keeps a scheduled spike: take
            # whichever is nearer (a departure is far from both)
            with np.errstate(invalid="ignore"):
                use_exact = np.abs(cur[:, ok] - exact_k) < np.abs(cur[:, ok] - mean_k)
            refs[k - 1][:, ok] = np.where(use_exact, exact_k, mean_k)
        return cur - self._reference(cur, refs)

    def _reference(self, cur: np.ndarray, refs: np.ndarray) -> np.ndarray:
        """What the season predicts for ``cur`` (rows x points) from each earlier season's ``refs``."""
        m, c = cur.shape
        if self.seasons == 1:
            ref = refs[0]
        elif self.nearest:
            # the season nearest to the value: an incident yesterday does not echo as an anomaly
            # today when the day before was normal (a departure is far from every season)
            with np.errstate(invalid="ignore"):
                dist = np.where(np.isnan(refs), np.inf, np.abs(cur[None] - refs))
            pick = np.argmin(dist, axis=0)
            ref = np.take_along_axis(refs, pick[None], axis=0)[0]
        elif self.seasons == 2:
            with np.errstate(invalid="ignore"):
                ref = np.where(np.isnan(refs[0]), refs[1], np.where(np.isnan(refs[1]), refs[0], refs.mean(axis=0)))
            if self.split is not None:
                ref = self._split_days(cur, refs, ref)
        else:
            ref = nan_median(np.moveaxis(refs, 0, -1).reshape(m * c, self.seasons)).reshape(m, c)
        return ref

    def _split_days(self, cur: np.ndarray, refs: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Where the two earlier days disagree by more than ``split`` of their usual difference, the nearer one.

        One of them was unusual at that phase (an incident yesterday): their mean would make
        today's normal value look like a departure (an echo). The usual difference is the MAD of
        the day-to-day difference over the calibration points, floored at ``min_scale`` of the
        level. Where the days agree, the mean stands, so calibration barely changes.
        """
        d = refs[0] - refs[1]
        med, scale = robust_location_scale(d, 0.0)
        level = nan_median(np.abs(cur), overwrite=True)
        scale = np.maximum(scale, self.min_scale * np.nan_to_num(level, nan=0.0) + 1e-12)
        with np.errstate(invalid="ignore"):
            split = np.abs(d - med[:, None]) > self.split * scale[:, None]
            pick = np.abs(cur - refs[0]) <= np.abs(cur - refs[1])
        return np.where(split, np.where(pick, refs[0], refs[1]), ref)

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        new, med, z, scale, score, status = self._score_residuals(windows, status)
        return Scores(
            score=score,
            direction=np.sign(z).astype(np.int8),
            status=status,
            raw={"seasonal_z": z, "expected": windows[:, -1] - new + med, "seasonal_scale": scale},
        )


class CoarseSeasonalReference(SeasonalReference):
    """The seasonal reference at a fine step, with its earlier days kept at a coarse step.

    At a 60-second step two days are 2,880 points: more than a window store should hold for every
    metric, and more than a scorer should read every minute. This strategy judges the fine
    points against the *coarse* history instead: the means of ``factor`` consecutive points
    (buckets; 5 at 60 s for 5-minute buckets), kept for ``seasons`` periods in a second, small
    ring beside the window store (``workers`` keeps it: :meth:`bucket_means` gives what to write,
    ``season_points`` how many buckets to keep). For each of the last ``calibration_points + 1`` fine
    points the reference of an earlier day is that day's bucket means interpolated linearly
    between bucket centres to the point's time, or the point's own bucket where that is nearer
    the value (as :class:`SeasonalReference` takes the exact phase where it is nearer than the
    neighbourhood mean: a job starting within yesterday's bucket matches it); the days are
    combined as there (mean, ``split``) and the fine residuals calibrated the same way. A row
    is scored once it has two earlier days (one alone would make whatever that day did news
    today, with no second day to tell). What it cannot do that the full-resolution reference
    does: match a spike that recurs at the exact same minute every day (a bucket mean dilutes
    it), so such a spike is judged against its bucket's mean.

    ``period``: buckets per season (288: a day of 5-minute buckets). Without the coarse history
    (:meth:`score`, as for any detector) every row is ``TOO_FEW_POINTS``: the ensemble then
    scores with its other members. Memory: ``4 * season_points`` bytes a metric (2.4 kB for
    two days of 5-minute means) against ``4 * 2 * 1,440`` for the same days at 60 s.
    """

    # it stands in the ensemble where the full-resolution reference would (weights, rules, evidence)
    name = "seasonal"

    def __init__(self, period: int = 288, factor: int = 5, seasons: int = 2, **kwargs: Any) -> None:
        if not isinstance(factor, (int, np.integer)) or factor < 2:
            raise ValueError(f"factor must be a whole number of points >= 2 per bucket, got {factor!r}")
        super().__init__(period=period, seasons=seasons, halfwidth=0, **kwargs)
        self.factor = int(factor)
        # fine points: the calibration part, and at least one bucket to write (of the buckets
        # written each time, those older than the window the ensemble reads come out unknown and
        # are not written: they were when they completed)
        self.history = max(self.calibration_points, self.factor)
        #: buckets the coarse ring must hold: the seasons back from the oldest calibration point
        self.season_points = seasons * period + -(-(self.calibration_points + 1) // self.factor) + 3

    def bucket_means(self, windows: np.ndarray, end_slot: int) -> tuple[int, np.ndarray]:
        """(first bucket, means) of the last ``WRITE_BUCKETS`` buckets complete at fine slot ``end_slot``.

        ``windows`` end at ``end_slot``; bucket ``b`` holds fine slots ``b * factor`` to
        ``b * factor + factor - 1``. A bucket with fewer than half its points is NaN (unknown).
        Writing the last few buckets again each time a bucket completes takes in points that
        arrived late.
        """
        last = (end_slot + 1) // self.factor - 1  # the newest complete bucket
        first = last - WRITE_BUCKETS + 1
        return first, bucket_means(windows, end_slot - windows.shape[1] + 1, self.factor, first, last + 1)

    def spans(self, end_slot: int) -> list[tuple[int, int]]:
        """(last bucket, buckets) of the coarse history each earlier season reads, nearest season first.

        Each span covers the buckets around the same phase, ``k`` seasons back, of the last
        ``calibration_points + 1`` fine points ending at fine slot ``end_slot``.
        """
        f, c = self.factor, self.calibration_points + 1
        count = -(-c // f) + 3
        return [((end_slot - k * self.period * f) // f + 1, count) for k in range(1, self.seasons + 1)]

    def coarse_residuals(
        self, windows: np.ndarray, coarse: Sequence[np.ndarray], end_slot: int | np.ndarray
    ) -> np.ndarray:
        """Fine residuals of the last ``calibration_points + 1`` points against the coarse earlier days.

        ``coarse``: for each span of :meth:`spans`, rows x buckets of bucket means ending at the
        span's last bucket (NaN: unknown). ``end_slot``: the windows' newest fine slot, one for
        every row or one per row (a block of steps scored at once, each row its own step).
        Where a point falls between bucket centres depends only on ``end_slot`` modulo the
        bucket's ``factor`` (the arithmetic is done relative to the span), so rows are scored a
        residue at a time with the same arithmetic as one step: the residuals are the same.
        """
        if np.ndim(end_slot) > 0:
            ends = np.asarray(end_slot, dtype=np.int64)
            out = np.empty((windows.shape[0], min(self.calibration_points + 1, windows.shape[1])))
            residue = ends % self.factor
            for r in np.unique(residue):
                sel = np.flatnonzero(residue == r)
                out[sel] = self.coarse_residuals(windows[sel], [seg[sel] for seg in coarse], int(ends[sel[0]]))
            return out
        end_slot = int(end_slot)
        m, n = windows.shape
        f, c = self.factor, min(self.calibration_points + 1, n)
        cur = windows[:, n - c :]
        u = np.arange(end_slot - c + 1, end_slot + 1)
        refs = np.empty((self.seasons, m, c))  # every element is written below
        for k, ((last, count), seg) in enumerate(zip(self.spans(end_slot), coarse, strict=True), start=1):
            # a bucket's mean stands at its centre; interpolate between the two centres around the
            # point (in buckets from the span's first, whole numbers first: one rounding)
            x = (u - k * self.period * f - f * (last - count + 1) - (f - 1) / 2.0) / f
            i0 = np.floor(x).astype(np.int64)
            w1 = x - i0
            ok = (i0 >= 0) & (i0 + 1 < count)
            lo = np.clip(i0, 0, count - 2)
            # np.take: a column gather many times faster than fancy indexing
            a, b = np.take(seg, lo, axis=1), np.take(seg, lo + 1, axis=1)
            if not ok.all():
                a[:, ~ok] = np.nan
                b[:, ~ok] = np.nan
            ref = refs[k - 1]
            np.subtract(b, a, out=ref)
            ref *= w1
            ref += a
            gap = np.isnan(ref)
            if gap.any():  # one of the two buckets unknown: the other
                ref[gap] = np.where(np.isnan(a), b, a)[gap]
            # the point's own bucket where nearer: a job that starts within the bucket of
            # yesterday's start matches it, as the exact phase does at full resolution (a
            # departure is far from both)
            own = np.take(seg, np.where(w1 >= 0.5, lo + 1, lo), axis=1)
            if not ok.all():
                own[:, ~ok] = np.nan
            d_own = np.subtract(cur, own)
            np.abs(d_own, out=d_own)
            d_ref = np.subtract(cur, ref)
            np.abs(d_ref, out=d_ref)
            with np.errstate(invalid="ignore"):
                np.copyto(ref, own, where=d_own < d_ref)
        return cur - self._reference(cur, refs)

    def score_coarse(
        self,
        windows: np.ndarray,
        coarse: Sequence[np.ndarray] | None,
        end_slot: int | np.ndarray,
        quantum: np.ndarray | None = None,
    ) -> Scores:
        """Score the newest point of every row against the coarse history (:meth:`coarse_residuals`; None:
        not kept). ``quantum``: :func:`value_quantum` of every row's history, when the caller has it."""
        arr, status, clean = self._prepare(windows)
        segs = [np.asarray(c, dtype=np.float64) for c in coarse] if coarse is not None else []
        # rows without earlier days kept (a new metric, a new deployment) skip the work
        known = self.ready(segs) if segs else np.zeros(len(status), dtype=bool)
        out = self._warming(status)
        rows = np.flatnonzero(known)
        if len(rows):
            sub = clean[rows]
            ends = end_slot[rows] if np.ndim(end_slot) > 0 else end_slot  # type: ignore[index]
            resid = self.coarse_residuals(sub, [seg[rows] for seg in segs], ends)
            q = quantum[rows] if quantum is not None else None
            new, med, z, scale, score, st = self._score_residuals(sub, status[rows], resid, q)
            out.score[rows], out.status[rows] = score, st
            out.direction[rows] = np.sign(z).astype(np.int8)
            full = {"seasonal_z": z, "expected": sub[:, -1] - new + med, "seasonal_scale": scale}
            for key, v in full.items():
                out.raw[key] = np.full(len(status), np.nan)
                out.raw[key][rows] = v
        return self._finish(arr, status, out)

    def ready(self, coarse: Sequence[np.ndarray]) -> np.ndarray:
        """Rows whose coarse history (as :meth:`score_coarse` takes it) holds two earlier days.

        One earlier day alone is no reference: whatever it did (an incident, a batch that day)
        would be news today, and there is no second day to tell (``split``).
        """
        days = np.zeros(len(coarse[0]) if len(coarse) else 0, dtype=np.int64)
        for seg in coarse:
            days += np.isfinite(seg).any(axis=1)
        return days >= min(self.seasons, 2)

    def _warming(self, status: np.ndarray) -> Scores:
        m = len(status)
        st = status.copy()
        st[st == 0] = 1  # Status.TOO_FEW_POINTS
        return Scores(score=np.zeros(m), direction=np.zeros(m, dtype=np.int8), status=st)

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        # a window alone holds no earlier day at this step
        return self._warming(status)


class HoltWinters(_ResidualDetector):
    """Additive Holt-Winters one-step forecast residual, vectorized over metrics."""

    name = "holt_winters"

    def __init__(
        self,
        period: int = 288,
        alpha: float = 0.2,
        beta: float = 0.0,
        gamma: float = 0.3,
        clip: float = 4.0,
        calibration_points: int = 144,
        fit: int | None = None,
        min_points: int = 30,
        min_scale: float = 0.01,
        calibration: CalibrationConfig | None = None,
    ) -> None:
        _check_period(period, 1, calibration_points)
        for label, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {v}")
        if clip <= 0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.period = int(period)
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.clip = clip
        self.calibration_points = calibration_points
        # points run through the recursion before the calibration part: one period to initialise
        # and, by default, one more to settle
        self.fit = 2 * period if fit is None else fit
        self.history = self.fit + calibration_points
        self.min_points = min_points
        self.min_scale = min_scale
        self.calibration = SEASONAL_CALIBRATION if calibration is None else calibration

    def residuals(self, windows: np.ndarray) -> np.ndarray:
        """One-step forecast errors of the last ``calibration_points + 1`` points (NaN where unknown)."""
        m, n = windows.shape
        p = self.period
        c = min(self.calibration_points + 1, n)
        out = np.full((m, c), np.nan)
        if n < p + c:
            return out
        with np.errstate(all="ignore"):
            first = windows[:, :p]
            cnt = np.isfinite(first).sum(axis=1)
            level = np.where(cnt > 0, np.where(np.isfinite(first), first, 0.0).sum(axis=1) / np.maximum(cnt, 1), np.nan)
            season = first - level[:, None]
            season = np.where(np.isfinite(season), season, 0.0)
            level = np.nan_to_num(level, nan=0.0)
            trend = np.zeros(m)
            # a robust scale of first differences bounds the innovations
            d = np.diff(windows, axis=1)
            scale = nan_median(np.abs(d - nan_median(d)[:, None])) * 1.4826 / np.sqrt(2.0)
            scale = np.maximum(np.nan_to_num(scale, nan=0.0), self.min_scale * np.abs(level) + 1e-12)
            a, b, g = self.alpha, self.beta, self.gamma
            # time-major copies: one step of every metric is a contiguous row
            xs = np.ascontiguousarray(windows.T)
            seasonal = np.empty((n, m))
            seasonal[:p] = season.T
            lim = self.clip * scale
            res = np.empty((c, m))
            for t in range(p, n):
                s_prev = seasonal[t - p]
                f = level + trend + s_prev
                e = xs[t] - f
                if t >= n - c:
                    res[t - (n - c)] = e
                ok = np.isfinite(e)
                e = np.clip(np.where(ok, e, 0.0), -lim, lim)
                new_level = level + trend + a * e
                if b:
                    trend = trend + b * (new_level - level - trend)
                # s_t = g (x - l_t) + (1 - g) s_{t-p}, with x = f + e (clipped); a missing x keeps s_{t-p}
                seasonal[t] = s_prev + g * (1 - a) * e
                level = new_level
            out[:] = res.T
        return out

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        _, _, z, scale, score, status = self._score_residuals(windows, status)
        return Scores(
            score=score,
            direction=np.sign(z).astype(np.int8),
            status=status,
            raw={"hw_z": z, "hw_scale": scale},
        )
