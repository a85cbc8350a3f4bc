import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats

from stormeye.detectors import KSTest, MannWhitney
from stormeye.detectors.twosample import ks_2samp_rows, kstwo_sf, mannwhitney_rows, smirnov_sf


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(11)
    shifted = rng.normal(0, 1, (40, 300)) + (np.arange(300) >= 180) * rng.uniform(0, 1, (40, 1))
    return [
        (rng.normal(0, 1, (60, 200)), rng.normal(0, 1, (60, 200))),
        (shifted[:, :180], shifted[:, 180:]),  # unequal sizes, some rows changed
        (rng.poisson(2, (60, 150)).astype(float), rng.poisson(2.5, (60, 90)).astype(float)),  # heavy ties
        (rng.normal(0, 1, (30, 12)), rng.normal(0.5, 1, (30, 7))),  # small samples (scipy's rare branches)
        (rng.standard_t(2, (20, 2000)), rng.standard_t(2, (20, 1500)) * 1.05),  # large n
    ]


@pytest.mark.parametrize("case", range(5))
def test_ks_matches_scipy_exactly_and_pvalues_within_1e6(case: int) -> None:
    base, focus = _pairs()[case]
    d, p = ks_2samp_rows(base, focus)
    for i in range(len(base)):
        ref = stats.ks_2samp(base[i], focus[i], method="asymp")
        assert d[i] == ref.statistic
        assert abs(p[i] - ref.pvalue) <= 1e-6


@pytest.mark.parametrize("case", range(5))
def test_mannwhitney_matches_scipy(case: int) -> None:
    base, focus = _pairs()[case]
    u, p = mannwhitney_rows(base, focus)
    ref = stats.mannwhitneyu(base, focus, axis=1, method="asymptotic", use_continuity=True)
    np.testing.assert_allclose(u, ref.statistic, rtol=0, atol=1e-9)
    assert np.abs(p - ref.pvalue).max() <= 1e-6


def test_nan_is_missing_like_scipy_omit() -> None:
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, (25, 80))
    focus = rng.normal(0.3, 1, (25, 50))
    base[rng.random(base.shape) < 0.2] = np.nan
    focus[rng.random(focus.shape) < 0.2] = np.nan
    focus[3] = np.nan  # nothing to compare
    d, p = ks_2samp_rows(base, focus)
    u, pm = mannwhitney_rows(base, focus)
    assert np.isnan(d[3]) and np.isnan(p[3]) and np.isnan(u[3]) and np.isnan(pm[3])
    for i in [0, 1, 2, 4, 10, 24]:
        b, f = base[i][~np.isnan(base[i])], focus[i][~np.isnan(focus[i])]
        ref = stats.ks_2samp(b, f, method="asymp")
        assert d[i] == ref.statistic and abs(p[i] - ref.pvalue) <= 1e-6
        mw = stats.mannwhitneyu(b, f, method="asymptotic")
        assert abs(u[i] - mw.statistic) < 1e-9 and abs(pm[i] - mw.pvalue) <= 1e-6


