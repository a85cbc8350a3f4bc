"""Incident lifecycle: open, join, merge, resolve, a new incident after resolution, ids, state."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from stormeye.detectors.events import Anomaly
from stormeye.grouping.graph import Edges, GroupingConfig, Node, components, lowest_conductance_cut, to_networkx
from stormeye.grouping.incidents import Incident, IncidentTracker, Member, incident_id
from stormeye.grouping.names import NameIndex

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
        # the linking tests look at every anomaly's incident: every cluster opens at once unless a
        # test asks for the evidence rule (see the tests at the end)
        gate = {"open_min_evidence": 0.0}
        self.tracker = IncidentTracker(self.index, GroupingConfig(**(gate | cfg)), step=60.0)

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


class ServiceHosts:
    """Eight services of four hosts with three metrics each; anomalies on the hosts of svc0."""

    def __init__(self) -> None:
        services = [f"svc{i}" for i in range(8)]
        kinds = ("cpu", "mem", "lat")
        names = [f'{k}{{host="{s}-{h}",service="{s}"}}' for s in services for h in range(4) for k in kinds]
        index = NameIndex()
        index.add(names)
        self.tracker = IncidentTracker(index, GroupingConfig(open_min_evidence=0.0), step=60.0)  # merging, not paging
        self.shapes: dict[str, np.ndarray] = {}

    def hit(self, host: str, at: float, looks: tuple[int, ...] = (1, 1, 1)) -> list[Anomaly]:
        """Anomalies on a host's three metrics; looks: +1 a step up at 50, -1 a step down at 20."""
        out = []
        for k, look in zip(("cpu", "mem", "lat"), looks):
            metric = f'{k}{{host="{host}",service="svc0"}}'
            seed = zlib.crc32(metric.encode()) % 1000
            self.shapes[metric] = step_window(50, seed=seed) if look > 0 else -step_window(20, seed=seed)
            out.append(Anomaly(metric, at, at, 0.8, at, 1))
        return out

    def windows(self, ms):  # type: ignore[no-untyped-def]
        return np.vstack([self.shapes[x] for x in ms])

    def tick(self, at: float, anomalies: list[Anomaly]):  # type: ignore[no-untyped-def]
        return self.tracker.update(at, anomalies, self.windows)


def test_two_halves_of_one_problem_merge_when_bridged() -> None:
    w = ServiceHosts()
    w.tick(0.0, w.hit("svc0-0", 0.0, (1, 1, 1)))
    w.tick(60.0, w.hit("svc0-1", 60.0, (-1, -1, -1)))  # the same service, another shape: apart
    first, second = sorted(w.tracker.open_incidents(), key=lambda i: i.opened_at)
    # two more hosts show both shapes: they bridge the halves, which share their service
    ch = w.tick(120.0, w.hit("svc0-2", 120.0, (1, 1, -1)) + w.hit("svc0-3", 120.0, (1, -1, -1)))
    kinds = {(c.kind, c.incident) for c in ch}
    assert ("merged", second.id) in kinds and ("absorbed", first.id) in kinds
    assert second.status == "merged" and second.merged_into == first.id and not second.members
    assert len(first.metrics) == 12 and first.root_entity == "service=svc0"


def test_a_wider_cluster_linked_to_one_incident_only_does_not_widen_it() -> None:
    w = ServiceHosts()
    w.tick(0.0, w.hit("svc0-0", 0.0))
    (first,) = w.tracker.open_incidents()
    # two other hosts of the service, the same shape: their scope (service=svc0) lacks host=svc0-0
    w.tick(60.0, w.hit("svc0-2", 60.0) + w.hit("svc0-3", 60.0))
    incidents = sorted(w.tracker.open_incidents(), key=lambda i: i.opened_at)
    assert len(incidents) == 2 and incidents[0].id == first.id and len(first.metrics) == 3
    assert len(incidents[1].metrics) == 6


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
    with pytest.raises(ValueError, match="unconfirmed_weight"):
        GroupingConfig(unconfirmed_weight=1.5)
    with pytest.raises(ValueError, match="open_after_points"):
        GroupingConfig(open_after_points=-1)
    with pytest.raises(ValueError, match="open_min_evidence"):
        GroupingConfig(open_min_evidence=-1)
    with pytest.raises(ValueError, match="confirm_points"):
        GroupingConfig(confirm_points=0)
    with pytest.raises(ValueError, match="threads"):
        GroupingConfig(threads=0)


