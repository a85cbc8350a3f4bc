"""Random-projection LSH: collision law, parameter derivation, sparse hashing, bucket tables."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from stormeye.grouping.lsh import (
    BandingParams,
    BandTables,
    LSHError,
    SignatureFilter,
    _popcount_rows_table,  # the numpy < 2.0 path
    bit_collision_probability,
    candidate_pairs,
    candidate_probability,
    column_keys_for_dense,
    estimated_cosine,
    gaussian_projection,
    hamming_cutoff,
    hamming_distances,
    pack_signature_bits,
    pairs_within_groups,
    projection_signs,
    signatures,
    within_radius,
)


def _pair_matrix(cosines: np.ndarray, rng: np.random.Generator, nnz: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows 2k and 2k+1 are sparse vectors with exactly ``cosines[k]``, on columns of their own."""
    rows, cols, vals = [], [], []
    col = 0
    exact = np.empty(len(cosines))
    for k, c in enumerate(cosines):
        # a: random positive weights on nnz columns; b shares a's first column(s) partially
        a = rng.uniform(0.5, 3.0, nnz)
        a /= np.linalg.norm(a)
        # b = c*a + s*e where e is a unit vector on fresh columns (orthogonal to a)
        e = rng.uniform(0.5, 3.0, nnz)
        e /= np.linalg.norm(e)
        s = math.sqrt(max(0.0, 1 - c * c))
        rows += [2 * k] * nnz + [2 * k + 1] * (2 * nnz)
        cols += list(range(col, col + nnz)) + list(range(col, col + 2 * nnz))
        vals += list(a) + list(c * a) + list(s * e)
        exact[k] = c
        col += 2 * nnz
    mat = sp.csr_matrix((vals, (rows, cols)), shape=(2 * len(cosines), col))
    return mat, exact


@pytest.mark.parametrize("nnz", [1, 2, 3, 6])
def test_per_bit_collision_rate_matches_one_minus_theta_over_pi(nnz: int) -> None:
    rng = np.random.default_rng(nnz)
    cosines = np.linspace(0.0, 0.98, 25)
    mat, exact = _pair_matrix(cosines, rng, nnz)
    keys = rng.integers(0, 2**63, mat.shape[1], dtype=np.uint64)
    bits = projection_signs(mat, keys, 4096, seed=7)
    agree = (bits[0::2] == bits[1::2]).mean(axis=1)
    theory = np.asarray(bit_collision_probability(exact))
    # binomial sd of a rate over 4096 bits is at most 0.0078; 4.5 sd per pair
    assert np.max(np.abs(agree - theory)) < 0.035
    assert np.mean(np.abs(agree - theory)) < 0.01


def test_hyperplane_entries_are_standard_normal_and_keyed_by_column() -> None:
    from scipy import stats

    g = gaussian_projection(np.arange(400, dtype=np.uint64), 500, seed=3)
    assert g.dtype == np.float32 and g.shape == (400, 500)
    assert stats.kstest(g.ravel(), "norm").pvalue > 1e-3
    assert abs(float(np.corrcoef(g[:, ::2].ravel(), g[:, 1::2].ravel())[0, 1])) < 0.01
    # a column's entries do not depend on which other columns are generated with it, or on their order
    again = gaussian_projection(np.array([399, 5], dtype=np.uint64), 500, seed=3)
    assert np.array_equal(again, g[[399, 5]])
    assert np.array_equal(gaussian_projection(np.array([5], dtype=np.uint64), 333, seed=3), g[[5], :333])
    assert not np.array_equal(gaussian_projection(np.array([5], dtype=np.uint64), 500, seed=4), g[[5]])


@pytest.mark.parametrize(("bands", "rows", "radius"), [(4, 5, 0), (3, 9, 1), (2, 12, 2)])
def test_banded_candidate_rate_matches_theory(bands: int, rows: int, radius: int) -> None:
    rng = np.random.default_rng(11)
    params = BandingParams(0.6, 0.95, bands=bands, rows=rows, radius=radius)
    for c in (0.3, 0.6, 0.85):
        mat, _ = _pair_matrix(np.full(1500, c), rng, 3)
        keys = signatures(mat, rng.integers(0, 2**63, mat.shape[1], dtype=np.uint64), params, seed=1)
        hit = within_radius(keys[:, 0::2] ^ keys[:, 1::2], radius).any(axis=0).mean()
        # sd of a rate over 1500 pairs is at most 0.013
        assert hit == pytest.approx(params.candidate_probability(c), abs=0.05)


