"""The Alertmanager API v2 and Grafana endpoints in-process (issue 30): what they keep, what they
refuse and say, the token they need. The real senders are tests/integration/test_alert_storm.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.workers.settings import Settings


@pytest.fixture()
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, step_s=60, api_token="tok")
    with TestClient(create_app(settings, start_ticker=False), headers={"authorization": "Bearer tok"}) as c:
        yield c


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_v2_alerts_firing_resolved_and_refused(client: TestClient) -> None:
    now = time.time()
    firing = {"labels": {"alertname": "Down", "job": "api", "instance": "a"}, "startsAt": _iso(now - 120)}
    firing["endsAt"] = _iso(now + 240)  # Prometheus sets the end a few resends ahead
    own = {"labels": {"alertname": "StormeyeIncident", "incident": "inc-1"}, "startsAt": _iso(now - 60)}
    r = client.post("/api/v2/alerts", json=[firing, own, {"labels": {}}, 7])
    got = r.json()
    assert r.status_code == 200 and got["new"] == 1 and got["own_skipped"] == 1 and got["rejected"] == 2, got
    assert {e["where"] for e in got["errors"]} == {"alerts[2]", "alerts[3]"}
    resolved = {**firing, "endsAt": _iso(now - 10)}
    got = client.post("/api/v2/alerts", json=[resolved]).json()
    assert got["resolved"] == 1 and got["repeats"] == 1
    pipe = client.app.state.service.backend.pipeline  # type: ignore[attr-defined]
    (a,) = pipe.alerts.changed(now)
    assert a.metric == 'Down{instance="a",job="api"}' and not a.open and a.detector == "prometheus"
    r = client.post("/api/v2/alerts", json={"alerts": [firing]})
    assert r.status_code == 400 and "JSON list" in r.json()["detail"]
    r = client.post("/api/v2/alerts", json=[{"labels": {}}])
    assert r.status_code == 422
    r = client.post("/api/v2/alerts", json=[firing], headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401
    status = client.get("/api/v2/status").json()
    assert status["cluster"]["status"] == "ready" and "versionInfo" in status
    text = client.get("/metrics").text
    assert 'stormeye_alerts_received_total{source="prometheus"} 2.0' in text


def test_grafana_webhook_contact_point(client: TestClient) -> None:
    now = time.time()
    body = {
        "receiver": "stormeye",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighCPU", "instance": "web-1", "job": "web"},
                "annotations": {"summary": "CPU above 90%"},
                "startsAt": _iso(now - 60),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://grafana/alerting/grafana/x/view",
                "fingerprint": "c6eadffa33fcdf37",
                "silenceURL": "",
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
    got = client.post("/api/v1/alerts/grafana", json=body).json()
    assert got["new"] == 1
    got = client.post("/api/v1/alerts/alertmanager", json=body).json()  # the same body on Alertmanager's path
    assert got["repeats"] == 1
    r = client.post("/api/v1/alerts/grafana", json={**body, "version": "2"})
    assert r.status_code == 400 and "version" in r.json()["detail"]
    assert 'stormeye_alerts_received_total{source="grafana"} 1.0' in client.get("/metrics").text