def test_name_evidence_of_many_blocks_of_pairs_is_the_same_in_threads_and_at_least_the_cosine() -> None:
    from stormeye.grouping.correlation import PAIR_BLOCK
    from stormeye.grouping.graph import _normalize, _pair_similarity, contrast_weights

    rng = np.random.default_rng(5)
    names = [
        f'cpu{{host="h{rng.integers(40)}",service="s{rng.integers(8)}",region="r{rng.integers(3)}"}}'
        for _ in range(400)
    ]
    index = NameIndex()
    index.add(sorted(set(names)))
    cfg = GroupingConfig()
    mat, hot = contrast_weights(index, names, cfg)
    vec = _normalize(mat)
    a, b = np.triu_indices(len(names), k=1)
    assert len(a) > 2 * PAIR_BLOCK
    one = _pair_similarity(vec, hot, a, b, GroupingConfig(threads=1))
    two = _pair_similarity(vec, hot, a, b, GroupingConfig(threads=2))
    np.testing.assert_array_equal(one, two)
    exact = np.asarray((vec @ vec.T).toarray())[a, b]
    assert np.all(two >= exact - 1e-9) and (two > 0.5).any() and (two < 0.5).any()


def test_a_burst_explained_by_its_own_property_does_not_join_a_hotter_incident_it_half_overlaps() -> None:
    # os=Android is failing everywhere but England; four minutes later England fails. Half of the
    # England burst are England-Android metrics, and Android (hot for longer) is the hotter pair:
    # still the burst's scope is country=England, not the Android incident's os=Android
    countries = ["England", "France", "Spain", "Italy", "Germany", "Poland", "Japan", "Brazil", "Chile", "Peru"]
    oses, products = ["Android", "iOS", "Windows", "macOS"], ["shoes", "books", "toys", "garden"]
    names = [f'sales{{country="{c}",os="{o}",product="{p}"}}' for c in countries for o in oses for p in products]
    index = NameIndex()
    index.add(names)
    tracker = IncidentTracker(index, GroupingConfig(open_min_evidence=0.0), step=60.0)
    shapes: dict[str, np.ndarray] = {}

    def hit(metrics: list[str], start: float) -> list[Anomaly]:
        for k, name in enumerate(metrics):
            shapes[name] = step_window(55, seed=k + int(start), size=-8.0)
        return [Anomaly(name, start, start, 0.8, start, -1) for name in metrics]

    def windows(metrics):  # type: ignore[no-untyped-def]
        return np.vstack([shapes[x] for x in metrics])

    android = [n for n in names if 'os="Android"' in n and "England" not in n]
    tracker.update(0.0, hit(android, 0.0), windows)
    england = [n for n in names if "England" in n and "Android" in n]
    england += [n for n in names if "England" in n and "iOS" in n][:2]
    england += [n for n in names if "England" in n and "Windows" in n][:1]
    tracker.update(240.0, hit(england, 240.0), windows)
    groups = {i.root_entity: sorted(i.metrics) for i in tracker.open_incidents()}
    assert groups == {"os=Android": sorted(android), "country=England": sorted(england)}


def test_concurrent_problems_on_two_hosts_stay_apart_even_in_the_same_minute() -> None:
    hosts = [f"db-{i}" for i in range(6)]
    metrics = [f'{m}{{host="{h}",service="db-{h}"}}' for h in hosts for m in ("cpu", "disk", "latency", "errors")]
    index = NameIndex()
    index.add(metrics)
    tracker = IncidentTracker(index, GroupingConfig(), step=60.0)
    shape = step_window(50, seed=1)
    hit = [m for m in metrics if 'host="db-0"' in m or 'host="db-1"' in m]  # the same measures, the same minute
    # seen on two samples: each host's four anomalies have the evidence to page (0.8 x (1 + 1 + 2 + 2))
    tracker.update(60.0, [Anomaly(m, 0.0, 60.0, 0.8, 0.0, 1) for m in hit], lambda ms: np.vstack([shape] * len(ms)))
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


