from dataclasses import replace

import numpy as np

from stormeye.detectors import RobustZScore
from stormeye.detectors.robust_z import ROBUST_Z_CALIBRATION


def test_seasonal_heavy_tailed_series_without_anomaly_stays_mostly_quiet() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(3000)
    x = 100 + 20 * np.sin(2 * np.pi * t / 1440) + rng.standard_t(3, len(t))
    s = RobustZScore().score_series(x)
    assert (s[300:] >= 0.5).mean() < 0.002


def test_cron_spikes_that_recur_are_not_news_but_a_bigger_spike_is() -> None:
    # this detector judges by size, not by schedule: an off-schedule spike of the usual size is
    # missed (a seasonal strategy catches that), one clearly bigger than the usual is not
    rng = np.random.default_rng(2)
    x = 50 + rng.normal(0, 1, 2000)
    x[100::60] += 40  # an hourly job
    x[1530] += 80
    s = RobustZScore().score_series(x)
    on_schedule = np.arange(100, 2000, 60)
    assert s[on_schedule[on_schedule > 600]].max() < 0.5
    assert s[1530] >= 0.5


def test_a_cron_series_holding_a_level_its_spikes_only_touch_is_news() -> None:
    # disk_io of a host whose cron job spikes it hourly to 2.5x; then its level doubles for 30
    # minutes, below the spikes: the spikes are one point each, the doubling lasts
    rng = np.random.default_rng(4)
    x = 10 + rng.normal(0, 0.7, 1500)
    x[30::60] += 15
    x[1400:1430] += 10
    s = RobustZScore().score_series(x)
    assert s[1403:1430].min() >= 0.5  # seen from its fourth point to its end
    on_schedule = np.arange(30, 1400, 60)
    assert s[on_schedule[on_schedule > 600]].max() < 0.5  # the spikes stay routine
    # counting every earlier spike as a recurrence (the rule before) hides the doubling: only the
    # spike that lands on top of it (1410) stands out
    old = RobustZScore(calibration=replace(ROBUST_Z_CALIBRATION, recurrence_by_length=False)).score_series(x)
    assert np.flatnonzero(old[1400:1430] >= 0.5).tolist() == [10]


def test_level_shift_is_detected_in_the_right_direction() -> None:
    rng = np.random.default_rng(0)
    x = 20 + rng.normal(0, 1, 600)
    x[500:] -= 8
    det = RobustZScore()
    out = det.score(x[None, 500 - det.history : 501])
    assert out.score[0] >= 0.5 and out.direction[0] == -1


def test_one_earlier_failure_does_not_make_the_next_one_routine() -> None:
    rng = np.random.default_rng(5)
    x = 100 + rng.normal(0, 2, 700)
    x[400:420] += 24  # failed for 20 minutes
    x[480:500] += 24  # and again an hour later
    s = RobustZScore().score_series(x)
    assert s[401] >= 0.5 and s[481] >= 0.5


def test_recurrences_are_counted_by_runs_at_least_as_long_as_the_newest() -> None:
    from stormeye.detectors.calibration import _newest_run, _runs_reaching

    rng = np.random.default_rng(9)
    big = rng.random((200, 40)) < 0.4
    length = rng.integers(1, 6, 200)

    def runs(row: np.ndarray) -> list[int]:
        out, n = [], 0
        for b in [*row.tolist(), False]:
            if b:
                n += 1
            elif n:
                out.append(n)
                n = 0
        return out

    expected = [sum(r >= k for r in runs(row)) for row, k in zip(big, length)]
    assert _runs_reaching(big, length).tolist() == expected
    recent = np.array([[0.0, 5.0, 6.0, 5.5], [5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 0.0, np.nan]])
    assert _newest_run(recent, np.array([6.0, -6.0, 6.0]), 0.7).tolist() == [4, 5, 1]


def test_a_day_of_memory_makes_a_burst_that_recurs_every_few_hours_routine() -> None:
    # a counter that bursts for 5 minutes every 5 hours, at a 1-minute step: within the default
    # 240-point history at most one earlier burst is in view, so each one is news; remembering a
    # day (1,440 points) for the recurrence rule, the bursts after the second are routine, while
    # the median and scale (and so a burst twice the usual size) are judged as before
    rng = np.random.default_rng(11)
    x = 10 + rng.normal(0, 0.5, 4000)
    bursts = np.arange(200, 3800, 300)
    for b in bursts:
        x[b : b + 5] += 8
    x[3900:3905] += 16
    plain = RobustZScore().score_series(x)
    day = RobustZScore(memory=1440).score_series(x)
    late = bursts[bursts > 1600]
    assert min(plain[b] for b in late) >= 0.5  # 240 points see one earlier burst: news every time
    assert max(day[b : b + 5].max() for b in late) < 0.5  # a day holds several: routine
    assert day[3900] >= 0.5  # a bigger one is still news
    # the memory changes the recurrence rule only: between the bursts it raises nothing new
    between = np.setdiff1d(np.arange(1500, 3900), np.concatenate([np.arange(b, b + 40) for b in bursts]))
    assert not (day[between] >= 0.5).any() and not (plain[between] >= 0.5).any()


def test_memory_is_a_positive_number_of_points() -> None:
    import pytest

    with pytest.raises(ValueError, match="memory"):
        RobustZScore(memory=0)
    det = RobustZScore(memory=1440)
    assert det.history == 1440 and det.get_params()["history"] == 240 and det.get_params()["memory"] == 1440
