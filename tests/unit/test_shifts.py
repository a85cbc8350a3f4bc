import numpy as np
import pytest

from stormeye.detectors import LevelShift, TrendChange


def _noise(seed: int, n: int = 1000, sd: float = 1.0) -> np.ndarray:
    return 50 + np.random.default_rng(seed).normal(0, sd, n)


def test_a_clean_step_is_found_within_the_focus_window_with_its_direction() -> None:
    x = _noise(0)
    x[700:] -= 3
    s = LevelShift().score_series(x)
    assert s[300:700].max() < 0.5
    assert s[700:710].max() >= 0.5
    out = LevelShift().score(x[None, 710 - 240 : 711])
    assert out.direction[0] == -1 and out.raw["shift"][0] == pytest.approx(-3, abs=0.7)


def test_one_spike_is_not_a_shift() -> None:
    x = _noise(1)
    x[800] += 30
    assert LevelShift().score_series(x)[795:810].max() < 0.5


def test_quiet_series_stay_quiet_including_autocorrelated_ones() -> None:
    for det in (LevelShift(), TrendChange()):
        assert (det.score_series(_noise(2, 4000))[300:] >= 0.5).sum() == 0
    rng = np.random.default_rng(3)
    ar = np.zeros(4000)
    for t in range(1, 4000):
        ar[t] = 0.8 * ar[t - 1] + rng.normal()
    for det in (LevelShift(), TrendChange()):
        assert (det.score_series(100 + ar)[300:] >= 0.5).mean() < 0.01


def test_a_trend_starting_is_found_and_a_steady_trend_is_not_news() -> None:
    rng = np.random.default_rng(4)
    steady = np.linspace(0, 100, 2000) + rng.normal(0, 1, 2000)
    assert (TrendChange().score_series(steady)[300:] >= 0.5).sum() == 0
    x = 50 + rng.normal(0, 1, 1000)
    x[800:] += 0.1 * np.arange(200)  # starts climbing 0.1 per point
    s = TrendChange().score_series(x)
    assert s[300:800].max() < 0.5 and s[800:860].max() >= 0.5
    assert TrendChange().score(x[None, 860 - 240 : 861]).direction[0] == 1


def test_focus_must_fit_the_window() -> None:
    with pytest.raises(ValueError, match="focus must be between"):
        LevelShift(focus=0).score(_noise(5, 241))
    with pytest.raises(ValueError, match="focus must be between"):
        TrendChange(focus=3).score(_noise(5, 241))
