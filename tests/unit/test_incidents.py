"""Incident lifecycle: open, join, merge, resolve, a new incident after resolution, ids, state."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from detectors.events import Anomaly
from grouping.graph import Edges, GroupingConfig, Node, components, lowest_conductance_cut, to_networkx
from grouping.incidents import IncidentTracker, incident_id
from grouping.names import NameIndex

COUNTRIES = ["England", "France", "Spain", "Italy", "Germany", "Poland", "Japan", "Brazil"]
PRODUCTS = ["shoes", "books", "toys", "shirts", "phones", "garden"]


def catalogue() -> list[str]:
    return [f'sales{{country="{c}",product="{p}"}}' for c in COUNTRIES for p in PRODUCTS] + [
        f'revenue{{country="{c}",product="{p}"}}' for c in COUNTRIES for p in PRODUCTS
    ]


def step_window(at: int, n: int = 60, seed: int = 0, size: float = 8.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, n)
    x[at:] += size
    return x


class World:
    """Names, windows and a tracker for tests; every anomaly is a step in its window."""

    def __init__(self, **cfg: float) -> None:
        self.index = NameIndex()
        self.index.add(catalogue())
        self.shapes: dict[str, np.ndarray] = {}
        # the linking tests look at every anomaly's incident: lone ones page at once unless a test
        # asks for the lone-anomaly rule (see the tests at the end)
        lone = {"single_min_score": 0.0, "single_min_s": 0.0}
        self.tracker = IncidentTracker(self.index, GroupingConfig(**(lone | cfg)), step=60.0)

    def windows(self, metrics):  # type: ignore[no-untyped-def]
        return np.vstack([self.shapes.get(m, np.zeros(60)) for m in metrics])

    def anomalies(self, metrics: list[str], start: float, shape_at: int, sign: int = 1) -> list[Anomaly]:
        out = []
        for _k, m in enumerate(metrics):
            self.shapes[m] = step_window(shape_at, seed=zlib.crc32(m.encode()) % 1000, size=8.0 * sign)
            out.append(Anomaly(m, start, start, 0.8, start, sign, "test"))
        return out

    def tick(self, now: float, anomalies: list[Anomaly]):  # type: ignore[no-untyped-def]
        return self.tracker.update(now, anomalies, self.windows)


def m(what: str, country: str, product: str) -> str:
    return f'{what}{{country="{country}",product="{product}"}}'


ENGLAND = [m("sales", "England", p) for p in ("shoes", "books", "toys")]
SHIRTS = [m("sales", c, "shirts") for c in ("France", "Spain", "Italy")]


def test_related_anomalies_open_one_incident_and_later_ones_join() -> None:
    w = World()
    ch = w.tick(0, w.anomalies(ENGLAND[:2], 0, 55))
    assert [c.kind for c in ch if c.kind == "opened"] == ["opened"]
    (inc,) = w.tracker.open_incidents()
    assert inc.id == incident_id(sorted(ENGLAND[:2])[0], 0)
    ch = w.tick(60, w.anomalies(ENGLAND[2:], 60, 54))
    assert any(c.kind == "grew" and c.incident == inc.id for c in ch)
    assert len(inc.members) == 3 and inc.members[(ENGLAND[2], 60)].evidence["name"] > 0.5


def test_unrelated_concurrent_anomalies_stay_apart() -> None:
    w = World()
    w.tick(0, w.anomalies(ENGLAND, 0, 55) + w.anomalies(SHIRTS, 0, 55))
    groups = sorted(sorted(i.metrics) for i in w.tracker.open_incidents())
    assert groups == sorted([sorted(ENGLAND), sorted(SHIRTS)])


def test_shapes_that_do_not_match_do_not_link() -> None:
    w = World()
    w.tick(0, w.anomalies(ENGLAND[:2], 0, 55))
    # same names a step later, but a step down long before the window's end: another story
    w.tick(60, w.anomalies(ENGLAND[2:], 60, 10, sign=-1))
    assert len(w.tracker.open_incidents()) == 2


def test_anomalies_starting_in_the_same_step_link_on_names_alone() -> None:
    w = World()
    w.tick(0, w.anomalies(ENGLAND[:2], 0, 55) + w.anomalies(ENGLAND[2:], 0, 10, sign=-1))
    assert len(w.tracker.open_incidents()) == 1
    w2 = World(co_onset_s=-1)  # the same-step path turned off: shapes must agree
    w2.tick(0, w2.anomalies(ENGLAND[:2], 0, 55) + w2.anomalies(ENGLAND[2:], 0, 10, sign=-1))
    assert len(w2.tracker.open_incidents()) == 2


def test_concurrent_problems_whose_scopes_intersect_do_not_merge() -> None:
    w = World()
    w.tick(0, w.anomalies(ENGLAND, 0, 50))
    w.tick(60, w.anomalies(SHIRTS, 60, 51))
    bridge = [m("sales", "England", "shirts"), m("revenue", "England", "shirts")]
    w.tick(120, w.anomalies(bridge, 120, 52))  # both link to both: no single property explains both
    assert len(w.tracker.open_incidents()) == 2


def test_two_halves_of_one_problem_merge_when_bridged() -> None:
    services = [f"svc{i}" for i in range(8)]
    names = [f'{k}{{host="{s}-{h}",service="{s}"}}' for s in services for h in range(4) for k in ("cpu", "mem", "lat")]
    index = NameIndex()
    index.add(names)
    tracker = IncidentTracker(index, GroupingConfig(), step=60.0)
    shapes: dict[str, np.ndarray] = {}

    def hit(host: str, at: float, looks: tuple[int, ...]) -> list[Anomaly]:
        """Anomalies on a host's three metrics; looks: +1 a step up at 50, -1 a step down at 20."""
        out = []
        for k, look in zip(("cpu", "mem", "lat"), looks):
            metric = f'{k}{{host="{host}",service="svc0"}}'
            seed = zlib.crc32(metric.encode()) % 1000
            shapes[metric] = step_window(50, seed=seed) if look > 0 else -step_window(20, seed=seed)
            out.append(Anomaly(metric, at, at, 0.8, at, 1))
        return out

    def windows(ms):  # type: ignore[no-untyped-def]
        return np.vstack([shapes[x] for x in ms])

    tracker.update(0.0, hit("svc0-0", 0.0, (1, 1, 1)), windows)
    tracker.update(60.0, hit("svc0-1", 60.0, (-1, -1, -1)), windows)  # the same service, another shape: apart
    first, second = sorted(tracker.open_incidents(), key=lambda i: i.opened_at)
    # two more hosts show both shapes: they bridge the halves, which share their service
    ch = tracker.update(120.0, hit("svc0-2", 120.0, (1, 1, -1)) + hit("svc0-3", 120.0, (1, -1, -1)), windows)
    kinds = {(c.kind, c.incident) for c in ch}
    assert ("merged", second.id) in kinds and ("absorbed", first.id) in kinds
    assert second.status == "merged" and second.merged_into == first.id and not second.members
    assert len(first.metrics) == 12 and first.root_entity == "service=svc0"


