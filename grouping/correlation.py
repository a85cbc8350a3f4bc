"""Shape similarity of metric windows: Pearson correlation with lag tolerance.

Pearson correlation of two windows is the cosine of their z-normalized forms, so everything
here works on z-normalized rows. Real data needs three more things:

- missing points: filled by linear interpolation inside a row (edges held), never dropped;
- lags: one metric often follows another by a step or two, so the correlation is the best
  over shifts of ``-max_lag .. +max_lag`` steps (each shift re-normalized on its overlap);
- mirrored metrics: CPU idle falls exactly as CPU busy rises; with ``absolute`` the best is
  the largest ``|r|`` (the sign is kept as evidence);
- more than one view of a shape: the raw values catch level shifts, trends and spikes; the
  smoothed absolute deviation from the median (``"envelope"``) catches variance bursts, whose
  raw values do not correlate even when they start together.

``correlate_all`` is exact over all pairs (for the few hundred anomalies of a tick);
``correlate_pairs`` does the same for chosen candidate pairs only, so that thousands of
anomalies cost about as much as their candidate pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

TRANSFORMS = ("raw", "diff", "envelope")


def fill_missing(windows: np.ndarray) -> np.ndarray:
    """Linear interpolation of NaNs along each row; rows with no finite point become zeros."""
    x = np.array(windows, dtype=np.float64, copy=True)
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    n = x.shape[1]
    idx = np.arange(n)
    for r in np.flatnonzero(bad.any(axis=1)):
        good = ~bad[r]
        if not good.any():
            x[r] = 0.0
        else:
            x[r, bad[r]] = np.interp(idx[bad[r]], idx[good], x[r, good])
    return x


def transform(windows: np.ndarray, kind: str = "raw", smooth: int = 1) -> np.ndarray:
    """A view of the windows' shapes: ``raw``, ``diff`` (first differences) or ``envelope``."""
    x = fill_missing(windows)
    if kind == "diff":
        x = np.diff(x, axis=1)
    elif kind == "envelope":
        med = np.median(x, axis=1, keepdims=True)
        x = np.abs(x - med)
        smooth = max(smooth, 3)
    elif kind != "raw":
        raise ValueError(f"unknown transform {kind!r}; use one of {TRANSFORMS}")
    if smooth > 1 and x.shape[1] >= smooth:
        kernel = np.ones(smooth) / smooth
        c = np.cumsum(np.pad(x, ((0, 0), (1, 0))), axis=1)
        x = (c[:, smooth:] - c[:, :-smooth]) * kernel[0]
    return x


def znorm(x: np.ndarray) -> np.ndarray:
    """Row-wise z-normalization; flat rows become zeros (they correlate with nothing)."""
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    out = np.zeros_like(x)
    ok = sd[:, 0] > 1e-12 * np.maximum(1.0, np.abs(mu[:, 0]))
    out[ok] = (x[ok] - mu[ok]) / sd[ok]
    return out


