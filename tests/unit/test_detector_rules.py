"""Per-metric detector settings: validation, matching and their effect on scores; settings wiring."""

import json
from pathlib import Path

import numpy as np
import pytest

from stormeye.detectors import Scores
from stormeye.detectors.rules import DetectorRule, DetectorRuleError, DetectorRules
from stormeye.workers.pipeline import make_detector
from stormeye.workers.settings import Settings


def _scores(score: list[float], direction: list[int]) -> Scores:
    n = len(score)
    return Scores(np.array(score), np.array(direction, dtype=np.int8), np.zeros(n, np.uint8))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"match": {}}, "needs at least one label"),
        ({"match": {"__name__": "("}}, "bad regular expression"),
        ({"match": {"host": "a"}, "threshold": 1.5}, "threshold"),
        ({"match": {"host": "a"}, "threshold": "high"}, "threshold"),
        ({"match": {"host": "a"}, "bad": "sideways"}, "'bad' must be one of"),
        ({"match": {"host": "a"}, "ignore": "yes"}, "'ignore' must be true or false"),
        ({"match": {"host": "a"}, "min_points": -1}, "min_points"),
        ({"match": {"host": "a"}, "treshold": 0.5}, "unknown field"),
        ({"match": "host=a"}, "'match' must be an object"),
        ("host=a", "must be an object"),
    ],
)
def test_bad_rules_say_what_to_fix(rule: object, message: str) -> None:
    with pytest.raises(DetectorRuleError, match=message):
        DetectorRules.from_config([rule])


def test_config_must_be_a_list() -> None:
    with pytest.raises(DetectorRuleError, match="list of rules"):
        DetectorRules.from_config({"rule": []})
    assert len(DetectorRules.from_config({"rules": [{"match": {"host": "a"}}]})) == 1


def test_first_match_wins_and_rules_change_scores() -> None:
    rules = DetectorRules(
        [
            DetectorRule({"__name__": "signups"}, bad="down", name="signups"),
            DetectorRule({"__name__": "debug_.*"}, ignore=True),
            DetectorRule({"host": "db-.*"}, threshold=0.25),
            DetectorRule({"host": "db-1"}, threshold=0.9),  # never reached: the rule above wins for db-1
            DetectorRule({"service": "new"}, min_points=100),
        ]
    )
    props = [
        {"__name__": "signups"},
        {"__name__": "signups"},
        {"__name__": "debug_x"},
        {"__name__": "cpu", "host": "db-1"},
        {"__name__": "cpu", "service": "new"},
        {"__name__": "cpu", "host": "web-1"},
    ]
    compiled = rules.compile(props, threshold=0.5)
    out = compiled.apply(
        _scores([0.6, 0.6, 0.9, 0.3, 0.8, 0.7], [1, -1, 1, 1, 1, -1]),
        np.arange(6),
        present=np.array([300, 300, 300, 300, 50, 300.0]),
    )
    np.testing.assert_allclose(out.score, [0.0, 0.6, 0.0, 0.6, 0.0, 0.7])
    assert out.direction.tolist() == [0, -1, 0, 1, 0, -1]
    # the uncapped level follows the score (what one metric needs to page alone, docs/grouping.md)
    deep = _scores([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1, -1, 1, 1, 1, -1])
    deep.raw["level"] = np.full(6, 12.0)
    lv = compiled.apply(deep, np.arange(6), present=np.array([300, 300, 300, 300, 50, 300.0])).raw["level"]
    np.testing.assert_allclose(lv, [0.0, 12.0, 0.0, 24.0, 0.0, 12.0])


def test_settings_read_and_validate_the_rules_file(tmp_path: Path) -> None:
    good = tmp_path / "rules.json"
    good.write_text(json.dumps([{"match": {"__name__": "signups"}, "bad": "down"}]))
    assert len(Settings(detector_rules_file=good).detector_rules) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"match": {"__name__": "x"}, "bad": "left"}]))
    with pytest.raises(DetectorRuleError, match=r"bad.json: detector rule .*'bad' must be one of"):
        _ = Settings(detector_rules_file=bad).detector_rules
    with pytest.raises(DetectorRuleError, match="does not exist"):
        _ = Settings(detector_rules_file=tmp_path / "none.json").detector_rules
    assert len(Settings().detector_rules) == 0


def test_retention_grows_for_seasons_at_coarse_steps_only() -> None:
    assert Settings(step_s=300).retention_points == 723
    assert Settings(step_s=60).retention_points == 480
    assert Settings(step_s=300, retention_points=500).retention_points == 500  # an explicit value wins


def test_recurrence_memory_reaches_the_robust_z_score_and_its_retention() -> None:
    def memory_of(settings: Settings) -> object:
        det = make_detector(settings)
        (rz,) = [m for m in det.members if m.name == "robust_z"]  # type: ignore[attr-defined]
        return rz.memory

    assert memory_of(Settings()) is None
    day = Settings(step_s=60, recurrence_memory_s=86_400)
    assert memory_of(day) == 1440 and day.retention_points == 1441 and make_detector(day).history == 1440
    coarse = Settings(step_s=300, recurrence_memory_s=86_400)  # 288 points: the seasonal retention holds them
    assert memory_of(coarse) == 288 and coarse.retention_points == 723
    with pytest.raises(ValueError, match="STORMEYE_RETENTION_POINTS=500 keeps fewer: raise it to at least 1441"):
        Settings(step_s=60, recurrence_memory_s=86_400, retention_points=500)
    with pytest.raises(ValueError, match="recurrence_memory_s"):
        Settings(recurrence_memory_s=-60)


def test_detector_setting_selects_one_strategy_or_says_why_not() -> None:
    assert make_detector(Settings(step_s=300, detector="seasonal")).name == "seasonal"
    assert make_detector(Settings(detector="robust_z")).name == "robust_z"
    assert make_detector(Settings(detector="RobustZScore")).name == "robust_z"
    assert make_detector(Settings()).name == "ensemble"
    with pytest.raises(ValueError, match="STORMEYE_RETENTION_POINTS"):
        make_detector(Settings(step_s=60, detector="seasonal"))
    with pytest.raises(ValueError, match="is not a detector"):
        make_detector(Settings(detector="magic"))


def test_seasonal_split_setting_reaches_the_seasonal_reference() -> None:
    def split_of(settings: Settings) -> object:
        det = make_detector(settings)
        (seasonal,) = [m for m in det.members if m.name == "seasonal"]  # type: ignore[attr-defined]
        return seasonal.split

    assert split_of(Settings(step_s=300)) == 4.0
    assert split_of(Settings(step_s=300, seasonal_split=2.5)) == 2.5
    assert split_of(Settings(step_s=300, seasonal_split=0)) is None
    with pytest.raises(ValueError, match="seasonal_split"):
        Settings(step_s=300, seasonal_split=-1)