def test_one_bridging_anomaly_is_not_enough_to_merge() -> None:
    w = World()
    w.tick(0, w.anomalies(ENGLAND, 0, 50))
    w.tick(60, w.anomalies(SHIRTS, 60, 51))
    w.tick(120, w.anomalies([m("sales", "England", "shirts")], 120, 52))
    assert len(w.tracker.open_incidents()) == 2


def test_resolve_after_quiet_then_a_new_problem_is_a_new_incident() -> None:
    w = World(resolve_after_s=600, link_window_s=300)
    anomalies = w.anomalies(ENGLAND, 0, 55)
    w.tick(0, anomalies)
    (inc,) = w.tracker.open_incidents()
    for a in anomalies:
        a.open, a.end = False, 120.0
    w.tick(180, anomalies)
    assert inc.status == "open"  # quiet for 60 s only
    ch = w.tick(720, [])
    assert ("resolved", inc.id) in {(c.kind, c.incident) for c in ch} and inc.resolved_at == 720
    w.tick(900, w.anomalies(ENGLAND[:2], 900, 55))
    (new,) = w.tracker.open_incidents()
    assert new.id != inc.id and new.follows == inc.id


def test_members_quiet_longer_than_the_link_window_do_not_absorb_new_anomalies() -> None:
    w = World(link_window_s=300, resolve_after_s=3600)
    first = w.anomalies(ENGLAND[:2], 0, 55)
    w.tick(0, first)
    for a in first:
        a.open, a.end = False, 60.0
    w.tick(60, first)
    w.tick(1200, w.anomalies(ENGLAND[2:], 1200, 55))
    assert len(w.tracker.open_incidents()) == 2


