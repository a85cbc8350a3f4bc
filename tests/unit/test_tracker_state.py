"""An anomaly tracker restored from its saved state goes on exactly as the original (worker restarts)."""

import json

import numpy as np

from stormeye.detectors.base import Scores
from stormeye.detectors.events import AnomalyTracker


def _scores(rng: np.random.Generator, n: int) -> Scores:
    s = np.clip(rng.beta(0.3, 1.5, size=n), 0, 1)
    return Scores(
        score=s,
        direction=rng.choice([-1, 1], size=n).astype(np.int8),
        status=np.zeros(n, np.uint8),
        raw={"z": rng.normal(size=n)},
    )


def test_restored_tracker_continues_identically() -> None:
    rng = np.random.default_rng(7)
    names = [f"m{i}" for i in range(50)]
    rows = np.arange(50)
    a = AnomalyTracker(0.5, 0.3, 3, detector="d")
    steps = [_scores(rng, 50) for _ in range(40)]
    for t, sc in enumerate(steps[:20]):
        a.update(60.0 * t, rows, sc, names)
    assert a.open_anomalies, "the test needs open anomalies at the snapshot"
    b = AnomalyTracker(0.5, 0.3, 3, detector="d")
    b.load_state(json.loads(json.dumps(a.to_state())))
    for t, sc in enumerate(steps[20:], start=20):
        ua, ub = a.update(60.0 * t, rows, sc, names), b.update(60.0 * t, rows, sc, names)
        assert ua == ub
    assert a.to_state() == b.to_state()
