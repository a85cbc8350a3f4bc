"""Two-window distribution tests, vectorized over metrics: Kolmogorov-Smirnov and Mann-Whitney U.

Idea: a metric whose recent points (the *focus* window) no longer look like its older points (the
*base* window) has changed, even if no single point is an outlier: a variance burst, a bimodal
split, a slow drift of the median. Each row's two windows are compared with a two-sample test and
the score is the calibrated p-value.

Both tests share one kernel (:func:`_merged`): each row's base and focus halves are sorted
(numpy's vectorized sort, on order-preserving int64 keys of the floats) and the two sorted runs
merged by a stable argsort (timsort merges two runs in one linear pass); the cumulative count of
focus members along the merged order gives both empirical CDFs at every point, and the last index
of each run of equal values is where ties are resolved (exactly as ``scipy.stats.ks_2samp``
evaluates its ``searchsorted(side="right")`` CDFs, and as average ranks need). NaN is missing: it
sorts last and is left out of the counts, so rows may hold different numbers of points.

- :func:`ks_2samp_rows`: the two-sided KS statistic, bit-identical to ``scipy.stats.ks_2samp``
  (the same float operations, ``count / n1 - count / n2``), and the p-value of its
  ``method="asymp"`` mode (``kstwo.sf(d, round(n1*n2/(n1+n2)))``). scipy evaluates ``kstwo.sf``
  one element at a time in Python (``scipy.stats._ksstats``); :func:`kstwo_sf` follows the same
  branches (Simard and L'Ecuyer) vectorized -- Ruben-Gambino closed forms, Smirnov's tail by the
  Birnbaum-Tingey sum in log space (scipy's exact routine costs ~0.3 ms per element at n = 250),
  the Pelz-Good series, Durbin's exact matrix method batched over elements (also where scipy
  uses Pomeranz's recursion, ``n <= 140``: both are exact) -- and evaluates each distinct
  ``(n, d)`` once (KS statistics are multiples of ``1/lcm(n1, n2)``). Agreement with scipy:
  about 1e-14 on the p-value.
- :func:`mannwhitney_rows`: U of the base window and the two-sided p-value of
  ``scipy.stats.mannwhitneyu(method="asymptotic", use_continuity=True)`` (normal approximation
  with the tie correction), from the same merge.

Detectors: :class:`KSTest` and :class:`MannWhitney` score the newest point of each window by
comparing its last ``focus`` points (the newest included) with the ``history + 1 - focus`` before.
Parameters: ``history``, ``focus``, ``min_points`` (finite history points before a row is
analysed), ``autocorrelation`` (deflate the sample sizes by the base window's lag-1
autocorrelation, so a smooth, slowly wandering metric is not called changed for being smooth:
an AR(1) series with correlation ``r`` carries about ``n (1 - r) / (1 + r)`` independent points).
Limits: a season is a change between two windows; feed deseasonalized values on seasonal metrics.
Cost: two half-row sorts and a linear merge per row plus a few linear passes; on 500 metrics x
1,000 points the KS takes about 2x numpy's plain sort of the same array (``bench/ks_section.py``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import special

from stormeye.detectors.base import Detector, Scores, pvalue_to_score

_ROW_CHUNK_ELEMENTS = 1 << 16  # rows are processed in blocks this size so the passes stay in cache


# --- the shared sorted-merge kernel -------------------------------------------------------------------


def _as_pair(base: np.ndarray, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(base, dtype=np.float64)
    f = np.asarray(focus, dtype=np.float64)
    if b.ndim == 1:
        b = b[None, :]
    if f.ndim == 1:
        f = f[None, :]
    if b.ndim != 2 or f.ndim != 2:
        raise ValueError("base and focus must be 2-D arrays (rows = metrics, columns = points) or 1-D samples")
    if b.shape[0] != f.shape[0]:
        raise ValueError(f"base and focus must have the same number of rows, got {b.shape[0]} and {f.shape[0]}")
    if b.shape[1] == 0 or f.shape[1] == 0:
        raise ValueError("base and focus need at least one column each")
    return b, f


_NAN_KEY = np.iinfo(np.int64).max
_MAGNITUDE = np.int64(0x7FFFFFFFFFFFFFFF)
_INF_KEY = int(np.array([np.inf]).view(np.int64)[0])
_NEG_INF_KEY = int(np.array([-np.inf]).view(np.int64)[0] ^ 0x7FFFFFFFFFFFFFFF)


def _merged(b: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge each row's base ``b`` and focus ``f`` in sorted order (NaN last).

    Returns the merged sort keys, whether each merged element came from the focus window, where
    a run of equal values ends, and the finite counts of base and focus. Values are sorted as
    order-preserving int64 keys (the float's bits, negatives' magnitude bits flipped; -0.0 made
    +0.0 first and NaN the largest key, so equal keys are exactly equal floats): integer sorts
    and merges skip the float comparison's NaN handling. Each half is sorted in place by numpy's
    vectorized sort and the two sorted runs are merged by a stable argsort (timsort merges two
    runs in one linear pass): cheaper than one argsort of the concatenation.
    """
    rows, nb = b.shape
    width = nb + f.shape[1]
    runs = np.empty((rows, width))
    np.add(b, 0.0, out=runs[:, :nb])  # copy, and -0.0 becomes +0.0: equal floats, equal keys
    np.add(f, 0.0, out=runs[:, nb:])
    k = runs.view(np.int64)
    k ^= (k >> 63) & _MAGNITUDE  # negatives: larger magnitude, smaller key
    k[:, :nb].sort(axis=1)
    k[:, nb:].sort(axis=1)
    # a NaN's key lies beyond +inf's (sign bit clear) or below -inf's (set): it sorted to an end of its half
    ends = np.stack([k[:, 0], k[:, nb - 1], k[:, nb], k[:, -1]], axis=1)
    gaps = np.flatnonzero(((ends > _INF_KEY) | (ends < _NEG_INF_KEY)).any(axis=1))
    n1 = np.full(rows, nb, dtype=np.int64)
    n2 = np.full(rows, width - nb, dtype=np.int64)
    if len(gaps):
        g = k[gaps]
        g[(g > _INF_KEY) | (g < _NEG_INF_KEY)] = _NAN_KEY
        g[:, :nb].sort(axis=1)
        g[:, nb:].sort(axis=1)
        k[gaps] = g
        n1[gaps] = (g[:, :nb] != _NAN_KEY).sum(axis=1)
        n2[gaps] = (g[:, nb:] != _NAN_KEY).sum(axis=1)
    order = k.argsort(axis=1, kind="stable")
    keys = k.ravel().take(order + (np.arange(rows) * width)[:, None])
    last = np.empty(k.shape, dtype=bool)
    np.not_equal(keys[:, 1:], keys[:, :-1], out=last[:, :-1])
    last[:, -1] = True
    if len(gaps):  # the NaN tail of a row is no evaluation point
        last[gaps] &= np.arange(width) < (n1[gaps] + n2[gaps])[:, None]
    return keys, order >= nb, last, n1, n2


