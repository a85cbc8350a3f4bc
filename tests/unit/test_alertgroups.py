"""Alert storms (issue 30): one service's instances failing together are one incident, alerts open at
once, severity weighs, resolved alerts close their part, a flapping alert is one member; the
Alertmanager API v2 and Grafana bodies are read."""

from __future__ import annotations

import pytest

from stormeye.grouping.alertgroups import SERVICE_WINDOW_S, join_components, service_links
from stormeye.grouping.names import parse
from stormeye.workers.alerts import Alert, AlertError, read_alertmanager, read_grafana, read_postable
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

T0 = 1_800_000_000.0  # a step boundary at 60 s
NAMES = ["HighLatency", "HighErrorRate", "PodCrashLooping", "CPUThrottlingHigh"]


def alert(name: str, job: str, inst: int, start: float, severity: str = "critical", **extra: str) -> Alert:
    labels = {"alertname": name, "job": job, "instance": f"{job}-{inst}:8080", "severity": severity, **extra}
    return Alert(labels, start, None, False, "alertmanager")


def live(now: list[float]) -> Pipeline:
    """An embedded pipeline on a clock the test moves."""
    return Pipeline(Settings(), clock=lambda: now[0], keep_archive=True)


def incidents(p: Pipeline) -> list[dict]:
    return [i for i in p.incident_list() if i["status"] != "merged"]


def test_one_service_on_five_instances_is_one_incident_opened_in_the_first_tick() -> None:
    now = [T0 + 110.0]
    p = live(now)
    p.alerts.receive(alert(n, "checkout", i, T0 + 60 + 10 * i, severity="warning") for i in range(5) for n in NAMES[:3])
    p.tick()  # the first tick after the alerts arrived
    assert p.last_scored is not None and p.last_scored * 60 < T0 + 60  # their step is not complete yet
    (inc,) = incidents(p)
    assert inc["opened_at"] == T0 + 60
    assert inc["root_entity"] == "job=checkout"
    assert inc["title"].startswith("checkout: 3 alerts on 5 of 5 instances (checkout-0:8080")
    assert len(inc["members"]) == 15
    assert all(m["evidence"].get("alert") for m in inc["members"])


def test_two_services_in_the_same_minute_stay_apart() -> None:
    now = [T0 + 130.0]
    p = live(now)
    p.alerts.receive(alert(n, job, i, T0 + 60) for job in ("checkout", "payments") for i in range(3) for n in NAMES[:3])
    p.tick()
    got = sorted((i["root_entity"], len(i["members"])) for i in incidents(p))
    assert got == [("job=checkout", 9), ("job=payments", 9)]


def test_one_instance_alone_is_its_own_incident_and_warnings_alone_wait() -> None:
    now = [T0 + 130.0]
    p = live(now)
    # the service's other instances are known (their alerts fire elsewhere, e.g. long before)
    p.ingest([f'up{{instance="checkout-{i}:8080",job="checkout"}}' for i in range(5)], [T0] * 5, [1.0] * 5)
    p.alerts.receive([alert("HighLatency", "checkout", 2, T0 + 60, severity="critical")])
    p.alerts.receive([alert("QueueBacklog", "search", 0, T0 + 60, severity="warning")])
    p.tick()
    (inc,) = incidents(p)  # the critical one opens alone; the lone warning waits for company
    assert [m["metric"] for m in inc["members"]] == ['HighLatency{instance="checkout-2:8080",job="checkout"}']
    assert inc["root_entity"] == "instance=checkout-2:8080"
    assert [m.metric for m in p.incidents.pending()] == ['QueueBacklog{instance="search-0:8080",job="search"}']


def test_resolved_alerts_close_and_a_flapping_alert_is_one_member() -> None:
    now = [T0 + 130.0]
    p = live(now)
    firing = [alert(n, "cart", i, T0 + 60) for i in range(3) for n in NAMES[:2]]
    p.alerts.receive(firing)
    p.tick()
    (inc,) = incidents(p)
    # one alert flaps: resolved, firing again 5 minutes later, resolved again
    flap = alert("HighLatency", "cart", 0, T0 + 60)
    flap.resolved, flap.ends_at = True, T0 + 200
    now[0] = T0 + 250
    p.alerts.receive([flap])
    p.tick()
    again = alert("HighLatency", "cart", 0, T0 + 500)
    now[0] = T0 + 530
    p.alerts.receive([again])
    p.tick()
    (inc,) = incidents(p)
    assert len(inc["members"]) == 6  # the flapping alert is one member, open again
    flapping = [m for m in inc["members"] if m["metric"].startswith("HighLatency") and "cart-0" in m["metric"]]
    assert len(flapping) == 1 and flapping[0]["open"]
    # everything resolves: every member closes, and the incident resolves after resolve_after_s
    for a in [*firing, again]:
        a.resolved, a.ends_at = True, T0 + 600
    now[0] = T0 + 700
    p.alerts.receive([*firing, again])
    p.tick()
    (inc,) = incidents(p)
    assert not any(m["open"] for m in inc["members"])
    now[0] = T0 + 700 + p.incidents.config.resolve_after_s + 120
    p.tick()
    (inc,) = incidents(p)
    assert inc["status"] == "resolved"


