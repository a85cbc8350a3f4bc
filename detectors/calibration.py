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
from scipy.special import log_ndtr, ndtri

from stormeye.detectors.rowstats import nan_median, nan_quantiles

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
        mag = np.nan_to_num(np.nanmax(np.abs(s), axis=1, initial=0.0, where=np.isfinite(s)), nan=0.0)
        real = np.isfinite(gaps) & (gaps > 1e-9 * np.maximum(mag, 1e-300)[:, None])
    q = np.min(np.where(real, gaps, np.inf), axis=1)
    return np.where(np.isfinite(q), q, 0.0)


def robust_location_scale(hist: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise median and a MAD-based scale with fallbacks for degenerate rows."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
        med = nan_median(hist)
        dev = np.abs(hist - med[:, None])
        # quantized series (counts) often have MAD 0: fall back to the mean absolute deviation
        meandev = np.nanmean(dev, axis=1) * 1.2533
        mad = nan_median(dev, overwrite=True) * MAD_TO_SIGMA  # dev is ours: sorted in place, last
    scale = np.where(mad > 0, mad, meandev)
    floor = min_scale * np.maximum(np.abs(med), 1e-9)
    scale = np.maximum(np.nan_to_num(scale, nan=0.0), np.nan_to_num(floor, nan=1e-9))
    return med, scale


def tail_stretch(dev: np.ndarray, scale: np.ndarray, q: float) -> np.ndarray:
    """How much heavier than a normal's the |dev / scale| tail is at quantile ``q`` (at least 1)."""
    zq = nan_quantiles(np.abs(dev) / scale[:, None], (q,), overwrite=True)[0]
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
        exc = np.where(a > u[:, None], a - u[:, None], np.nan)
    cnt = np.isfinite(exc).sum(axis=1)
    beta = np.where(cnt > 0, np.nansum(np.nan_to_num(exc, nan=0.0), axis=1) / np.maximum(cnt, 1), np.nan)
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
    idx = np.arange(big.shape[1])
    last_off = np.maximum.accumulate(np.where(big, -1, idx), axis=1)
    return np.count_nonzero((idx - last_off) == length[:, None], axis=1)
