import numpy as np
import pytest
import scipy.sparse as sp

from stormeye.detectors import Scores
from stormeye.detectors.collective import CollectiveEvidence


def scores(values: np.ndarray, direction: np.ndarray | int = 1) -> Scores:
    d = np.broadcast_to(np.asarray(direction, dtype=np.int8), values.shape).copy()
    return Scores(score=values.astype(float), direction=d, status=np.zeros(len(values), np.uint8))


def groups(n: int, size: int) -> sp.csr_matrix:
    """n metrics in consecutive groups of `size` (one column per group)."""
    rows = np.arange(n)
    return sp.csr_matrix((np.ones(n), (rows, rows // size)), shape=(n, (n + size - 1) // size))


def test_a_crowd_of_weak_movers_in_one_group_is_raised() -> None:
    ce = CollectiveEvidence()
    member = groups(300, 30)
    s = np.full(300, 0.05)
    s[:15] = 0.3  # half of group 0 moves 3-4 sigma the same way
    s[40] = 0.3  # one lonely mover in group 1
    out, ev = ce.update(scores(s), member)
    assert list(ev.groups) == [0] and ev.raised == 15
    assert np.all(out.score[:15] >= 0.5) and out.score[40] == pytest.approx(0.3) and out.score[20] == 0.05


def test_a_crowd_moving_both_ways_is_not_one_crowd() -> None:
    ce = CollectiveEvidence()
    s = np.full(30, 0.05)
    s[:6] = 0.3
    _, ev = ce.update(scores(s, np.array([1, -1] * 3 + [1] * 24)), groups(30, 30))
    assert ev.raised == 0


def test_a_group_that_always_moves_together_is_silenced() -> None:
    ce = CollectiveEvidence(halflife=50)
    member = groups(20, 20)
    rng = np.random.default_rng(0)
    for _ in range(400):  # twelve correlated series cross the watch level together, often
        s = np.full(20, 0.05)
        if rng.random() < 0.3:
            s[:12] = 0.25
        ce.update(scores(s), member)
    s = np.full(20, 0.05)
    s[:12] = 0.25
    out, ev = ce.update(scores(s), member)
    assert ev.raised == 0 and out.score.max() == pytest.approx(0.25)


def test_a_long_incident_is_not_learned_as_normal_while_it_lasts() -> None:
    ce = CollectiveEvidence(halflife=1440)
    member = groups(30, 30)
    s = np.full(30, 0.05)
    s[:15] = 0.3
    for _ in range(120):  # two hours at one-minute steps
        _, ev = ce.update(scores(s), member)
        assert ev.raised == 15


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="watch < threshold"):
        CollectiveEvidence(watch=0.6, threshold=0.5)
    with pytest.raises(ValueError, match="min_count"):
        CollectiveEvidence(min_count=1)
    with pytest.raises(ValueError, match="halflife"):
        CollectiveEvidence(halflife=0)


def test_membership_columns_stay_put_when_new_metric_names_arrive() -> None:
    """The layer's per-group history is indexed by column: a new metric name must not shift groups."""
    from stormeye.grouping.names import NameIndex
    from stormeye.workers.pipeline import group_membership

    index = NameIndex()
    first = ['cpu{host="a",service="x"}', 'mem{host="b",service="x"}']
    index.add(first)
    before = group_membership(index, first)
    index.add(['disk{host="c",service="y"}'])  # a new name and new groups, after the old ones
    after = group_membership(index, [*first, 'disk{host="c",service="y"}'])
    assert (after[:2, : before.shape[1]] != before).nnz == 0
    tokens = {index.column_token(c) for c in after.nonzero()[1]}
    assert tokens == {"host=a", "host=b", "host=c", "service=x", "service=y"}  # no metric-name groups
    assert after.sum(axis=1).tolist() == [[2.0], [2.0], [2.0]]


def test_idle_steps_teach_what_updates_without_watchers_teach() -> None:
    """A replay skips steps where no metric watches (issue 33): ``idle`` must leave the same state."""
    rng = np.random.default_rng(0)
    membership = sp.random(40, 9, density=0.3, format="csr", random_state=1)
    membership.data[:] = 1.0
    a, b = CollectiveEvidence(halflife=30.0), CollectiveEvidence(halflife=30.0)
    for step in range(200):
        crowd = step % 37 == 0  # now and then a crowd, so that groups have something to forget
        score = np.where(rng.random(40) < (0.5 if crowd else 0.0), 0.6, 0.05)
        s = Scores(score=score, direction=np.ones(40, dtype=np.int8), status=np.zeros(40, dtype=np.uint8))
        a.update(s, membership)
        if crowd:
            b.update(s, membership)
        else:
            b.idle(membership, 1)
    for k in ("mean_", "var_", "seen_", "rate_"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    a2 = CollectiveEvidence(halflife=30.0)
    a2.load_state(a.to_state())
    quiet = Scores(score=np.zeros(40), direction=np.zeros(40, dtype=np.int8), status=np.zeros(40, dtype=np.uint8))
    for _ in range(25):
        a.update(quiet, membership)
    a2.idle(membership, 25)
    assert all(np.array_equal(getattr(a, k), getattr(a2, k)) for k in ("mean_", "var_", "seen_", "rate_"))
    assert a.mean_.max() > 0


@pytest.mark.parametrize("groups", [1, 5, 40])
def test_idle_steps_learn_exactly_what_as_many_quiet_updates_learn(groups: int) -> None:
    """``idle`` (a replay skipping quiet steps; few groups on Python floats) gives bit for bit the
    state of calling ``update`` with no metric watching, step after step."""
    rng = np.random.default_rng(groups)
    dense = (rng.random((3 * groups, groups)) < 0.5).astype(float)
    dense[0, :] = 1.0
    membership = sp.csr_matrix(dense)
    a, b = CollectiveEvidence(halflife=30.0), CollectiveEvidence(halflife=30.0)
    loud = Scores(
        score=np.full(3 * groups, 0.6), direction=np.ones(3 * groups, np.int8), status=np.zeros(3 * groups, np.uint8)
    )
    quiet = Scores(score=np.zeros(3 * groups), direction=np.zeros(3 * groups, np.int8), status=loud.status)
    for ce in (a, b):
        ce.update(loud, membership)  # something learnt to decay
    a.idle(membership, 500)
    for _ in range(500):
        b.update(quiet, membership)
    for attr in ("mean_", "var_", "rate_", "seen_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))


@pytest.mark.parametrize("threshold, watch", [(0.5, 0.2), (0.3, 0.2), (0.2, 0.16), (0.1, 0.08)])
def test_a_low_threshold_lowers_the_watch_level_instead_of_stopping_the_service(threshold: float, watch: float) -> None:
    """STORMEYE_THRESHOLD at or below the watch level (0.2) once failed at start-up with the layer's
    internal check; the watch level now follows a low threshold, and the pipeline scores."""
    from stormeye.workers.pipeline import Pipeline
    from stormeye.workers.settings import Settings

    pipe = Pipeline(Settings(database_url="sqlite://", threshold=threshold, release=threshold / 2))
    assert pipe.collective is not None
    assert pipe.collective.watch == pytest.approx(watch)
    rng = np.random.default_rng(0)
    names = [f'cpu{{host="h{i}",service="s"}}' for i in range(6)]
    for t in range(60):
        pipe.ingest(names, np.full(len(names), 60.0 * t), rng.normal(10, 1, len(names)))
        pipe.tick(60.0 * t)
    assert pipe.last_scored == 59
