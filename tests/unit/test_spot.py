import numpy as np
import pytest
from scipy import stats

from stormeye.detectors import DSPOT, SPOT
from stormeye.detectors.spot import gpd_pwm


def test_pwm_recovers_known_generalized_pareto_parameters() -> None:
    rng = np.random.default_rng(0)
    for gamma, sigma in [(0.0, 1.0), (0.25, 2.0), (0.5, 0.5)]:
        e = np.sort(stats.genpareto.rvs(gamma, scale=sigma, size=(3, 20000), random_state=rng), axis=1)
        g, s = gpd_pwm(e, np.full(3, 20000))
        assert np.abs(g - gamma).max() < 0.05
        assert np.abs(s / sigma - 1).max() < 0.05


def test_alarm_threshold_matches_the_exponential_tail() -> None:
    # exponential data: above any threshold the excesses are exponential(1), so z_q = t + log(rate / q)
    rng = np.random.default_rng(1)
    w = rng.exponential(1.0, (200, 2001))
    out = SPOT(history=2000, level=0.9, q=1e-4).score(w)
    expected = np.quantile(w[:, :-1], 0.9, axis=1) + np.log(0.1 / 1e-4)
    assert np.median(np.abs(out.raw["threshold_up"] - expected)) < 1.0


def test_a_spike_is_found_and_quiet_noise_stays_quiet() -> None:
    rng = np.random.default_rng(2)
    x = 10 + rng.normal(0, 1, 4000)
    # tens of excesses give a loose tail fit (the exponential floor is conservative on a normal):
    # a 9-sigma spike scores about 0.45 here, a 14-sigma one clearly more
    x[3000] += 14
    x[3500] -= 14
    s = SPOT().score_series(x)
    assert s[3000] >= 0.5 and s[3500] >= 0.5
    assert (s[300:2990] >= 0.5).sum() == 0


def test_heavy_tailed_metric_is_judged_by_its_own_tail() -> None:
    rng = np.random.default_rng(3)
    lat = 100 * (1 + rng.pareto(3.0, 4000))  # latency-like, routine 5x excursions
    s = SPOT().score_series(lat)
    assert (s[300:] >= 0.5).mean() < 0.002
    w = lat[-241:].copy()
    w[-1] = 100 * 60  # far beyond anything its tail allows
    assert SPOT().score(w).score[0] >= 0.5


def test_dspot_finds_a_jump_on_a_trend_that_spot_sees_as_the_trend_continuing() -> None:
    rng = np.random.default_rng(4)
    x = np.linspace(0, 400, 3000) + rng.normal(0, 1, 3000)
    x[2500] += 10
    spot, dspot = SPOT().score_series(x), DSPOT().score_series(x)
    assert (spot[300:2490] >= 0.5).sum() == 0 and (dspot[300:2490] >= 0.5).sum() == 0
    assert dspot[2500] >= 0.5 and spot[2500] < 0.5
    out = DSPOT().score(x[None, 2260:2501])
    assert out.direction[0] == 1


def test_settings_are_validated() -> None:
    w = np.random.default_rng(5).normal(0, 1, 241)
    for bad, match in [
        ({"level": 1.0}, "level"),
        ({"q": 0.0}, "q "),
        ({"drift_depth": 0}, "drift_depth"),
        ({"gamma_floor": 0.5, "gamma_cap": 0.2}, "gamma_floor"),
    ]:
        with pytest.raises(ValueError, match=match):
            SPOT(**bad).score(w)  # type: ignore[arg-type]