GATE = {"open_min_evidence": 2.0}  # the default evidence rule (World turns it off)


def weak(w: World, metric: str, start: float, shape_at: int, peak: float = 0.6, end: float | None = None) -> Anomaly:
    (a,) = w.anomalies([metric], start, shape_at)
    a.peak_score, a.end = peak, start if end is None else end
    return a


def test_a_cluster_waits_until_its_evidence_reaches_the_bar_and_opens_named_after_its_first_anomaly() -> None:
    w = World(**GATE)
    first = [weak(w, ENGLAND[0], 0, 55, peak=0.9, end=60), weak(w, ENGLAND[1], 0, 55, peak=0.9, end=60)]
    assert w.tick(60, first) == [] and not w.tracker.open_incidents()  # 0.9 + 0.9 = 1.8 < 2: it waits
    assert [p.key for p in w.tracker.pending()] == sorted(a.key for a in first)
    assert w.tracker.incident_of(ENGLAND[0], 0) is None
    # a third related anomaly: 2.7, the three open one incident, named after the earliest one
    ch = w.tick(120, [weak(w, ENGLAND[2], 60, 54, peak=0.9, end=120)])
    (inc,) = w.tracker.open_incidents()
    assert next(c.kind for c in ch if c.incident == inc.id) == "opened"
    assert inc.id == incident_id(sorted(ENGLAND[:2])[0], 0) and set(inc.metrics) == set(ENGLAND)
    assert not w.tracker.pending() and inc.priority_parts["evidence"] == pytest.approx(2.7)
    assert inc.members[(ENGLAND[2], 60)].evidence["name"] > 0.5


def test_one_ordinary_metric_never_pages_alone_but_a_revenue_metric_does() -> None:
    w = World(**GATE)
    sales = weak(w, ENGLAND[0], 0, 55, peak=1.0, end=3600)  # an hour at full score: evidence 1
    revenue = weak(w, m("revenue", "Japan", "garden"), 0, 55, peak=0.7)  # weight 10, one sample: 10 x 0.7 x 0.3
    w.tick(3600, [sales, revenue])
    assert [i.metrics for i in w.tracker.open_incidents()] == [[revenue.metric]]
    assert [p.metric for p in w.tracker.pending()] == [sales.metric]
    sales.open = False
    w.tick(3600 + 901, [sales])  # quiet beyond the link window: it stays an anomaly, never a page
    assert not w.tracker.pending() and len(w.tracker.open_incidents()) == 1
    # open_after_points for any metric (open_after_min_weight 0): persistence alone opens an incident
    w2 = World(**GATE, open_after_points=31, open_after_min_weight=0.0)
    long = weak(w2, ENGLAND[0], 0, 55, peak=0.6, end=1200)  # 21 samples
    w2.tick(1200, [long])
    assert not w2.tracker.open_incidents()
    long.end = 1800.0  # 31 samples
    w2.tick(1800, [long])
    assert [i.metrics for i in w2.tracker.open_incidents()] == [[ENGLAND[0]]]


def test_a_sustained_anomaly_of_an_important_metric_pages_alone_after_open_after_points() -> None:
    from stormeye.grouping.priority import PriorityModel, PriorityRule

    w = World(**GATE)  # the defaults: 10 samples, weight 1.5 or more
    traffic = PriorityModel([PriorityRule({"__name__": "sales"}, weight=1.5, name="traffic")])
    w.tracker = IncidentTracker(w.index, w.tracker.config, priority=traffic, step=60.0)
    drop = weak(w, ENGLAND[0], 0, 55, peak=0.9, end=480)  # 9 samples: evidence 1.5 x 0.9 = 1.35 < 2
    w.tick(480, [drop])
    assert not w.tracker.open_incidents() and [p.metric for p in w.tracker.pending()] == [drop.metric]
    drop.end = 540.0  # the tenth sample
    w.tick(540, [drop])
    (inc,) = w.tracker.open_incidents()
    assert inc.metrics == [drop.metric] and inc.id == incident_id(drop.metric, 0.0)
    assert not w.tracker.pending() and inc.priority_parts["evidence"] == pytest.approx(1.35)
    # the same anomaly on an ordinary metric (weight 1) waits however long it lasts
    plain = World(**GATE)
    cpu = weak(plain, ENGLAND[0], 0, 55, peak=0.9, end=3600)
    plain.tick(3600, [cpu])
    assert not plain.tracker.open_incidents() and len(plain.tracker.pending()) == 1
    with pytest.raises(ValueError, match="open_after_min_weight"):
        GroupingConfig(open_after_min_weight=-1)