def test_signatures_are_the_bits_banded() -> None:
    rng = np.random.default_rng(2)
    mat = sp.random(50, 300, density=0.03, format="csr", random_state=2) + sp.eye(50, 300, format="csr")
    ck = rng.integers(0, 2**63, 300, dtype=np.uint64)
    for bands, rows in ((7, 3), (5, 12), (3, 20), (2, 33), (1, 64)):
        params = BandingParams(0.6, 0.95, bands, rows)
        keys = signatures(mat, ck, params, seed=5, chunk_rows=16)
        bits = projection_signs(mat, ck, params.bits, seed=5).reshape(50, bands, rows)
        expect = (bits.astype(object) * np.array([1 << j for j in range(rows)], dtype=object)).sum(axis=2).T
        assert keys.dtype == params.key_dtype and keys.shape == (bands, 50)
        assert np.array_equal(keys.astype(object), expect)


def test_signatures_do_not_depend_on_order_chunks_or_workers() -> None:
    rng = np.random.default_rng(3)
    mat = sp.random(700, 2000, density=0.004, format="csr", random_state=3) + sp.eye(700, 2000, format="csr")
    ck = rng.integers(0, 2**63, 2000, dtype=np.uint64)
    params = BandingParams.derive(0.6)
    base = signatures(mat, ck, params, seed=1)
    order = rng.permutation(700)
    assert np.array_equal(base, signatures(mat, ck, params, seed=1, chunk_rows=33, order=order, workers=2))
    with pytest.raises(LSHError, match="permutation"):
        signatures(mat, ck, params, order=np.zeros(700, dtype=np.int64))


def test_sparse_rows_are_hashed_without_densifying() -> None:
    # 5 million columns x 2376 hyperplanes would be 47 GB as a projection matrix, 60 MB as dense rows
    n_cols = 5_000_000
    rows = np.array([0, 0, 1, 1, 2])
    cols = np.array([3, 4_999_999, 3, 2_500_000, 17])
    mat = sp.csr_matrix((np.ones(5), (rows, cols)), shape=(3, n_cols))
    params = BandingParams.derive(0.6)
    ck = column_keys_for_dense(n_cols)
    assert signatures(mat, ck, params).shape == (params.bands, 3)
    bits = projection_signs(mat, ck, params.bits)
    # rows 0 and 1 have cosine 0.5 (bits agree 2/3 of the time), rows 0 and 2 share nothing (1/2)
    assert (bits[0] == bits[1]).mean() == pytest.approx(2 / 3, abs=0.04)
    assert (bits[0] == bits[2]).mean() == pytest.approx(1 / 2, abs=0.04)


def test_dense_rows_hash_like_the_same_sparse_rows() -> None:
    rng = np.random.default_rng(4)
    dense = rng.standard_normal((40, 30))
    params = BandingParams(0.8, 0.95, 6, 9)
    ck = column_keys_for_dense(30)
    assert np.array_equal(signatures(dense, ck, params), signatures(sp.csr_matrix(dense), ck, params))


def test_derived_parameters_meet_recall_and_minimize_false_positives() -> None:
    from stormeye.grouping.lsh import _fp_integral, band_hit_probability

    for threshold in (0.5, 0.6, 0.75, 0.9):
        for max_bands, max_probes in ((32, 32), (256, 256), (160, 4096)):
            p = BandingParams.derive(threshold, 0.95, max_bands, max_probes)
            assert p.bands <= max_bands and p.probes <= max_probes
            assert p.recall_at_threshold() >= 0.95
            # minimal bands for its rows and radius: one band fewer would miss the recall
            assert candidate_probability(threshold, p.bands - 1, p.rows, p.radius) < 0.95
            # every pair above the threshold is caught at least as often
            above = np.linspace(threshold, 1.0, 50)
            assert np.all(np.asarray(p.candidate_probability(above)) >= 0.95 - 1e-12)
            # among all feasible (bands, rows, radius), none has a smaller false-positive integral
            mine = _fp_integral(threshold, p.bands, p.rows, p.radius)
            for radius in (0, 1, 2):
                for rows in range(max(1, radius), 40):
                    hit = float(band_hit_probability(bit_collision_probability(threshold), rows, radius))
                    bands = math.ceil(math.log(0.05) / math.log1p(-hit) - 1e-9) if hit < 1 else 1
                    probes = bands * sum(math.comb(rows, d) for d in range(radius + 1))
                    if bands <= max_bands and probes <= max_probes:
                        assert _fp_integral(threshold, bands, rows, radius) >= mine - 1e-12


