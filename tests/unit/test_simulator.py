import csv
import hashlib
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from stormeye.grouping.names import NAME_KEY, parse
from stormeye.sim.simulator import (
    CASCADE_KINDS,
    ESTATE_METRICS,
    HOP_LAG_STEPS,
    QUEUE_METRIC,
    SERVICE_GRAPH_METRIC,
    Storm,
    simulate_storm,
)


def test_deterministic_for_a_seed() -> None:
    a = simulate_storm(seed=3, n_metrics=300, n_incidents=4)
    b = simulate_storm(seed=3, n_metrics=300, n_incidents=4)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.incidents == b.incidents and a.names == b.names
    c = simulate_storm(seed=4, n_metrics=300, n_incidents=4)
    assert not np.array_equal(np.nan_to_num(a.values), np.nan_to_num(c.values))


def test_ground_truth_is_consistent() -> None:
    s = simulate_storm(seed=0, n_metrics=1000, n_incidents=8)
    names = set(s.names)
    assert len(names) == len(s.names) == 1000
    seen: dict[str, object] = {}
    for inc in s.incidents:
        assert set(inc.members) <= names and len(inc.members) == len(set(inc.members))
        for m in inc.members:  # a metric belongs to one incident, or to two at different times
            if m in seen:
                prev = seen[m]
                assert prev.scope == inc.scope and prev.end < inc.start, "overlapping incidents share a metric"
            seen[m] = inc
        assert s.storm_start <= inc.start < inc.end <= s.timestamps[-1]
        assert len(inc.lags) == len(inc.members)
        if not inc.singleton:
            assert len(inc.members) >= 3
            for m in inc.members:  # every member is in the incident's scope
                props = parse(m)
                assert all(props.get(k) == v for k, v in inc.scope.items())
    multi = [i for i in s.incidents if not i.singleton]
    assert len(multi) >= 6
    assert {i.family for i in multi} == {"business", "infra"}


def test_real_data_patterns_are_in_the_storm() -> None:
    s = simulate_storm(seed=2, n_metrics=2000, n_incidents=6, back_to_back=1, concurrent=1, weak=1)
    multi = [i for i in s.incidents if not i.singleton]
    again = [(a, b) for a in multi for b in multi if a.id < b.id and a.scope == b.scope]
    assert again and all(b.start - a.end >= 20 * s.step for a, b in again)  # the same service, a quiet gap between
    same_minute = [
        (a, b)
        for a in multi
        for b in multi
        if a.id < b.id and a.start == b.start and set(a.scope) == set(b.scope) == {"host"}
    ]
    assert same_minute and not set(same_minute[0][0].members) & set(same_minute[0][1].members)
    assert any(len(i.members) >= 10 for i in multi[-1:])  # the weak one is broad


def test_members_really_deviate_and_history_is_clean() -> None:
    s = simulate_storm(seed=1, n_metrics=600, n_incidents=6)
    idx = {n: i for i, n in enumerate(s.names)}
    members = set(s.membership())
    others = [n for n in s.names if n not in members][:200]

    def moved(metric: str, lo: int, hi: int) -> bool:
        x = s.values[idx[metric]]
        before = x[lo - 120 : lo]
        med = np.nanmedian(before)
        mad = np.nanmedian(np.abs(before - med)) * 1.4826 + 1e-9
        return bool(np.nanmax(np.abs(x[lo:hi] - med)) / mad > 4)

    hit, calm = [], []
    for inc in s.incidents:
        lo = int(np.searchsorted(s.timestamps, inc.start))
        hi = int(np.searchsorted(s.timestamps, inc.end)) + 1
        hit += [moved(m, lo, hi) for m in inc.members]
        calm += [moved(m, lo, hi) for m in others[:20]]
    assert np.mean(hit) > 0.8 > 0.3 > np.mean(calm)
    assert np.isnan(s.values).mean() < 0.01
    names, ts, vals = s.points(0, 5)
    assert len(names) == len(ts) == len(vals) and np.all(np.isfinite(vals)) and np.all(np.diff(ts) >= 0)