def test_a_one_sample_anomaly_counts_for_less_until_a_second_sample_confirms_it() -> None:
    w = World(**GATE)
    spikes = [weak(w, name, 0, 55, peak=1.0) for name in ENGLAND]  # three one-sample spikes: 3 x 0.3
    w.tick(0, spikes)
    assert not w.tracker.open_incidents() and len(w.tracker.pending()) == 3
    spikes[0].end = spikes[1].end = 60.0  # two of them seen again: 1 + 1 + 0.3
    w.tick(60, spikes[:2])
    (inc,) = w.tracker.open_incidents()
    assert set(inc.metrics) == set(ENGLAND) and inc.priority_parts["evidence"] == pytest.approx(2.3)
    w1 = World(**GATE, unconfirmed_weight=1.0)  # every sample counts in full: they page at once
    w1.tick(0, [weak(w1, name, 0, 55, peak=1.0) for name in ENGLAND])
    assert len(w1.tracker.open_incidents()) == 1
    w3 = World(**GATE, confirm_points=3)  # two samples are not yet enough
    w3.tick(60, [weak(w3, name, 0, 55, peak=1.0, end=60) for name in ENGLAND])
    assert not w3.tracker.open_incidents()


def test_waiting_anomalies_join_an_open_incident_and_survive_a_state_round_trip() -> None:
    w = World()  # evidence rule off: every cluster opens
    w.tick(0, [weak(w, ENGLAND[0], 0, 55, peak=0.51)])
    assert len(w.tracker.open_incidents()) == 1 and not w.tracker.pending()
    w1, w2 = World(**GATE), World(**GATE)
    a = weak(w1, SHIRTS[0], 0, 55)
    w1.tick(0, [a])
    w2.tracker.load_state(w1.tracker.to_state())
    assert [p.key for p in w2.tracker.pending()] == [a.key]
    later = [weak(w1, name, 60, 54, peak=1.0, end=120) for name in SHIRTS[1:]]
    w2.shapes = dict(w1.shapes)
    assert w1.tick(120, later) == w2.tick(120, later)
    assert [i.to_dict() for i in w1.tracker.open_incidents()] == [i.to_dict() for i in w2.tracker.open_incidents()]
    (inc,) = w1.tracker.open_incidents()
    assert set(inc.metrics) == set(SHIRTS) and not w1.tracker.pending()
    # an open incident takes a related newcomer whatever the newcomer's own evidence
    w1.tick(180, [weak(w1, m("sales", "Germany", "shirts"), 180, 53, peak=0.5)])
    assert m("sales", "Germany", "shirts") in inc.metrics


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


