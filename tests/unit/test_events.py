import numpy as np
import pytest

from stormeye.detectors import AnomalyTracker, Scores


def _scores(values: list[float], direction: int = 1) -> Scores:
    s = np.asarray(values, dtype=float)
    return Scores(
        score=s,
        direction=np.full(len(s), direction, dtype=np.int8),
        status=np.zeros(len(s), np.uint8),
        raw={"z": s * 10},
    )


def test_open_extend_close_with_hysteresis() -> None:
    tr = AnomalyTracker(threshold=0.5, release=0.3, quiet_steps=2, detector="t")
    names = ["a", "b"]
    rows = np.array([0, 1])
    u = tr.update(0, rows, _scores([0.6, 0.1]), names)
    assert [a.metric for a in u.opened] == ["a"] and u.opened[0].evidence == {"z": 6.0}
    u = tr.update(60, rows, _scores([0.4, 0.1]), names)  # between release and threshold: stays open
    assert not u.closed and u.updated[0].end == 60
    u = tr.update(120, rows, _scores([0.9, 0.1]), names)
    assert u.updated[0].peak_score == 0.9 and u.updated[0].peak_at == 120
    tr.update(180, rows, _scores([0.1, 0.1]), names)
    u = tr.update(240, rows, _scores([0.1, 0.1]), names)
    assert [a.metric for a in u.closed] == ["a"]
    a = u.closed[0]
    assert (a.start, a.end, a.open, a.key) == (0, 120, False, ("a", 0))
    u = tr.update(300, rows, _scores([0.7, 0.1]), names)
    assert u.opened[0].start == 300  # a new anomaly, not the old one reopened


def test_close_all_and_validation() -> None:
    tr = AnomalyTracker()
    tr.update(0, np.array([0]), _scores([0.9]), ["x"])
    closed = tr.close_all()
    assert len(closed) == 1 and not closed[0].open and not tr.open_anomalies
    with pytest.raises(ValueError, match="release <= threshold"):
        AnomalyTracker(threshold=0.3, release=0.5)
    with pytest.raises(ValueError, match="quiet_steps"):
        AnomalyTracker(quiet_steps=0)
