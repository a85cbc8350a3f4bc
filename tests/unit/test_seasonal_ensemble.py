"""Seasonal strategies, calibration, the decider, the ensemble and score_series with timestamps."""

import numpy as np
import pytest

from stormeye import detectors
from stormeye.detectors import Ensemble, HoltWinters, SeasonalReference, Status
from stormeye.detectors.calibration import CalibrationConfig
from stormeye.detectors.ensemble import KIND_CODE, DeciderConfig, cauchy_combine

STEP = 300
P = 288  # a day at 5-minute steps
T0 = 1_767_225_600


def daily(n: int, seed: int = 0, heavy: bool = False, amp: float = 30.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    noise = rng.standard_t(3, n) if heavy else rng.normal(0, 1, n)
    return 100 + amp * np.sin(2 * np.pi * t / P) + noise


def ts(n: int) -> np.ndarray:
    return T0 + STEP * np.arange(n, dtype=np.float64)


def test_seasonal_heavy_tailed_series_without_anomaly_stays_quiet() -> None:
    x = daily(6 * P, seed=1, heavy=True)
    s = detectors.score_series(x, ts(len(x)))
    judged = s[3 * P :]
    assert (judged >= 0.5).mean() < 0.002
    # calibration: about 1% of points may reach the watch level 0.2, not many more
    assert (judged >= 0.2).mean() < 0.05


def test_departure_from_the_daily_cycle_is_found_by_the_seasonal_members() -> None:
    x = daily(5 * P, seed=2)
    at = 4 * P + 70  # the cycle is rising here: a 4-hour median lags it
    x[at : at + 12] -= 12  # well inside the daily swing (amplitude 30) but 12 sigma off the season
    for det in (SeasonalReference(period=P), HoltWinters(period=P)):
        s = det.score_series(x)
        assert s[at + 1] >= 0.5, det.name
        assert s[3 * P : at].max() < 0.5, det.name
    ens = detectors.score_series(x, ts(len(x)))
    assert ens[at + 1] >= 0.5 and ens[3 * P : at].max() < 0.5


def test_on_schedule_daily_peak_is_quiet_and_off_schedule_one_is_not() -> None:
    rng = np.random.default_rng(3)
    x = 50 + rng.normal(0, 1, 5 * P)
    x[100::P] += 25  # a nightly job at the same time every day
    x[4 * P + 200] += 25  # the same size, at another time
    s = SeasonalReference(period=P).score_series(x)
    assert s[4 * P + 100] < 0.5
    assert s[4 * P + 200] >= 0.5


def test_short_windows_are_warming_up_not_errors() -> None:
    det = SeasonalReference(period=P)
    out = det.score(daily(P)[None, :])  # one period: no season behind the newest point
    assert out.status[0] == Status.TOO_FEW_POINTS and out.score[0] == 0
    out = HoltWinters(period=P).score(daily(P + 20)[None, :])
    assert out.status[0] == Status.TOO_FEW_POINTS and out.score[0] == 0


def test_bad_parameters_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="period"):
        SeasonalReference(period=1)
    with pytest.raises(ValueError, match="alpha"):
        HoltWinters(alpha=1.5)
    with pytest.raises(ValueError, match="tail_quantile"):
        CalibrationConfig(tail_quantile=0.2)
    with pytest.raises(ValueError, match="robust_z"):
        Ensemble(members=[SeasonalReference(period=P)])
    with pytest.raises(ValueError, match="seasonal_ratio"):
        DeciderConfig(seasonal_ratio=0)
    with pytest.raises(ValueError, match="cauchy"):
        DeciderConfig(rules={"plain": "vote"})


def test_decider_classifies_metrics_from_their_windows() -> None:
    n = Ensemble(period=P).history + 1
    rng = np.random.default_rng(4)
    w = np.empty((4, n))
    w[0] = daily(n, seed=5)  # strong daily cycle
    w[1] = 100 + rng.normal(0, 1, n)  # plain noise
    w[2] = rng.poisson(4, n)  # small counts
    w[3] = np.where(rng.random(n) < 0.1, 1.0, 0.0)  # a flag
    out = Ensemble(period=P).score(w)
    kinds = out.raw["kind"].astype(int).tolist()
    assert kinds == [KIND_CODE["seasonal"], KIND_CODE["plain"], KIND_CODE["counts"], KIND_CODE["sparse"]]


