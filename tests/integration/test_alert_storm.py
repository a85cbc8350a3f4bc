"""Alert storms from the real senders (issue 30), aimed at a running ``stormeye serve``:

- Alertmanager (``group_by: ['alertname']``, every webhook body mixing the outages) passes on
  18 alerts by hand, 2 services x 3 instances x 3 alerts: 2 incidents, one per service (that
  they open in the first tick after the alerts arrive is tests/unit/test_alertgroups.py's, on a
  clock the test moves);
- a real Prometheus evaluates alerting rules and sends them to stormeye as its Alertmanager
  (``/api/v2/alerts`` with the bearer token): an incident opens for the service.

The longer storm (5 outages x 5 instances x 8 alerts) is ``bench/alerts.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from peers import Proc, Stormeye, free_port, need, wait_for

pytestmark = pytest.mark.slow

ENV = {"STORMEYE_TICK_S": "1", "STORMEYE_STEP_S": "60"}


@pytest.fixture()
def procs() -> Iterator[list]:
    started: list = []
    yield started
    for p in reversed(started):
        p.stop()


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _incidents(se: Stormeye, members: int) -> list[dict] | None:
    listed = se.http.get("/api/v1/incidents").json()["incidents"]
    full = [se.http.get(f"/api/v1/incidents/{i['id']}").json() for i in listed]
    return full if sum(len(i["members"]) for i in full) >= members else None


def test_eighteen_alerts_through_alertmanager_are_two_incidents(tmp_path: Path, procs: list) -> None:
    alertmanager = need("prometheus-alertmanager", "prometheus-alertmanager")
    se = Stormeye(tmp_path, ENV)
    procs.append(se)
    port = free_port()
    (tmp_path / "alertmanager.yml").write_text(
        f"""
route: {{receiver: stormeye, group_by: [alertname], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}}
receivers:
  - name: stormeye
    webhook_configs:
      - url: {se.url}/api/v1/alerts/alertmanager
        http_config: {{authorization: {{credentials: {se.token}}}}}
"""
    )
    argv = [
        alertmanager,
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    am = Proc("alertmanager", argv, tmp_path)
    procs.append(am)
    am_http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    wait_for("alertmanager to be ready", lambda: am_http.get("/-/ready").status_code == 200)
    now = time.time()
    alerts = [
        {
            "labels": {"alertname": name, "service": svc, "instance": f"{svc}-{i}", "severity": "page"},
            "startsAt": _iso(now - 30),
        }
        for svc in ("checkout", "payments")
        for i in range(3)
        for name in ("HighErrorRate", "HighLatency", "PodCrashLooping")
    ]
    assert am_http.post("/api/v2/alerts", json=alerts).status_code == 200
    # every notification of Alertmanager's (one per alertname) mixes the two services
    wait_for("Alertmanager's groups", lambda: len(am_http.get("/api/v2/alerts/groups").json()) == 3)
    got = wait_for("the alerts to become incidents", lambda: _incidents(se, 18), timeout=60)
    assert sorted((i["root_entity"], len(i["members"])) for i in got) == [
        ("service=checkout", 9),
        ("service=payments", 9),
    ]
    assert sorted(i["title"].split(" (")[0] for i in got) == [
        "checkout: 3 alerts on 3 of 3 instances",
        "payments: 3 alerts on 3 of 3 instances",
    ]
    am_http.close()


def test_prometheus_sends_alerts_to_stormeye_as_its_alertmanager(tmp_path: Path, procs: list) -> None:
    prometheus = need("prometheus", "prometheus")
    se = Stormeye(tmp_path, ENV)
    procs.append(se)
    rules = ["groups:", "  - name: outage", "    rules:"]
    for i in range(3):
        for name in ("HighErrorRate", "HighLatency"):
            rules += [
                f"      - alert: {name}",
                "        expr: vector(1) > 0",
                f'        labels: {{job: "checkout", instance: "checkout-{i}:8080", severity: "critical"}}',
            ]
    (tmp_path / "rules.yml").write_text("\n".join(rules) + "\n")
    (tmp_path / "prometheus.yml").write_text(
        f"""
global: {{scrape_interval: 15s, evaluation_interval: 1s}}
rule_files: [{tmp_path / "rules.yml"}]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["127.0.0.1:{se.port}"]}}]
      authorization: {{credentials: {se.token}}}
"""
    )
    port = free_port()
    argv = [
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    prom = Proc("prometheus", argv, tmp_path)
    procs.append(prom)

    def opened() -> list[dict] | None:
        assert prom.alive(), prom.output()
        return _incidents(se, 6)

    (inc,) = wait_for("Prometheus' alerts to become an incident", opened, timeout=90)
    assert inc["root_entity"] == "job=checkout"
    assert inc["title"].startswith("checkout: 2 alerts on 3 of 3 instances")
    assert all(m["evidence"].get("alert") for m in inc["members"])
    text = se.http.get("/metrics").text
    assert 'stormeye_alerts_received_total{source="prometheus"}' in text
    status = se.http.get("/api/v2/status").json()
    assert status["cluster"]["status"] == "ready"
    # the token is required, as on every ingest path
    assert httpx.post(f"{se.url}/api/v2/alerts", json=[], timeout=10).status_code == 401