def test_state_round_trip_gives_the_same_future() -> None:
    w1, w2 = World(), World()
    for w in (w1, w2):
        w.tick(0, w.anomalies(ENGLAND, 0, 50))
    w2.tracker.load_state(w1.tracker.to_state())
    later = w1.anomalies([*SHIRTS, m("sales", "England", "shirts")], 60, 51)
    w2.shapes = dict(w1.shapes)
    c1 = w1.tick(60, later)
    c2 = w2.tick(60, later)
    assert c1 == c2
    assert [i.to_dict() for i in w1.tracker.incidents.values()] == [i.to_dict() for i in w2.tracker.incidents.values()]


def _edges(pairs: list[tuple[int, int, float]]) -> Edges:
    a = np.array([min(p[0], p[1]) for p in pairs])
    b = np.array([max(p[0], p[1]) for p in pairs])
    w = np.array([p[2] for p in pairs])
    z = np.zeros(len(pairs))
    return Edges(a, b, w, w, z, np.zeros(len(pairs), dtype=np.int64), z)


def test_giant_component_guard_splits_two_groups_joined_by_a_chain() -> None:
    pairs = [(i, j, 0.9) for block in (range(0, 10), range(10, 20)) for i in block for j in block if i < j]
    pairs += [(9, 20, 0.5), (20, 10, 0.5)]
    parts = components(21, _edges(pairs), GroupingConfig())
    assert len(parts) >= 2
    assert all(len(set(p.tolist()) & set(range(10))) in (0, 10) for p in parts)
    assert all(len(set(p.tolist()) & set(range(10, 20))) in (0, 10) for p in parts)


def test_guard_keeps_dense_groups_and_sampled_cliques_whole() -> None:
    clique = [(i, j, 1.0) for i in range(12) for j in range(i + 1, 12)]
    assert len(components(12, _edges(clique), GroupingConfig())) == 1
    rng = np.random.default_rng(0)  # a big incident seen through a few neighbours per member
    n = 300
    sampled = {(min(i, j), max(i, j)) for i in range(n) for j in rng.choice(n, 12, replace=False) if i != j}
    parts = components(n, _edges([(i, j, 0.8) for i, j in sampled]), GroupingConfig())
    assert len(parts) == 1


def test_lowest_conductance_cut_and_networkx_view() -> None:
    pairs = [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 1.0), (3, 4, 1.0), (4, 5, 1.0), (3, 5, 1.0), (2, 3, 0.1)]
    e = _edges(pairs)
    import scipy.sparse as sp

    adj = sp.coo_matrix((e.weight, (e.left, e.right)), shape=(6, 6)).tocsr()
    side, phi = lowest_conductance_cut((adj + adj.T).tocsr())  # type: ignore[misc]
    assert set(np.flatnonzero(side).tolist()) in ({0, 1, 2}, {3, 4, 5})
    assert phi == pytest.approx(0.1 / 6.1)
    nodes = [Node(key=(f"m{i}", 0.0), metric=f"m{i}", start=0.0) for i in range(6)]
    g = to_networkx(nodes, e)
    assert g.number_of_edges() == 7 and g.nodes[3]["metric"] == "m3"
    assert g.edges[2, 3]["weight"] == pytest.approx(0.1)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="min_name"):
        GroupingConfig(min_name=2)
    with pytest.raises(ValueError, match="shape_points"):
        GroupingConfig(shape_points=3)
    with pytest.raises(ValueError, match="single_min_score"):
        GroupingConfig(single_min_score=1.5)
    with pytest.raises(ValueError, match="single_min_s"):
        GroupingConfig(single_min_s=-60)


