"""Symptoms: while a host has an open incident, its other metrics join from the release level."""

from __future__ import annotations

import numpy as np

from stormeye.detectors import AnomalyTracker, Scores
from stormeye.detectors.events import Anomaly
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import IncidentTracker
from stormeye.grouping.names import NameIndex

HOSTS = ("web-1", "web-2")
METRICS = [f'{m}{{host="{h}"}}' for h in HOSTS for m in ("cpu", "disk_io", "net_rx", "tcp_retrans", "load")]


def scores(values: list[float]) -> Scores:
    s = np.asarray(values, dtype=float)
    return Scores(score=s, direction=np.ones(len(s), np.int8), status=np.zeros(len(s), np.uint8), raw={})


def test_a_named_row_opens_a_symptom_at_release_and_a_real_onset_ends_it() -> None:
    tr = AnomalyTracker(threshold=0.5, release=0.3, quiet_steps=2)
    names, rows = ["a", "b"], np.array([0, 1])
    u = tr.update(0, rows, scores([0.4, 0.4]), names, symptom_rows=np.array([True, False]))
    assert [(a.metric, a.symptom) for a in u.opened] == [("a", True)]  # b is not named: 0.4 opens nothing
    u = tr.update(60, rows, scores([0.45, 0.1]), names, symptom_rows=np.array([True, False]))
    assert [a.metric for a in u.updated] == ["a"] and u.updated[0].symptom
    # its score reaches the threshold: the symptom ends and an anomaly of its own starts now
    u = tr.update(120, rows, scores([0.9, 0.1]), names)
    assert [(a.metric, a.start, a.symptom) for a in u.closed] == [("a", 0, True)]
    assert [(a.metric, a.start, a.symptom) for a in u.opened] == [("a", 120, False)]
    # state round trip keeps what is a symptom
    tr2 = AnomalyTracker(threshold=0.5, release=0.3, quiet_steps=2)
    tr.update(180, rows, scores([0.1, 0.35]), names, symptom_rows=np.array([False, True]))
    tr2.load_state(tr.to_state())
    assert {a.metric: a.symptom for a in tr2.open_anomalies.values()} == {"a": False, "b": True}
    u = tr2.update(240, rows, scores([0.1, 0.7]), names)
    assert ("b", True) in [(a.metric, a.symptom) for a in u.closed]  # (a closes too: two quiet steps)
    assert [(a.metric, a.symptom) for a in u.opened] == [("b", False)]


def world() -> IncidentTracker:
    index = NameIndex()
    index.add(METRICS)
    return IncidentTracker(index, GroupingConfig(), step=60.0)


def shapes(ms):  # type: ignore[no-untyped-def]
    x = np.zeros(60)
    x[50:] = 8.0
    return np.vstack([x + np.random.default_rng(len(m)).normal(0, 0.1, 60) for m in ms])


def test_symptoms_join_the_open_incident_of_their_host_and_never_date_root_or_open_one() -> None:
    tr = world()
    web1 = [m for m in METRICS if "web-1" in m]
    strong = [Anomaly(m, 600.0, 660.0, 1.0, 600.0, 1) for m in web1[:3]]
    tr.update(660.0, strong, shapes)
    (inc,) = tr.open_incidents()
    # who may open a symptom: web-1's metrics not in the incident; web-2 has no open incident
    cand = tr.symptom_candidates(METRICS)
    assert [m for m, c in zip(METRICS, cand) if c] == web1[3:]
    # a symptom that began before the incident (its anomaly was already open below the threshold)
    late = Anomaly(web1[3], 480.0, 720.0, 0.35, 720.0, 1, symptom=True)
    other_host = Anomaly(METRICS[-1], 700.0, 720.0, 0.35, 720.0, 1, symptom=True)
    changes = tr.update(720.0, [late, other_host], shapes)
    assert [c.details for c in changes if c.kind == "grew"] == [{"added": [web1[3]], "symptom": True}]
    mem = inc.members[(web1[3], 480.0)]
    assert mem.symptom and mem.evidence["symptom"] and mem.evidence["entity"] == "host=web-1"
    assert mem.evidence["to"] in web1[:3] and mem.evidence["shape"] >= tr.config.min_shape  # why it joined
    assert inc.start == 600.0  # dated by its own anomalies
    assert inc.root in web1[:3]
    # the other host's symptom had no incident to join: let go, nothing opened, nothing waits
    assert len(tr.open_incidents()) == 1 and not tr.pending()
    assert tr.incident_of(METRICS[-1], 700.0) is None
    # it survives a state round trip as a symptom
    tr2 = world()
    tr2.load_state(tr.to_state())
    assert tr2.incidents[inc.id].members[(web1[3], 480.0)].symptom