def test_the_documented_figures_at_0_6() -> None:
    p = BandingParams.derive(0.6)
    assert (p.bands, p.rows, p.radius) == (140, 17, 1)
    assert p.false_positive_rate(0.0) == pytest.approx(0.019, abs=0.001)
    # without probing (a query may look in one bucket per band) the same budget does worse
    p = BandingParams.derive(0.6, 0.95, 256, max_probes=256)
    assert (p.bands, p.rows, p.radius) == (198, 12, 0)
    assert p.false_positive_rate(0.0) == pytest.approx(0.047, abs=0.001)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"threshold": 1.0}, "strictly between 0 and 1"),
        ({"threshold": 0.0}, "strictly between 0 and 1"),
        ({"threshold": 0.6, "recall": 1.0}, "recall"),
        ({"threshold": 0.6, "max_bands": 0}, "max_bands must be at least 1"),
        ({"threshold": 0.6, "recall": 0.999999, "max_bands": 1, "max_probes": 1}, "allow at least"),
        ({"threshold": 0.6, "max_probes": 0}, "max_probes must be at least 1"),
    ],
)
def test_derive_rejects_what_cannot_work(kwargs: dict, fragment: str) -> None:
    with pytest.raises(LSHError, match=fragment):
        BandingParams.derive(**kwargs)


def test_band_params_reject_bad_shapes() -> None:
    with pytest.raises(LSHError, match=r"1\.\.64"):
        BandingParams(0.6, 0.95, 3, 65)
    with pytest.raises(LSHError, match="bands must be at least 1"):
        BandingParams(0.6, 0.95, 0, 3)
    with pytest.raises(LSHError, match="radius"):
        BandingParams(0.6, 0.95, 3, 8, radius=3)


def _brute_candidates(keys: np.ndarray, q: np.ndarray, valid: np.ndarray, radius: int) -> np.ndarray:
    return np.flatnonzero(within_radius(keys ^ q[:, None], radius).any(axis=0) & valid)


@pytest.mark.parametrize(("rows", "radius"), [(3, 0), (12, 0), (20, 0), (6, 1), (17, 1), (18, 2), (23, 1)])
def test_band_tables_find_exactly_the_rows_within_the_probe_radius(rows: int, radius: int) -> None:
    rng = np.random.default_rng(rows)
    params = BandingParams(0.6, 0.95, 9, rows, radius)
    # few distinct keys so that buckets are shared and neighbouring buckets are populated
    base = rng.integers(0, 2**rows, (9, 30), dtype=np.uint64)
    flips = np.where(rng.random((9, 3000)) < 0.5, np.uint64(1) << rng.integers(0, rows, (9, 3000)).astype(np.uint64), 0)
    keys = (base[np.arange(9)[:, None], rng.integers(0, 30, (9, 3000))] ^ flips).astype(params.key_dtype)
    valid = rng.random(3000) > 0.05
    tables = BandTables(params, min_pending=10**9)
    tables.append(keys[:, :2000], valid[:2000])
    tables.compact()
    tables.append(keys[:, 2000:], valid[2000:])  # a pending tail, scanned
    assert tables.pending == 1000
    for q in range(0, 3000, 97):
        assert np.array_equal(tables.candidates(keys[:, q]), _brute_candidates(keys, keys[:, q], valid, radius))
    tables.compact()
    assert tables.pending == 0
    for q in range(0, 3000, 89):
        assert np.array_equal(tables.candidates(keys[:, q]), _brute_candidates(keys, keys[:, q], valid, radius))
    # the pair-count bound counts, band by band, every pair within the radius
    sub = keys[:, valid]
    expect = 0
    for band in range(9):
        near = within_radius(sub[band][:, None] ^ sub[band][None, :], radius)
        expect += int((near.sum() - near.shape[0]) // 2)
    assert tables.bucket_pairs() == expect


def test_band_tables_keep_their_own_copy_of_keys_they_do_not_own() -> None:
    params = BandingParams(0.6, 0.95, 2, 8)
    keys = np.arange(2 * 5000, dtype=np.uint8).reshape(2, 5000)
    tables = BandTables(params)
    tables.append(keys)
    tables.compact()
    before = tables.candidates(keys[:, 7].copy())
    keys[:] = 0
    assert np.array_equal(tables.candidates(np.arange(2 * 5000, dtype=np.uint8).reshape(2, 5000)[:, 7]), before)


def test_band_tables_compact_themselves_when_the_tail_grows() -> None:
    params = BandingParams(0.6, 0.95, 4, 8)
    tables = BandTables(params, min_pending=100, pending_ratio=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        tables.append(rng.integers(0, 256, (4, 60)).astype(np.uint8))
        tables.candidates(np.zeros(4, dtype=np.uint8))
    assert tables.pending <= 100
    with pytest.raises(LSHError, match="shape"):
        tables.append(np.zeros((3, 5), dtype=np.uint8))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=0, max_size=40))
