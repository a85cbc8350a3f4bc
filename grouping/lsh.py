"""Random-projection LSH for cosine similarity (Charikar's SimHash), banded and multi-probed.

One bit of a signature is the sign of a vector's dot product with a random Gaussian
hyperplane. Two vectors at angle θ get the same bit with probability exactly ``p = 1 - θ/π``.
Bits are grouped into ``bands`` bands of ``rows`` bits; two vectors become *candidates* when
in at least one band their keys differ in at most ``radius`` bits (radius 0: classic banding;
radius 1: a query also probes the ``rows`` buckets one bit away, multi-probe LSH). A band
catches a pair with probability ``h = sum_{d<=radius} C(rows, d) p^(rows-d) (1-p)^d`` and the
pair becomes a candidate with probability ``1 - (1 - h)**bands``. Only candidates are compared
exactly.

Choices, and why:

- **Gaussian hyperplanes, generated from a hash of the column.** The entry of hyperplane
  ``k`` for column ``c`` is a standard normal drawn from a counter-based hash of
  ``(seed, key(c), k)`` (splitmix64, then Box-Muller), so no projection matrix is stored or
  persisted, a column's entries do not depend on the order columns were first seen, and a
  vocabulary of any size (column keys are 64-bit hashes of the ``key=value`` text) costs
  nothing until used. Entries are Gaussian rather than ±1 because the collision law
  ``1 - θ/π`` holds exactly only for rotation-invariant hyperplanes: a metric name has four
  to six nonzero entries, and with ±1 entries the projection of a 3-sparse vector is a sum of
  three signed weights whose sign agrees with a 1-sparse vector's 3/4 of the time where
  theory says 0.70 (and sums of two equal weights tie at exactly 0).
- **Sparse rows are never densified.** A chunk of rows is multiplied by the projection rows of
  the columns it uses only (``csr @ dense``); rows are processed in the order of their rarest
  column so that each chunk touches few distinct columns.
- **Bands, rows and probe radius are derived, not asked for** (as datasketch does for MinHash):
  the recall at the threshold is a hard constraint (every pair at least as similar as the
  threshold is a candidate with probability >= ``recall``) and, among the choices that meet it
  within a budget of bands (memory) and probes (query time), we take the one with the smallest
  false-positive probability integrated over similarities below the threshold.
- **Buckets are arrays, not dicts**: per band a directory of bucket offsets and the member
  rows sorted by bucket (counting-sort layout). A query gathers its probed buckets in all
  bands with a few vectorized operations. Rows appended later wait in a pending tail that
  queries scan (vectorized) until the tables are compacted.

The floor of this scheme is worth knowing: two vectors that share nothing (cosine 0) still
agree on a bit half the time. At threshold 0.6 and recall 0.95, 198 bands of 12 bits let
4.7% of unrelated pairs through, the default 140 bands of 17 bits probed at radius 1 let
1.9% through, and 0.1% would take at least 903 bands of 29 bits probed at radius 2: seven
gigabytes of tables per million vectors and 400,000 probes a query. Hence a second stage
(:class:`SignatureFilter`): the Hamming distance over the first few hundred signature bits
estimates each candidate's angle, and only candidates within a binomial cutoff are compared
exactly (a pair at the threshold is dropped with a stated, small probability).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from stormeye.core.errors import BadInput

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)

#: Bucket directories hold at most 2**DIRECTORY_BITS buckets per band (and about as many as
#: there are rows); longer keys are bucketed by their low bits (themselves independent
#: hyperplane bits) and verified in full.
DIRECTORY_BITS = 20
#: Keys this short are counted in dense arrays (2**bits entries per band) when enumerating pairs.
DENSE_KEY_BITS = 20


class LSHError(BadInput):
    """LSH parameters or inputs that cannot work; the message says what to change."""


def bit_collision_probability(cosine: float | np.ndarray) -> float | np.ndarray:
    """Probability that one random hyperplane puts two vectors on the same side: ``1 - θ/π``."""
    c = np.clip(np.asarray(cosine, dtype=np.float64), -1.0, 1.0)
    p = 1.0 - np.arccos(c) / np.pi
    return float(p) if p.ndim == 0 else p


def band_hit_probability(p: float | np.ndarray, rows: int, radius: int = 0) -> float | np.ndarray:
    """Probability that two vectors whose bits agree with probability ``p`` have band keys at most
    ``radius`` bits apart: ``sum_{d <= radius} C(rows, d) p^(rows-d) (1-p)^d``."""
    pa = np.asarray(p, dtype=np.float64)
    out = sum(math.comb(rows, d) * pa ** (rows - d) * (1.0 - pa) ** d for d in range(radius + 1))
    out = np.minimum(np.asarray(out, dtype=np.float64), 1.0)
    return float(out) if out.ndim == 0 else out


def candidate_probability(cosine: float | np.ndarray, bands: int, rows: int, radius: int = 0) -> float | np.ndarray:
    """Probability that two vectors become candidates: in at least one of ``bands`` bands of ``rows``
    bits their keys are at most ``radius`` bits apart (``radius`` 0: equal keys)."""
    hit = np.asarray(band_hit_probability(bit_collision_probability(cosine), rows, radius))
    # 1 - (1 - hit)^b, computed stably for tiny hit (and exactly 1 for identical vectors)
    with np.errstate(divide="ignore"):
        q = -np.expm1(bands * np.log1p(-hit))
    return float(q) if q.ndim == 0 else q


def _fp_integral(threshold: float, bands: int, rows: int, radius: int = 0, points: int = 257) -> float:
    """Mean candidate probability of pairs with cosine uniform in [0, threshold] (Simpson's rule)."""
    s = np.linspace(0.0, threshold, points)
    f = np.asarray(candidate_probability(s, bands, rows, radius))
    h = threshold / (points - 1)
    return float(h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()) / threshold)