def _lag_views(x: np.ndarray, max_lag: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """For each lag, the (a, b) aligned slices: a[t] against b[t + lag], both z-normalized."""
    n = x.shape[1]
    views = []
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = x[:, : n - lag], x[:, lag:]
        else:
            a, b = x[:, -lag:], x[:, : n + lag]
        views.append((lag, znorm(a), znorm(b)))
    return views


def correlate_all(
    windows: np.ndarray, max_lag: int = 3, kind: str = "raw", smooth: int = 1, absolute: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Best lagged Pearson correlation and its lag for every pair of rows.

    Returns ``(corr, lag)``, both ``(k, k)``; ``lag[i, j] = L`` means row ``j`` follows row ``i``
    by ``L`` steps. With ``absolute``, "best" is the largest ``|r|`` and its signed value is
    returned (a metric that mirrors another, CPU idle against CPU busy, is as related as one
    that follows it).
    """
    x = transform(windows, kind, smooth)
    k, n = x.shape
    max_lag = max(0, min(max_lag, n // 4))
    best = np.full((k, k), 0.0 if absolute else -np.inf)
    best_lag = np.zeros((k, k), dtype=np.int64)
    for lag, a, b in _lag_views(x, max_lag):
        c = (a @ b.T) / a.shape[1]
        better = _better(c, best, absolute)
        best[better] = c[better]
        best_lag[better] = lag
    np.fill_diagonal(best, 1.0)
    np.fill_diagonal(best_lag, 0)
    return np.clip(best, -1.0, 1.0), best_lag


#: pairs per block: bounds the gathered rows' memory (block x window x 4 bytes, twice)
PAIR_BLOCK = 25_000


def correlate_pairs(
    windows: np.ndarray,
    left: Sequence[int] | np.ndarray,
    right: Sequence[int] | np.ndarray,
    max_lag: int = 3,
    kind: str = "raw",
    smooth: int = 1,
    absolute: bool = False,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Best lagged correlation and lag for the pairs ``(left[p], right[p])`` only (``absolute``
    as in :func:`correlate_all`).

    The Pearson correlation of every shift is exact on its overlap: the sums and sums of
    squares of each row's overlap come from prefix sums computed once per row, so per pair and
    lag only the cross products are computed, on the pair's rows gathered once. Blocks of pairs
    run in up to ``threads`` threads (numpy releases the GIL in the gathers and products); the
    result does not depend on it.
    """
    li = np.asarray(left, dtype=np.int64)
    ri = np.asarray(right, dtype=np.int64)
    if len(li) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    x = transform(windows, kind, smooth)
    n = x.shape[1]
    max_lag = max(0, min(max_lag, n // 4))
    # Pearson on any overlap is unchanged by shifting and scaling a whole row: z-normalized rows
    # keep the cross products near 1 in size, so they can be summed in float32 (half the memory
    # traffic, error ~1e-6 in r) while the rows' own sums stay in float64
    x = znorm(x)
    zero = np.zeros((x.shape[0], 1))
    cs, cs2 = np.hstack([zero, np.cumsum(x, 1)]), np.hstack([zero, np.cumsum(x * x, 1)])
    # each row's sum and sum of squares on its overlap at every lag, as the leading (a) and as
    # the following (b) side: rows x lags, so a pair needs one gather per array, not one per lag
    lags = np.arange(-max_lag, max_lag + 1)
    a_lo, a_hi = np.where(lags >= 0, 0, -lags), np.where(lags >= 0, n - lags, n)
    b_lo, b_hi = np.where(lags >= 0, lags, 0), np.where(lags >= 0, n, n + lags)
    m = (a_hi - a_lo).astype(np.float64)
    sa_row, sa2_row = cs[:, a_hi] - cs[:, a_lo], cs2[:, a_hi] - cs2[:, a_lo]
    sb_row, sb2_row = cs[:, b_hi] - cs[:, b_lo], cs2[:, b_hi] - cs2[:, b_lo]
    x32 = x.astype(np.float32)
    best = np.full(len(li), 0.0 if absolute else -np.inf)
    best_lag = np.zeros(len(li), dtype=np.int64)

    def block(lo: int) -> None:
        pl, pr = li[lo : lo + PAIR_BLOCK], ri[lo : lo + PAIR_BLOCK]
        a, b = x32[pl], x32[pr]
        sab = np.empty((len(pl), len(lags)))
        for j in range(len(lags)):
            sab[:, j] = np.einsum("ij,ij->i", a[:, a_lo[j] : a_hi[j]], b[:, b_lo[j] : b_hi[j]])
        sa, sa2, sb, sb2 = sa_row[pl], sa2_row[pl], sb_row[pr], sb2_row[pr]
        cov = sab - sa * sb / m
        var = np.maximum(sa2 - sa * sa / m, 0.0) * np.maximum(sb2 - sb * sb / m, 0.0)
        tiny = (1e-12 * np.maximum(np.abs(sa2) + np.abs(sb2), 1.0)) ** 2
        ok = var > tiny
        c = np.where(ok, cov / np.sqrt(np.where(ok, var, 1.0)), 0.0)
        # the first lag with the best value, as a scan from -max_lag that keeps strict improvements
        j = np.argmax(np.abs(c) if absolute else c, axis=1)
        top = c[np.arange(len(pl)), j]
        seg = best[lo : lo + len(pl)]
        better = _better(top, seg, absolute)
        seg[better] = top[better]
        best_lag[lo : lo + len(pl)][better] = lags[j[better]]

    in_blocks(block, len(li), PAIR_BLOCK, threads)
    return np.clip(best, -1.0, 1.0), best_lag


def in_blocks(fn: Callable[[int], None], n: int, size: int, threads: int) -> None:
    """``fn(lo)`` for ``lo`` in ``0, size, 2 size, .. < n``, in up to ``threads`` threads when there
    is more than one block (each call must write only its own block of the output)."""
    starts = range(0, n, size)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(fn, starts))
    else:
        for lo in starts:
            fn(lo)


def _better(c: np.ndarray, best: np.ndarray, absolute: bool) -> np.ndarray:
    return np.abs(c) > np.abs(best) if absolute else c > best


def shape_similarity(
    windows: np.ndarray, max_lag: int = 3, kinds: Sequence[str] = ("raw", "envelope"), absolute: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The best correlation over the given views of every pair (and its lag), all pairs."""
    best: np.ndarray | None = None
    best_lag: np.ndarray | None = None
    for kind in kinds:
        c, lag = correlate_all(windows, max_lag, kind, absolute=absolute)
        if best is None or best_lag is None:
            best, best_lag = c, lag
        else:
            better = _better(c, best, absolute)
            best = np.where(better, c, best)
            best_lag = np.where(better, lag, best_lag)
    assert best is not None and best_lag is not None
    return best, best_lag


def shape_similarity_pairs(
    windows: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    max_lag: int = 3,
    kinds: Sequence[str] = ("raw", "envelope"),
    enough: float | None = None,
    absolute: bool = False,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shape_similarity` for chosen pairs only (``threads`` as in :func:`correlate_pairs`).

    With ``enough``, a pair whose correlation (``|r|`` when ``absolute``) in one view already
    reaches it is not looked at in the later views (its value is then a lower bound of the best
    over all views): the caller only needs to know the threshold is passed.
    """
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    best = np.full(len(left), 0.0 if absolute else -1.0)
    best_lag = np.zeros(len(left), dtype=np.int64)
    todo = np.arange(len(left))
    for kind in kinds:
        if not len(todo):
            break
        c, lag = correlate_pairs(windows, left[todo], right[todo], max_lag, kind, absolute=absolute, threads=threads)
        better = _better(c, best[todo], absolute)
        best[todo[better]] = c[better]
        best_lag[todo[better]] = lag[better]
        if enough is not None:
            todo = todo[(np.abs(best[todo]) if absolute else best[todo]) < enough]
    return best, best_lag