def test_evidence_settings_reach_the_tracker_and_bad_values_say_what_to_fix(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from stormeye.workers.settings import Settings

    monkeypatch.setenv("STORMEYE_CONFIRM_POINTS", "3")
    monkeypatch.setenv("STORMEYE_OPEN_MIN_EVIDENCE", "2.5")
    monkeypatch.setenv("STORMEYE_OPEN_AFTER_POINTS", "30")
    monkeypatch.setenv("STORMEYE_OPEN_AFTER_MIN_WEIGHT", "2")
    cfg = Settings(database_url="sqlite://").grouping_config()
    assert (cfg.confirm_points, cfg.open_min_evidence, cfg.open_after_points) == (3, 2.5, 30)
    assert cfg.open_after_min_weight == 2.0
    monkeypatch.setenv("STORMEYE_CONFIRM_POINTS", "0")
    with pytest.raises(ValidationError, match="confirm_points"):
        Settings(database_url="sqlite://")
    monkeypatch.setenv("STORMEYE_CONFIRM_POINTS", "2")
    monkeypatch.setenv("STORMEYE_UNCONFIRMED_WEIGHT", "1.5")
    with pytest.raises(ValidationError, match="unconfirmed_weight"):
        Settings(database_url="sqlite://")


def test_grouping_threads_setting_reaches_the_config_and_zero_is_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from stormeye.workers.settings import Settings

    monkeypatch.setenv("STORMEYE_GROUPING_THREADS", "1")
    assert Settings(database_url="sqlite://").grouping_config().threads == 1
    monkeypatch.setenv("STORMEYE_GROUPING_THREADS", "0")
    with pytest.raises(ValidationError, match="grouping_threads"):
        Settings(database_url="sqlite://")


def test_a_cluster_with_no_edge_across_joins_the_concurrent_incident_of_its_own_scope() -> None:
    def both(country: str, products: tuple[str, ...]) -> list[str]:
        return [m(what, country, p) for what in ("sales", "revenue") for p in products]

    first = both("England", ("shoes", "books"))
    later = both("England", ("toys", "shirts", "phones", "garden"))  # 8: a cluster big enough
    france = both("France", ("toys", "shirts", "phones", "garden"))
    for join_min, expect in ((8, [sorted(first + later), sorted(france)]), (0, None)):
        w = World(scope_join_min=join_min)
        w.tick(0, w.anomalies(first, 0, 55))
        # a minute later: the same scope with a shape of its own (no shape match, no same-step
        # onset, so no edge to the open incident), and another country the same way
        w.tick(60, w.anomalies(later, 60, 10, sign=-1) + w.anomalies(france, 60, 10, sign=-1))
        groups = sorted(sorted(i.metrics) for i in w.tracker.open_incidents())
        if expect is None:  # the rule off: England's second cluster opens an incident of its own
            assert groups == sorted([sorted(first), sorted(later), sorted(france)])
        else:
            assert groups == sorted(expect)


def test_a_blip_before_the_problem_does_not_date_the_incident() -> None:
    def member(metric: str, start: float, end: float, open_: bool = False) -> Member:
        return Member(metric, start, end, 1.0, start, 1, open_, joined_at=end)

    inc = Incident(id="i", opened_at=400.0, updated_at=400.0)
    for m in (member("a", 100.0, 100.0), member("b", 280.0, 600.0), member("c", 300.0, 600.0, open_=True)):
        inc.members[m.key] = m
    assert inc.start == 280.0  # the closed one-sample blip of "a" three minutes before is not the start
    assert inc.first_sign == 100.0  # but the trouble showed from then (the new-problem rule's age)
    assert inc.to_dict()["start"] == 280.0
    now = member("d", 200.0, 200.0, open_=True)  # seen once so far but still open: it may last
    inc.members[now.key] = now
    assert inc.start == 200.0
    blips = Incident(id="j", opened_at=0.0, updated_at=0.0)
    for m in (member("a", 100.0, 100.0), member("b", 160.0, 160.0)):
        blips.members[m.key] = m
    assert blips.start == 100.0  # nothing lasted: the first blip it is


def test_to_dict_is_what_asdict_gives_field_by_field() -> None:
    """``Incident.to_dict`` copies field by field (issue 33: asdict was a third of a replay); same result."""
    from dataclasses import asdict

    inc = Incident(id="inc-1", opened_at=10.0, updated_at=70.0, merged_from=["inc-0"], priority_parts={"kpi": 1.0})
    for k, metric in enumerate(['b{host="x"}', 'a{host="x"}', "c"]):
        inc.members[(metric, 60.0 * k)] = Member(
            metric=metric,
            start=60.0 * k,
            end=60.0 * k + 60,
            peak_score=0.7,
            peak_at=60.0 * k,
            direction=1,
            open=k == 0,
            joined_at=60.0,
            evidence={"z": 8.5, "kind": None, "spans": [1, 2]},
            symptom=k == 2,
        )
    want = asdict(inc)
    want["members"] = [asdict(m) for m in sorted(inc.members.values(), key=lambda m: (m.start, m.metric))]
    want["start"], want["end"] = inc.start, inc.end
    got = inc.to_dict()
    assert got == want and list(got) == list(want)
    got["members"][0]["evidence"]["spans"].append(3)  # a copy: the incident is not changed through it
    assert inc.members[('b{host="x"}', 0.0)].evidence["spans"] == [1, 2]
