"""Real series are messy: repeated and out-of-order timestamps are merged and counted, not refused."""

import numpy as np
import pytest

from stormeye import detectors
from stormeye.workers.ingest import read_csv, replay
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings
from stormeye.workers.store import MemoryWindowStore

T0 = 1_767_225_600


def series(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 10 + rng.normal(0, 1, n)
    x[n * 5 // 6] += 15
    return x, T0 + 60.0 * np.arange(n)


def test_repeated_timestamps_are_merged_the_last_one_given_wins() -> None:
    x, t = series()
    clean = detectors.score_series(x, t)
    # a stale value given before the real one at three times: the real one (the last) stands
    dup = np.array([100, 300, 500])
    xs, ts = np.insert(x, dup, -50.0), np.insert(t, dup, t[dup])
    info = detectors.score_series_info(xs, ts)
    assert (info.merged, info.reordered, info.step) == (3, 0, 60)
    assert info.scores.shape == xs.shape  # one score per point given
    keep = np.ones(len(xs), bool)
    keep[dup + np.arange(len(dup))] = False
    np.testing.assert_array_equal(info.scores[keep], clean)
    np.testing.assert_array_equal(info.scores[~keep], clean[dup])  # a merged point: the score of its step
    # the other way round: the spike is given last, so it wins, and both points of the step get its score
    xs2, ts2 = np.insert(x, 200, 10.0), np.insert(t, 200, t[200])
    xs2[201] = 40.0
    s = detectors.score_series(xs2, ts2)
    assert s[200] == s[201] >= 0.5
    assert detectors.score_series(x[:2], [T0, T0]).shape == (2,)  # one step only


def test_two_timestamps_in_one_step_are_merged() -> None:
    x, t = series()
    jitter = t.copy()
    jitter[::25] += 7  # still one point a step
    np.testing.assert_array_equal(detectors.score_series(x, jitter), detectors.score_series(x, t))
    extra = np.insert(t, 401, t[400] + 30)  # a second point inside step 400
    info = detectors.score_series_info(np.insert(x, 401, x[400]), extra)
    assert info.merged == 1 and info.step == 60


def test_out_of_order_points_are_sorted_and_scores_stay_with_their_points() -> None:
    x, t = series()
    clean = detectors.score_series(x, t)
    perm = np.random.default_rng(1).permutation(len(x))
    info = detectors.score_series_info(x[perm], t[perm])
    assert info.merged == 0 and info.reordered == int(np.sum(np.diff(t[perm]) < 0)) > 0
    np.testing.assert_array_equal(info.scores, clean[perm])
    assert detectors.score_series(x[::-1], t[::-1])[0] == clean[-1]


def test_bad_series_still_get_clear_errors() -> None:
    x, t = series(20)
    bad_t = t.copy()
    bad_t[3] = np.nan
    with pytest.raises(ValueError, match=r"finite epoch seconds; timestamps\[3\]"):
        detectors.score_series(x, bad_t)
    with pytest.raises(ValueError, match="values must be numbers"):
        detectors.score_series(["1", "two", "3"], [T0, T0 + 60, T0 + 120])
    with pytest.raises(ValueError, match="timestamps must be numbers"):
        detectors.score_series([1.0, 2.0], ["monday", "tuesday"])
    with pytest.raises(ValueError, match="match"):
        detectors.score_series(x, t[:-1])
    # NaN is a missing point (the detector contract): it replaces nothing in its step
    y = np.insert(x, 10, np.nan)
    np.testing.assert_array_equal(
        np.delete(detectors.score_series(y, np.insert(t, 10, t[9])), 10), detectors.score_series(x, t)
    )


def test_memory_store_keeps_the_last_point_of_a_step_and_counts_the_others() -> None:
    st = MemoryWindowStore(step=60, length=10)
    rows = np.array([0, 1, 0, 0, 1])
    res = st.append(rows, np.array([600.0, 600.0, 610.0, 600.0, 660.0]), np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert (res.accepted, res.too_old, res.merged) == (5, 0, 2)
    np.testing.assert_array_equal(st.windows(np.array([0, 1]), 660, 2), [[4.0, np.nan], [2.0, 5.0]])
    # many repeats of one slot: still the last one given (numpy alone does not promise it)
    n = 5000
    res = st.append(np.zeros(n, dtype=int), np.full(n, 720.0), np.arange(n, dtype=float))
    assert res.merged == n - 1 and st.windows(np.array([0]), 720, 1)[0, 0] == n - 1


def test_ingest_merges_repeated_rows_and_sorts_reordered_ones() -> None:
    rng = np.random.default_rng(2)
    rows = [(f'cpu{{host="h{h}"}}', T0 + 60 * k, 5 + rng.normal()) for k in range(40) for h in range(3)]
    messy = [*rows[::-1], ('cpu{host="h0"}', T0 + 60 * 39, 99.0)]  # reversed, then a repeat given last
    text = "metric,timestamp,value\n" + "\n".join(f'"{m.replace(chr(34), 2 * chr(34))}",{t},{v}' for m, t, v in messy)
    batch = read_csv(text.splitlines())
    assert not batch.errors and len(batch) == 121
    pipe = Pipeline(Settings(database_url="sqlite://", step_s=60))
    res = replay(pipe, batch, finish=False)
    assert (res.points, res.steps, res.merged) == (121, 40, 1)
    assert res.reordered == 3 * 39  # every point of a metric came before the one preceding it in time
    assert (res.first, res.last) == (T0, T0 + 60 * 39)
    w = pipe.store.windows(pipe.register(['cpu{host="h0"}', 'cpu{host="h1"}']), T0 + 60 * 39, 40)
    assert w[0, -1] == 99.0 and not np.isnan(w).any()
    np.testing.assert_allclose(w[1], [v for m, _, v in rows if m == 'cpu{host="h1"}'], rtol=1e-6)
    # the live path: repeats within one call are merged (last wins) and counted
    assert pipe.ingest(['cpu{host="h1"}'] * 2, np.array([T0 + 2400.0] * 2), np.array([1.0, 2.0])) == 2
    assert pipe.merged_points == 1
    assert pipe.store.windows(pipe.register(['cpu{host="h1"}']), T0 + 2400, 1)[0, 0] == 2.0


def test_a_history_written_with_labels_out_of_order_lands_on_the_row_its_points_use() -> None:
    """load_history normalizes names as ingest does: one metric, one row, whatever the label order."""
    pipe = Pipeline(Settings(database_url="sqlite://", step_s=60))
    t = T0 + 60.0 * np.arange(50)
    pipe.load_history(['cpu{service="web",pod="a"}'], t, np.full((1, 50), 5.0))
    assert pipe.ingest(['cpu{pod="a",service="web"}'], np.array([T0 + 3000.0]), np.array([7.0])) == 1
    assert len(pipe.registry.names) == 1
    w = pipe.store.windows(pipe.register(['cpu{pod="a",service="web"}']), T0 + 3000, 51)
    assert w[0, 0] == 5.0 and w[0, -1] == 7.0