def test_concurrent_problems_on_two_hosts_stay_apart_even_in_the_same_minute() -> None:
    hosts = [f"db-{i}" for i in range(6)]
    metrics = [f'{m}{{host="{h}",service="db-{h}"}}' for h in hosts for m in ("cpu", "disk", "latency", "errors")]
    index = NameIndex()
    index.add(metrics)
    tracker = IncidentTracker(index, GroupingConfig(), step=60.0)
    shape = step_window(50, seed=1)
    hit = [m for m in metrics if 'host="db-0"' in m or 'host="db-1"' in m]  # the same measures, the same minute
    tracker.update(0.0, [Anomaly(m, 0.0, 0.0, 0.8, 0.0, 1) for m in hit], lambda ms: np.vstack([shape] * len(ms)))
    groups = sorted(sorted(i.metrics) for i in tracker.open_incidents())
    assert groups == [sorted(m for m in hit if "db-0" in m), sorted(m for m in hit if "db-1" in m)]
    assert {i.root_entity for i in tracker.open_incidents()} == {"host=db-0", "host=db-1"}


def test_bare_metrics_share_the_scope_of_the_whole_system() -> None:
    index = NameIndex()
    index.add(["revenue", "orders", "signups", 'cpu{host="a"}'])
    tracker = IncidentTracker(index, GroupingConfig(), step=60.0)
    shape = step_window(50, seed=2)
    tracker.update(
        0.0,
        [Anomaly(m, 0.0, 0.0, 0.8, 0.0, -1) for m in ("revenue", "orders")],
        lambda ms: np.vstack([shape] * len(ms)),
    )
    (inc,) = tracker.open_incidents()
    assert inc.metrics == ["orders", "revenue"] and inc.priority <= 2


def test_guard_survives_components_the_iterative_solver_cannot_settle() -> None:
    # a long weighted path: a hard case for ARPACK at low tolerance; the guard must answer anyway
    n = 400
    pairs = [(i, i + 1, 0.5 + 0.5 * ((i * 7) % 3) / 2) for i in range(n - 1)]
    parts = components(n, _edges(pairs), GroupingConfig())
    assert sum(len(p) for p in parts) == n and all(len(p) for p in parts)


LONE = {"single_min_score": 0.9, "single_min_s": 600.0}


def weak(w: World, metric: str, start: float, shape_at: int, peak: float = 0.6, end: float | None = None) -> Anomaly:
    (a,) = w.anomalies([metric], start, shape_at)
    a.peak_score, a.end = peak, start if end is None else end
    return a


def test_a_lone_weak_anomaly_waits_and_opens_an_incident_once_related_evidence_arrives() -> None:
    w = World(**LONE)
    first = weak(w, ENGLAND[0], 0, 55)
    assert w.tick(0, [first]) == [] and not w.tracker.open_incidents()
    assert [p.key for p in w.tracker.pending()] == [first.key]
    assert w.tracker.incident_of(first.metric, first.start) is None
    # a related anomaly a step later: the two open one incident, named after the earlier one
    ch = w.tick(60, [weak(w, ENGLAND[1], 60, 54)])
    (inc,) = w.tracker.open_incidents()
    assert next(c.kind for c in ch if c.incident == inc.id) == "opened"
    assert inc.id == incident_id(first.metric, 0) and set(inc.metrics) == set(ENGLAND[:2])
    assert not w.tracker.pending() and inc.members[first.key].evidence["name"] > 0.5


