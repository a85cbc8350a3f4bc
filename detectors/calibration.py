"""Calibration: how unusual is a residual *for this metric*, given its own recent residuals.

Every residual strategy (robust z, seasonal reference, Holt-Winters) produces, per metric, a
residual series over its window (value minus what the strategy expected) and a robust scale.
A normal model of ``residual / scale`` would make a score mean different things on a
heavy-tailed latency metric and on a smooth gauge. This layer turns the newest residual into a
tail probability against the metric's *own* residual history — the anomaly-likelihood idea,
made stateless so it is derived from the window alone (the distributed mode then needs no
per-metric state):

- **tail stretch**: when the ``tail_quantile`` of the history's own ``|z|`` is above a normal's,
  the scale is stretched by that ratio (at most ``max_stretch``: an earlier incident in the
  window would otherwise pass for a heavy tail and hide the next one);
- **recurrence (auto-silencing)**: when at least ``min_recurrences`` separate earlier episodes
  in the window deviated by ``recurrence`` times the newest deviation or more, the tail
  probability is their empirical rate instead. An anomaly that keeps repeating (a cron spike,
  a nightly batch, a flapping check) silences itself after its second repeat; one earlier
  failure does not make the next one routine. Only episodes that lasted at least as long as the
  newest run (the points in a row, back from the newest, that deviated by ``recurrence`` times
  the newest deviation) count (``recurrence_by_length``): a cron job's one-point spikes silence
  the next spike, not its output doubling for ten minutes. Without it, on a cron-spiky series a
  sustained shift smaller than the spikes scored their rate (~0.2, the watch level) for as long
  as it lasted: 25 disk_io series doubling for 34 minutes in a demo storm went unseen.
- ``lag``: the newest residuals are left out of both estimates, so an ongoing anomaly does not
  teach the layer that it is normal.
- **quantum floor**: the scale is at least ``quantum_floor`` times the metric's *quantum*, the
  smallest nonzero gap between distinct values in its recent history (:func:`value_quantum`).
  A series that only takes values 0.01 apart (a rounded gauge, a count, a percentage with two
  decimals) cannot measure a deviation finer than 0.01: when it sits on one level for hours its
  MAD collapses towards 0 and a one-quantum step would otherwise score as a one-in-a-million
  event. With the floor, a one-quantum move is at most a 1-sigma move; continuous series have a
  quantum far below their scale and are unaffected.

Because seasonal strategies feed *seasonal* residuals, seasonality is part of the history the
newest point is judged against. Cost: one row sort for the tail quantile and one pass for the
episodes, vectorized over metrics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import log_ndtr, ndtri

from stormeye.detectors.rowstats import nan_median, nan_quantiles, quantiles_of_sorted, sorted_rows

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class CalibrationConfig:
    """The knobs of :func:`calibrated_log_p` (shared by every residual strategy)."""

    tail_quantile: float | None = 0.99
    max_stretch: float = 2.0
    recurrence: float | None = 0.7
    min_recurrences: int = 2
    lag: int = 30
    min_points: int = 30
    #: share of the history above the exponential tail's threshold (None: no extreme-value tail)
    evt_share: float | None = 0.1
    #: the scale is at least this many quanta of the metric's values (None: no floor)
    quantum_floor: float | None = 1.0
    #: recurrences must have lasted as long as the newest run of such deviations: a cron job's
    #: one-point spikes do not make its output doubling for ten minutes routine
    recurrence_by_length: bool = True

    def __post_init__(self) -> None:
        if self.tail_quantile is not None and not 0.5 < self.tail_quantile < 1.0:
            raise ValueError(f"tail_quantile must be in (0.5, 1) or None, got {self.tail_quantile}")
        if self.max_stretch < 1.0:
            raise ValueError(f"max_stretch must be at least 1, got {self.max_stretch}")
        if self.recurrence is not None and self.recurrence <= 0:
            raise ValueError(f"recurrence must be positive or None, got {self.recurrence}")
        if self.min_recurrences < 1:
            raise ValueError(f"min_recurrences must be at least 1, got {self.min_recurrences}")
        if self.lag < 0:
            raise ValueError(f"lag must be >= 0, got {self.lag}")
        if self.quantum_floor is not None and not (self.quantum_floor > 0 and np.isfinite(self.quantum_floor)):
            raise ValueError(f"quantum_floor must be a positive number of quanta or None, got {self.quantum_floor}")


#: points of history :func:`value_quantum` looks at (the newest ones; enough to see every level
#: a quantized series visits in a few hours, and one row sort of this size per call)
QUANTUM_POINTS = 240


def value_quantum(hist: np.ndarray, points: int = QUANTUM_POINTS) -> np.ndarray:
    """Per row, the smallest nonzero gap between distinct finite values of the newest ``points``.

    That is the resolution the metric is reported at (0.01 for a gauge rounded to two decimals,
    1 for a count). Rows with fewer than two distinct values have quantum 0 (no evidence of a
    resolution: the constant-series checks and the relative scale floor handle them). Gaps below
    ``1e-9`` times the row's magnitude are float noise, not a resolution, and are ignored.
    """
    x = hist[:, -points:] if hist.shape[1] > points else hist
    if x.shape[1] < 2:
        return np.zeros(x.shape[0])
    s = np.sort(x, axis=1)  # NaNs last: their gaps are NaN and ignored
    with np.errstate(invalid="ignore"):
        gaps = np.diff(s, axis=1)
        # the largest finite |value| is at one end of the row's finite run (sorted: -inf, finite
        # values, +inf, NaN): two gathers instead of a pass over the row
        fin = np.isfinite(s)
        n_fin = fin.sum(axis=1)
        first = np.argmax(fin, axis=1)
        last = first + np.maximum(n_fin - 1, 0)
        r = np.arange(s.shape[0])
        mag = np.where(n_fin > 0, np.maximum(np.abs(s[r, first]), np.abs(s[r, last])), 0.0)
        real = np.isfinite(gaps) & (gaps > 1e-9 * np.maximum(mag, 1e-300)[:, None])
    q = np.min(np.where(real, gaps, np.inf), axis=1)
    return np.where(np.isfinite(q), q, 0.0)


def robust_location_scale(hist: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise median and a MAD-based scale with fallbacks for degenerate rows."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
        med = nan_median(hist)
        dev = np.abs(hist - med[:, None])
        mad = nan_median(dev) * MAD_TO_SIGMA
        # quantized series (counts) often have MAD 0: fall back to the mean absolute deviation,
        # computed for those rows only (row by row it is the same mean)
        scale = mad.copy()
        need = ~(mad > 0)
        if need.any():
            scale[need] = np.nanmean(dev[need], axis=1) * 1.2533
    floor = min_scale * np.maximum(np.abs(med), 1e-9)
    scale = np.maximum(np.nan_to_num(scale, nan=0.0), np.nan_to_num(floor, nan=1e-9))
    return med, scale


def tail_stretch(dev: np.ndarray, scale: np.ndarray, q: float) -> np.ndarray:
    """How much heavier than a normal's the |dev / scale| tail is at quantile ``q`` (at least 1)."""
    s, n = sorted_rows(np.abs(dev), overwrite=True)
    zq = quantiles_of_sorted(s, n, (q,), divisor=scale)[0]
    return np.maximum(1.0, np.nan_to_num(zq, nan=1.0) / float(ndtri(0.5 + q / 2)))


