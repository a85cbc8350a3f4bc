"""Level shifts and trend changes: has the recent window moved, or started to climb?

:class:`LevelShift` -- idea: the median of the last ``focus`` points against the median of the
points before, in units of the base window's robust scale (MAD, as in the robust z-score). A
median of ``k`` normal points has standard error ``1.2533 sigma / sqrt(k)``, so
``z = (median_focus - median_base) / (1.2533 scale sqrt(1/k + 1/n_base))`` and the score is its
calibrated two-sided normal tail. One spike moves a median by nothing, so this strategy sees
shifts, not outliers (``point_outliers = False``); a shift is seen once about half the focus
window has moved, and keeps being seen while the focus window holds it.

:class:`TrendChange` -- idea: the least-squares slope of the last ``focus`` points against the
slope of the points before; ``z = (b_focus - b_base) / sqrt(se_focus^2 + se_base^2)`` with each
slope's standard error from its own residuals. A level shift inside the focus window also
reads as a slope there (that is what it is, locally); the level-shift strategy says which.

Both deflate their sample sizes by the base window's lag-1 autocorrelation ``r`` (an AR(1) series
holds about ``n (1 - r) / (1 + r)`` independent points), so a smooth, wandering metric is not called
shifted for being smooth. Parameters: ``history``, ``focus``, ``min_points``, ``autocorrelation``,
and ``min_scale`` (relative floor of the scale, as in the robust z-score).
Cost: LevelShift three row sorts (median and MAD of the base, median of the focus); TrendChange
a few linear passes (no sort). Vectorized over rows.
"""

from __future__ import annotations

import warnings

import numpy as np

from stormeye.detectors.base import Detector, Scores, normal_two_sided_score
from stormeye.detectors.calibration import robust_location_scale
from stormeye.detectors.rowstats import nan_median
from stormeye.detectors.twosample import split_focus

MEDIAN_SE = 1.2533  # sqrt(pi / 2): standard error of a normal sample's median, in sigma / sqrt(n)


class _Split(Detector):
    point_outliers = False

    def __init__(
        self,
        history: int = 240,
        focus: int = 10,
        min_points: int = 60,
        autocorrelation: bool = True,
        min_scale: float = 0.01,
    ) -> None:
        self.history = history
        self.focus = focus
        self.min_points = min_points
        self.autocorrelation = autocorrelation
        self.min_scale = min_scale

    def _split(self, windows: np.ndarray, min_focus: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return split_focus(windows, self.focus, self.autocorrelation, min_focus=min_focus, min_base=3)


class LevelShift(_Split):
    """Median of the last ``focus`` points against the median and MAD of the points before."""

    name = "level_shift"

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        base, recent, factor = self._split(windows, 1)
        med_b, scale = robust_location_scale(base, self.min_scale)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med_f = nan_median(recent)
            k = np.maximum(np.isfinite(recent).sum(axis=1) * factor, 1.0)
            nb = np.maximum(np.isfinite(base).sum(axis=1) * factor, 1.0)
            z = (med_f - med_b) / (MEDIAN_SE * scale * np.sqrt(1 / k + 1 / nb))
        z = np.nan_to_num(z, nan=0.0)
        return Scores(
            score=normal_two_sided_score(z),
            direction=np.sign(z).astype(np.int8),
            status=status,
            raw={"shift_z": z, "shift": np.nan_to_num(med_f - med_b)},
        )


def _slopes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope of each row against its index and the slope's standard error (NaN-aware)."""
    fin = np.isfinite(y)
    t = np.where(fin, np.arange(y.shape[1], dtype=np.float64)[None, :], 0.0)
    v = np.where(fin, y, 0.0)
    with np.errstate(all="ignore"):
        n = fin.sum(axis=1).astype(np.float64)
        tm = t.sum(axis=1) / n
        vm = v.sum(axis=1) / n
        dt = np.where(fin, t - tm[:, None], 0.0)
        dv = np.where(fin, v - vm[:, None], 0.0)
        sxx = (dt * dt).sum(axis=1)
        b = (dt * dv).sum(axis=1) / sxx
        resid = np.where(fin, dv - b[:, None] * dt, 0.0)
        s2 = (resid * resid).sum(axis=1) / (n - 2)
        se = np.sqrt(s2 / sxx)
    return b, se


class TrendChange(_Split):
    """Slope of the last ``focus`` points against the slope of the points before."""

    name = "trend_change"

    def __init__(
        self,
        history: int = 240,
        focus: int = 60,
        min_points: int = 60,
        autocorrelation: bool = True,
        min_scale: float = 0.01,
    ) -> None:
        super().__init__(history, focus, min_points, autocorrelation, min_scale)

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        base, recent, factor = self._split(windows, 5)
        b_b, se_b = _slopes(base)
        b_f, se_f = _slopes(recent)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
            # floor the slopes' noise so a quantized or near-constant series does not explode
            level = np.abs(np.nanmean(base, axis=1))
            floor = self.min_scale * np.maximum(level, 1e-9) / recent.shape[1]
            se = np.sqrt(np.maximum(se_b, floor) ** 2 + np.maximum(se_f, floor) ** 2) / np.sqrt(factor)
            z = (b_f - b_b) / se
        z = np.nan_to_num(z, nan=0.0)
        return Scores(
            score=normal_two_sided_score(z),
            direction=np.sign(z).astype(np.int8),
            status=status,
            raw={"trend_z": z, "slope_base": b_b, "slope_focus": b_f},
        )
