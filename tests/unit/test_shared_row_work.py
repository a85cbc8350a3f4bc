"""The scorer's shared row work (in-place sorts of temporaries, the resolution and median the
robust z-score and the other members both need) gives exactly what computing each anew gives."""

import numpy as np

from stormeye import detectors
from stormeye.detectors.calibration import robust_location_scale, value_quantum
from stormeye.detectors.ensemble import DeciderConfig, decide
from stormeye.detectors.robust_z import RobustZScore
from stormeye.detectors.rowstats import nan_median, nan_quantiles


def _rows(seed: int = 0, m: int = 400, n: int = 241) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = 100.0 + rng.normal(0, 1, (m, n))
    w[rng.random(w.shape) < 0.02] = np.nan
    w[:80] = np.round(w[:80] * 4) / 4  # quantized gauges
    w[80:160] = rng.poisson(3, (80, n))  # counts: the decider's own kind
    w[160:170] = np.nan  # nothing known
    w[170:180] = 5.0  # constant
    return w


def test_in_place_sort_matches_a_copy_and_leaves_shared_inputs_alone() -> None:
    x = _rows()
    want = nan_quantiles(x.copy(), (0.1, 0.5, 0.99))
    tmp = x.copy()
    assert np.array_equal(nan_quantiles(tmp, (0.1, 0.5, 0.99), overwrite=True), want, equal_nan=True)
    assert not np.array_equal(tmp, x, equal_nan=True)  # the temporary was sorted in place
    # a view of someone else's array (not contiguous) is never sorted in place
    view = x[:, ::2]
    before = view.copy()
    assert np.array_equal(nan_median(view, overwrite=True), nan_median(before), equal_nan=True)
    assert np.array_equal(view, before, equal_nan=True)
    # robust_location_scale sorts its own deviations in place, after taking their mean
    hist = x[180:, :-1]
    med, scale = robust_location_scale(hist, 0.01)
    dev = np.abs(hist - med[:, None])
    mad = nan_median(dev.copy()) * 1.4826
    meandev = np.nanmean(dev, axis=1) * 1.2533
    want_scale = np.maximum(np.where(mad > 0, mad, meandev), 0.01 * np.maximum(np.abs(med), 1e-9))
    assert np.array_equal(scale, want_scale)


def test_robust_z_given_the_resolution_scores_as_it_would_alone() -> None:
    w = _rows(1)
    rz = RobustZScore()
    alone = rz.score(w)
    arr, status, clean = rz._prepare(w)
    given = rz._finish(arr, status, rz._score(clean, status.copy(), value_quantum(clean[:, :-1])))
    for a, b in ((alone.score, given.score), (alone.raw["z"], given.raw["z"])):
        assert np.array_equal(a, b, equal_nan=True)


def test_decider_given_the_median_classifies_as_it_would_alone() -> None:
    w = _rows(2)
    rz = RobustZScore()
    out = rz.score(w)
    cfg = DeciderConfig()
    alone = decide(w, out.raw["scale"], None, cfg)
    given = decide(w, out.raw["scale"], None, cfg, median=out.raw["median"])
    assert np.array_equal(alone, given)
    assert (alone == 2).sum() >= 60  # the counts rows were recognised: the median mattered


def test_ensemble_members_scored_alone_agree_with_the_ensemble_record() -> None:
    w = _rows(3)
    det = detectors.default_detector(60, max_points=480)
    season = det.season
    assert season is not None
    rng = np.random.default_rng(4)
    end_slot = 10_000 * season.factor - 1
    segs = [100.0 + rng.normal(0, 0.5, (len(w), count)) for _, count in season.spans(end_slot)]
    segs[1][:50] = np.nan  # not ready: the member scores only the other rows
    got = det.score_season(w, segs, end_slot)
    coarse = season.score_coarse(w, segs, end_slot)  # computes its own resolution
    rz = RobustZScore().score(w)
    assert np.array_equal(got.raw["seasonal_score"], coarse.score, equal_nan=True)
    assert np.array_equal(got.raw["robust_z_score"], rz.score, equal_nan=True)
    assert (coarse.score > 0).any()
