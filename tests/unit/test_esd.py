import numpy as np
import pytest
from scipy import stats

from stormeye.detectors import GeneralizedESD


def _textbook_gesd(x: np.ndarray, r: int, alpha: float) -> tuple[int, list[int]]:
    """Rosner's procedure, one point at a time (the reference the vectorized version must match)."""
    x = x[np.isfinite(x)].astype(float)
    idx = list(range(len(x)))
    removed, n_out = [], 0
    for i in range(1, r + 1):
        vals = x[idx]
        dev = np.abs(vals - vals.mean())
        k = int(np.argmax(dev))
        big_r = dev[k] / vals.std(ddof=1)
        n = len(x) - i + 1
        t = stats.t.ppf(1 - alpha / (2 * n), n - 2)
        lam = (n - 1) * t / np.sqrt((n - 2 + t**2) * n)
        removed.append(idx.pop(k))
        if big_r > lam:
            n_out = i
    return n_out, removed[:n_out]


def test_outlier_count_matches_the_textbook_procedure() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(10, 1, (40, 121))
    for row in range(40):
        k = row % 6
        w[row, rng.choice(121, k, replace=False)] += rng.choice([-1, 1], k) * rng.uniform(3, 8, k)
    w[5, 7] = np.nan
    out = GeneralizedESD(history=120, max_outliers=8).score(w)
    for row in range(40):
        n_out, removed = _textbook_gesd(w[row], 8, 0.05)
        assert out.raw["esd_outliers"][row] == n_out
        newest_index = np.flatnonzero(np.isfinite(w[row])).size - 1
        assert bool(out.raw["esd_newest"][row]) == (newest_index in removed)


def test_a_second_spike_does_not_mask_the_newest() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(50, 1, 241)
    x[100] = 58  # an earlier spike of the same size
    x[-1] = 58
    out = GeneralizedESD().score(x)
    assert out.score[0] >= 0.5 and out.direction[0] == 1 and out.raw["esd_outliers"][0] == 2


def test_spike_and_first_point_of_a_step_are_found_and_noise_stays_quiet() -> None:
    rng = np.random.default_rng(2)
    x = 20 + rng.normal(0, 1, 3000)
    x[1000] -= 9
    x[2000:] += 10
    s = GeneralizedESD().score_series(x)
    assert s[1000] >= 0.5 and s[2000] >= 0.5
    assert (s[300:990] >= 0.5).sum() == 0 and (s[1010:1990] >= 0.5).sum() == 0


def test_settings_are_validated() -> None:
    w = np.random.default_rng(3).normal(0, 1, 241)
    with pytest.raises(ValueError, match="max_outliers"):
        GeneralizedESD(max_outliers=0).score(w)
    with pytest.raises(ValueError, match="alpha"):
        GeneralizedESD(alpha=1.5).score(w)
