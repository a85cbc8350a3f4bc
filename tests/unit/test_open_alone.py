"""One metric pages alone when its move is extreme and lasts (issue 28): a runaway opens an
incident with no company; a clear but ordinary move of one metric still waits for company."""

from __future__ import annotations

import numpy as np
import pytest

from stormeye.detectors.base import Scores
from stormeye.detectors.events import AnomalyTracker
from stormeye.workers.ingest import read_csv, replay
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

T0 = 1_700_000_040


def _replay(values: np.ndarray, **settings: object) -> Pipeline:
    rows = [('machine_temperature{host="press-3"}', T0 + 60 * k, float(v)) for k, v in enumerate(values)]
    text = "metric,timestamp,value\n" + "\n".join(f'"{m.replace(chr(34), 2 * chr(34))}",{t},{v}' for m, t, v in rows)
    pipe = Pipeline(Settings(database_url="sqlite://", step_s=60, **settings), keep_archive=True)
    replay(pipe, read_csv(text.splitlines()), finish=True)
    return pipe


def _series(move: np.ndarray, n: int = 600, at: int = 450) -> np.ndarray:
    x = 70 + np.random.default_rng(4).normal(0, 1, n)
    x[at : at + len(move)] += move
    return x


def test_a_metric_that_runs_away_opens_an_incident_on_its_own() -> None:
    climb = np.r_[np.linspace(3, 30, 10), np.full(20, 30.0)]  # climbs to 30 sigma and holds for 20 steps
    pipe = _replay(_series(climb))
    incidents = pipe.incident_list()
    assert len(incidents) == 1, incidents
    (a,) = [a for a in pipe.anomaly_list() if a["start"] >= T0 + 60 * 450]
    assert a["peak_level"] >= 10
    # the rule is what opened it: turned off, the same run pages nobody
    assert _replay(_series(climb), open_alone_level=0).incident_list() == []


def test_a_clear_but_ordinary_move_of_one_metric_still_needs_company() -> None:
    shift = np.full(40, 7.0)  # 7 sigma for 40 minutes: an anomaly, not a page on its own
    pipe = _replay(_series(shift))
    assert [a for a in pipe.anomaly_list() if a["peak_score"] >= 0.5]
    assert pipe.incident_list() == []


def test_a_short_extreme_spike_does_not_page_alone() -> None:
    pipe = _replay(_series(np.full(3, 60.0)))  # 60 sigma for three points
    assert [a for a in pipe.anomaly_list() if a["peak_level"] >= 10]
    assert pipe.incident_list() == []


def test_the_anomaly_keeps_the_highest_uncapped_level_it_reached() -> None:
    tr = AnomalyTracker(threshold=0.5, release=0.3)
    names = ["m"]
    for t, lv in enumerate([2.0, 25.0, 12.0, 0.4]):
        sc = Scores(
            score=np.array([min(lv, 1.0)]),
            direction=np.ones(1, np.int8),
            status=np.zeros(1, np.uint8),
            raw={"level": np.array([lv])},
        )
        tr.update(float(t), np.array([0]), sc, names)
    (a,) = tr.open_anomalies.values()
    assert a.peak_score == 1.0 and a.peak_level == 25.0
    state = tr.to_state()
    again = AnomalyTracker(threshold=0.5, release=0.3)
    again.load_state(state)
    assert again.open_anomalies[0].peak_level == 25.0


@pytest.mark.parametrize("bad", [{"open_alone_level": -1.0}, {"open_alone_points": 0}])
def test_bad_settings_say_what_to_fix(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="open_alone"):
        Settings(database_url="sqlite://", **bad)