def test_a_lone_anomaly_pages_when_strong_or_persistent_and_is_let_go_when_it_stays_a_blip() -> None:
    w = World(**LONE)
    strong = weak(w, ENGLAND[0], 0, 55, peak=0.95)
    w.tick(0, [strong])  # strong, but one sample: a blip until the next sample confirms it
    assert not w.tracker.open_incidents() and [p.metric for p in w.tracker.pending()] == [ENGLAND[0]]
    strong.end = 60.0
    w.tick(60, [strong])  # confirmed on a second sample: a page of its own
    assert [i.metrics for i in w.tracker.open_incidents()] == [[ENGLAND[0]]]
    blip = weak(w, SHIRTS[0], 0, 55)
    w.tick(0, [blip])
    assert [p.metric for p in w.tracker.pending()] == [SHIRTS[0]]
    blip.end = 600.0  # still anomalous ten minutes later: persistence makes it worth a page
    w.tick(600, [blip])
    assert {i.metrics[0] for i in w.tracker.open_incidents()} == {ENGLAND[0], SHIRTS[0]}
    other = weak(w, m("revenue", "Japan", "garden"), 700, 55)  # related to neither open incident
    other.open = False
    w.tick(700, [other])
    assert [p.metric for p in w.tracker.pending()] == [other.metric]
    w.tick(700 + 901, [])  # quiet beyond the link window: it stays an anomaly, never a page
    assert not w.tracker.pending() and len(w.tracker.open_incidents()) == 2


def test_a_strong_one_sample_blip_never_pages_alone_unless_single_min_points_is_1() -> None:
    w = World(**LONE)
    spike = weak(w, ENGLAND[0], 0, 55, peak=1.0)
    spike.open = False  # one sample, then back to normal
    w.tick(0, [spike])
    assert not w.tracker.open_incidents() and [p.metric for p in w.tracker.pending()] == [ENGLAND[0]]
    w.tick(901, [])  # quiet beyond the link window: it stays an anomaly, never a page
    assert not w.tracker.open_incidents() and not w.tracker.pending()
    w1 = World(**LONE, single_min_points=1)  # the old behaviour: a strong sample pages at once
    w1.tick(0, [weak(w1, ENGLAND[0], 0, 55, peak=1.0)])
    assert [i.metrics for i in w1.tracker.open_incidents()] == [[ENGLAND[0]]]
    with pytest.raises(ValueError, match="single_min_points"):
        GroupingConfig(single_min_points=0)


def test_without_the_lone_rule_every_anomaly_pages_and_waiting_anomalies_survive_a_state_round_trip() -> None:
    w = World(single_min_score=0.0, single_min_s=0.0)
    w.tick(0, [weak(w, ENGLAND[0], 0, 55, peak=0.51)])
    assert len(w.tracker.open_incidents()) == 1 and not w.tracker.pending()
    w1, w2 = World(**LONE), World(**LONE)
    a = weak(w1, SHIRTS[0], 0, 55)
    w1.tick(0, [a])
    w2.tracker.load_state(w1.tracker.to_state())
    assert [p.key for p in w2.tracker.pending()] == [a.key]
    later = weak(w1, SHIRTS[1], 60, 54)
    w2.shapes = dict(w1.shapes)
    assert w1.tick(60, [later]) == w2.tick(60, [later])
    assert [i.to_dict() for i in w1.tracker.open_incidents()] == [i.to_dict() for i in w2.tracker.open_incidents()]


def test_evidence_of_many_edges_is_the_evidence_of_each() -> None:
    rng = np.random.default_rng(3)
    n = 50
    e = Edges(
        np.arange(n),
        np.arange(n) + 1,
        rng.random(n),
        rng.random(n),
        rng.uniform(-1, 1, n),
        rng.integers(-3, 4, n),
        rng.integers(0, 5, n) * 60.0,
        step=60.0,
    )
    ks = [7, 0, 49, 7]
    assert e.evidence_many(ks) == [e.evidence(k) for k in ks]
    assert e.evidence_many([]) == []


def test_single_min_points_setting_reaches_the_tracker_and_bad_values_say_what_to_fix(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from workers.settings import Settings

    monkeypatch.setenv("STORMEYE_SINGLE_MIN_POINTS", "3")
    assert Settings(database_url="sqlite://").grouping_config().single_min_points == 3
    monkeypatch.setenv("STORMEYE_SINGLE_MIN_POINTS", "0")
    with pytest.raises(ValidationError, match="single_min_points"):
        Settings(database_url="sqlite://")
