"""The seasonal ensemble keeps no state between calls, so shard-wise scoring (the distributed mode)
gives the embedded mode's scores bit for bit, through the shards' byte format."""

import numpy as np

from stormeye.sim.simulator import simulate_storm
from stormeye.workers.distributed import merge_detected, pack_detected, unpack_detected
from stormeye.workers.pipeline import detect, make_detector
from stormeye.workers.settings import Settings
from stormeye.workers.store import MemoryWindowStore


def test_shard_scores_equal_whole_scores_for_the_seasonal_ensemble() -> None:
    settings = Settings(step_s=300)
    det = make_detector(settings)
    assert [m.name for m in det.members] == ["robust_z", "seasonal", "holt_winters"]
    storm = simulate_storm(seed=4, n_metrics=200, n_incidents=2, step=300, history_steps=700, storm_steps=288)
    store = MemoryWindowStore(300, settings.retention_points)
    n = len(storm.names)
    store.load(np.arange(n), storm.timestamps, storm.values)
    top = 0.0
    for j in (720, 850, 987):
        at = float(storm.timestamps[j])
        whole = detect(det, store, np.arange(n), at)
        shards = [np.arange(n)[k::4] for k in range(4)]
        # a fresh detector per shard, as each Celery worker process builds its own
        parts = [unpack_detected(pack_detected(detect(make_detector(settings), store, r, at))) for r in shards]
        merged = merge_detected(parts)
        np.testing.assert_array_equal(merged.rows, whole.rows)
        np.testing.assert_array_equal(merged.scores.score, whole.scores.score)
        np.testing.assert_array_equal(merged.scores.direction, whole.scores.direction)
        assert merged.with_newest == whole.with_newest
        assert (whole.scores.status == 0).mean() > 0.9  # the seasonal members ran, not warm-up zeros
        top = max(top, float(whole.scores.score.max()))
    assert top > 0.2
