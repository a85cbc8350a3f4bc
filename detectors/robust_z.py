"""Robust z-score: how far the newest point is from the recent median, in MAD units.

Idea: median and median absolute deviation of the last ``history`` points describe normal
without being dragged by the outliers we look for. ``z = (x - median) / (1.4826 * MAD)``.
Real metrics have heavier tails than a normal: when the ``tail_quantile`` of the history's own
``|z|`` is larger than a normal's, the scale is stretched by that ratio, so a latency series
with routine 5-sigma blips needs a proportionally bigger excursion to score the same.
Parameters: ``history`` (points of context), ``min_points`` (warm-up), ``min_scale`` (relative
floor of the scale, so quantized or near-constant series do not explode), ``tail_quantile``
(None turns the tail stretch off), ``recurrence`` and ``min_recurrences`` (when the older
history holds at least that many separate episodes that deviated by ``recurrence`` times the
newest deviation or more, the score is their empirical rate instead: a cron job's hourly spike
is not news, but one earlier failure does not make the next one routine), ``tail_lag`` (the newest
points left out of the tail estimate, so an ongoing anomaly does not teach the detector that it
is normal), ``max_stretch`` (heavy tails earn at most this factor: an earlier incident in the
history would otherwise pass for a heavy tail and hide the next one).
Cost: one partial sort per row for the median and MAD and one for the tail quantile, ``O(n)``
each, vectorized over all rows.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import log_ndtr, ndtri

from detectors.base import Detector, Scores, pvalue_to_score
from detectors.rowstats import nan_median, nan_quantiles

MAD_TO_SIGMA = 1.4826


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


def tail_stretch(hist: np.ndarray, med: np.ndarray, scale: np.ndarray, q: float) -> np.ndarray:
    """How much heavier than a normal's the history's |z| tail is at quantile ``q`` (at least 1)."""
    zq = nan_quantiles(np.abs(hist - med[:, None]) / scale[:, None], (q,))[0]
    return np.maximum(1.0, np.nan_to_num(zq, nan=1.0) / float(ndtri(0.5 + q / 2)))


class RobustZScore(Detector):
    """Newest point against the median/MAD of the preceding ``history`` points."""

    name = "robust_z"

    def __init__(
        self,
        history: int = 240,
        min_points: int = 30,
        min_scale: float = 0.01,
        tail_quantile: float | None = 0.99,
        tail_lag: int = 30,
        recurrence: float | None = 0.7,
        min_recurrences: int = 2,
        max_stretch: float = 2.0,
    ) -> None:
        self.history = history
        self.min_points = min_points
        self.min_scale = min_scale
        self.tail_quantile = tail_quantile
        self.tail_lag = tail_lag
        self.recurrence = recurrence
        self.min_recurrences = min_recurrences
        self.max_stretch = max_stretch

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        hist = windows[:, :-1]
        newest = windows[:, -1]
        med, scale = robust_location_scale(hist, self.min_scale)
        older = hist[:, : max(self.min_points, hist.shape[1] - self.tail_lag)]
        if self.tail_quantile is not None:
            scale = scale * np.minimum(tail_stretch(older, med, scale, self.tail_quantile), self.max_stretch)
        dev = newest - med
        z = np.nan_to_num(dev / scale, nan=0.0)
        log_p = np.log(2.0) + log_ndtr(-np.abs(z))
        if self.recurrence is not None:
            # a deviation this large happened in several separate episodes before (cron jobs, routine
            # blips): use their empirical rate. One earlier episode, however long, is not a routine:
            # a service failing again an hour later is news.
            big = np.abs(older - med[:, None]) >= self.recurrence * np.abs(dev)[:, None]
            episodes = big[:, 0].astype(np.int64) + (big[:, 1:] & ~big[:, :-1]).sum(axis=1)
            n_old = np.maximum(np.isfinite(older).sum(axis=1), 1)
            emp = np.where(episodes >= self.min_recurrences, np.log(np.maximum(episodes, 1) / n_old), -np.inf)
            log_p = np.maximum(log_p, emp)
        score = pvalue_to_score(log_p)
        direction = np.sign(z).astype(np.int8)
        return Scores(score=score, direction=direction, status=status, raw={"z": z, "median": med, "scale": scale})