def test_vectorized_distribution_functions_match_scipy() -> None:
    for n in (3, 50, 141, 250, 4000):
        d = np.linspace(0.0, 1.0, 1001)
        assert np.abs(kstwo_sf(d, n) - stats.kstwo.sf(d, n)).max() <= 1e-9
        assert np.abs(smirnov_sf(np.full(101, n), d[::10]) - special.smirnov(n, d[::10])).max() <= 1e-9


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="same number of rows"):
        ks_2samp_rows(np.zeros((3, 5)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="at least one column"):
        mannwhitney_rows(np.zeros((3, 0)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="2-D"):
        ks_2samp_rows(np.zeros((2, 2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="focus must be between"):
        KSTest(focus=300).score(np.zeros((2, 241)))


def _series(seed: int, n: int = 600) -> np.ndarray:
    return 50 + np.random.default_rng(seed).normal(0, 2, n)


@pytest.mark.parametrize("cls", [KSTest, MannWhitney])
def test_a_clean_step_is_found_with_its_direction(cls: type) -> None:
    x = _series(1)
    x[500:] -= 4
    s = cls().score_series(x)
    assert s[:500].max() < 0.5
    assert s[500:530].max() >= 0.5
    out = cls().score(x[None, 530 - 240 : 531])
    assert out.direction[0] == -1


def test_a_variance_burst_is_a_distribution_change_ks_sees_and_mannwhitney_does_not() -> None:
    x = _series(2)
    rng = np.random.default_rng(9)
    x[500:] = 50 + rng.normal(0, 16, 100)  # same median, eight times the spread
    assert KSTest().score_series(x)[500:560].max() >= 0.5
    assert MannWhitney().score_series(x)[500:560].max() < 0.5  # a location test, by design


@pytest.mark.parametrize("cls", [KSTest, MannWhitney])
def test_quiet_series_stay_quiet_including_smooth_autocorrelated_ones(cls: type) -> None:
    rng = np.random.default_rng(3)
    assert (cls().score_series(_series(5, 3000))[300:] >= 0.5).mean() == 0
    ar = np.zeros(3000)
    for t in range(1, 3000):
        ar[t] = 0.9 * ar[t - 1] + rng.normal()
    assert (cls().score_series(100 + ar)[300:] >= 0.5).mean() < 0.01
    # without the autocorrelation correction a smooth series looks like constant change
    assert (cls(autocorrelation=False).score_series(100 + ar)[300:] >= 0.5).mean() > 0.05


def test_signed_zeros_infinities_and_negative_nan_are_handled_like_scipy() -> None:
    rng = np.random.default_rng(8)
    base = rng.choice([-0.0, 0.0, 1.0, -1.0, np.inf, -np.inf, 2.5], (30, 40))
    focus = rng.choice([-0.0, 0.0, 1.0, -2.0, np.inf, 2.5], (30, 25))
    base[::3, 5] = np.copysign(np.nan, -1.0)  # a NaN with the sign bit set is still missing
    d, p = ks_2samp_rows(base, focus)
    u, pm = mannwhitney_rows(base, focus)
    for i in range(30):
        b = base[i][~np.isnan(base[i])]
        ref = stats.ks_2samp(b, focus[i], method="asymp")
        assert d[i] == ref.statistic and abs(p[i] - ref.pvalue) <= 1e-6
        both = np.concatenate([b, focus[i]])  # U from average ranks by counting (scipy < 1.12 gives NaN with inf)
        ranks = (both[:, None] > both[None, :]).sum(axis=1) + ((both[:, None] == both[None, :]).sum(axis=1) + 1) / 2
        assert abs(u[i] - (ranks[: len(b)].sum() - len(b) * (len(b) + 1) / 2)) < 1e-9
        mw = stats.mannwhitneyu(b, focus[i], method="asymptotic")
        if np.isfinite(mw.statistic):
            assert abs(u[i] - mw.statistic) < 1e-9 and abs(pm[i] - mw.pvalue) <= 1e-6


_values = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6, allow_nan=False, width=32))


@settings(max_examples=150, deadline=None)
@given(
    base=st.lists(st.lists(_values, min_size=1, max_size=30), min_size=1, max_size=4),
    focus_len=st.integers(1, 25),
    seed=st.integers(0, 2**31 - 1),
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy's own, at n1 * n2 / (n1 + n2) < 0.5
def test_ks_and_mannwhitney_agree_with_scipy_on_any_small_samples(
    base: list[list[float]], focus_len: int, seed: int
) -> None:
    # ragged rows become NaN-padded rows; values drawn from a few integers make ties common
    rng = np.random.default_rng(seed)
    width = max(len(r) for r in base)
    b = np.full((len(base), width), np.nan)
    for i, r in enumerate(base):
        b[i, : len(r)] = r
    f = rng.choice(np.concatenate([b[np.isfinite(b)], rng.normal(0, 2, 5)]), (len(base), focus_len))
    d, p = ks_2samp_rows(b, f)
    u, pm = mannwhitney_rows(b, f)
    for i in range(len(base)):
        bi = b[i][np.isfinite(b[i])]
        ref = stats.ks_2samp(bi, f[i], method="asymp")
        assert d[i] == ref.statistic
        assert abs(p[i] - ref.pvalue) <= 1e-6 or (np.isnan(ref.pvalue) and np.isnan(p[i]))
        mw = stats.mannwhitneyu(bi, f[i], method="asymptotic", use_continuity=True)
        assert abs(u[i] - mw.statistic) <= 1e-9 * max(1.0, abs(mw.statistic))
        assert abs(pm[i] - mw.pvalue) <= 1e-6 or (np.isnan(mw.pvalue) and np.isnan(pm[i]))
