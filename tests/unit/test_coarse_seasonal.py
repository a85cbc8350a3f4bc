"""The seasonal reference at fine steps: earlier days kept as 5-minute means beside the window store."""

from __future__ import annotations

import numpy as np
import pytest

from stormeye import detectors
from stormeye.detectors import CoarseSeasonalReference, Status
from stormeye.detectors.seasonal import bucket_means
from stormeye.workers.pipeline import Pipeline, detect
from stormeye.workers.settings import Settings

DAY = 1440  # one-minute points a day
T0 = 1_700_006_400.0  # midnight, so slots and buckets line up with days


def days(n_days: int, seed: int = 0, batch: bool = True) -> np.ndarray:
    """A 1-minute metric with a daily cycle and, with ``batch``, a 40-minute job at 17:00 every day."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_days * DAY)
    x = 50 + 20 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 1.0, len(t))
    if batch:
        x[(t % DAY >= 17 * 60) & (t % DAY < 17 * 60 + 40)] += 30
    return x


def coarse_of(x: np.ndarray, det: CoarseSeasonalReference, end_slot: int) -> list[np.ndarray]:
    """What the coarse history would hold at ``end_slot``: every bucket of ``x`` before it."""
    means = bucket_means(x[None, : end_slot + 1], 0, det.factor, 0, (end_slot + 1) // det.factor)
    out = []
    for last, count in det.spans(end_slot):
        seg = np.full((1, count), np.nan)
        for j, b in enumerate(range(last - count + 1, last + 1)):
            if 0 <= b < means.shape[1]:
                seg[0, j] = means[0, b]
        out.append(seg)
    return out


def test_bucket_means_need_half_their_points() -> None:
    v = np.array([[1.0, 2, 3, 4, 5, 6, np.nan, np.nan, np.nan, 10, 11, 12, 13, 14, 15]])
    got = bucket_means(v, first_slot=0, factor=5, b0=0, b1=3)
    np.testing.assert_allclose(got[0, [0, 2]], [3.0, 13.0])
    assert np.isnan(got[0, 1])  # 2 of 5 points: unknown, not the mean of two
    # slots before the values are missing too
    assert np.isnan(bucket_means(v, first_slot=3, factor=5, b0=0, b1=1)[0, 0])


def test_a_daily_job_is_routine_and_a_departure_is_news() -> None:
    det = CoarseSeasonalReference(period=DAY // 5, factor=5)
    x = days(4)
    n = det.history + 1
    job = 3 * DAY + 17 * 60 + 5  # five minutes into today's job
    quiet = det.score_coarse(x[None, job - n + 1 : job + 1], coarse_of(x, det, job), job)
    assert quiet.status[0] == Status.OK and quiet.score[0] < 0.3
    y = x.copy()
    odd = 3 * DAY + 11 * 60  # the same jump at 11:00, which no earlier day had
    y[odd - 3 : odd + 1] += 30
    loud = det.score_coarse(y[None, odd - n + 1 : odd + 1], coarse_of(y, det, odd), odd)
    assert loud.score[0] >= 0.5 and loud.direction[0] == 1
    # the robust z-score alone, with 8 hours of history, pages on the job every day
    rz = detectors.RobustZScore()
    assert rz.score(x[None, job - rz.history : job + 1]).score[0] >= 0.5


def test_it_waits_for_two_earlier_days() -> None:
    det = CoarseSeasonalReference(period=DAY // 5, factor=5)
    x = days(3)
    n = det.history + 1
    for day, ok in ((1, False), (2, True)):
        at = day * DAY + 600
        s = det.score_coarse(x[None, at - n + 1 : at + 1], coarse_of(x, det, at), at)
        assert bool(s.status[0] == Status.OK) is ok, day
    # without its history (any detector's score()) it is warming up, never an error
    assert det.score(x[None, -n:]).status[0] == Status.TOO_FEW_POINTS
    with pytest.raises(ValueError, match="factor"):
        CoarseSeasonalReference(factor=1)


def test_the_pipeline_keeps_the_coarse_history_and_scores_with_it() -> None:
    # a 4-hour season keeps the test short; at a 60 s step its two seasons do not fit 480 points
    # (left alone, retention would grow to hold them, as it does for days at 5-minute steps)
    season = 4 * 3600
    s = Settings(database_url="sqlite://", step_s=60, season_s=season, retention_points=480)
    pipe = Pipeline(s)
    assert pipe.seasons is not None and pipe.seasons.step == 300
    p = season // 60
    rng = np.random.default_rng(3)
    t = np.arange(5 * p)
    x = 50 + 20 * np.sin(2 * np.pi * t / p) + rng.normal(0, 1.0, len(t))
    x[(t % p >= 100) & (t % p < 130)] += 30  # a job in every season
    names = ['cpu{host="a"}']
    ts = T0 + 60.0 * t
    pipe.load_history(names, ts[: 3 * p], x[None, : 3 * p])  # three seasons, more than the store keeps
    assert pipe.store.length < 3 * p
    first = pipe.seasons.oldest()  # the oldest bucket the ring holds of what was loaded
    assert first is not None and ts[0] <= first <= ts[p]
    pipe.seasons.mark_oldest(first + 3600)  # a later one does not replace it
    assert pipe.seasons.oldest() == first
    scores = []
    for j in range(3 * p, 5 * p):
        pipe.ingest(names, ts[j : j + 1], x[j : j + 1])
        scores.append(detect(pipe.detector, pipe.store, np.arange(1), ts[j], pipe.seasons).scores.score[0])
    sc = np.array(scores)
    jobs = (t[3 * p :] % p >= 100) & (t[3 * p :] % p < 130)
    assert sc[jobs].max() < 0.5  # routine in both ticked seasons
    # the buckets written while ticking are the means of the points ticked
    last = (5 * p) // 5 - 1
    got = pipe.seasons.windows(np.arange(1), T0 + last * 300.0, 10)[0]
    want = x[(last - 9) * 5 : (last + 1) * 5].reshape(10, 5).mean(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # off: no coarse history, the robust z-score alone
    off = Pipeline(
        Settings(database_url="sqlite://", step_s=60, season_s=season, retention_points=480, season_step_s=0)
    )
    assert off.seasons is None and [m.name for m in off.detector.members] == ["robust_z"]


def test_without_two_days_the_default_scores_exactly_as_the_robust_z_score() -> None:
    # a lone usable member's score passes through unchanged (the Cauchy combination would floor
    # a zero at 0.03), so new metrics and deployments score as before seasonality existed
    rng = np.random.default_rng(4)
    w = rng.normal(0, 1, (300, 241))
    w[:30, -1] += 6
    w[30:60] = np.round(w[30:60] * 3 + 10)
    det = detectors.default_detector(60, max_points=480)
    season = det.season
    assert season is not None
    end = 100_000
    only_yesterday = [np.full((300, c), np.nan) for _, c in season.spans(end)]
    only_yesterday[0][:] = 0.0
    want = detectors.RobustZScore().score(w)
    assert (want.score == 0).any() and (want.score >= 0.5).sum() >= 30
    # no row has two days: the robust z-score's own answer
    got = det.score_season(w, only_yesterday, end)
    np.testing.assert_array_equal(got.score, want.score)
    np.testing.assert_array_equal(got.direction, want.direction)
    # one row has them: the others still get exactly the robust z-score's scores
    only_yesterday[1][299] = 0.0
    got = det.score_season(w, only_yesterday, end)
    assert "kind" in got.raw  # the ensemble combined
    np.testing.assert_array_equal(got.score[:299], want.score[:299])
    np.testing.assert_array_equal(got.direction[:299], want.direction[:299])


def test_the_demo_refuses_a_history_too_short_to_say_what_to_fix() -> None:
    from typer.testing import CliRunner

    from stormeye.api.cli import app

    res = CliRunner().invoke(app, ["demo", "--history-days", "0", "--json", "--database", "sqlite://"])
    assert res.exit_code == 2
    assert "--history-days" in res.output and "0.1" in res.output