def _chunk_rows(cols: int) -> int:
    return max(1, _ROW_CHUNK_ELEMENTS // max(cols, 1))


# --- Kolmogorov-Smirnov ---------------------------------------------------------------------------------

_PI2 = np.pi**2
_PI4 = np.pi**4
_PI6 = np.pi**6
_SQRT2PI = math.sqrt(2 * np.pi)
_SQRT3 = math.sqrt(3)
_MIN_LOG = -708


def _pelz_good_sf(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """scipy's ``_kolmogn_PelzGood(n, x, cdf=False)`` for arrays (same terms, same order)."""
    z = np.sqrt(n) * x
    zsq, z3, z4, z6 = z**2, z**3, z**4, z**6
    q = np.exp(-_PI2 / 8 / zsq)
    k1a, k1b = -zsq, _PI2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * zsq) * _PI2 / 4
    k2c = _PI4 * (1 - 2 * zsq) / 16
    k3d = _PI6 * (5 - 30 * zsq) / 64
    k3c = _PI4 * (-60 * zsq + 212 * z4) / 16
    k3b = _PI2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    maxk = np.ceil(16 * z / np.pi).astype(np.int64)
    kk = np.zeros((4, len(z)))
    for k in range(int(maxk.max(initial=0)), 0, -1):
        on = k <= maxk
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        qpower = np.power(q, 8 * k)
        coeffs = (1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6)
        for i in range(4):
            kk[i] = np.where(on, kk[i] * qpower + coeffs[i], kk[i])
    kk *= q
    kk *= _SQRT2PI
    kk /= np.stack([z, 6 * z4, 72 * z**7, 6480 * z**10])
    q2 = np.exp(-_PI2 / 2 / zsq)
    k2extra = np.zeros(len(z))
    k3extra = np.zeros(len(z))
    sqrt3z = _SQRT3 * z
    for k in range(int(maxk.max(initial=0)), 0, -1):
        on = k <= maxk
        qp = q2 ** (k * k)
        kspi = np.pi * k
        k2extra = np.where(on, k2extra + (k * k) * qp, k2extra)
        k3extra = np.where(on, k3extra + (sqrt3z + kspi) * (sqrt3z - kspi) * (k * k) * qp, k3extra)
    kk[2] += k2extra * (_PI2 * _SQRT2PI / (-36 * z3))
    kk[3] += k3extra * (_PI2 * _SQRT2PI / (216 * z6))
    kk /= np.power(n[None, :] * 1.0, np.arange(4)[:, None] / 2.0)
    kk *= -1
    kk[0] += 1
    return kk[0] + kk[1] + kk[2] + kk[3]


def smirnov_sf(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """One-sided Smirnov survival ``scipy.special.smirnov(n, d)`` for arrays, by the Birnbaum-Tingey
    sum in log space (all its terms are positive, so no cancellation): scipy's exact routine
    costs about 0.3 ms per element at n = 250, this costs ``O(n)`` vectorized work per element."""
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    out = np.empty(d.shape)
    nmax = int(n.max(initial=1))
    step = max(1, (1 << 20) // (nmax + 1))
    j = np.arange(nmax + 1, dtype=np.float64)
    lgam = special.gammaln(np.arange(nmax + 2, dtype=np.float64))  # log k!, looked up, not recomputed
    for lo in range(0, len(d), step):
        nn = n[lo : lo + step, None]
        dd = d[lo : lo + step, None]
        ni = np.nan_to_num(nn, nan=0.0).astype(np.int64)
        with np.errstate(all="ignore"):
            a = 1.0 - dd - j / nn
            on = (j <= np.floor(nn * (1.0 - dd))) & (a >= 0)
            logc = lgam[ni + 1] - lgam[1 : nmax + 2][None, :] - lgam[np.clip(ni - j.astype(np.int64), 0, nmax) + 1]
            terms = logc + special.xlogy(nn - j, a) + special.xlogy(j - 1, dd + j / nn)
            terms = np.where(on, terms, -np.inf)
            top = terms.max(axis=1, keepdims=True)
            lse = np.log(np.exp(terms - top).sum(axis=1)) + top[:, 0]
            out[lo : lo + step] = np.exp(lse + np.log(d[lo : lo + step]))
    return np.clip(np.where(d >= 1.0, 0.0, np.where(d <= 0.0, 1.0, out)), 0.0, 1.0)


_EP128 = 2.0**128


def _dmtw_cdf(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """scipy's ``_kolmogn_DMTW(n, d)`` (Durbin's matrix, Marsaglia-Tsang-Wang), exact, for arrays.

    Every element's ``m x m`` matrix (``m = 2 ceil(n d) - 1``) is padded to the largest of its
    bucket (a zero border does not change a matrix power's leading block) and all are raised to
    their own ``n``-th power together, one binary digit of ``n`` at a time, with scipy's
    rescaling by 2^128; ``n!/n^n`` is applied in log space instead of scipy's ``n``-step product.
    """
    out = np.empty(d.shape)
    k_all = np.ceil(n * d).astype(np.int64)
    bucket = np.ceil(np.log2(np.maximum(2 * k_all - 1, 1))).astype(np.int64)
    for bkt in np.unique(bucket):
        sel = np.flatnonzero(bucket == bkt)
        out[sel] = _dmtw_block(n[sel], d[sel])
    return out


def _dmtw_block(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    nd = n * d
    k = np.ceil(nd).astype(np.int64)
    h = k - nd
    m = 2 * k - 1
    size = int(m.max(initial=1))
    e = len(d)
    idx = np.arange(1, size + 1)
    sel = np.arange(e)
    fac = np.cumprod(np.concatenate([[1.0], 1.0 / idx]))  # fac[j] = 1/j!
    with np.errstate(all="ignore"):
        on = idx[None, :] <= m[:, None]
        v = np.where(on, (1.0 - h[:, None] ** idx[None, :]) * fac[None, 1:], 0.0)
        tt = np.maximum(2 * h - 1.0, 0) ** m - 2 * h**m
        v[sel, m - 1] = (1.0 + tt) * fac[m]
        H = np.zeros((e, size, size))
        for i in range(1, size):
            H[:, i - 1 :, i] = fac[None, : size - i + 1]
        H *= on[:, :, None] & on[:, None, :]
        H[:, :, 0] = v
        cols = m[:, None] - 1 - np.arange(size)[None, :]  # row m-1 is v reversed
        H[sel, m - 1, :] = np.where(cols >= 0, v[sel[:, None], np.maximum(cols, 0)], 0.0)
        hp = np.broadcast_to(np.eye(size), (e, size, size)).copy()
        expnt = np.zeros(e)
        hexp = np.zeros(e)
        kk = k - 1
        nn = n.astype(np.int64)
        while (nn > 0).any():
            odd = nn % 2 == 1
            hp = np.where(odd[:, None, None], hp @ H, hp)
            expnt += np.where(odd, hexp, 0.0)
            H = H @ H
            hexp *= 2
            big = np.abs(H[sel, kk, kk]) > _EP128
            H[big] /= _EP128
            hexp[big] += 128
            nn //= 2
        logp = np.log(hp[sel, kk, kk]) + expnt * np.log(2.0) + special.gammaln(n + 1) - n * np.log(n)
        return np.clip(np.where(nd <= 0.5, 0.0, np.exp(logp)), 0.0, 1.0)


def kstwo_sf(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Survival function of the two-sided one-sample KS statistic, ``scipy.stats.kstwo.sf(d, n)``,
    vectorized (scipy evaluates it element by element in Python).

    Follows scipy's ``_kolmogn`` (Simard and L'Ecuyer) branch for branch: Ruben-Gambino and
    Smirnov closed forms, the Pelz-Good series, and Durbin's exact matrix method where scipy uses
    it; where scipy uses Pomeranz's recursion (``n <= 140``, ``0.75 < n d^2 <= 4``) the Durbin
    matrix gives the same exact distribution.
    """
    d = np.asarray(d, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), d.shape)
    shape = d.shape
    d, n = d.ravel(), n.ravel()
    if len(d) > 1:  # KS statistics take few distinct values (multiples of 1/lcm(n1, n2)): evaluate each once
        order = np.lexsort((d, n))
        ds, ns = d[order], n[order]
        new = np.ones(len(d), dtype=bool)
        new[1:] = (ds[1:] != ds[:-1]) | (ns[1:] != ns[:-1])
        if new.sum() < len(d):
            group = np.cumsum(new) - 1
            out = np.empty(len(d))
            out[order] = _kstwo_sf_distinct(ds[new], ns[new])[group]
            return out.reshape(shape)
    return _kstwo_sf_distinct(d, n).reshape(shape)


def _kstwo_sf_distinct(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    out = np.full(d.shape, np.nan)
    ok = np.isfinite(n) & (n > 0) & ~np.isnan(d) & (np.round(n) == n)
    t = n * d
    nx2 = t * d
    done = ~ok
    with np.errstate(all="ignore"):

        def put(mask: np.ndarray, value: float | None = None) -> None:
            """Assign the still-open elements of ``mask``: a constant, or 2 * smirnov."""
            sel = np.flatnonzero(mask & ~done)
            if value is not None:
                out[sel] = value
            elif len(sel):
                out[sel] = np.clip(2 * smirnov_sf(n[sel], d[sel]), 0.0, 1.0)
            done[sel] = True

        put(d >= 1.0, 0.0)
        put(d <= 0.0, 1.0)
        put(t <= 0.5, 1.0)
        sel = np.flatnonzero((t <= 1.0) & ~done)  # Ruben-Gambino: cdf = n!/n^n (2t - 1)^n
        cdf = np.exp(special.gammaln(n[sel] + 1) - n[sel] * np.log(n[sel]) + n[sel] * np.log(2 * t[sel] - 1))
        out[sel] = np.clip(1.0 - cdf, 0.0, 1.0)
        done[sel] = True
        sel = np.flatnonzero((t >= n - 1) & ~done)
        out[sel] = np.clip(2 * (1.0 - d[sel]) ** n[sel], 0.0, 1.0)
        done[sel] = True
        put(d >= 0.5)
        small = n <= 140
        put(small & (nx2 > 4))
        put(~small & (nx2 >= 370.0), 0.0)
        put(~small & (nx2 >= 2.2))
        dmtw = small | ((n <= 100000) & (n * d**1.5 <= 1.4))
        todo = ~done & ~dmtw
        if todo.any():
            out[todo] = np.clip(_pelz_good_sf(n[todo], d[todo]), 0.0, 1.0)
        todo = ~done & dmtw
        if todo.any():
            sel = np.flatnonzero(todo)
            out[sel] = np.clip(1.0 - _dmtw_cdf(n[sel], d[sel]), 0.0, 1.0)
    return out


def _ks_block(b: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    vals, in_focus, last, n1, n2 = _merged(b, f)
    c2 = np.cumsum(in_focus, axis=1, dtype=np.int32)
    c1 = np.arange(1, vals.shape[1] + 1, dtype=np.int32) - c2
    with np.errstate(divide="ignore", invalid="ignore"):
        # the same float operations as scipy (counts / n1 - counts / n2), so the statistic is identical
        diff = c1 / n1[:, None]
        diff -= c2 / n2[:, None]
        diff *= last  # only where a run of equal values ends (scipy's searchsorted side="right")
    max_s = diff.max(axis=1)
    min_s = np.clip(-diff.min(axis=1), 0, 1)
    d = np.where(min_s > max_s, min_s, max_s)
    sign = np.where(min_s > max_s, -1, 1)
    return d, sign, n1, n2


def ks_2samp_rows(base: np.ndarray, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided two-sample KS test of each row of ``base`` against the same row of ``focus``.

    Returns ``(statistic, pvalue)``, one per row: the statistic is identical to
    ``scipy.stats.ks_2samp(base[i], focus[i])`` and the p-value is that of its ``method="asymp"``.
    NaN marks a missing point and is left out (scipy's ``nan_policy="omit"``); a row with no
    finite point on either side gets NaN for both.
    """
    d, _, n1, n2 = _ks_parts(base, focus)
    return d, _ks_pvalue(d, n1, n2)


def _ks_parts(base: np.ndarray, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    b, f = _as_pair(base, focus)
    rows = b.shape[0]
    d = np.empty(rows)
    sign = np.empty(rows, dtype=np.int8)
    n1 = np.empty(rows, dtype=np.int64)
    n2 = np.empty(rows, dtype=np.int64)
    step = _chunk_rows(b.shape[1] + f.shape[1])
    for lo in range(0, rows, step):
        sl = slice(lo, lo + step)
        d[sl], sign[sl], n1[sl], n2[sl] = _ks_block(b[sl], f[sl])
    empty = (n1 == 0) | (n2 == 0)
    d[empty] = np.nan
    return d, sign, n1, n2


def _ks_pvalue(d: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    big = np.maximum(n1, n2).astype(np.float64)
    small = np.minimum(n1, n2).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        en = np.round(big * small / (big + small))
    return np.clip(kstwo_sf(d, en), 0.0, 1.0)


# --- Mann-Whitney U -----------------------------------------------------------------------------------


def _mwu_block(b: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    vals, in_focus, last, n1, n2 = _merged(b, f)
    finite = vals != _NAN_KEY
    width = vals.shape[1]
    pos = np.broadcast_to(np.arange(width), vals.shape)
    first = np.ones(vals.shape, dtype=bool)
    first[:, 1:] = last[:, :-1]
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)
    end = np.minimum.accumulate(np.where(last, pos, width)[:, ::-1], axis=1)[:, ::-1]
    ranks = (start + end) / 2.0 + 1.0  # average rank of each run of equal values (1-based)
    in_base = ~in_focus & finite
    r1 = np.where(in_base, ranks, 0.0).sum(axis=1)
    size = (end - start + 1).astype(np.float64)
    tie = np.where(last & finite, size**3 - size, 0.0).sum(axis=1)
    return r1, tie, n1, n2


def _mwu_parts(base: np.ndarray, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    b, f = _as_pair(base, focus)
    rows = b.shape[0]
    r1 = np.empty(rows)
    tie = np.empty(rows)
    n1 = np.empty(rows, dtype=np.int64)
    n2 = np.empty(rows, dtype=np.int64)
    step = _chunk_rows(b.shape[1] + f.shape[1])
    for lo in range(0, rows, step):
        sl = slice(lo, lo + step)
        r1[sl], tie[sl], n1[sl], n2[sl] = _mwu_block(b[sl], f[sl])
    n1f = n1.astype(np.float64)
    n2f = n2.astype(np.float64)
    u1 = r1 - n1f * (n1f + 1) / 2
    u2 = n1f * n2f - u1
    mu = n1f * n2f / 2
    n = n1f + n2f
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(n1f * n2f / 12 * ((n + 1) - tie / (n * (n - 1))))
        z = (np.maximum(u1, u2) - mu - 0.5) / s
    empty = (n1 == 0) | (n2 == 0)
    u1[empty] = np.nan
    z[empty] = np.nan
    return u1, z, mu, s


def mannwhitney_rows(base: np.ndarray, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U test of each row of ``base`` against the same row of ``focus``.

    Returns ``(U of base, pvalue)`` per row, matching ``scipy.stats.mannwhitneyu(base[i], focus[i],
    method="asymptotic", use_continuity=True)``. NaN is missing and left out; a row with no finite
    point on either side gets NaN.
    """
    u1, z, _, _ = _mwu_parts(base, focus)
    with np.errstate(invalid="ignore"):
        p = np.clip(2 * special.ndtr(-z), 0.0, 1.0)
    return u1, p


# --- the detectors ------------------------------------------------------------------------------------


def lag1_autocorrelation(x: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each row, NaN-aware, clipped to [0, 0.95]."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
        c = x - np.nanmean(x, axis=1, keepdims=True)
        num = np.nansum(c[:, 1:] * c[:, :-1], axis=1)
        den = np.nansum(c * c, axis=1)
        r = num / den
    return np.clip(np.nan_to_num(r, nan=0.0), 0.0, 0.95)


def split_focus(
    windows: np.ndarray, focus: int, autocorrelation: bool, min_focus: int = 1, min_base: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows split into (base, the last ``focus`` points, sample-size factor for autocorrelation).

    The factor ``(1 - r) / (1 + r)`` of the base's lag-1 autocorrelation ``r`` shrinks the
    effective sample sizes of smooth series (1 when ``autocorrelation`` is off).
    """
    if not min_focus <= focus <= windows.shape[1] - min_base:
        raise ValueError(
            f"focus must be between {min_focus} and the window length - {min_base} "
            f"({windows.shape[1] - min_base}), got {focus}"
        )
    base = windows[:, :-focus]
    factor = np.ones(len(windows))
    if autocorrelation:
        r = lag1_autocorrelation(base)
        factor = (1 - r) / (1 + r)
    return base, windows[:, -focus:], factor


class _TwoWindow(Detector):
    point_outliers = False  # one new point moves an ECDF or a rank sum by 1/focus at most

    def __init__(self, history: int = 240, focus: int = 30, min_points: int = 60, autocorrelation: bool = True):
        self.history = history
        self.focus = focus
        self.min_points = min_points
        self.autocorrelation = autocorrelation

    def _split(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return split_focus(windows, self.focus, self.autocorrelation)


class KSTest(_TwoWindow):
    """Kolmogorov-Smirnov: has the distribution of the last ``focus`` points changed?"""

    name = "ks"

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        base, focus, factor = self._split(windows)
        d, sign, n1, n2 = _ks_parts(base, focus)
        # a smooth series has fewer independent points than it has points
        m1 = np.maximum(np.round(n1 * factor), 1).astype(np.int64)
        m2 = np.maximum(np.round(n2 * factor), 1).astype(np.int64)
        p = _ks_pvalue(d, m1, m2)
        with np.errstate(divide="ignore"):
            score = pvalue_to_score(np.log(np.nan_to_num(p, nan=1.0)))
        # a positive sign means the base ECDF is above the focus ECDF: the focus moved up
        return Scores(score=score, direction=sign.astype(np.int8), status=status, raw={"ks_d": d, "ks_p": p})


class MannWhitney(_TwoWindow):
    """Mann-Whitney U: are the last ``focus`` points stochastically larger or smaller than before?"""

    name = "mannwhitney"

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        base, focus, factor = self._split(windows)
        u1, z, mu, _ = _mwu_parts(base, focus)
        z = np.nan_to_num(z, nan=0.0) * np.sqrt(factor)  # variance of U grows by 1/factor under AR(1)
        log_p = np.log(2.0) + special.log_ndtr(-z)
        score = pvalue_to_score(np.minimum(log_p, 0.0))
        direction = np.where(u1 < mu, 1, -1).astype(np.int8)  # base ranks low: the focus moved up
        return Scores(score=score, direction=direction, status=status, raw={"mw_u": u1, "mw_z": z})