def exponential_tail_log_p(older: np.ndarray, dev_new: np.ndarray, scale: np.ndarray, share: float) -> np.ndarray:
    """Log tail probability of ``|dev_new|`` under an exponential tail fitted to the history's top ``share``.

    Peaks over threshold with a generalised Pareto of shape 0 (as SPOT does): ``u`` is the
    ``1 - share`` quantile of the history's ``|dev| / scale``, ``beta`` the mean excess over it
    (at least that of a normal's tail, 0.37 for share 0.1), and ``p = share * exp(-(|z| - u) / beta)``
    beyond ``u``. Heavy-tailed, spiky metrics get large ``beta`` and need proportionally larger
    excursions; it never claims more than the data can support at the metric's own tail.
    """
    a = np.abs(older) / scale[:, None]
    u = nan_quantiles(a, (1.0 - share,))[0]
    with np.errstate(invalid="ignore"):
        over = a > u[:, None]  # NaN is never over
        cnt = over.sum(axis=1)
        total = np.where(over, a - u[:, None], 0.0).sum(axis=1)
    beta = np.where(cnt > 0, total / np.maximum(cnt, 1), np.nan)
    beta = np.maximum(np.nan_to_num(beta, nan=0.0), 0.37)
    zn = np.abs(dev_new) / scale
    with np.errstate(invalid="ignore"):
        lp = np.log(share) - np.maximum(zn - u, 0.0) / beta
    return np.where(np.isfinite(u) & np.isfinite(lp), lp, -np.inf)