def test_a_float_step_and_a_long_step_give_a_storm() -> None:
    a = simulate_storm(seed=3, n_metrics=200, n_incidents=3, step=60.0)  # type: ignore[arg-type]
    b = simulate_storm(seed=3, n_metrics=200, n_incidents=3, step=60)
    np.testing.assert_array_equal(a.values, b.values)
    hourly = simulate_storm(seed=3, n_metrics=200, n_incidents=3, step=3600, history_steps=200, storm_steps=200)
    assert np.isfinite(hourly.values).any()
    with pytest.raises(ValueError, match="back_to_back"):
        simulate_storm(seed=3, n_metrics=200, storm_steps=150)
    assert simulate_storm(seed=3, n_metrics=200, storm_steps=150, back_to_back=0).incidents


# --- the microservice estate and its cascades ---------------------------------------------------


def _checksum(s: Storm) -> str:
    """The storm's names, values (7 significant digits: the last bits of sin/exp may differ by CPU) and truth."""
    h = hashlib.sha256()
    h.update("\n".join(s.names).encode())
    h.update("|".join(f"{v:.7g}" for v in s.values.ravel()).encode())
    truth = [
        (i.members, i.start, i.end, i.kind, sorted(i.scope.items()), i.family, i.singleton, i.lags) for i in s.incidents
    ]
    h.update(repr(truth).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def cascaded() -> Storm:
    return simulate_storm(seed=4, n_metrics=300, n_incidents=4, cascades=4)


def test_existing_families_are_unchanged_by_cascades(cascaded: Storm) -> None:
    plain = simulate_storm(seed=4, n_metrics=300, n_incidents=4)
    n, k = len(plain.names), len(plain.incidents)
    assert cascaded.names[:n] == plain.names and cascaded.families[:n] == plain.families
    np.testing.assert_array_equal(cascaded.values[:n], plain.values)
    assert cascaded.incidents[:k] == plain.incidents
    assert set(cascaded.families[n:]) == {"cascade"} and {i.family for i in cascaded.incidents[k:]} == {"cascade"}
    assert not plain.cascades and not plain.dependencies and "cascade" not in plain.families
    # the same storm as the simulator gave before cascades existed (checksum taken on that code)
    assert _checksum(simulate_storm(seed=3, n_metrics=300, n_incidents=4)) == "8c1d49992cea522e"


def test_cascades_are_reproducible(cascaded: Storm) -> None:
    again = simulate_storm(seed=4, n_metrics=300, n_incidents=4, cascades=4)
    np.testing.assert_array_equal(again.values, cascaded.values)
    assert again.names == cascaded.names and again.incidents == cascaded.incidents
    assert again.dependencies == cascaded.dependencies and again.cascades == cascaded.cascades
    other = simulate_storm(seed=5, n_metrics=300, n_incidents=4, cascades=4)
    assert other.dependencies != cascaded.dependencies


def test_the_dependency_graph_is_a_dag_and_cascades_follow_it(cascaded: Storm) -> None:
    g = nx.DiGraph(cascaded.dependencies)  # caller -> callee
    assert nx.is_directed_acyclic_graph(g) and 24 <= g.number_of_nodes() <= 40
    assert len(cascaded.cascades) == 4
    for c in cascaded.cascades:
        assert c.root not in c.parents and set(c.parents) == set(c.onsets) - {c.root}
        for caller, callee in c.parents.items():
            assert g.has_edge(caller, callee)  # a failing service's caller fails next
            assert HOP_LAG_STEPS[0] <= c.onsets[caller] - c.onsets[callee] <= HOP_LAG_STEPS[1]
        assert min(c.onsets.values()) == c.onsets[c.root] and len(c.onsets) >= 3
        inc = cascaded.incidents[c.incident]
        assert inc.root == c.root and inc.family == "cascade" and inc.kind == c.kind
        assert inc.start == cascaded.timestamps[c.onsets[c.root]]
        for m, lag in zip(inc.members, inc.lags):
            props = parse(m)
            assert props["service"] in c.onsets and props.get("region", c.region) == c.region
            assert lag == c.onsets[props["service"]] - c.onsets[c.root]
        # names cannot link a cascade: its members share at most the region
        common = set.intersection(*(set(parse(m).items()) for m in inc.members))
        assert {k for k, _ in common} <= {"region"}


def test_concurrent_cascades_are_apart(cascaded: Storm) -> None:
    g = nx.DiGraph(cascaded.dependencies)
    pairs = 0
    for a in cascaded.cascades:
        for b in cascaded.cascades:
            ia, ib = cascaded.incidents[a.incident], cascaded.incidents[b.incident]
            if a.incident < b.incident and ia.start <= ib.end and ib.start <= ia.end:
                pairs += 1
                sa, sb = set(a.onsets), set(b.onsets)
                assert not sa & sb
                inside = g.subgraph(sa | sb).to_undirected()
                assert not any(nx.has_path(inside, x, y) for x in sa for y in sb)
                assert not set(ia.members) & set(ib.members)
    assert pairs >= 1


def test_cascade_members_ramp_and_the_kinds_all_occur(cascaded: Storm) -> None:
    idx = {n: i for i, n in enumerate(cascaded.names)}
    ramps = []
    for c in cascaded.cascades:
        inc = cascaded.incidents[c.incident]
        for m, lag in zip(inc.members, inc.lags):
            x = cascaded.values[idx[m]]
            o = c.onsets[c.root] + lag
            before = x[o - 120 : o]
            med = np.nanmedian(before)
            mad = np.nanmedian(np.abs(before - med)) * 1.4826 + 1e-9
            early = abs(np.nanmean(x[o : o + 2]) - med) / mad
            late = abs(np.nanmedian(x[o + 12 : o + 20]) - med) / mad
            assert late > 4  # a real deviation
            ramps.append(early < 0.5 * late)  # not a step: the first steps move much less than the plateau
    assert np.mean(ramps) > 0.8
    kinds = {c.kind for s in range(6) for c in simulate_storm(seed=s, n_metrics=60, n_incidents=2, cascades=4).cascades}
    assert kinds == set(CASCADE_KINDS)


def test_the_topology_is_given_two_ways(cascaded: Storm, tmp_path: Path) -> None:
    path = tmp_path / "dependencies.csv"
    path.write_text(cascaded.dependencies_csv(), encoding="utf-8")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["caller", "callee"]
    assert [tuple(r) for r in rows[1:]] == cascaded.dependencies
    graph = {(p["client"], p["server"]) for p in map(parse, cascaded.names) if p[NAME_KEY] == SERVICE_GRAPH_METRIC}
    assert graph == set(cascaded.dependencies)
    members = set(cascaded.membership())
    assert not any(parse(m)[NAME_KEY] == SERVICE_GRAPH_METRIC for m in members)  # topology, not a symptom
    assert {parse(m)[NAME_KEY] for m in members} <= {*ESTATE_METRICS, QUEUE_METRIC} | {
        parse(m)[NAME_KEY] for m in cascaded.names[: cascaded.families.index("cascade")]
    }


def test_cascade_figures_score_cascades_alone(cascaded: Storm) -> None:
    from stormeye.sim.quality import evaluate_storm

    def member(m: str, inc: object) -> dict[str, object]:
        return {"metric": m, "start": inc.start, "end": inc.end}  # type: ignore[attr-defined]

    cascades = [i for i in cascaded.incidents if i.family == "cascade"]
    whole = [
        {
            "id": f"c{i.id}",
            "members": [member(m, i) for m in i.members],
            "root": next(m for m in i.members if parse(m)["service"] == i.root),
            "root_entity": None,
        }
        for i in cascades
    ]
    f = evaluate_storm(cascaded, whole)
    assert f["cascade_pairwise_f1"] == 1.0 and f["cascade_incidents_true"] == f["cascade_incidents_pred"] == 4
    assert f["cascade_one_incident"] == f["cascade_root_hit"] == 4 and f["cascade_detection_recall"] == 1.0
    split = [  # one incident per service, as names alone would give
        {"id": f"c{i.id}-{m}", "members": [member(m, i)], "root": m, "root_entity": None}
        for i in cascades
        for m in i.members
    ]
    g = evaluate_storm(cascaded, split)
    assert g["cascade_pairwise_recall"] == 0.0 and g["cascade_one_incident"] == 0
    assert g["cascade_incidents_pred"] == sum(len(i.members) for i in cascades)
    assert evaluate_storm(simulate_storm(seed=4, n_metrics=300, n_incidents=4), [])["cascade_pairwise_f1"] is None
