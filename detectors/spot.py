"""Extreme-value peaks over threshold: SPOT, and DSPOT on the drift-removed series (Siffer et al. 2017).

Idea: whatever a metric's distribution, the excesses over a high threshold ``t`` follow a
generalized Pareto distribution (Pickands-Balkema-de Haan). Per row and per tail: ``t`` is the
``level`` quantile of the history, a GPD (shape ``gamma``, scale ``sigma``) is fitted to the
excesses over ``t``, and the tail probability of the newest point ``x > t`` is
``P(X > x) = (N_t / n) (1 + gamma (x - t) / sigma)^(-1 / gamma)``. The alarm threshold for a
risk ``q`` is SPOT's ``z_q = t + sigma / gamma ((q n / N_t)^(-gamma) - 1)`` (``raw``:
``threshold_up`` / ``threshold_down``; ``x`` beyond ``z_q`` exactly when its tail probability is
below ``q``). The score is the calibrated two-sided tail probability (``-log10(2 min(p_up, p_down)) / 10``);
below ``t`` the empirical tail of the history is used. DSPOT (``drift_depth=d``) first subtracts
from every point the mean of the ``d`` points before it, so a trending or slowly wandering metric
is judged by its local jumps.

Fitting: probability-weighted moments (Hosking and Wallis 1987), in closed form from the sorted
excesses, so every row is fitted in the same few vectorized passes. SPOT's own fit (Grimshaw's
trick) is a maximum-likelihood root search per row; with the tens of excesses a 240-point window
holds, PWM is about as accurate, defined for ``gamma < 1`` (the method of moments needs
``gamma < 1/2``) and needs no iteration. The shape is floored at ``gamma_floor`` (0: an
exponential tail): with tens of excesses a negative shape is mostly noise, and it would claim a
hard upper end just above the history's maximum, making every new maximum "impossible".

Parameters: ``history``, ``min_points``, ``level`` (initial threshold quantile; 0.9 leaves 24
excesses in 240 points), ``q`` (risk of the reported alarm threshold), ``drift_depth`` (None for
SPOT), ``gamma_floor``, ``gamma_cap`` (upper clamp of the shape).
Cost: one row sort for both tails, a few linear passes, and the fit on the excesses only
(about ``1 - level`` of each row), vectorized over rows.
"""

from __future__ import annotations

import warnings

import numpy as np

from stormeye.detectors.base import Detector, Scores, pvalue_to_score
from stormeye.detectors.rowstats import quantiles_of_sorted


