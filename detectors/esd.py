"""Generalized ESD (Rosner 1983): is the newest point one of up to ``max_outliers`` outliers?

Idea: repeat ``max_outliers`` times: take the point farthest from the mean of what is left, in
standard deviations (``R_i``), and remove it. Rosner's critical values
``lambda_i = (n_i - 1) t / sqrt((n_i - 2 + t^2) n_i)`` with ``t = t.ppf(1 - alpha / (2 n_i), n_i - 2)``
(``n_i`` points left at step ``i``) declare the largest ``i`` with ``R_i > lambda_i`` and
everything removed up to it outliers. Removing the extremes one by one defeats masking: a second
spike does not hide the first behind an inflated standard deviation, as it does for a plain z-score.

Score: each step's ``R_i`` is turned back into its p-value, the Bonferroni-adjusted two-sided t
tail Rosner's critical value was built from (``p_i = 2 n_i t.sf(t_i, n_i - 2)``, so
``R_i > lambda_i`` exactly when ``p_i < alpha``). The newest point, removed at step ``j``, is an
outlier at level ``alpha`` when some ``p_i`` with ``i >= j`` is below ``alpha``, so its score is
``-log10(min_{i >= j} p_i) / 10``; a newest point not among the ``max_outliers`` extremes scores
0. ``raw`` carries ``esd_outliers`` (Rosner's count at ``alpha``, from ``t.ppf``) and whether the
newest point is among them (``esd_newest``).

Parameters: ``history``, ``min_points``, ``max_outliers`` (steps), ``alpha`` (only for the raw
outlier count; the score is the p-value itself). Assumes the history is roughly normal: heavy
tails (latencies) make routine points look like outliers; prefer the robust z-score or SPOT there.
Cost: one row sort. The point farthest from the mean is always the smallest or the largest of
those left, so the points left stay a contiguous range of the sorted row, and a running sum and
sum of squares make each of the ``max_outliers`` steps ``O(1)`` per row. Ties with the newest
point's value count as the newest point.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import special, stats

from stormeye.detectors.base import Detector, Scores, pvalue_to_score


class GeneralizedESD(Detector):
    """Rosner's generalized extreme studentized deviate test, scored for the newest point."""

    name = "esd"

    def __init__(self, history: int = 240, min_points: int = 30, max_outliers: int = 10, alpha: float = 0.05) -> None:
        self.history = history
        self.min_points = min_points
        self.max_outliers = max_outliers
        self.alpha = alpha

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        if not (isinstance(self.max_outliers, int | np.integer) and self.max_outliers >= 1):
            raise ValueError(f"max_outliers must be a positive integer, got {self.max_outliers!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        rows, width = windows.shape
        steps = min(self.max_outliers, max(width - 3, 1))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
            center = np.nanmean(windows, axis=1)
        # the point farthest from the mean is always the smallest or the largest left, so after one
        # sort the points left are a contiguous range [lo, hi] of each sorted row: every step is O(1)
        srt = np.sort(windows - np.nan_to_num(center)[:, None], axis=1)  # centred, NaN last
        cnt = np.isfinite(srt).sum(axis=1).astype(np.float64)
        fin = np.isfinite(srt)
        s1 = np.where(fin, srt, 0.0).sum(axis=1)
        s2 = np.where(fin, srt * srt, 0.0).sum(axis=1)
        newest = windows[:, -1] - np.nan_to_num(center)
        lo = np.zeros(rows, dtype=np.int64)
        hi = np.maximum(cnt.astype(np.int64) - 1, 0)
        r_stat = np.zeros((steps, rows))
        n_left = np.zeros((steps, rows))
        newest_step = np.full(rows, steps)
        at = np.arange(rows)
        for i in range(steps):
            live = hi >= lo
            with np.errstate(all="ignore"):
                mean = s1 / cnt
                sd = np.sqrt(np.maximum(s2 - s1 * s1 / cnt, 0.0) / (cnt - 1))
                small = srt[at, np.minimum(lo, width - 1)]
                large = srt[at, np.minimum(hi, width - 1)]
                take_large = np.abs(large - mean) >= np.abs(small - mean)
                v = np.where(take_large, large, small)
                r_stat[i] = np.where(live & (sd > 0), np.abs(v - mean) / sd, 0.0)
            n_left[i] = cnt
            hit = live & (v == newest) & (newest_step == steps)
            newest_step = np.where(hit, i, newest_step)
            s1 -= np.where(live, v, 0.0)
            s2 -= np.where(live, v * v, 0.0)
            cnt -= live
            hi -= live & take_large
            lo += live & ~take_large
        log_p, crit = _esd_pvalues(r_stat, n_left, self.alpha)
        above = r_stat > crit
        n_out = np.where(above.any(axis=0), steps - np.argmax(above[::-1], axis=0), 0)
        # GESD: the newest point is an outlier if any later step is significant; its p is the smallest
        suffix_min = np.minimum.accumulate(log_p[::-1], axis=0)[::-1]
        found = newest_step < steps
        newest_log_p = np.where(found, suffix_min[np.minimum(newest_step, steps - 1), at], 0.0)
        score = pvalue_to_score(newest_log_p)
        direction = np.sign(np.nan_to_num(windows[:, -1] - center)).astype(np.int8)
        return Scores(
            score=score,
            direction=direction,
            status=status,
            raw={"esd_outliers": n_out, "esd_newest": found & (newest_step < n_out), "esd_r": r_stat[0]},
        )


def _esd_pvalues(r: np.ndarray, n: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Log p-value of each step's ``R`` (Bonferroni over the ``n`` points left) and Rosner's
    critical value at ``alpha``."""
    with np.errstate(all="ignore"):
        df = n - 2
        denom = (n - 1) ** 2 - r * r * n
        t = np.where(denom > 0, np.sqrt(r * r * n * df / np.where(denom > 0, denom, 1.0)), np.inf)
        log_p = np.log(2 * n) + np.log(special.stdtr(df, -t))
        log_p = np.where((df >= 1) & (r > 0), np.minimum(log_p, 0.0), 0.0)
        tq = stats.t.ppf(1 - alpha / (2 * n), df)
        crit = (n - 1) * tq / np.sqrt((df + tq * tq) * n)
    return log_p, np.where(df >= 1, crit, np.inf)