def test_pairs_within_groups_enumerates_each_pair_once(labels: list[int]) -> None:
    arr = np.asarray(labels, dtype=np.int64)
    order = np.argsort(arr, kind="stable")
    ks = arr[order]
    starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1]))) if len(ks) else np.zeros(0, np.int64)
    sizes = np.diff(np.concatenate((starts, [len(ks)])))
    a, b = pairs_within_groups(order, starts, sizes)
    got = sorted((min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist()))
    expect = sorted((i, j) for i in range(len(arr)) for j in range(i + 1, len(arr)) if arr[i] == arr[j])
    assert got == expect


@pytest.mark.parametrize(("radius", "rows"), [(0, 4), (1, 4), (2, 4), (1, 24), (2, 22)])
def test_candidate_pairs_are_pairs_within_the_radius_in_some_band(radius: int, rows: int) -> None:
    rng = np.random.default_rng(5)
    base = rng.integers(0, 2**rows, (3, 12), dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, rows, (3, 120)).astype(np.uint64)
    keys = base[np.arange(3)[:, None], rng.integers(0, 12, (3, 120))] ^ np.where(rng.random((3, 120)) < 0.5, flips, 0)
    keys = keys.astype(np.uint8 if rows <= 8 else np.uint32)
    valid = rng.random(120) > 0.1
    codes = candidate_pairs(keys, valid, radius, rows=rows)
    got = {(int(c) // 120, int(c) % 120) for c in codes}
    expect = {
        (i, j)
        for i in range(120)
        for j in range(i + 1, 120)
        if valid[i] and valid[j] and within_radius(keys[:, i] ^ keys[:, j], radius).any()
    }
    assert got == expect
    with pytest.raises(LSHError, match="too alike"):
        candidate_pairs(np.zeros((3, 100), dtype=np.uint8), max_pairs=1000)


# -- the Hamming filter ------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "n_bits", "miss"), [(0.6, 512, 0.002), (0.6, 64, 0.05), (0.8, 300, 0.01)])
def test_hamming_cutoff_is_the_binomial_quantile(threshold: float, n_bits: int, miss: float) -> None:
    from scipy import stats

    d = hamming_cutoff(threshold, n_bits, miss)
    q = math.acos(threshold) / math.pi
    assert stats.binom.sf(d, n_bits, q) <= miss  # a pair at the threshold is dropped at most this often
    assert stats.binom.sf(d - 1, n_bits, q) > miss  # and the cutoff is the smallest that promises it
    # stricter thresholds and smaller losses move the cutoff the expected way
    assert hamming_cutoff(min(0.99, threshold + 0.1), n_bits, miss) <= d
    assert hamming_cutoff(threshold, n_bits, miss / 10) >= d
    # the cutoff sits below the threshold's cosine in estimated terms, never above it
    assert float(estimated_cosine(d, n_bits)) < threshold


@pytest.mark.parametrize(
    ("bands", "rows", "n_bits"), [(31, 17, 512), (8, 17, 100), (5, 33, 150), (3, 64, 192), (9, 7, 63)]
)
def test_packed_filter_bits_are_the_first_hyperplane_signs(bands: int, rows: int, n_bits: int) -> None:
    rng = np.random.default_rng(rows)
    mat = sp.random(40, 200, density=0.03, format="csr", random_state=rows) + sp.eye(40, 200, format="csr")
    ck = rng.integers(0, 2**63, 200, dtype=np.uint64)
    params = BandingParams(0.6, 0.95, bands, rows)
    packed = pack_signature_bits(signatures(mat, ck, params, seed=2), rows, n_bits)
    bits = projection_signs(mat, ck, params.bits, seed=2)[:, :n_bits]
    words = (n_bits + 63) // 64
    padded = np.zeros((40, words * 64), dtype=bool)
    padded[:, :n_bits] = bits
    expect = np.packbits(padded, axis=1, bitorder="little").view("<u8")
    assert packed.shape == (40, words) and np.array_equal(packed, expect)
    # distances are the counts of differing hyperplane signs, with numpy's popcount or the byte table
    differ = (bits[:20] != bits[20:]).sum(axis=1)
    assert np.array_equal(hamming_distances(packed[:20], packed[20:]), differ)
    assert np.array_equal(_popcount_rows_table(packed[:20] ^ packed[20:]), differ)


def test_the_filter_keeps_a_pair_at_the_cutoff_and_drops_one_more_bit() -> None:
    params = BandingParams(0.6, 0.95, bands=40, rows=16)  # 640 bits, the filter reads the first 512
    filt = SignatureFilter(params, 512, 0.002)
    cut = filt.cutoff(0.6)
    assert cut == hamming_cutoff(0.6, 512, 0.002)

    def differing(count: int, offset: int = 0) -> np.ndarray:
        bits = np.zeros(params.bits, dtype=bool)
        bits[offset : offset + count] = True
        return (bits.reshape(params.bands, params.rows) * (1 << np.arange(params.rows))).sum(axis=1)

    keys = np.stack(
        [
            np.zeros(params.bands, dtype=np.int64),  # the query
            differing(cut),  # exactly at the cutoff: kept
            differing(cut + 1),  # one bit more: dropped
            differing(128, offset=512),  # differs only in bits the filter does not read: kept
            differing(cut, offset=100),  # the cutoff, elsewhere: kept
        ],
        axis=1,
    ).astype(params.key_dtype)
    filt.append(keys)
    assert len(filt) == 5
    assert list(filt.keep_neighbours(0, np.arange(1, 5), 0.6)) == [1, 3, 4]
    i, j = np.zeros(4, dtype=np.int64), np.arange(1, 5)
    assert list(filt.keep_pairs(i, j, 0.6, block=3)) == [True, False, True, True]
    # a stricter query keeps fewer; below the LSH threshold the filter has no promise to keep
    assert filt.cutoff(0.8) < cut
    assert list(filt.keep_neighbours(0, np.arange(1, 5), 0.8)) == [3]
    with pytest.raises(LSHError, match=r"cosines >= 0\.6"):
        filt.cutoff(0.5)


def test_the_filter_loses_at_most_its_share_of_pairs_at_the_threshold() -> None:
    from scipy import stats

    rng = np.random.default_rng(21)
    # short bands and few bits, so that drops are frequent enough to measure
    params = BandingParams(0.6, 0.95, bands=6, rows=12, radius=1)
    n_bits, miss = 72, 0.05
    for c in (0.6, 0.75, 0.3):
        mat, _ = _pair_matrix(np.full(3000, c), rng, 3)
        keys = signatures(mat, rng.integers(0, 2**63, mat.shape[1], dtype=np.uint64), params, seed=4)
        filt = SignatureFilter(params, n_bits, miss)
        filt.append(keys)
        a, b = np.arange(0, 6000, 2), np.arange(1, 6000, 2)
        kept = filt.keep_pairs(a, b, 0.6)
        theory = stats.binom.sf(filt.cutoff(0.6), n_bits, math.acos(c) / math.pi)  # drop probability
        # sd of a rate over 3000 pairs is at most 0.0092
        assert 1.0 - kept.mean() == pytest.approx(theory, abs=0.035)
        if c >= 0.6:
            assert 1.0 - kept.mean() <= miss + 0.03
            # the filter reads bits the bands were made of; candidates still survive it at least as often
            # as independent bits would (Harris): P(candidate and kept) >= P(candidate) * (1 - miss)
            cand = within_radius(keys[:, 0::2] ^ keys[:, 1::2], params.radius).any(axis=0)
            assert (cand & kept).mean() >= params.candidate_probability(c) * (1.0 - miss) - 0.03
        else:
            assert kept.mean() < 0.5  # pairs far below the threshold are mostly dropped


def test_the_filter_refuses_what_cannot_work() -> None:
    params = BandingParams(0.6, 0.95, bands=4, rows=16)
    with pytest.raises(LSHError, match=r"1\.\.64"):
        SignatureFilter(params, 65, 0.01)
    with pytest.raises(LSHError, match=r"1\.\.64"):
        SignatureFilter(params, 0, 0.01)
    for miss in (0.0, 1.0, -0.1):
        with pytest.raises(LSHError, match="miss probability"):
            SignatureFilter(params, 32, miss)
    with pytest.raises(LSHError, match="at least 1 bit"):
        hamming_cutoff(0.6, 0, 0.01)
    with pytest.raises(LSHError, match="asked for 65"):
        pack_signature_bits(np.zeros((4, 3), dtype=np.uint16), 16, 65)
    with pytest.raises(LSHError, match="shape"):
        pack_signature_bits(np.zeros(3, dtype=np.uint16), 16, 8)
