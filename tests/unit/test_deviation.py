import numpy as np
import pytest

from stormeye.detectors import PercentDeviation


def _series(seed: int = 0, n: int = 400, level: float = 100.0, sd: float = 2.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, sd, n)


def test_asymmetric_bounds_a_25_percent_drop_counts_a_25_percent_rise_does_not() -> None:
    det = PercentDeviation(up=0.3, down=0.2)
    w = np.stack([_series(1)[:61], _series(1)[:61]])
    w[0, -1] = 75.0  # -25%: beyond the 20% down bound
    w[1, -1] = 125.0  # +25%: inside the 30% up bound
    out = det.score(w)
    assert out.score[0] >= 0.5 and out.direction[0] == -1
    assert out.score[1] == 0.0
    assert out.raw["ratio"][0] == pytest.approx(-0.25, abs=0.02)


def test_a_spike_and_a_clean_step_are_found() -> None:
    x = _series(2)
    x[200] = 160
    x[300:] *= 0.7
    s = PercentDeviation().score_series(x)
    assert s[200] >= 0.5
    assert s[300] >= 0.5
    assert s[100:200].max() == 0 and s[201:300].max() == 0


def test_the_bound_decides_whether_the_data_decides_how_much() -> None:
    # the same +40% move: news on a steady metric, routine on one that swings 50% all the time
    steady = _series(3, sd=1.0)[:61]
    wild = _series(3, sd=40.0)[:61]
    steady[-1] = wild[-1] = 140.0
    out = PercentDeviation().score(np.stack([steady, wild]))
    assert out.score[0] >= 0.5
    assert 0 < out.score[1] < 0.2


def test_quiet_noisy_series_stays_quiet() -> None:
    s = PercentDeviation().score_series(_series(4, n=5000, sd=3.0))
    assert s.max() == 0  # 3% noise never crosses a 20% bound


def test_zero_reference_is_judged_by_probability_or_ignored() -> None:
    x = np.tile([1.0, -1.0], 31)[:61]  # a mean of exactly 0: every move is an infinite percentage
    x[-1] = 30
    assert PercentDeviation().score(x).score[0] >= 0.5
    assert PercentDeviation(zero_reference="ignore").score(x).score[0] == 0


def test_one_sided_bounds_and_settings_validation() -> None:
    w = _series(6)[:61]
    w[-1] = 40
    assert PercentDeviation(down=None).score(w).score[0] == 0
    for bad, match in [
        ({"up": -0.1}, "up must be"),
        ({"down": float("nan")}, "down must be"),
        ({"reference": "mode"}, "reference must be"),
        ({"zero_reference": "x"}, "zero_reference"),
    ]:
        with pytest.raises(ValueError, match=match):
            PercentDeviation(**bad).score(w)  # type: ignore[arg-type]