def test_symptoms_do_not_link_new_anomalies_to_their_incident() -> None:
    tr = world()
    web1 = [m for m in METRICS if "web-1" in m]
    tr.update(660.0, [Anomaly(m, 600.0, 660.0, 1.0, 600.0, 1) for m in web1[:2]], shapes)
    tr.update(720.0, [Anomaly(web1[2], 720.0, 720.0, 0.35, 720.0, 1, symptom=True)], shapes)
    (inc,) = tr.open_incidents()
    linkable = {m.metric for m in tr._linkable(780.0)}
    assert web1[2] not in linkable and set(web1[:2]) <= linkable
    assert inc.own_members() and all(not m.symptom for m in inc.own_members())


def test_a_lingering_symptom_neither_extends_nor_keeps_open_its_incident() -> None:
    tr = world()
    web1 = [m for m in METRICS if "web-1" in m]
    own = [Anomaly(m, 600.0, 660.0, 1.0, 600.0, 1) for m in web1[:3]]
    tr.update(660.0, own, shapes)
    (inc,) = tr.open_incidents()
    tr.update(720.0, [Anomaly(web1[3], 720.0, 720.0, 0.35, 720.0, 1, symptom=True)], shapes)
    for a in own:
        a.open = False  # the failure is over on its own metrics
    tr.update(780.0, own, shapes)
    later = 780.0 + tr.config.resolve_after_s
    still = Anomaly(web1[3], 720.0, later, 0.4, 720.0, 1, symptom=True)  # the symptom lingers, open
    assert inc.end == 660.0
    tr.update(later, [still], shapes)
    assert inc.status == "resolved" and inc.end == 660.0


def noise_for(odd: str):  # type: ignore[no-untyped-def]
    """Windows as :func:`shapes`, but ``odd`` is noise that only crossed the release level by chance."""

    def windows(ms):  # type: ignore[no-untyped-def]
        out = shapes(ms)
        for i, m in enumerate(ms):
            if m == odd:
                out[i] = np.random.default_rng(7).normal(0, 1.0, out.shape[1])
        return out

    return windows


def test_only_a_machine_lowers_the_bar_and_a_symptom_joins_only_when_it_moves_like_its_incident() -> None:
    index = NameIndex()
    services = [f'{m}{{service="cart",region="eu"}}' for m in ("http_requests_total", "http_latency_p99_seconds")]
    index.add(METRICS + services)
    tr = IncidentTracker(index, GroupingConfig(), step=60.0)
    web1 = [m for m in METRICS if "web-1" in m]
    tr.update(660.0, [Anomaly(m, 600.0, 660.0, 1.0, 600.0, 1) for m in web1[:3]], shapes)
    tr.update(660.0, [Anomaly(m, 600.0, 660.0, 1.0, 600.0, 1) for m in services[:1]], shapes)
    # a service's request rate is driven by its callers: an open incident there lowers no bar
    assert not tr.symptom_candidates(services[1:]).any() and tr.symptom_candidates(web1[3:]).all()
    (inc,) = [i for i in tr.open_incidents() if web1[0] in i.metrics]
    # noise that crossed the release level does not join, however long it stays above it
    noisy = Anomaly(web1[3], 720.0, 720.0, 0.4, 720.0, 1, symptom=True)
    for t in (720.0, 780.0, 840.0):
        noisy.end = t
        tr.update(t, [noisy], noise_for(web1[3]))
        assert (web1[3], 720.0) not in inc.members
    # a metric the failure drags along joins from its first sample
    dragged = Anomaly(web1[4], 840.0, 840.0, 0.4, 840.0, 1, symptom=True)
    tr.update(840.0, [dragged], noise_for(web1[3]))
    assert inc.members[(web1[4], 840.0)].symptom
    # the noise opened nothing and waits for nothing
    assert tr.incident_of(web1[3], 720.0) is None and (web1[3], 720.0) not in {m.key for m in tr.pending()}


def test_a_symptom_reaching_the_threshold_stays_in_its_incident_unless_it_is_a_new_problem() -> None:
    def run(onset: float) -> tuple[IncidentTracker, str]:
        tr = world()
        web1 = [m for m in METRICS if "web-1" in m]
        tr.update(660.0, [Anomaly(m, 600.0, 660.0, 1.0, 600.0, 1) for m in web1[:3]], shapes)
        sym = Anomaly(web1[3], 720.0, onset - 60.0, 0.4, 720.0, 1, symptom=True)
        tr.update(onset - 60.0, [sym], shapes)
        sym.open = False  # the anomaly tracker ends the symptom as its score reaches the threshold
        own = Anomaly(web1[3], onset, onset, 0.9, onset, 1)
        tr.update(onset, [sym, own], shapes)
        (first,) = [i for i in tr.incidents.values() if (web1[0], 600.0) in i.members]
        return tr, first.id

    tr, first = run(840.0)  # minutes into the incident: more of it
    inc = tr.incidents[first]
    mem = inc.members[('tcp_retrans{host="web-1"}', 840.0)]
    assert not mem.symptom and mem.evidence["grew_from_symptom"] and inc.start == 600.0
    tr, first = run(4200.0)  # an hour of quiet on its own metrics later: a new problem, grouped afresh
    assert tr.incident_of('tcp_retrans{host="web-1"}', 4200.0) is not tr.incidents[first]
