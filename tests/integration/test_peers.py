"""The real programs people already run, aimed at a running ``stormeye serve``.

- Prometheus scrapes itself and remote-writes to stormeye: its series arrive under their names,
  and ``promtool check metrics`` passes on stormeye's own ``/metrics``;
- Alertmanager receives alerts of two outages on its API, groups them by alertname (so each
  webhook body mixes the outages) and posts them to stormeye: two incidents, one per outage;
- collectd's ``write_graphite`` sends to the Graphite listener: its values arrive under the
  names the template gives them.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from peers import Proc, Stormeye, free_port, need, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture()
def procs() -> Iterator[list]:
    """Everything started by a test, stopped at teardown whatever happens (last started, first stopped)."""
    started: list = []
    yield started
    for p in reversed(started):
        p.stop()


def test_prometheus_remote_write_and_promtool(tmp_path: Path, procs: list) -> None:
    prometheus = need("prometheus", "prometheus")
    promtool = need("promtool", "prometheus")
    se = Stormeye(tmp_path, {"STORMEYE_TICK_S": "1", "STORMEYE_STEP_S": "15"})
    procs.append(se)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: self
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
  - job_name: stormeye
    authorization: {{credentials: {se.token}}}
    static_configs: [{{targets: ["127.0.0.1:{se.port}"]}}]
remote_write:
  - url: {se.url}/api/v1/write
    authorization: {{credentials: {se.token}}}
    queue_config: {{batch_send_deadline: 1s, max_samples_per_send: 500}}
"""
    )
    argv = [
        prometheus,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    prom = Proc("prometheus", argv, tmp_path)
    procs.append(prom)
    want = f'up{{instance="127.0.0.1:{port}",job="self"}}'

    def arrived() -> list[str] | None:
        assert prom.alive(), prom.output()
        names = se.metric_names()
        return names if want in names and any(n.startswith("stormeye_points_received_total{") for n in names) else None

    names = wait_for(f"{want} to arrive through remote write", arrived, timeout=60)
    assert len(names) > 100  # Prometheus' own series, all under their label names
    assert any(n.startswith("prometheus_build_info{") and 'job="self"' in n for n in names)
    # stormeye's /metrics was scraped by a real Prometheus (the stormeye job is up) and passes promtool
    assert f'up{{instance="127.0.0.1:{se.port}",job="stormeye"}}' in names
    text = httpx.get(f"{se.url}/metrics", timeout=10).text
    got = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, got.stdout + got.stderr
    assert 'stormeye_points_received_total{source="remote_write"}' in text
    samples = float(text.split('stormeye_points_received_total{source="remote_write"} ')[1].split()[0])
    assert samples > 100


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_alertmanager_webhook_two_outages_two_incidents(tmp_path: Path, procs: list) -> None:
    """Also the documented two-way set-up (issue 34.1): stormeye's `alertmanager` receiver posts each
    incident back to the same Alertmanager, which routes every alert, StormeyeIncident included, to
    stormeye's webhook. That alert must not become a member of its own incident."""
    alertmanager = need("prometheus-alertmanager", "prometheus-alertmanager")
    port = free_port()
    (tmp_path / "notify.yml").write_text(
        f"""
route: {{receiver: team-alertmanager, group_wait: 1s, group_interval: 1m}}
receivers:
  - name: team-alertmanager
    alertmanager_configs: [{{url: "http://127.0.0.1:{port}"}}]
"""
    )
    env = {"STORMEYE_TICK_S": "1", "STORMEYE_STEP_S": "60", "STORMEYE_NOTIFY_CONFIG": str(tmp_path / "notify.yml")}
    env["STORMEYE_NOTIFY_INTERVAL_S"] = "1"
    se = Stormeye(tmp_path, env)
    procs.append(se)
    (tmp_path / "alertmanager.yml").write_text(
        f"""
route:
  receiver: stormeye
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: stormeye
    webhook_configs:
      - url: {se.url}/api/v1/alerts/alertmanager
        send_resolved: true
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
    # the services' healthy series: what the alerts' labels are measured against (as remote write gives)
    rng = np.random.default_rng(0)
    now = time.time()
    t0 = (int(now) // 60 - 8) * 60
    services = ["checkout", "search", "auth", "cart", "billing"]
    points = [
        {"metric": f'http_requests{{service="{s}",instance="{s}-{i}"}}', "timestamp": t0 - 600 + k * 60, "value": v}
        for k in range(10)
        for s in services
        for i in range(3)
        for v in [10 + rng.normal()]
    ]
    assert se.http.post("/api/v1/points", json=points).json()["accepted"] == len(points)
    # two outages a minute apart; inside each, alerts start a few steps apart
    alerts = []
    for service, start in (("checkout", t0 + 7), ("search", t0 + 67)):
        for name, inst in (("HighErrorRate", 0), ("HighErrorRate", 1), ("HighLatency", 2)):
            alerts.append(
                {
                    "labels": {
                        "alertname": name,
                        "service": service,
                        "instance": f"{service}-{inst}",
                        "severity": "page",
                    },
                    "annotations": {"summary": f"{name} on {service}-{inst}"},
                    "startsAt": _iso(start + 60 * inst),
                }
            )
    am_http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    wait_for("alertmanager to be ready", lambda: am_http.get("/-/ready").status_code == 200)
    assert am_http.post("/api/v2/alerts", json=alerts).status_code == 200
    wait_for("Alertmanager's groups", lambda: len(am_http.get("/api/v2/alerts/groups").json()) == 2)

    def incidents() -> list[dict] | None:
        assert am.alive(), am.output()
        listed = se.http.get("/api/v1/incidents").json()["incidents"]
        full = [se.http.get(f"/api/v1/incidents/{i['id']}").json() for i in listed]
        return full if sum(len(i["members"]) for i in full) >= 6 else None

    got = wait_for("the alerts to become incidents", incidents, timeout=60)
    by_service = sorted(sorted({m["metric"].split('service="')[1].split('"')[0] for m in i["members"]}) for i in got)
    assert by_service == [["checkout"], ["search"]], got
    assert all(len(i["members"]) == 3 for i in got)
    member = got[0]["members"][0]
    assert "severity" not in member["metric"]  # left out of the name (STORMEYE_ALERT_FINGERPRINT_IGNORE)
    text = se.http.get("/metrics").text
    received = re.search(r'^stormeye_alerts_received_total\{source="alertmanager"\} (\S+)$', text, re.M)
    # every alert arrived; Alertmanager may send a group again as it grows (group_interval 1 s on a
    # busy machine: the first notification of a group can hold 2 of its 3 alerts), and each delivery counts
    assert received is not None and float(received.group(1)) >= 6, text

    def ours() -> list[dict]:  # stormeye's alert as Alertmanager holds it (and routes it back to stormeye)
        alerts = am_http.get("/api/v2/alerts").json()
        return [a for a in alerts if a["labels"]["alertname"] == "StormeyeIncident"]

    sent = wait_for("stormeye's StormeyeIncident alert in Alertmanager", ours, timeout=60)
    assert {a["labels"]["incident"] for a in sent} <= {i["id"] for i in got}
    am_http.close()
    # before the fix the looped alert joined its incident once the step it arrived in was scored (seen
    # 29 s after it came back): watch until that step has been scored
    scored_by = (time.time() // 60 + 1) * 60 + 15

    def members_of_own() -> list[str]:
        ids = [i["id"] for i in se.http.get("/api/v1/incidents").json()["incidents"]]
        full = [se.http.get(f"/api/v1/incidents/{i}").json() for i in ids]
        return [m["metric"] for i in full for m in i["members"] if "StormeyeIncident" in m["metric"]]

    while time.time() < scored_by:
        assert not members_of_own(), "stormeye's own alert became a member of an incident"
        time.sleep(2)
    assert not members_of_own(), "stormeye's own alert became a member of an incident"
    own = re.search(r"^stormeye_own_alerts_skipped_total (\S+)$", se.http.get("/metrics").text, re.M)
    assert own is not None and float(own.group(1)) >= 1, "Alertmanager did not route it back: the test saw no loop"


def test_collectd_write_graphite(tmp_path: Path, procs: list) -> None:
    collectd = need("collectd", "collectd-core")
    gport = free_port()
    env = {
        "STORMEYE_GRAPHITE_PORT": str(gport),
        "STORMEYE_GRAPHITE_TEMPLATES": '["collectd.* .host.measurement*"]',
        "STORMEYE_STEP_S": "10",
    }
    se = Stormeye(tmp_path, env, token="graphite-test")
    procs.append(se)
    conf = tmp_path / "collectd.conf"
    conf.write_text(
        f"""
Hostname "web-1"
FQDNLookup false
Interval 1
BaseDir "{tmp_path}"
PIDFile "{tmp_path / "collectd.pid"}"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin load
LoadPlugin memory
LoadPlugin interface
LoadPlugin write_graphite
<Plugin write_graphite>
  <Node "stormeye">
    Host "127.0.0.1"
    Port "{gport}"
    Protocol "tcp"
    Prefix "collectd."
    StoreRates true
    AlwaysAppendDS false
    EscapeCharacter "_"
  </Node>
</Plugin>
"""
    )
    cd = Proc("collectd", [collectd, "-f", "-C", str(conf)], tmp_path)
    procs.append(cd)

    def arrived() -> list[str] | None:
        assert cd.alive(), cd.output()
        names = se.metric_names()
        # collectd's plugins write on their own schedule: a first read may hold load and not memory yet
        load = any(n.startswith("load.load.shortterm{") for n in names)
        memory = any(n.startswith(("memory.memory.used{", "memory.memory-used{")) for n in names)
        return names if load and memory else None

    names = wait_for("collectd's load and memory to arrive over Graphite plaintext", arrived, timeout=60)
    assert 'load.load.shortterm{host="web-1"}' in names
    assert any(n.startswith("memory.memory.used{") or n.startswith("memory.memory-used{") for n in names), names

    # issue 34.10: a rate's first reading has no value yet and collectd writes `nan`: counted as
    # not_finite (as docs/ingest.md says), never as invalid input
    def rejected() -> dict[str, float] | None:
        text = httpx.get(f"{se.url}/metrics", timeout=10).text
        got = dict(re.findall(r'^stormeye_points_rejected_total\{reason="(\w+)"\} (\S+)$', text, re.M))
        return {k: float(v) for k, v in got.items()} if float(got.get("not_finite", 0)) > 0 else None

    counts = wait_for("collectd's nan lines (interface rates' first reading) to be counted", rejected, timeout=30)
    assert counts["invalid"] == 0, counts