MAX_RADIUS = 2


@dataclass(frozen=True)
class BandingParams:
    """How signatures are banded: ``bands`` bands of ``rows`` bits, probed within ``radius`` bits.

    With ``radius`` 0 two vectors are candidates when a whole band agrees (classic banding);
    with ``radius`` 1 also when a band differs in one bit (multi-probe LSH: a query looks in its
    own bucket and in the ``rows`` buckets one bit away). Probing lets bands be longer for the
    same recall, so fewer bands and fewer false positives. Build with :meth:`derive`; the
    constructor only checks that the numbers are usable.
    """

    threshold: float
    recall: float
    bands: int
    rows: int
    radius: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise LSHError(f"LSH threshold must be a cosine strictly between 0 and 1, got {self.threshold}")
        if not 0.0 < self.recall < 1.0:
            raise LSHError(f"LSH recall must be strictly between 0 and 1, got {self.recall}")
        if not 1 <= self.rows <= 64:
            raise LSHError(f"LSH rows per band must be within 1..64 (a band key is one integer), got {self.rows}")
        if self.bands < 1:
            raise LSHError(f"LSH bands must be at least 1, got {self.bands}")
        if not 0 <= self.radius <= min(MAX_RADIUS, self.rows):
            raise LSHError(f"LSH probe radius must be within 0..{min(MAX_RADIUS, self.rows)}, got {self.radius}")

    @classmethod
    def derive(
        cls, threshold: float, recall: float = 0.95, max_bands: int = 160, max_probes: int = 4096
    ) -> BandingParams:
        """The banding that catches a pair at ``threshold`` with probability >= ``recall``.

        For every ``rows`` and probe radius (0 to 2), the smallest number of bands that meets
        the recall; among those within ``max_bands`` (memory: one bucket table per band) and
        ``max_probes`` (buckets a query looks in: ``bands * sum_{d<=radius} C(rows, d)``), the
        one whose false-positive probability, integrated over cosines in ``[0, threshold]``, is
        smallest (ties: fewer hyperplanes).
        """
        probe = cls(threshold, recall, 1, 1)  # validates threshold and recall
        if max_bands < 1:
            raise LSHError(f"LSH max_bands must be at least 1, got {max_bands}")
        if max_probes < 1:
            raise LSHError(f"LSH max_probes must be at least 1, got {max_probes}")
        p1 = float(bit_collision_probability(probe.threshold))
        best: tuple[float, int, int, int, int] | None = None
        for radius in range(MAX_RADIUS + 1):
            for rows in range(max(1, radius), 65):
                hit = float(band_hit_probability(p1, rows, radius))
                if hit <= 0.0:
                    break
                bands = max(1, math.ceil(math.log1p(-recall) / math.log1p(-hit) - 1e-9)) if hit < 1.0 else 1
                probes = bands * sum(math.comb(rows, d) for d in range(radius + 1))
                if bands > max_bands or probes > max_probes:
                    continue
                fp = _fp_integral(threshold, bands, rows, radius)
                key = (fp, bands * rows, bands, rows, radius)
                if best is None or key < best:
                    best = key
        if best is None:
            need = math.ceil(math.log1p(-recall) / math.log1p(-p1))
            raise LSHError(
                f"LSH max_bands={max_bands} and max_probes={max_probes} cannot reach recall {recall} at "
                f"threshold {threshold}: allow at least {need} bands and probes, or lower the recall"
            )
        return cls(threshold, recall, best[2], best[3], best[4])

    @property
    def bits(self) -> int:
        """Hyperplanes per signature."""
        return self.bands * self.rows

    @property
    def probes(self) -> int:
        """Buckets one query looks in, over all bands."""
        return self.bands * sum(math.comb(self.rows, d) for d in range(self.radius + 1))

    @property
    def key_dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds one band key."""
        for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
            if self.rows <= np.dtype(dt).itemsize * 8:
                return np.dtype(dt)
        raise AssertionError("rows is at most 64")

    def candidate_probability(self, cosine: float | np.ndarray) -> float | np.ndarray:
        """Probability that a pair with this cosine becomes a candidate."""
        return candidate_probability(cosine, self.bands, self.rows, self.radius)

    def recall_at_threshold(self) -> float:
        """Candidate probability of a pair exactly at the threshold (>= ``recall``)."""
        return float(self.candidate_probability(self.threshold))

    def false_positive_rate(self, cosine: float = 0.0) -> float:
        """Candidate probability of a pair with the given (low) cosine; 0 means unrelated."""
        return float(self.candidate_probability(cosine))


# -- hashed Gaussian hyperplanes --------------------------------------------------------


def _mix_scalar(x: int) -> int:
    """splitmix64 finalizer on a Python int (no numpy overflow warnings for scalars)."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized (uint64 arithmetic wraps, as intended)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def gaussian_projection(column_keys: np.ndarray, n_bits: int, seed: int) -> np.ndarray:
    """Hyperplane entries for the given columns: a ``(len(column_keys), n_bits)`` float32 array.

    Entry ``[i, k]`` is a standard normal that depends only on ``(seed, column_keys[i], k)``:
    hash ``j = k // 2`` of the column gives two 24-bit uniforms, and Box-Muller turns them into
    two independent normals (the cosine one for even ``k``, the sine one for odd ``k``).
    Worked in cache-sized blocks, in place: this is the hot loop of hashing.
    """
    keys = np.asarray(column_keys, dtype=np.uint64)
    n = len(keys)
    half = (n_bits + 1) // 2
    out = np.empty((n, 2 * half), dtype=np.float32)
    if n == 0 or half == 0:
        return out[:, :n_bits]
    base = _mix(keys ^ np.uint64(_mix_scalar(seed * _GOLDEN + 0x632BE59BD9B4E019)))
    counters = np.arange(1, half + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
    step = max(1, (1 << 17) // half)
    z = np.empty((step, half), dtype=np.uint64)
    tmp = np.empty_like(z)
    radius = np.empty((step, half), dtype=np.float32)
    angle = np.empty_like(radius)
    for lo in range(0, n, step):
        m = min(n, lo + step) - lo
        zz, tt, r, a = z[:m], tmp[:m], radius[:m], angle[:m]
        np.add(base[lo : lo + m, None], counters[None, :], out=zz)
        for shift, mult in ((_S30, _M1), (_S27, _M2)):
            np.right_shift(zz, shift, out=tt)
            np.bitwise_xor(zz, tt, out=zz)
            np.multiply(zz, mult, out=zz)
        np.right_shift(zz, _S31, out=tt)
        np.bitwise_xor(zz, tt, out=zz)
        np.right_shift(zz, np.uint64(40), out=tt)
        r[...] = tt
        np.right_shift(zz, np.uint64(16), out=tt)
        np.bitwise_and(tt, np.uint64(0xFFFFFF), out=tt)
        a[...] = tt
        # uniforms in (0, 1) on a 2**-24 grid; float32 holds them exactly
        r += np.float32(0.5)
        r *= np.float32(2.0**-24)
        np.log(r, out=r)
        r *= np.float32(-2.0)
        np.sqrt(r, out=r)
        a += np.float32(0.5)
        a *= np.float32(2.0 * np.pi * 2.0**-24)
        block = out[lo : lo + m]
        np.multiply(r, np.cos(a), out=block[:, 0::2])
        np.multiply(r, np.sin(a), out=block[:, 1::2])
    return out[:, :n_bits]


def column_keys_for_dense(n_columns: int) -> np.ndarray:
    """Column keys of dense vectors (time-series windows): the column positions themselves."""
    return np.arange(n_columns, dtype=np.uint64)


def _bits_to_keys(bits: np.ndarray, params: BandingParams) -> np.ndarray:
    """``(n, bands*rows)`` booleans to ``(bands, n)`` band keys (bit ``j`` of a band is ``2**j``).

    The signature is packed to bytes once; each band's key is then read from the (at most
    eight) bytes it spans, for all rows and bands at once.
    """
    n = bits.shape[0]
    b, r = params.bands, params.rows
    dt = params.key_dtype
    if r > 56:  # a band may span nine bytes: pad each band to 64 bits instead
        b3 = np.zeros((n, b, 64), dtype=bool)
        b3[:, :, :r] = bits.reshape(n, b, r)
        packed64 = np.packbits(b3, axis=2, bitorder="little").reshape(n, b * 8)
        return np.ascontiguousarray(packed64.view(np.dtype("<u8")).astype(dt).T)
    span = (r + 7) // 8 + 1
    packed = np.zeros((n, (b * r + 7) // 8 + span), dtype=np.uint8)
    packed[:, : (b * r + 7) // 8] = np.packbits(bits, axis=1, bitorder="little")
    start = np.arange(b) * r
    byte0, shift = start // 8, start % 8
    acc_t = np.uint32 if r + 7 <= 32 else np.uint64
    acc = np.zeros((b, n), dtype=acc_t)
    packed_t = packed.T
    for j in range(span):
        acc |= np.left_shift(packed_t[byte0 + j].astype(acc_t), acc_t(8 * j))
    acc >>= shift.astype(acc_t)[:, None]
    acc &= acc_t((1 << r) - 1)
    return acc.astype(dt, copy=False)


def projection_signs(
    matrix: sp.csr_matrix | np.ndarray, column_keys: np.ndarray, n_bits: int, seed: int = 0
) -> np.ndarray:
    """``(n_rows, n_bits)`` booleans: is each row on the positive side of each hyperplane.

    The bits :func:`signatures` bands (bit ``k`` of a signature is hyperplane ``k``); exposed
    for Hamming estimates of the angle (``θ ≈ π * differing / n_bits``) and for tests.
    """
    keys = np.asarray(column_keys, dtype=np.uint64)
    if sp.issparse(matrix):
        mat = sp.csr_matrix(matrix)
        used, inv = np.unique(mat.indices, return_inverse=True)
        local = sp.csr_matrix(
            (mat.data.astype(np.float32), inv.astype(np.int32), mat.indptr), shape=(mat.shape[0], len(used))
        )
        return np.asarray(local @ gaussian_projection(keys[used], n_bits, seed)) > 0
    return np.asarray(np.asarray(matrix, dtype=np.float32) @ gaussian_projection(keys, n_bits, seed)) > 0


def signatures(
    matrix: sp.csr_matrix | np.ndarray,
    column_keys: np.ndarray,
    params: BandingParams,
    seed: int = 0,
    chunk_rows: int | None = None,
    order: np.ndarray | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Band keys of every row of ``matrix``: a ``(bands, n_rows)`` array of ``params.key_dtype``.

    ``matrix`` is a CSR matrix (weights, any number of columns) or a dense 2-D array;
    ``column_keys[c]`` is the 64-bit key of column ``c``. Sparse rows are hashed by multiplying
    each chunk by the hyperplane entries of the columns the chunk uses, never densified.
    ``order`` optionally gives the order rows are processed in (results are the same; a good
    order, such as by each row's rarest column, keeps the columns of a chunk few). By default a
    chunk's projections take about 16 MB, small enough to be reused rather than re-mapped.
    ``workers`` threads hash chunks in parallel (numpy and scipy release the GIL in the
    heavy parts); results do not depend on it.
    """
    if chunk_rows is None:
        chunk_rows = max(256, (1 << 24) // (4 * params.bits))
    if chunk_rows < 1:
        raise LSHError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if workers < 1:
        raise LSHError(f"workers must be at least 1, got {workers}")
    keys_arr = np.asarray(column_keys, dtype=np.uint64)
    n_rows, n_cols = matrix.shape
    if len(keys_arr) != n_cols:
        raise LSHError(f"column_keys has {len(keys_arr)} keys but the matrix has {n_cols} columns")
    staged = np.empty((params.bands, n_rows), dtype=params.key_dtype)
    if n_rows == 0:
        return staged
    seq = None if order is None else np.asarray(order, dtype=np.int64)
    if seq is not None and (len(seq) != n_rows or not np.array_equal(np.sort(seq), np.arange(n_rows))):
        raise LSHError("order must be a permutation of the rows")
    if sp.issparse(matrix):
        mat = sp.csr_matrix(matrix if seq is None else matrix[seq])  # rows in processing order
        mat.sort_indices()

        def project(lo: int, hi: int) -> np.ndarray:
            sub = mat[lo:hi]
            used, inv = np.unique(sub.indices, return_inverse=True)
            local = sp.csr_matrix(
                (sub.data.astype(np.float32), inv.astype(np.int32), sub.indptr), shape=(hi - lo, len(used))
            )
            return np.asarray(local @ gaussian_projection(keys_arr[used], params.bits, seed))

    else:
        dense = np.asarray(matrix, dtype=np.float32)
        if seq is not None:
            dense = dense[seq]
        proj_dense = gaussian_projection(keys_arr, params.bits, seed)

        def project(lo: int, hi: int) -> np.ndarray:
            return np.asarray(dense[lo:hi] @ proj_dense)

    def run(lo: int) -> None:
        hi = min(n_rows, lo + chunk_rows)
        staged[:, lo:hi] = _bits_to_keys(project(lo, hi) > 0, params)

    starts = range(0, n_rows, chunk_rows)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    else:
        for lo in starts:
            run(lo)
    if seq is None:
        return staged
    out = np.empty_like(staged)
    out[:, seq] = staged
    return out


# -- second stage: Hamming filter ---------------------------------------------------------


def hamming_cutoff(threshold: float, n_bits: int, miss: float) -> int:
    """The largest Hamming distance, over ``n_bits`` sign bits, at which a pair is kept.

    Two vectors at cosine ``c`` differ on each bit independently with probability
    ``q(c) = θ/π = arccos(c)/π``, so their distance is ``Binomial(n_bits, q(c))``. The cutoff
    is the smallest ``d`` with ``P(Binomial(n_bits, q(threshold)) > d) <= miss``: a pair at the
    threshold is dropped with probability at most ``miss``, and a pair above it (smaller
    ``q``, a stochastically smaller distance) even less often. Exact binomial tail
    (``scipy.special.bdtr``), not a normal approximation.
    """
    if n_bits < 1:
        raise LSHError(f"a Hamming filter needs at least 1 bit, got {n_bits}")
    if not 0.0 < miss < 1.0:
        raise LSHError(f"the Hamming filter's miss probability must be strictly between 0 and 1, got {miss}")
    from scipy.special import bdtr

    q = 1.0 - float(bit_collision_probability(threshold))
    cdf = bdtr(np.arange(n_bits + 1), n_bits, q)
    # first d whose CDF reaches 1 - miss; n_bits (keep everything) when rounding never lets it
    ok = np.flatnonzero(cdf >= 1.0 - miss)
    return int(ok[0]) if len(ok) else n_bits


def estimated_cosine(distance: np.ndarray | int, n_bits: int) -> np.ndarray:
    """The cosine a Hamming distance over ``n_bits`` sign bits points to: ``cos(π * distance / n_bits)``."""
    return np.cos(np.pi * np.asarray(distance, dtype=np.float64) / n_bits)


def pack_signature_bits(keys: np.ndarray, rows: int, n_bits: int) -> np.ndarray:
    """The first ``n_bits`` signature bits of every row, packed: ``(n, ceil(n_bits / 64))`` uint64.

    ``keys`` are ``(bands, n)`` band keys of ``rows`` bits (as :func:`signatures` returns them);
    bit ``k`` of the result (word ``k // 64``, bit ``k % 64``) is hyperplane ``k``, the bit
    ``projection_signs`` gives. Rebuilt from the band keys, so nothing new is hashed or stored
    on disk; row-major, so one candidate's bits are one contiguous read.
    """
    keys = np.asarray(keys)
    if keys.ndim != 2:
        raise LSHError(f"band keys must be a (bands, rows) array, got shape {keys.shape}")
    bands, n = keys.shape
    if not 1 <= n_bits <= bands * rows:
        raise LSHError(f"can pack 1..{bands * rows} bits from {bands} bands of {rows}, asked for {n_bits}")
    words = (n_bits + 63) // 64
    out = np.zeros((n, words), dtype=np.uint64)
    for band in range((n_bits + rows - 1) // rows):
        take = min(rows, n_bits - band * rows)
        k = keys[band].astype(np.uint64)
        if take < 64:
            k &= np.uint64((1 << take) - 1)
        word, shift = divmod(band * rows, 64)
        out[:, word] |= k << np.uint64(shift)
        if shift + take > 64:
            out[:, word + 1] |= k >> np.uint64(64 - shift)
    return out


_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def _popcount_rows_table(x: np.ndarray) -> np.ndarray:
    """Set bits per row of a uint64 array through a byte table (numpy < 2.0 has no ``bitwise_count``)."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _POPCOUNT8[x.view(np.uint8)].sum(axis=-1, dtype=np.int64)


def _popcount_rows(x: np.ndarray) -> np.ndarray:
    """Set bits per row of a uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0: a popcount instruction per word
        return np.bitwise_count(x).sum(axis=-1, dtype=np.int64)
    return _popcount_rows_table(x)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between rows of packed signatures ``a`` and ``b`` (same shape, or one row against many)."""
    return _popcount_rows(np.bitwise_xor(a, b))


class SignatureFilter:
    """Second stage after banding: drop LSH candidates whose signatures are too far apart.

    Banding lets through every pair that agrees within the probe radius on *one* band, so
    pairs well below the threshold (names of one family sharing two or three pairs) become
    candidates often. Their whole signatures tell them apart cheaply: the Hamming distance
    over ``n_bits`` bits estimates the angle (:func:`hamming_cutoff`), one XOR and popcount
    per 64 bits. A candidate goes on to the exact cosine only when its distance is at most
    the cutoff for the query's threshold, so a pair at or above the threshold is dropped here
    with probability at most ``miss``.

    The bits are the first ``n_bits`` bits of the banded signature (read back from the band
    keys), not new hyperplanes: nothing extra to hash or persist. Reusing them does not weaken
    the bound: being a candidate (some band nearly equal) is a decreasing event in the bits
    that differ and being dropped an increasing one, so by Harris' inequality for independent
    bits ``P(candidate and kept) >= P(candidate) * (1 - miss)``.
    """

    def __init__(self, params: BandingParams, n_bits: int, miss: float) -> None:
        if not 1 <= n_bits <= params.bits:
            raise LSHError(f"filter bits must be within 1..{params.bits} (the signature's bits), got {n_bits}")
        hamming_cutoff(params.threshold, n_bits, miss)  # validates miss
        self.params = params
        self.n_bits = int(n_bits)
        self.miss = float(miss)
        self.words = (self.n_bits + 63) // 64
        self._packed = GrowableArray(np.uint64, capacity=1024 * self.words)
        self._cutoffs: dict[float, int] = {}

    def __len__(self) -> int:
        return self._packed.n // self.words

    @property
    def packed(self) -> np.ndarray:
        """``(n, words)`` packed filter bits of every row."""
        return self._packed.view().reshape(-1, self.words)

    def append(self, keys: np.ndarray) -> None:
        """Add rows from their ``(bands, m)`` band keys."""
        self._packed.extend(pack_signature_bits(keys, self.params.rows, self.n_bits).ravel())

    def cutoff(self, threshold: float) -> int:
        """Largest distance kept for a query at ``threshold`` (at least the LSH threshold)."""
        t = float(threshold)
        if t < self.params.threshold - 1e-12:
            raise LSHError(f"the filter serves cosines >= {self.params.threshold}, asked for {t}")
        if t not in self._cutoffs:
            self._cutoffs[t] = hamming_cutoff(t, self.n_bits, self.miss)
        return self._cutoffs[t]

    def keep_neighbours(self, row: int, cand: np.ndarray, threshold: float) -> np.ndarray:
        """The candidates of row ``row`` within the cutoff (a subset of ``cand``, order kept)."""
        packed = self.packed
        dist = hamming_distances(packed[cand], packed[row])
        return cand[dist <= self.cutoff(threshold)]

    def keep_pairs(self, i: np.ndarray, j: np.ndarray, threshold: float, block: int = 1 << 20) -> np.ndarray:
        """Mask of the pairs ``(i[k], j[k])`` within the cutoff (in blocks: temporaries stay small)."""
        packed = self.packed
        cut = self.cutoff(threshold)
        out = np.empty(len(i), dtype=bool)
        for lo in range(0, len(i), block):
            hi = min(len(i), lo + block)
            out[lo:hi] = hamming_distances(packed[i[lo:hi]], packed[j[lo:hi]]) <= cut
        return out

    def nbytes(self) -> int:
        return int(self._packed.buf.nbytes)


# -- bucket tables ------------------------------------------------------------------------


class GrowableArray:
    """A 1-D or band-major 2-D numpy buffer that grows along its last axis by doubling."""

    def __init__(self, dtype: np.dtype | type, lead: int | None = None, capacity: int = 1024) -> None:
        shape = (capacity,) if lead is None else (lead, capacity)
        self.buf = np.zeros(shape, dtype=dtype)
        self.n = 0

    def view(self) -> np.ndarray:
        return self.buf[..., : self.n]

    def extend(self, values: np.ndarray, owned: bool = False) -> None:
        """Append along the last axis. ``owned``: the caller hands ``values`` over (never uses it
        again), so a first large block can become the buffer itself instead of being copied."""
        m = values.shape[-1]
        need = self.n + m
        if owned and self.n == 0 and m >= self.buf.shape[-1] and values.dtype == self.buf.dtype:
            # no copy (a million names' keys are hundreds of MB); the next extend grows a new buffer
            self.buf = np.ascontiguousarray(values)
            self.n = m
            return
        if need > self.buf.shape[-1]:
            cap = max(need, 2 * self.buf.shape[-1])
            new = np.zeros((*self.buf.shape[:-1], cap), dtype=self.buf.dtype)
            new[..., : self.n] = self.buf[..., : self.n]
            self.buf = new
        self.buf[..., self.n : need] = values
        self.n = need


class BandTables:
    """Band keys of rows ``0..n-1`` and, per band, those rows grouped by key.

    Rows are appended with :meth:`append`; until :meth:`compact` folds them into the tables
    they sit in a pending tail that queries scan. :meth:`candidates` compacts first when the
    tail has outgrown ``max(min_pending, tabled / pending_ratio)``.
    """

    def __init__(
        self, params: BandingParams, min_pending: int = 4096, pending_ratio: int = 32, workers: int = 1
    ) -> None:
        self.params = params
        self.workers = workers
        self.min_pending = min_pending
        self.pending_ratio = pending_ratio
        self._keys = GrowableArray(params.key_dtype, lead=params.bands)
        self._valid = GrowableArray(np.bool_)
        self._n_tabled = 0
        self._dir_bits = 0
        self._directory = np.zeros((params.bands, 2), dtype=np.int32)
        self._members = np.zeros(0, dtype=np.int32)
        self._n_members = 0

    def __len__(self) -> int:
        return self._keys.n

    @property
    def keys(self) -> np.ndarray:
        """``(bands, n)`` band keys of every row."""
        return self._keys.view()

    @property
    def valid(self) -> np.ndarray:
        """Rows that take part (a zero vector is similar to nothing and is left out)."""
        return self._valid.view()

    @property
    def pending(self) -> int:
        """Rows appended since the last compaction."""
        return len(self) - self._n_tabled

    def append(self, keys: np.ndarray, valid: np.ndarray | None = None, owned: bool = False) -> None:
        """Add rows ``n..n+m-1`` with their ``(bands, m)`` keys (``owned``: the tables may keep ``keys`` itself)."""
        keys = np.asarray(keys)
        if keys.ndim != 2 or keys.shape[0] != self.params.bands:
            raise LSHError(f"keys must have shape (bands={self.params.bands}, rows), got {keys.shape}")
        m = keys.shape[1]
        self._keys.extend(keys.astype(self.params.key_dtype, copy=False), owned=owned)
        self._valid.extend(np.ones(m, bool) if valid is None else np.asarray(valid, dtype=bool))

    def compact(self) -> None:
        """Rebuild the bucket tables over all rows (counting-sort layout per band, bands in ``workers`` threads)."""
        n = len(self)
        workers = self.workers
        b = self.params.bands
        valid = self.valid
        every = bool(valid.all())
        rows = np.arange(n, dtype=np.int32) if every else np.flatnonzero(valid).astype(np.int32)
        bits = min(self.params.rows, DIRECTORY_BITS, max(4, math.ceil(math.log2(max(len(rows), 2)))))
        n_buckets = 1 << bits
        directory = np.zeros((b, n_buckets + 1), dtype=np.int32)  # offsets within one band (< 2**31 rows)
        members = np.empty(b * len(rows), dtype=np.int32)
        keys = self.keys
        bucket_t = np.uint16 if bits <= 16 else np.uint32

        def table(band: int) -> None:
            k = keys[band] if every else keys[band, rows]
            if bits < self.params.rows or k.dtype.itemsize > np.dtype(bucket_t).itemsize:
                k = (k & k.dtype.type(n_buckets - 1)).astype(bucket_t)
            order = _stable_argsort(k)
            members[band * len(rows) : (band + 1) * len(rows)] = order if every else rows[order]
            np.cumsum(np.bincount(k, minlength=n_buckets), out=directory[band, 1:])

        if workers > 1 and b > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(table, range(b)))
        else:
            for band in range(b):
                table(band)
        self._directory, self._members, self._dir_bits = directory, members, bits
        self._n_tabled = n
        self._n_members = len(rows)

    def _maybe_compact(self) -> None:
        if self.pending > max(self.min_pending, self._n_tabled // self.pending_ratio):
            self.compact()

    def candidates(self, qkeys: np.ndarray) -> np.ndarray:
        """Rows whose key is within the probe radius of ``qkeys`` (one key per band) in at least one band, sorted."""
        self._maybe_compact()
        radius = self.params.radius
        qkeys = np.asarray(qkeys, dtype=self.params.key_dtype)
        n = len(self)
        hit = np.zeros(n, dtype=bool)
        if self._n_tabled:
            b = self.params.bands
            masks = probe_masks(self._dir_bits, radius)
            low = qkeys.astype(np.uint64) & np.uint64((1 << self._dir_bits) - 1)
            bucket = (low[:, None] ^ masks[None, :]).astype(np.int64)  # (bands, probes)
            band_ix = np.repeat(np.arange(b), len(masks))
            bucket = bucket.ravel()
            lo = self._directory[band_ix, bucket].astype(np.int64)
            lens = self._directory[band_ix, bucket + 1] - lo
            total = int(lens.sum())
            if total:
                got = self._members[ranges(lo + band_ix * self._n_members, lens)]
                if self._dir_bits < self.params.rows:  # buckets hold low bits only: check whole keys
                    band_of = np.repeat(band_ix, lens)
                    got = got[within_radius(self.keys[band_of, got] ^ qkeys[band_of], radius)]
                hit[got] = True
        if self.pending:
            tail = self.keys[:, self._n_tabled :]
            near = within_radius(tail ^ qkeys[:, None], radius).any(axis=0)
            hit[self._n_tabled :] = near & self.valid[self._n_tabled :]
        return np.flatnonzero(hit)

    def bucket_pairs(self) -> int:
        """Pairs of rows whose keys are within the probe radius, summed over bands: an upper bound on the
        distinct pairs an all-pairs join would compare (pairs found in several bands count several times)."""
        total = 0
        rows = self.params.rows
        masks = probe_masks(rows, self.params.radius)[1:]
        every = bool(self.valid.all())
        if rows <= DENSE_KEY_BITS:
            space = np.arange(1 << rows, dtype=np.uint64)
            for band in range(self.params.bands):
                counts = np.bincount(self.keys[band] if every else self.keys[band, self.valid], minlength=1 << rows)
                counts = counts.astype(np.int64)
                total += int((counts * (counts - 1) // 2).sum())
                for mask in masks:
                    partner = (space ^ mask).astype(np.int64)
                    upper = partner > np.arange(1 << rows)
                    total += int((counts[upper] * counts[partner[upper]]).sum())
            return total
        for band in range(self.params.bands):
            keys = np.sort(self.keys[band, self.valid])
            sizes = _group_sizes(keys)
            if not len(sizes):
                continue
            ukeys = keys[np.cumsum(sizes) - sizes]
            total += int((sizes * (sizes - 1) // 2).sum())
            for mask in masks:
                partner = ukeys ^ ukeys.dtype.type(mask)
                pos = np.minimum(np.searchsorted(ukeys, partner), len(ukeys) - 1)
                match = (ukeys[pos] == partner) & (ukeys < partner)
                total += int((sizes[match] * sizes[pos[match]]).sum())
        return total

    def nbytes(self) -> int:
        """Memory held by keys and tables."""
        return int(self._keys.buf.nbytes + self._valid.buf.nbytes + self._directory.nbytes + self._members.nbytes)


def _stable_argsort(k: np.ndarray) -> np.ndarray:
    """Stable argsort of unsigned keys below 2**32 as 16-bit radix passes (numpy radix-sorts 16-bit
    integers but merge-sorts 32-bit ones, four times slower on a million keys)."""
    if k.dtype.itemsize <= 2:
        return np.argsort(k, kind="stable")
    low = np.argsort((k & k.dtype.type(0xFFFF)).astype(np.uint16), kind="stable")
    high = np.argsort((k[low] >> k.dtype.type(16)).astype(np.uint16), kind="stable")
    return low[high]


def probe_masks(bits: int, radius: int) -> np.ndarray:
    """XOR masks of at most ``radius`` set bits among the low ``bits`` bits, 0 first (uint64)."""
    masks = [0]
    if radius >= 1:
        masks += [1 << i for i in range(bits)]
    if radius >= 2:
        masks += [(1 << i) | (1 << j) for i in range(bits) for j in range(i + 1, bits)]
    return np.asarray(masks, dtype=np.uint64)


def within_radius(xor: np.ndarray, radius: int) -> np.ndarray:
    """Whether each XOR of two keys has at most ``radius`` set bits (clear the lowest bit ``radius`` times)."""
    x = np.asarray(xor)
    one = x.dtype.type(1)
    for _ in range(radius):
        x = x & (x - one)
    return x == 0


def ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The positions ``starts[i], ..., starts[i] + lens[i] - 1`` of every range, one after the other
    (the entries of CSR rows, of buckets): one gather index for all of them, no Python loop."""
    lens = np.asarray(lens, dtype=np.int64)
    total = int(lens.sum())
    offsets = np.cumsum(lens) - lens
    return np.repeat(np.asarray(starts, dtype=np.int64) - offsets, lens) + np.arange(total)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Distinct values, ascending. Sorts and compares neighbours: numpy 2's hash-based
    ``np.unique`` is over 20 times slower on millions of distinct int64 pair codes."""
    out = np.sort(values, kind="stable" if values.dtype.itemsize <= 2 else None)
    if len(out) < 2:
        return out
    return out[np.concatenate(([True], out[1:] != out[:-1]))]


def _group_sizes(sorted_values: np.ndarray) -> np.ndarray:
    """Run lengths of equal neighbours in a sorted array."""
    if not len(sorted_values):
        return np.zeros(0, dtype=np.int64)
    brk = np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1
    return np.diff(np.concatenate(([0], brk, [len(sorted_values)])))


def pairs_within_groups(order: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All ``(order[a], order[b])`` with ``a < b`` inside each group ``order[start:start+size]``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    keep = sizes > 1
    starts, sizes = np.asarray(starts, dtype=np.int64)[keep], sizes[keep]
    if not len(sizes):
        empty = np.zeros(0, dtype=order.dtype)
        return empty, empty
    # every position p of a group pairs with the positions after it in the same group
    pos = np.repeat(starts, sizes) + (np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    group_end = np.repeat(starts + sizes, sizes)
    after = group_end - pos - 1
    first = np.repeat(pos, after)
    second = first + 1 + (np.arange(int(after.sum())) - np.repeat(np.cumsum(after) - after, after))
    return order[first], order[second]


def candidate_pairs(
    keys: np.ndarray,
    valid: np.ndarray | None = None,
    radius: int = 0,
    rows: int | None = None,
    max_pairs: int = 200_000_000,
) -> np.ndarray:
    """Distinct candidate pairs among the columns of ``(bands, m)`` band keys, as codes ``i*m + j`` (``i < j``):
    pairs whose keys are at most ``radius`` bits apart in at least one band (keys of ``rows`` bits;
    default: the key type's width).

    Raises :class:`LSHError` when more than ``max_pairs`` band collisions would be enumerated
    (the keys say the set is too alike for LSH to help: compare it exactly instead).
    """
    keys = np.asarray(keys)
    m = keys.shape[1]
    rows_bits = keys.dtype.itemsize * 8 if rows is None else rows
    idx = np.arange(m) if valid is None else np.flatnonzero(valid)
    masks = probe_masks(rows_bits, radius)[1:]
    chunks: list[np.ndarray] = []
    held = 0

    def keep(a: np.ndarray, b: np.ndarray) -> None:
        nonlocal chunks, held
        if held + len(a) > max_pairs:
            merged = sorted_unique(np.concatenate(chunks)) if chunks else np.zeros(0, np.int64)
            chunks, held = [merged], len(merged)
            if held + len(a) > max_pairs:
                raise LSHError(
                    f"more than {max_pairs} candidate pairs: the set is too alike for LSH to prune; "
                    "compare it exactly or raise the threshold"
                )
        lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
        chunks.append(lo * m + hi)
        held += len(lo)

    dense = len(masks) and rows_bits <= DENSE_KEY_BITS and len(idx) * len(masks) <= 50_000_000
    for band in range(keys.shape[0]):
        k = keys[band, idx]
        order = _stable_argsort(k) if k.dtype.itemsize <= 4 else np.argsort(k, kind="stable")
        ks = k[order]
        sizes = _group_sizes(ks)
        starts = np.cumsum(sizes) - sizes
        keep(*pairs_within_groups(idx[order], starts, sizes))
        if dense:
            # every element against every key one probe away, at once: (elements x masks) lookups
            counts = np.bincount(ks, minlength=1 << rows_bits)
            first_at = np.cumsum(counts) - counts
            partner = (ks.astype(np.uint64)[:, None] ^ masks[None, :]).astype(np.int64)
            cnt = np.where(partner > ks.astype(np.int64)[:, None], counts[partner], 0)
            flat_cnt = cnt.ravel()
            if not flat_cnt.any():
                continue
            elem = np.repeat(np.repeat(np.arange(len(ks)), len(masks)), flat_cnt)
            base = np.repeat(first_at[partner.ravel()] - (np.cumsum(flat_cnt) - flat_cnt), flat_cnt)
            other = base + np.arange(int(flat_cnt.sum()))
            keep(idx[order[elem]], idx[order[other]])
            continue
        for mask in masks:
            partner = ks ^ ks.dtype.type(mask)
            sel = np.flatnonzero(ks < partner)  # each cross pair once: from its smaller key
            lo = np.searchsorted(ks, partner[sel], side="left")
            cnt = np.searchsorted(ks, partner[sel], side="right") - lo
            if not cnt.any():
                continue
            first = np.repeat(sel, cnt)
            second = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(int(cnt.sum()))
            keep(idx[order[first]], idx[order[second]])
    if not chunks:
        return np.zeros(0, dtype=np.int64)
    return sorted_unique(np.concatenate(chunks))


def rarest_column_order(indptr: np.ndarray, indices: np.ndarray, doc_freq: np.ndarray) -> np.ndarray:
    """Rows ordered by the column (of theirs) that the fewest rows hold; rows sharing it end up adjacent."""
    n = len(indptr) - 1
    if n == 0 or not len(indices):
        return np.arange(n)
    df = np.asarray(doc_freq)[indices]
    lens = np.diff(indptr)
    nonempty = lens > 0
    # key = df * n_cols + col, so the argmin breaks ties by column and identifies the column
    n_cols = int(indices.max()) + 1
    key = df.astype(np.int64) * n_cols + indices.astype(np.int64)
    best = np.full(n, np.iinfo(np.int64).max)
    best[nonempty] = np.minimum.reduceat(key, indptr[:-1][nonempty])
    return np.argsort(best, kind="stable")


def split_codes(codes: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Undo ``i*m + j`` pair codes."""
    return codes // m, codes % m


__all__: Sequence[str] = (
    "BandTables",
    "BandingParams",
    "GrowableArray",
    "LSHError",
    "SignatureFilter",
    "bit_collision_probability",
    "candidate_pairs",
    "candidate_probability",
    "column_keys_for_dense",
    "estimated_cosine",
    "gaussian_projection",
    "hamming_cutoff",
    "hamming_distances",
    "pack_signature_bits",
    "pairs_within_groups",
    "probe_masks",
    "projection_signs",
    "rarest_column_order",
    "signatures",
    "sorted_unique",
    "split_codes",
    "within_radius",
)
