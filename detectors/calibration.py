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
  failure does not make the next one routine.
- ``lag``: the newest residuals are left out of both estimates, so an ongoing anomaly does not
  teach the layer that it is normal.

Because seasonal strategies feed *seasonal* residuals, seasonality is part of the history the
newest point is judged against. Cost: one row sort for the tail quantile and one pass for the
episodes, vectorized over metrics.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr, ndtri

from detectors.rowstats import nan_median, nan_quantiles

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


def robust_location_scale(hist: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise median and a MAD-based scale with fallbacks for degenerate rows."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
        med = nan_median(hist)
        dev = np.abs(hist - med[:, None])
        mad = nan_median(dev) * MAD_TO_SIGMA
        # quantized series (counts) often have MAD 0: fall back to the mean absolute deviation
        meandev = np.nanmean(dev, axis=1) * 1.2533
    scale = np.where(mad > 0, mad, meandev)
    floor = min_scale * np.maximum(np.abs(med), 1e-9)
    scale = np.maximum(np.nan_to_num(scale, nan=0.0), np.nan_to_num(floor, nan=1e-9))
    return med, scale


def tail_stretch(dev: np.ndarray, scale: np.ndarray, q: float) -> np.ndarray:
    """How much heavier than a normal's the |dev / scale| tail is at quantile ``q`` (at least 1)."""
    zq = nan_quantiles(np.abs(dev) / scale[:, None], (q,))[0]
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
    dev_hist: np.ndarray, dev_new: np.ndarray, scale: np.ndarray, cfg: CalibrationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Natural-log two-sided tail probability of ``dev_new`` and its calibrated z, per row.

    ``dev_hist`` (rows x points, NaN allowed) are the history's deviations from the strategy's
    expectation, ``dev_new`` the newest point's, ``scale`` the robust scale of normal deviations.
    """
    n = dev_hist.shape[1]
    older = dev_hist[:, : max(min(cfg.min_points, n), n - cfg.lag)]
    scale = base_scale = np.asarray(scale, dtype=np.float64)
    if cfg.tail_quantile is not None and older.shape[1]:
        scale = scale * np.minimum(tail_stretch(older, scale, cfg.tail_quantile), cfg.max_stretch)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.nan_to_num(dev_new / scale, nan=0.0, posinf=0.0, neginf=0.0)
    log_p = np.log(2.0) + log_ndtr(-np.abs(z))
    if cfg.evt_share is not None and older.shape[1]:
        log_p = np.maximum(log_p, exponential_tail_log_p(older, dev_new, base_scale, cfg.evt_share))
    if cfg.recurrence is not None and older.shape[1]:
        with np.errstate(invalid="ignore"):
            big = np.abs(older) >= cfg.recurrence * np.abs(dev_new)[:, None]
        episodes = big[:, 0].astype(np.int64) + (big[:, 1:] & ~big[:, :-1]).sum(axis=1)
        n_old = np.maximum(np.isfinite(older).sum(axis=1), 1)
        emp = np.where(
            episodes >= cfg.min_recurrences, np.log(np.maximum(episodes, 1) / n_old), -np.inf
        )
        log_p = np.maximum(log_p, emp)
    return log_p, z