def gpd_pwm(excess_sorted: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise GPD ``(gamma, sigma)`` by probability-weighted moments.

    ``excess_sorted``: each row's excesses ascending in its first ``count`` columns (the rest
    ignored). Rows with fewer than 2 excesses, or a degenerate fit, get an exponential tail with
    the mean excess as scale.
    """
    cols = np.arange(excess_sorted.shape[1])
    on = cols[None, :] < count[:, None]
    e = np.where(on, excess_sorted, 0.0)
    nt = np.maximum(count, 1).astype(np.float64)
    a0 = e.sum(axis=1) / nt
    plot = (cols[None, :] + 1 - 0.35) / nt[:, None]
    a1 = (e * np.where(on, 1.0 - plot, 0.0)).sum(axis=1) / nt
    with np.errstate(all="ignore"):
        den = a0 - 2 * a1
        sigma = 2 * a0 * a1 / den
        gamma = 2 - a0 / den  # Hosking's k = a0 / (a0 - 2 a1) - 2, and gamma = -k
    bad = ~(np.isfinite(sigma) & (sigma > 0) & np.isfinite(gamma)) | (count < 2)
    return np.where(bad, 0.0, gamma), np.where(bad, a0, sigma)


def _tail(
    s: np.ndarray, n: np.ndarray, newest: np.ndarray, level: float, q: float, floor: float, cap: float, upper: bool
) -> tuple[np.ndarray, ...]:
    """One tail of the sorted rows ``s`` (ascending, NaN last; ``n`` finite per row): the log tail
    probability of ``newest`` and SPOT's ``z_q``, in the tail's own orientation (the lower tail is
    the upper tail of ``-x``: its threshold and ``z_q`` come back negated)."""
    width = s.shape[1]
    if upper:
        t = quantiles_of_sorted(s, n, (level,))[0]
        nt = (s > t[:, None]).sum(axis=1)  # NaN compares False
        x = newest
    else:  # the quantile of -x at ``level`` is minus the quantile of x at 1 - level (linear interpolation)
        t = -quantiles_of_sorted(s, n, (1 - level,))[0]
        nt = (s < -t[:, None]).sum(axis=1)
        x = -newest
    k = max(int(nt.max(initial=0)), 1)  # only the excesses are read: about (1 - level) of each row
    cols = np.arange(k)[None, :]
    if upper:
        idx = (n - nt)[:, None] + cols  # the last nt finite values, ascending
        exc = np.take_along_axis(s, np.clip(idx, 0, width - 1), axis=1) - t[:, None]
    else:
        idx = (nt - 1)[:, None] - cols  # the first nt values, read backwards: -x ascending
        exc = -np.take_along_axis(s, np.clip(idx, 0, width - 1), axis=1) - t[:, None]
    gamma, sigma = gpd_pwm(exc, nt)
    gamma = np.clip(gamma, floor, cap)
    nf = np.maximum(n, 1).astype(np.float64)
    with np.errstate(all="ignore"):
        rate = nt / nf
        u = (x - t) / sigma
        expo = gamma < 1e-9
        log_gpd = np.where(expo, -u, -np.log1p(gamma * u) / np.where(expo, 1.0, gamma))
        log_tail = np.log(rate) + log_gpd
        # at or below the threshold: the history's own empirical tail, P(X >= x)
        ge = n - (s < newest[:, None]).sum(axis=1) if upper else (s <= newest[:, None]).sum(axis=1)
        log_emp = np.log((ge + 1) / (nf + 1))
        log_p = np.where((x > t) & (nt > 0), log_tail, log_emp)
        log_p = np.where((x > t) & (nt == 0), -np.inf, log_p)  # a constant history was left
        r = q / np.where(rate > 0, rate, np.nan)
        zq = t + np.where(expo, -sigma * np.log(r), sigma / np.where(expo, 1.0, gamma) * (r ** (-gamma) - 1))
    return np.minimum(np.nan_to_num(log_p, nan=0.0), 0.0), zq, gamma, sigma


def _drift(x: np.ndarray, depth: int) -> np.ndarray:
    """Mean of the ``depth`` points before each point (NaN-aware; NaN where none is finite or fewer
    than ``depth`` points precede it)."""
    fin = np.isfinite(x)
    rows, w = x.shape
    out = np.full((rows, w), np.nan)
    if w <= depth:
        return out
    cs = np.zeros((rows, w + 1))
    np.cumsum(np.where(fin, x, 0.0), axis=1, out=cs[:, 1:])
    cn = np.zeros((rows, w + 1))
    np.cumsum(fin, axis=1, out=cn[:, 1:])
    total = cs[:, depth:w] - cs[:, : w - depth]  # points [i - depth, i) for i = depth .. w - 1
    count = cn[:, depth:w] - cn[:, : w - depth]
    with np.errstate(all="ignore"):
        out[:, depth:] = np.where(count > 0, total / count, np.nan)
    return out


class SPOT(Detector):
    """Peaks over threshold with a generalized Pareto tail, both directions."""

    name = "spot"

    def __init__(
        self,
        history: int = 240,
        min_points: int = 60,
        level: float = 0.9,
        q: float = 1e-4,
        drift_depth: int | None = None,
        gamma_floor: float = 0.0,
        gamma_cap: float = 0.9,
    ) -> None:
        self.history = history
        self.min_points = min_points
        self.level = level
        self.q = q
        self.drift_depth = drift_depth
        self.gamma_floor = gamma_floor
        self.gamma_cap = gamma_cap

    def _validate(self) -> None:
        if not 0.5 <= self.level < 1:
            raise ValueError(f"level (the initial threshold quantile) must be in [0.5, 1), got {self.level!r}")
        if not 0 < self.q < 1:
            raise ValueError(f"q (the risk of the alarm threshold) must be in (0, 1), got {self.q!r}")
        if self.drift_depth is not None and not (isinstance(self.drift_depth, int) and self.drift_depth >= 1):
            raise ValueError(f"drift_depth must be a positive number of points or None, got {self.drift_depth!r}")
        if not self.gamma_floor <= self.gamma_cap < 1:
            raise ValueError(f"need gamma_floor <= gamma_cap < 1, got {self.gamma_floor!r} and {self.gamma_cap!r}")

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        self._validate()
        x = windows
        ref = np.zeros(len(x))
        if self.drift_depth is not None:
            local = _drift(windows, self.drift_depth)
            x = windows - local
            ref = np.nan_to_num(local[:, -1])
        hist = x[:, :-1]
        newest = np.nan_to_num(x[:, -1], nan=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            srt = np.sort(hist, axis=1)  # one sort serves both tails
            n = np.isfinite(hist).sum(axis=1)
            args = (self.level, self.q, self.gamma_floor, self.gamma_cap)
            lp_up, z_up, g_up, s_up = _tail(srt, n, newest, *args, upper=True)
            lp_dn, z_dn, g_dn, s_dn = _tail(srt, n, newest, *args, upper=False)
        log_p = np.minimum(np.log(2.0) + np.minimum(lp_up, lp_dn), 0.0)
        score = pvalue_to_score(log_p)
        direction = np.where(lp_up <= lp_dn, 1, -1).astype(np.int8)
        return Scores(
            score=score,
            direction=direction,
            status=status,
            raw={
                "threshold_up": ref + z_up,
                "threshold_down": ref - z_dn,
                "gamma_up": g_up,
                "gamma_down": g_dn,
                "sigma_up": s_up,
                "sigma_down": s_dn,
            },
        )


class DSPOT(SPOT):
    """SPOT on the series minus the mean of its previous ``drift_depth`` points."""

    name = "dspot"

    def __init__(
        self,
        history: int = 240,
        min_points: int = 60,
        level: float = 0.9,
        q: float = 1e-4,
        drift_depth: int | None = 20,
        gamma_floor: float = 0.0,
        gamma_cap: float = 0.9,
    ) -> None:
        super().__init__(history, min_points, level, q, drift_depth, gamma_floor, gamma_cap)