def test_service_links_keep_hosts_faults_and_services_apart() -> None:
    def links(named: list[tuple[str, float]], n_new: int | None = None) -> list[tuple[int, int]]:
        metrics = [m for m, _ in named]
        return sorted(service_links(metrics, [t for _, t in named], parse, len(named) if n_new is None else n_new))

    # SMD-like machines: hosts with no common service link nothing
    assert links([('cpu{host="machine-1-2"}', 0.0), ('cpu{host="machine-1-5"}', 0.0)]) == []
    # two services: nothing
    assert links([('up{job="a",instance="x"}', 0.0), ('up{job="b",instance="y"}', 0.0)]) == []
    # one service, two pods, together: linked; a fault on another pod 9 minutes later: not
    same = [('lat{service="cart",pod="cart-1"}', 0.0), ('lat{service="cart",pod="cart-2"}', 60.0)]
    assert links(same) == [(0, 1), (1, 0)]
    later = [('lat{service="cart",pod="cart-1"}', 0.0), ('lat{service="cart",pod="cart-2"}', 540.0)]
    assert SERVICE_WINDOW_S < 540.0 and links(later) == []
    # a different signal on the other pod: not linked by this rule
    assert links([('lat{service="cart",pod="cart-1"}', 0.0), ('cpu{service="cart",pod="cart-2"}', 0.0)]) == []
    # an old member (index >= n_new) links only from a new one
    assert links(same, n_new=1) == [(0, 1)]


def test_join_components() -> None:
    import numpy as np

    comps = [np.array([0, 1]), np.array([2]), np.array([3, 4])]
    assert join_components(comps, []) is comps
    got = join_components(comps, [(4, 1)])
    assert [c.tolist() for c in got] == [[0, 1, 3, 4], [2]]


def test_nezha_like_faults_on_pods_of_one_service_nine_minutes_apart_are_two_incidents() -> None:
    now = [T0 + 130.0]
    p = live(now)
    p.alerts.receive([alert(n, "cart", 1, T0 + 60) for n in NAMES[:2]])
    p.tick()
    for a in [alert(n, "cart", 1, T0 + 60) for n in NAMES[:2]]:
        a.resolved, a.ends_at = True, T0 + 240
        p.alerts.receive([a])
    now[0] = T0 + 250
    p.tick()
    now[0] = T0 + 60 + 540 + 70
    p.alerts.receive([alert(n, "cart", 2, T0 + 600) for n in NAMES[:2]])
    p.tick()
    got = incidents(p)
    assert len(got) == 2
    assert {m["metric"].split('instance="')[1].split('"')[0] for i in got for m in i["members"]} == {
        "cart-1:8080",
        "cart-2:8080",
    }


def test_alertmanager_api_v2_postable_alerts() -> None:
    now = T0
    alerts, bad = read_postable(
        [
            {
                "labels": {"alertname": "Down", "job": "a"},
                "startsAt": "2027-01-15T08:00:00Z",
                "endsAt": "2027-01-15T08:59:00Z",
            },
            {
                "labels": {"alertname": "Up", "job": "a"},
                "startsAt": "2027-01-15T07:00:00Z",
                "endsAt": "2027-01-15T07:30:00Z",
            },
            {"labels": {"alertname": "NoStart"}},
            {"labels": {}},
            "nope",
        ],
        now,
    )
    firing, resolved, nostart = alerts
    assert not firing.resolved and firing.ends_at is None and firing.source == "prometheus"
    assert resolved.resolved and resolved.ends_at == T0 - 1800
    assert nostart.starts_at == now and not nostart.resolved
    assert [w for w, _ in bad] == ["alerts[3]", "alerts[4]"]
    with pytest.raises(AlertError, match="JSON list"):
        read_postable({"alerts": []}, now)


def test_grafana_webhook_body() -> None:
    body = {  # Grafana alerting's webhook contact point, as documented
        "receiver": "stormeye",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighCPU", "grafana_folder": "infra", "instance": "web-1"},
                "annotations": {"summary": "CPU above 90%"},
                "startsAt": "2026-01-05T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://grafana/alerting/grafana/x/view",
                "fingerprint": "c6eadffa33fcdf37",
                "silenceURL": "http://grafana/alerting/silence/new",
                "dashboardURL": "",
                "panelURL": "",
                "values": {"B": 92.5},
                "valueString": "[ var='B' labels={instance=web-1} value=92.5 ]",
            }
        ],
        "groupLabels": {"alertname": "HighCPU"},
        "commonLabels": {"alertname": "HighCPU"},
        "commonAnnotations": {},
        "externalURL": "http://grafana/",
        "version": "1",
        "groupKey": '{}:{alertname="HighCPU"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1] HighCPU",
        "state": "alerting",
        "message": "**Firing**",
    }
    for read in (read_grafana, read_alertmanager):  # its own path, and Alertmanager's webhook path too
        (a,), bad = read(body)
        assert not bad and not a.resolved and a.labels["instance"] == "web-1"
        assert a.annotations == {"summary": "CPU above 90%"} and a.source == "grafana"
    with pytest.raises(AlertError, match="version"):
        read_alertmanager({**body, "version": "2"})


def test_one_alert_on_several_instances_is_named_in_the_title() -> None:
    now = [T0 + 110.0]
    p = live(now)
    p.alerts.receive(alert("HighErrorRate", "checkout", i, T0 + 60 + 10 * i) for i in range(2))
    p.tick()
    (inc,) = incidents(p)
    assert inc["title"].startswith("checkout: HighErrorRate on 2 of 2 instances (checkout-0:8080")
