import numpy as np

from stormeye import detectors
from stormeye.detectors import IsolationForestDetector, Status
from stormeye.detectors.iforest import synthetic_normal_windows, window_features


def test_it_is_opt_in_only() -> None:
    assert "iforest" in detectors.opt_in() and "iforest" not in detectors.available()


def test_anomalous_windows_rank_above_normal_ones() -> None:
    det = IsolationForestDetector(train_windows=2048)
    null = synthetic_normal_windows(400, 241, 123)
    spikes = synthetic_normal_windows(400, 241, 7)
    spikes[:, -1] += 10 * np.nanstd(spikes[:, :200], axis=1)
    s0, s1 = det.score(null).score, det.score(spikes).score
    # rank statistic (AUC): a spike window outscores a normal one most of the time
    auc = (s1[:, None] > s0[None, :]).mean() + 0.5 * (s1[:, None] == s0[None, :]).mean()
    assert auc > 0.85
    assert (s0 >= 0.5).mean() == 0


def test_bad_rows_get_a_status_and_streaming_is_causal() -> None:
    det = IsolationForestDetector(history=120, train_windows=1024)
    rng = np.random.default_rng(0)
    w = 100 + rng.normal(0, 1, (4, 121))
    w[0] = np.nan
    w[1, -1] = np.nan
    w[2, 5] = np.inf
    out = det.score(w)
    assert list(out.status[:3]) == [Status.ALL_MISSING, Status.NEWEST_MISSING, Status.NON_FINITE]
    assert np.all(out.score[:3] == 0) and 0 <= out.score[3] <= 1
    x = 10 + rng.normal(0, 1, 400)
    full = det.score_series(x)
    np.testing.assert_array_equal(full[:300], det.score_series(x[:300]))


def test_features_are_scale_free() -> None:
    w = synthetic_normal_windows(50, 241, 3)
    np.testing.assert_allclose(window_features(w), window_features(1000 * w), rtol=1e-6, atol=1e-6)