def test_cauchy_combination() -> None:
    s = np.array([[0.6, 0.3], [0.0, 0.3]])
    one, _ = cauchy_combine(s, np.array([[1.0, 1.0], [0.0, 0.0]]))
    np.testing.assert_allclose(one, [0.6, 0.3], atol=1e-6)  # a single member keeps its score
    both, top = cauchy_combine(s, np.full((2, 2), 0.5))
    assert 0.55 < both[0] < 0.6 and top[0] == 0  # a strong member carries, down-weighted by its weight
    assert both[1] >= 0.3 - 1e-9  # two agreeing members: at least as strong as one
    assert np.all((both >= 0) & (both <= 1))


def test_ensemble_is_a_pure_function_of_the_window() -> None:
    # no state between calls: the distributed shards give the same scores in any order
    det = Ensemble(period=P)
    n = det.history + 1
    w = np.stack([daily(n, seed=i) for i in range(6)])
    w[2, -1] += 20
    a = det.score(w)
    b = det.score(w[::-1])
    np.testing.assert_array_equal(a.score, b.score[::-1])
    np.testing.assert_array_equal(det.score(w).score, a.score)
    assert a.score[2] >= 0.5


def test_default_detector_fits_the_retention() -> None:
    names = lambda d: [m.name for m in d.members]  # noqa: E731
    # at 60 s two days do not fit 480 points: the seasonal reference reads 5-minute means instead
    fine = detectors.default_detector(60, max_points=480)
    assert names(fine) == ["robust_z", "seasonal"]
    assert isinstance(fine.members[1], detectors.CoarseSeasonalReference) and fine.members[1].factor == 5
    assert names(detectors.default_detector(60, max_points=480, season_step=0)) == ["robust_z"]
    assert detectors.season_bucket(120) == 360 and detectors.season_bucket(300) is None
    assert detectors.season_bucket(7, season_s=3600) is None  # no multiple of 7 s at least 300 s divides an hour
    assert names(detectors.default_detector(300, max_points=723)) == ["robust_z", "seasonal", "holt_winters"]
    with pytest.raises(ValueError, match="positive"):
        detectors.default_detector(0)


def test_score_series_with_timestamps_handles_gaps_and_rejects_bad_ones() -> None:
    x = daily(5 * P, seed=6)
    t = ts(len(x))
    keep = np.ones(len(x), bool)
    keep[1000:1010] = False  # a gap: the points after it still know where yesterday is
    s = detectors.score_series(x[keep], t[keep])
    full = detectors.score_series(x, t)
    assert s.shape == (keep.sum(),)
    np.testing.assert_array_equal(s[:1000], full[:1000])
    # out of order is sorted, not refused (tests/unit/test_messy_series.py has the rest)
    rev = detectors.score_series(x[:10], t[:10][::-1])
    np.testing.assert_array_equal(rev, detectors.score_series(x[:10], t[:10])[::-1])
    with pytest.raises(ValueError, match="match"):
        detectors.score_series(x[:10], t[:9])
    with pytest.raises(ValueError, match="unknown detector"):
        detectors.score_series(x[:10], detector="nope")
    assert detectors.score_series(x, t, detector="seasonal").shape == x.shape


def test_nearest_season_keeps_yesterdays_incident_from_echoing_today() -> None:
    x = daily(5 * P, seed=8)
    x[3 * P + 100 : 3 * P + 124] -= 15  # an incident on day 3
    today = slice(4 * P + 100, 4 * P + 124)  # day 4 at the same time is normal
    echo = SeasonalReference(period=P, split=None).score_series(x)[today].max()
    near = SeasonalReference(period=P, nearest=True)
    s = near.score_series(x)
    assert echo >= 0.5 > s[today].max()
    assert s[3 * P + 101] >= 0.5  # the incident itself is still found