def calibrated_log_p(
    dev_hist: np.ndarray,
    dev_new: np.ndarray,
    scale: np.ndarray,
    cfg: CalibrationConfig,
    quantum: np.ndarray | None = None,
    memory: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Natural-log two-sided tail probability of ``dev_new`` and its calibrated z, per row.

    ``dev_hist`` (rows x points, NaN allowed) are the history's deviations from the strategy's
    expectation, ``dev_new`` the newest point's, ``scale`` the robust scale of normal deviations,
    ``quantum`` the resolution of the metric's values (:func:`value_quantum`; None: no floor).
    ``memory``: deviations over a longer look-back (rows x more points, ending where ``dev_hist``
    ends) for the recurrence rule only: episodes are counted over it, while the scale and its
    tail stay those of ``dev_hist`` (None: the recurrence looks over ``dev_hist``).
    """
    n = dev_hist.shape[1]
    older = dev_hist[:, : max(min(cfg.min_points, n), n - cfg.lag)]
    scale = np.asarray(scale, dtype=np.float64)
    if quantum is not None and cfg.quantum_floor is not None:
        scale = np.maximum(scale, cfg.quantum_floor * np.asarray(quantum, dtype=np.float64))
    base_scale = scale
    if cfg.tail_quantile is not None and older.shape[1]:
        scale = scale * np.minimum(tail_stretch(older, scale, cfg.tail_quantile), cfg.max_stretch)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.nan_to_num(dev_new / scale, nan=0.0, posinf=0.0, neginf=0.0)
    log_p = np.log(2.0) + log_ndtr(-np.abs(z))
    if cfg.evt_share is not None and older.shape[1]:
        log_p = np.maximum(log_p, exponential_tail_log_p(older, dev_new, base_scale, cfg.evt_share))
    recent = dev_hist[:, older.shape[1] :]  # the lag: left out of every estimate
    if memory is not None and memory.shape[1] > dev_hist.shape[1]:
        older = memory[:, : memory.shape[1] - recent.shape[1]]
    if cfg.recurrence is not None and older.shape[1]:
        with np.errstate(invalid="ignore"):
            big = np.abs(older) >= cfg.recurrence * np.abs(dev_new)[:, None]
        if cfg.recurrence_by_length:
            length = _newest_run(recent, dev_new, cfg.recurrence)
        else:
            length = np.ones(len(dev_new), dtype=np.int64)  # every episode, however short
        episodes = _runs_reaching(big, length)
        n_old = np.maximum(np.isfinite(older).sum(axis=1), 1)
        emp = np.where(episodes >= cfg.min_recurrences, np.log(np.maximum(episodes, 1) / n_old), -np.inf)
        log_p = np.maximum(log_p, emp)
    return log_p, z


def _newest_run(recent: np.ndarray, dev_new: np.ndarray, share: float) -> np.ndarray:
    """Per row: how many points in a row, back from the newest and the newest included, deviated
    by at least ``share`` of the newest deviation (at most the recent points + 1)."""
    with np.errstate(invalid="ignore"):
        not_big = ~(np.abs(recent[:, ::-1]) >= share * np.abs(dev_new)[:, None])
    first = np.where(not_big.any(axis=1), np.argmax(not_big, axis=1), recent.shape[1])
    return first.astype(np.int64) + 1


def _runs_reaching(big: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Per row: the runs of ``big`` at least ``length`` (per row) points long. A run's running
    length passes each value up to its full length once, so such runs are the points where it
    equals ``length``."""
    # offsets in the narrowest integer that holds them: the running maximum is a pass over
    # rows x points, a quarter of the memory traffic in int16 (the counts are the same)
    dtype = np.int16 if big.shape[1] < np.iinfo(np.int16).max else np.int64
    idx = np.arange(big.shape[1], dtype=dtype)
    last_off = np.maximum.accumulate(np.where(big, dtype(-1), idx), axis=1)
    run = idx - last_off
    return np.count_nonzero(run == np.minimum(length, big.shape[1] + 1).astype(dtype)[:, None], axis=1)


# ---------------------------------------------------------------- the tail ledger: calibration over days


@dataclass(frozen=True)
class LedgerConfig:
    """The knobs of :class:`TailLedger`."""

    #: half-life of the ledger's memory, in steps (3 days at a 60-second step)
    halflife_steps: float = 4320.0
    #: levels (``-log10(p) / 10`` of the detector) at which a metric's points are counted
    #: (the last is the highest level a detector gives: 1e-300, float64's floor)
    thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
    #: weight, in points, of the prior that the detector's own claim is right (a metric with few
    #: points seen is taken at the detector's word, not at a chance exceedance or two)
    prior_points: float = 100.0
    #: points after which a metric's own record outweighs the estate's (every metric's, pooled)
    warm_points: float = 1440.0
    #: an episode (points in a row at or above the lowest threshold) is counted when it ends, so an
    #: ongoing anomaly does not teach its metric that it is normal while it lasts; one that lasts
    #: this many steps is counted anyway (it has become the metric's normal)
    max_pending: int = 720

    def __post_init__(self) -> None:
        if not self.halflife_steps > 0:
            raise ValueError(f"halflife_steps must be positive, got {self.halflife_steps}")
        t = np.asarray(self.thresholds, dtype=np.float64)
        if t.ndim != 1 or not len(t) or np.any(t <= 0) or np.any(np.diff(t) <= 0):
            raise ValueError(f"thresholds must be positive and increasing, got {self.thresholds}")
        if self.prior_points < 0 or self.warm_points < 0:
            raise ValueError("prior_points and warm_points must be >= 0")
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {self.max_pending}")


#: the ledger's memory by default: three days (``STORMEYE_CALIBRATION_HALFLIFE_S``)
LEDGER_HALFLIFE_S = 3 * 86400.0


def ledger_config(step_s: float, halflife_s: float = LEDGER_HALFLIFE_S) -> LedgerConfig:
    """The ledger for a step: a half-life of ``halflife_s``, a metric's own record outweighing the
    estate's after a third of it, an episode counted anyway after a sixth of it."""
    steps = max(halflife_s / step_s, 1.0)
    return LedgerConfig(halflife_steps=steps, warm_points=max(steps / 3.0, 1.0), max_pending=max(int(steps / 6), 1))


class TailLedger:
    """Per metric, how often its detector's levels were reached over the last days; calibrates new ones.

    A detector's level claims a tail probability under the detector's model of the window
    (``p = 10^(-10 level)``). The window holds hours; a metric's days hold what hours cannot
    foresee (a quiet night then a busy morning, a nightly batch, a counter that bursts every few
    hours). The ledger keeps, per metric, the decayed count of points seen and of points whose
    level reached each of :attr:`LedgerConfig.thresholds`, and answers: how often does *this
    metric* reach this level? The calibrated tail probability of a level ``L`` is

    - at each threshold ``t``: the metric's observed rate of reaching it, shrunk towards the
      detector's claim ``10^(-10 t)`` by ``prior_points`` and, while the metric is young (few
      points against ``warm_points``), blended (in log) with every metric's pooled rate;
    - between thresholds, interpolated in log, but never falling faster than the detector's own
      slope from the lower one (a decade of probability per decade of its model); beyond the
      last threshold, that slope;
    - never smaller than the detector's claim: the ledger only ever discounts.

    So a metric whose model is right keeps its scores; a metric that reaches 1e-10-levels once a
    day (1 point in 1,440) has them scored about ``p = 7e-4`` (0.32), and a move far beyond
    anything it did before still scores high. Points at or above the lowest threshold are held
    until their episode ends (``max_pending``). Vectorized over metrics; the state is a few floats
    per metric (:meth:`to_state`). No clock: one :meth:`update` call is one step.
    """

    def __init__(self, cfg: LedgerConfig | None = None) -> None:
        self.cfg = cfg or LedgerConfig()
        self._t = np.asarray(self.cfg.thresholds, dtype=np.float64) * 10.0  # in decades
        self._decay = 0.5 ** (1.0 / self.cfg.halflife_steps)
        k = len(self._t)
        self.n = np.zeros(0)
        self.c = np.zeros((0, k))
        self.pend_n = np.zeros(0)
        self.pend_c = np.zeros((0, k))
        self.run = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.n)

    def _grow(self, m: int) -> None:
        extra = m - len(self.n)
        if extra <= 0:
            return
        k = len(self._t)
        self.n = np.concatenate([self.n, np.zeros(extra)])
        self.pend_n = np.concatenate([self.pend_n, np.zeros(extra)])
        self.run = np.concatenate([self.run, np.zeros(extra, dtype=np.int64)])
        self.c = np.vstack([self.c, np.zeros((extra, k))])
        self.pend_c = np.vstack([self.pend_c, np.zeros((extra, k))])

    def log10_rates(self, rows: np.ndarray) -> np.ndarray:
        """(rows x thresholds): the calibrated log10 tail probability of reaching each threshold."""
        rows = np.asarray(rows, dtype=np.int64)
        self._grow(int(rows.max()) + 1 if len(rows) else 0)
        total = float(self.n.sum())
        pooled = self.c.sum(axis=0) / total if total > 0 else None
        return _log10_rates(self.n[rows], self.c[rows], pooled, self._t, self.cfg)

    def calibrate(self, rows: np.ndarray, level: np.ndarray) -> np.ndarray:
        """The calibrated levels of ``level`` (the detector's, not clipped) for metrics ``rows``."""
        level = np.nan_to_num(np.asarray(level, dtype=np.float64), nan=0.0)
        if not len(level):
            return level.copy()
        return _calibrated(self.log10_rates(rows), level, self._t)

    def update(self, rows: np.ndarray, level: np.ndarray, counted: np.ndarray | None = None) -> None:
        """One step: every metric's record decays and ``rows`` add their level.

        ``counted``: which of ``rows`` were analysed (a warming-up or missing point teaches nothing).
        """
        rows = np.asarray(rows, dtype=np.int64)
        self._grow(int(rows.max()) + 1 if len(rows) else 0)
        lv = np.nan_to_num(np.asarray(level, dtype=np.float64), nan=0.0)
        g = self._decay
        self.n *= g
        self.c *= g
        self.pend_n *= g
        self.pend_c *= g
        if counted is not None:
            rows, lv = rows[counted], lv[counted]
        hit = lv[:, None] * 10.0 >= self._t[None, :]
        inside = hit[:, 0]
        r_in = rows[inside]
        self.pend_n[r_in] += 1.0
        self.pend_c[r_in] += hit[inside]
        self.run[r_in] += 1
        # an episode ends on a point below the lowest threshold; every max_pending steps of one
        # that goes on are counted anyway
        long = r_in[self.run[r_in] % self.cfg.max_pending == 0]
        r_out = rows[~inside]
        self.n[r_out] += 1.0
        self.run[r_out] = 0
        for r in (r_out, long):
            self.n[r] += self.pend_n[r]
            self.c[r] += self.pend_c[r]
            self.pend_n[r] = 0.0
            self.pend_c[r] = 0.0

    def to_state(self) -> dict[str, np.ndarray]:
        return {
            "n": self.n.copy(),
            "c": self.c.copy(),
            "pend_n": self.pend_n.copy(),
            "pend_c": self.pend_c.copy(),
            "run": self.run.copy(),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        n = np.asarray(state["n"], dtype=np.float64)
        k = len(self._t)
        c, pn, pc = (np.asarray(state[x], dtype=np.float64) for x in ("c", "pend_n", "pend_c"))
        run = np.asarray(state["run"], dtype=np.int64)
        if c.shape != (len(n), k) or pc.shape != (len(n), k) or pn.shape != n.shape or run.shape != n.shape:
            raise ValueError(f"ledger state does not match this ledger's {k} thresholds")
        self.n, self.c, self.pend_n, self.pend_c, self.run = n, c, pn, pc, run


def _log10_rates(
    n: np.ndarray, c: np.ndarray, pooled: np.ndarray | None, t: np.ndarray, cfg: LedgerConfig
) -> np.ndarray:
    """(rows x thresholds) calibrated log10 rates from each row's counts (``n`` points, ``c`` at each
    threshold ``t``, in decades) and the pooled rates (thresholds, or rows x thresholds; None: none yet)."""
    a = cfg.prior_points
    n = n[:, None]
    denom = n + a
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.log10(np.maximum(c + a * 10.0**-t, 1e-300) / np.where(denom > 0, denom, 1.0))
    own = np.maximum(np.where(denom > 0, own, -t), -t)
    if pooled is not None and cfg.warm_points > 0:
        pool = np.maximum(np.log10(np.maximum(pooled, 1e-300)), -t)
        w = n / (n + cfg.warm_points)
        own = w * own + (1.0 - w) * pool
    # how much more often than claimed a metric reaches a level never shrinks further out (a tail
    # heavier than the model's at 1e-3 is not lighter at 1e-4, where too few points were seen to
    # tell), and reaching a higher level is never more likely
    own = np.maximum.accumulate(own + t, axis=1) - t
    return np.minimum.accumulate(own, axis=1)


def _calibrated(lr: np.ndarray, level: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Levels calibrated by the rates ``lr`` (rows x thresholds, log10) at ``thresholds`` (decades)."""
    d = level * 10.0
    t = np.concatenate([[0.0], thresholds])
    lr = np.hstack([np.zeros((len(d), 1)), lr])
    last = len(t) - 1
    k = np.clip(np.searchsorted(t, d, side="right") - 1, 0, last)  # the highest threshold <= d
    i = np.arange(len(d))
    nxt = np.minimum(k + 1, last)
    top = k == last
    # between two thresholds, interpolated in log; but never falling faster than the detector's
    # own slope (a decade of probability per decade of its model) from the lower one: a metric
    # that reaches 1e-12 every day has its 1e-12 moves scored from its 1e-10 record, not from the
    # 1e-13 it never reached; beyond the last threshold, that slope
    frac = (d - t[k]) / np.where(top, 1.0, t[nxt] - t[k])
    slope = lr[i, k] - (d - t[k])
    lp = np.where(top, slope, np.maximum(lr[i, k] + frac * (lr[i, nxt] - lr[i, k]), slope))
    lp = np.maximum(lp, -d)  # never more surprising than the detector says
    return np.maximum(-lp / 10.0, 0.0)


def calibrate_series(level: np.ndarray, counted: np.ndarray, cfg: LedgerConfig | None = None) -> np.ndarray:
    """What a fresh :class:`TailLedger` gives one series point by point (``calibrate`` then ``update``
    at every point), computed for the whole series at once: the ledger's counts are exponentially
    decayed sums (one linear filter), minus the points of the episode still pending at each step.
    """
    cfg = cfg or LedgerConfig()
    lv = np.nan_to_num(np.asarray(level, dtype=np.float64), nan=0.0)
    ok = np.asarray(counted, dtype=bool)
    n_pts = len(lv)
    if not n_pts:
        return lv.copy()
    t = np.asarray(cfg.thresholds, dtype=np.float64) * 10.0
    g = 0.5 ** (1.0 / cfg.halflife_steps)
    hit = (lv[:, None] * 10.0 >= t[None, :]) & ok[:, None]
    x = np.hstack([ok[:, None].astype(np.float64), hit.astype(np.float64)])
    full = lfilter([1.0], [1.0, -g], x, axis=0)  # after each point's update, nothing held back
    # the episode pending after each point: counted points at or above the lowest threshold in a
    # row (points not counted are skipped), cut every max_pending of them
    inside = hit[:, 0]
    cidx = np.flatnonzero(ok)
    pend_start = np.full(n_pts, -1, dtype=np.int64)  # first point of the pending part (-1: none)
    if len(cidx):
        ins = inside[cidx]
        starts = ins & ~np.concatenate([[False], ins[:-1]])
        first = np.maximum.accumulate(np.where(starts, np.arange(len(cidx)), 0))
        pos = np.arange(len(cidx)) - first + 1  # 1-based position in its run (inside points)
        chunk_first = first + ((pos - 1) // cfg.max_pending) * cfg.max_pending
        active = ins & (pos % cfg.max_pending != 0)
        at = np.where(active, cidx[np.minimum(chunk_first, len(cidx) - 1)], -1)
        # a point not counted keeps the pending part of the last counted point before it
        last_c = np.maximum.accumulate(np.where(ok, np.arange(n_pts), -1))
        has = last_c >= 0
        pos_in_c = np.searchsorted(cidx, np.where(has, last_c, 0))
        pend_start = np.where(has, at[np.minimum(pos_in_c, len(cidx) - 1)], -1)
    j = np.arange(n_pts)
    before = np.where(pend_start > 0, pend_start - 1, 0)
    decay = g ** (j - pend_start + 1)
    base = np.where((pend_start > 0)[:, None], full[before] * decay[:, None], 0.0)
    pending = np.where((pend_start >= 0)[:, None], full - base, 0.0)
    visible = full - pending  # after each point's update
    # the state each point is calibrated with: after the previous point's update
    state = np.vstack([np.zeros((1, x.shape[1])), visible[:-1]])
    n, c = state[:, 0], state[:, 1:]
    pooled = c / np.where(n > 0, n, 1.0)[:, None]  # one series: the estate is the series itself
    lr = _log10_rates(n, c, pooled, t, cfg)
    return _calibrated(lr, lv, t)
