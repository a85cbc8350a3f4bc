import numpy as np
import pytest

from stormeye.grouping.correlation import correlate_all, correlate_pairs, fill_missing, shape_similarity, transform


def test_lag_is_found_and_signed() -> None:
    rng = np.random.default_rng(0)
    base = np.cumsum(rng.normal(size=80))
    a = base[5:65]
    b = base[3:63]  # b follows a by 2 steps: b[t + 2] == a[t]
    corr, lag = correlate_all(np.vstack([a, b]), max_lag=3)
    assert corr[0, 1] > 0.99 and lag[0, 1] == 2 and lag[1, 0] == -2
    c, lg = correlate_pairs(np.vstack([a, b]), [0], [1], max_lag=3)
    assert c[0] == pytest.approx(corr[0, 1]) and lg[0] == lag[0, 1]


def test_missing_points_are_interpolated_not_fatal() -> None:
    x = np.array([[1.0, np.nan, 3.0, np.nan], [np.nan, np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(fill_missing(x), [[1, 2, 3, 3], [0, 0, 0, 0]])
    rng = np.random.default_rng(1)
    s = np.cumsum(rng.normal(size=60))
    t = s.copy()
    t[::7] = np.nan
    corr, _ = correlate_all(np.vstack([s, t]), max_lag=0)
    assert corr[0, 1] > 0.95


def test_envelope_sees_variance_bursts_that_raw_values_miss() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 60)
    b = rng.normal(0, 1, 60)
    a[30:45] *= 8
    b[30:45] *= 8
    raw, _ = correlate_all(np.vstack([a, b]), max_lag=1, kind="raw")
    both, _ = shape_similarity(np.vstack([a, b]), max_lag=1)
    assert raw[0, 1] < 0.5 < both[0, 1]


def test_flat_rows_correlate_with_nothing_and_bad_transform_is_refused() -> None:
    corr, _ = correlate_all(np.vstack([np.ones(30), np.arange(30.0)]), max_lag=1)
    assert corr[0, 1] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown transform"):
        transform(np.ones((1, 10)), "fft")


def test_mirrored_metrics_correlate_in_absolute_mode() -> None:
    rng = np.random.default_rng(4)
    busy = np.cumsum(rng.normal(size=60))
    idle = -busy + rng.normal(0, 0.01, 60)
    signed, _ = correlate_all(np.vstack([busy, idle]), max_lag=2)
    mirrored, _ = correlate_all(np.vstack([busy, idle]), max_lag=2, absolute=True)
    assert signed[0, 1] < 0.5 and mirrored[0, 1] < -0.99  # the sign is kept as evidence
    c, _ = correlate_pairs(np.vstack([busy, idle]), [0], [1], max_lag=2, absolute=True)
    assert c[0] == pytest.approx(mirrored[0, 1])


def test_pairs_in_many_blocks_and_threads_give_the_all_pairs_answer() -> None:
    from stormeye.grouping.correlation import PAIR_BLOCK

    rng = np.random.default_rng(7)
    base = np.cumsum(rng.normal(size=(6, 70)), axis=1)
    # 240 rows in 6 families (each a noisy, shifted copy of its base), so some pairs correlate
    x = np.vstack([base[k % 6, s : s + 60] + 0.3 * rng.normal(size=60) for k, s in enumerate(rng.integers(0, 8, 240))])
    left, right = np.triu_indices(len(x), k=1)
    reps = -(-(PAIR_BLOCK * 2 + 1) // len(left))  # enough repeats for three blocks or more
    li, ri = np.tile(left, reps), np.tile(right, reps)
    one = correlate_pairs(x, li, ri, max_lag=3, absolute=True, threads=1)
    two = correlate_pairs(x, li, ri, max_lag=3, absolute=True, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])
    corr, lag = correlate_all(x, max_lag=3, absolute=True)
    np.testing.assert_allclose(two[0], corr[li, ri], atol=1e-5)
    np.testing.assert_array_equal(two[1], lag[li, ri])
    assert (np.abs(corr[li, ri]) > 0.7).any() and (np.abs(corr[li, ri]) < 0.3).any()
