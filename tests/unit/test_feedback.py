"""People's splits and merges on the tracker, and the apart pairs grouping then respects."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from stormeye.detectors.events import Anomaly
from stormeye.grouping.feedback import allowed_targets, cross_pairs, drop_apart, pair, separate_apart
from stormeye.grouping.graph import Edges, GroupingConfig
from stormeye.grouping.incidents import ActionRefused, IncidentTracker
from stormeye.grouping.names import NameIndex


def window(at: int, seed: int, size: float = 8.0, n: int = 60) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 1, n)
    x[at:] += size
    return x


PRODUCTS = ("shoes", "books", "toys", "shirts", "phones", "garden")
ENGLAND = [f'sales{{country="England",product="{p}"}}' for p in PRODUCTS]


class Shop:
    """Sales of six products in three countries; every anomaly is a step in its window."""

    def __init__(self) -> None:
        index = NameIndex()
        index.add([f'sales{{country="{c}",product="{p}"}}' for c in ("England", "France", "Spain") for p in PRODUCTS])
        self.tracker = IncidentTracker(index, GroupingConfig(open_min_evidence=0.0), step=60.0)
        self.shapes: dict[str, np.ndarray] = {}

    def hit(self, metrics: list[str], at: float, shape_at: int, sign: int = 1) -> list[Anomaly]:
        for x in metrics:
            self.shapes[x] = window(shape_at, zlib.crc32(x.encode()) % 1000, 8.0 * sign)
        return [Anomaly(x, at, at, 0.8, at, sign, "test") for x in metrics]

    def tick(self, at: float, anomalies: list[Anomaly]) -> None:
        self.tracker.update(at, anomalies, lambda ms: np.vstack([self.shapes[x] for x in ms]))

    def incident_of(self, metric: str, start: float) -> str:
        inc = self.tracker.incident_of(metric, start)
        assert inc is not None
        return inc.id


@pytest.mark.parametrize("feedback", [False, True])
def test_a_split_pair_stays_apart_on_the_next_ticks_with_the_same_evidence(feedback: bool) -> None:
    w = Shop()
    w.tick(0.0, w.hit(ENGLAND[:4], 0.0, 55))
    (inc,) = w.tracker.open_incidents()
    off, stay = ENGLAND[2:4], ENGLAND[:2]
    changes = w.tracker.split(inc.id, off, "inc-split", 60.0, "alice").changes
    assert [c.kind for c in changes][:2] == ["split", "opened"]
    if feedback:  # what the runtime reads from the feedback table after a split
        w.tracker.apart |= cross_pairs(off, stay)
    # the same evidence again: a split-off metric fires again, then more England sales link to both
    w.tick(120.0, w.hit(off[:1], 120.0, 53))
    w.tick(180.0, w.hit(ENGLAND[4:], 180.0, 52))
    together = {w.incident_of(x, 0.0) for x in off + stay}
    if not feedback:  # the control: without the feedback the same evidence groups them again
        assert len(together) == 1
        return
    assert len(together) == 2, "a split pair was grouped again"
    assert w.incident_of(off[0], 120.0) == "inc-split"  # it fired again in its own (split-off) incident
    for i in w.tracker.incidents.values():
        assert not (set(i.metrics) & set(off) and set(i.metrics) & set(stay))


def test_manual_merge_resolve_and_refusals() -> None:
    w = Shop()
    w.tick(0.0, w.hit(ENGLAND[:3], 0.0, 55))
    w.tick(0.0, w.hit([x.replace("England", "Spain") for x in ENGLAND[3:]], 0.0, 20, -1))
    a, b = sorted(w.tracker.open_incidents(), key=lambda i: i.id)
    with pytest.raises(ActionRefused, match="itself"):
        w.tracker.merge(a.id, a.id, 60.0)
    kinds = [c.kind for c in w.tracker.merge(b.id, a.id, 60.0, "bob").changes]
    assert kinds[:2] == ["absorbed", "merged"] and b.status == "merged" and len(a.metrics) == 6
    with pytest.raises(ActionRefused, match="merged"):
        w.tracker.resolve(b.id, 60.0)
    with pytest.raises(ActionRefused, match="every member"):
        w.tracker.split(a.id, a.metrics, "inc-x", 60.0)
    with pytest.raises(ActionRefused, match="none of those"):
        w.tracker.split(a.id, ["nope"], "inc-x", 60.0)
    assert w.tracker.resolve(a.id, 60.0, "bob").changes[0].kind == "resolved" and a.status == "resolved"
    with pytest.raises(ActionRefused, match="not held"):
        w.tracker.resolve("inc-gone", 60.0)


def test_drop_apart_and_allowed_targets_are_exact() -> None:
    names = ["a", "b", "c"]
    i = np.array([0, 0, 1])
    edges = Edges(i, np.array([1, 2, 2]), np.ones(3), np.ones(3), np.ones(3), np.zeros(3, int), np.zeros(3))
    kept = drop_apart(edges, names, {pair("a", "c")})
    assert list(zip(kept.left.tolist(), kept.right.tolist())) == [(0, 1), (1, 2)]
    assert drop_apart(edges, names, set()) is edges
    members = {"i1": ["a"], "i2": ["c"], "i3": ["d"]}
    got = allowed_targets(
        {0: ["i1", "i2", "i3"], 1: ["i2"]}, lambda k: [["b"], ["a"]][k], members.__getitem__, {pair("a", "c")}
    )
    assert got == {0: ["i1", "i3"]}


def test_a_third_metric_related_to_both_sides_does_not_bring_a_split_pair_back_together() -> None:
    w = Shop()
    w.tick(0.0, w.hit(ENGLAND[:4], 0.0, 55))
    (inc,) = w.tracker.open_incidents()
    off, stay = ENGLAND[2:4], ENGLAND[:2]
    w.tracker.split(inc.id, off, "inc-split", 60.0)
    w.tracker.apart |= cross_pairs(off, stay)
    # both sides fire again in one tick, with a third England metric shaped like both: one cluster
    # by its edges, but it would hold a split pair
    w.tick(120.0, w.hit([stay[0], off[0], ENGLAND[4]], 120.0, 53))
    for i in w.tracker.incidents.values():
        assert not (set(i.metrics) & set(off) and set(i.metrics) & set(stay)), i.metrics
    assert w.incident_of(off[0], 120.0) == "inc-split" and w.incident_of(stay[0], 120.0) == inc.id


def test_separate_apart_cuts_only_clusters_holding_an_apart_pair() -> None:
    names = ["a", "x", "b", "c"]
    left, right = np.array([0, 1, 0, 3]), np.array([1, 2, 2, 3 - 1])
    w = np.array([0.9, 0.5, 0.8, 0.7])
    z = np.zeros(4)
    edges = Edges(left, right, w, z, z, np.zeros(4, int), z)
    comps = [np.array([0, 1, 2, 3])]
    got = separate_apart(comps, edges, names, {pair("a", "b")})
    assert sorted(sorted(g.tolist()) for g in got) == [[0, 1], [2, 3]]
    assert [g.tolist() for g in separate_apart(comps, edges, names, {pair("y", "z")})] == [[0, 1, 2, 3]]