def test_split_days_keep_yesterdays_incident_from_echoing_and_leave_agreeing_days_alone() -> None:
    x = daily(5 * P, seed=8)
    x[3 * P + 100 : 3 * P + 124] -= 15  # an incident on day 3
    today = slice(4 * P + 100, 4 * P + 124)  # day 4 at the same time is normal
    s = SeasonalReference(period=P).score_series(x)  # split=4 is the default
    assert s[today].max() < 0.5
    assert s[3 * P + 101] >= 0.5  # the incident itself is still found (days 1 and 2 agree there)
    # a departure today from two agreeing days is found
    y = x.copy()
    y[4 * P + 200 : 4 * P + 212] += 12
    assert SeasonalReference(period=P).score_series(y)[4 * P + 201] >= 0.5
    # where the two days agree the reference is their mean, as without the rule: on a clean series
    # few points differ (a 4-MAD split between two normal days is rare) and none alarms
    clean = daily(5 * P, seed=9)
    a = SeasonalReference(period=P).score_series(clean)[3 * P :]
    b = SeasonalReference(period=P, split=None).score_series(clean)[3 * P :]
    assert np.mean(np.isclose(a, b)) > 0.9 and a.max() < 0.5
    with pytest.raises(ValueError, match="split"):
        SeasonalReference(period=P, split=0.0)


class _Fixed(detectors.Detector):
    """A stub member with given scores (its seasonal scale is tiny, so the decider calls rows seasonal)."""

    def __init__(self, name: str, scores: list[float]) -> None:
        self.name = name  # type: ignore[misc]
        self.scores = np.array(scores)
        self.history = 30
        self.min_points = 5

    def _score(self, windows: np.ndarray, status: np.ndarray) -> detectors.Scores:
        n = len(windows)
        return detectors.Scores(self.scores[:n], np.ones(n, np.int8), status, {"seasonal_scale": np.full(n, 1e-6)})


def test_lead_rule_lets_holt_winters_corroborate_but_not_open() -> None:
    w = 100 + np.random.default_rng(9).normal(0, 1, (3, 31))
    members = [
        detectors.RobustZScore(history=30, min_points=5),
        _Fixed("seasonal", [0.05, 0.3, 0.6]),
        _Fixed("holt_winters", [0.9, 0.45, 0.0]),
    ]
    lead = Ensemble(members=members).score(w).score
    assert lead[0] == pytest.approx(0.05)  # Holt-Winters alone cannot open
    assert lead[1] > 0.3  # the reference leans (>= watch): corroboration raises it
    assert lead[2] == pytest.approx(0.6, abs=0.02)  # a strong lead keeps (about) its score
    cauchy = Ensemble(members=members, decider=DeciderConfig(rules={"seasonal": "cauchy"})).score(w).score
    assert cauchy[0] > 0.8
    consensus = Ensemble(members=members, decider=DeciderConfig(rules={"seasonal": "consensus"})).score(w).score
    np.testing.assert_allclose(consensus, [0.05, 0.3, 0.0])


def test_the_move_z_is_the_seasonal_z_where_the_row_is_seasonal_and_the_robust_z_elsewhere() -> None:
    """The evidence ``move_z`` is the z of the yardstick that judged the row: a departure from a strong
    daily cycle is measured by the seasonal reference (the robust z-score is left out of such rows),
    a flat metric by the robust z-score (grouping.profiles sizes moves by it)."""
    n = 5 * P
    cyc = daily(n, seed=4, amp=40.0)
    at = 4 * P + 70
    cyc[at] -= 15  # far off the season, well inside the daily swing
    flat = 100 + np.random.default_rng(5).normal(0, 1, n)
    flat[at] += 15
    ens = Ensemble(period=P, members=detectors.default_members(P))
    out = ens.score(np.stack([cyc[at - ens.history : at + 1], flat[at - ens.history : at + 1]]))
    kind, z, sz, mz = (out.raw[k] for k in ("kind", "z", "seasonal_z", "move_z"))
    assert kind[0] == KIND_CODE["seasonal"] and kind[1] != KIND_CODE["seasonal"]
    assert mz[0] == sz[0] and abs(sz[0]) > 2 * abs(z[0])  # the seasonal z sees what the robust one misses
    assert mz[1] == z[1] and z[1] > 10
