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


def calibrated_log_p(
    dev_hist: np.ndarray, dev_new: np.ndarray, scale: np.ndarray, cfg: CalibrationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Natural-log two-sided tail probability of ``dev_new`` and its calibrated z, per row.

    ``dev_hist`` (rows x points, NaN allowed) are the history's deviations from the strategy's
    expectation, ``dev_new`` the newest point's, ``scale`` the robust scale of normal deviations.
    """
    n = dev_hist.shape[1]
    older = dev_hist[:, : max(min(cfg.min_points, n), n - cfg.lag)]
    scale = np.asarray(scale, dtype=np.float64)
    if cfg.tail_quantile is not None and older.shape[1]:
        scale = scale * np.minimum(tail_stretch(older, scale, cfg.tail_quantile), cfg.max_stretch)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.nan_to_num(dev_new / scale, nan=0.0, posinf=0.0, neginf=0.0)
    log_p = np.log(2.0) + log_ndtr(-np.abs(z))
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
