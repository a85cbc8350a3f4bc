"""An alert storm from real Prometheus and Alertmanager: one incident per outage, at once (issue 30).

    python bench/alerts.py            # 5 outages x 5 instances x 8 alerts, both senders
    python bench/alerts.py --quick    # 2 outages x 5 instances x 4 alerts
    python bench/alerts.py --json     # one JSON object instead of the table

Each outage is one service (``job``) failing on all its instances with the same alerts (HighLatency,
HighErrorRate, PodCrashLooping, ...) within 2 minutes. Two senders, each to a fresh ``stormeye
serve`` (``STORMEYE_TICK_S=1``, a 60 s step, its own SQLite file):

- **alertmanager**: Debian's ``prometheus-alertmanager`` (started here, ``group_by: ['alertname']``,
  webhook to stormeye) receives the storm on its API; every webhook body mixes the outages.
  Figures: ``incidents`` (not merged), ``pairwise_f1`` of the alerts' grouping against the outages,
  ``first_incident_s`` from the first alert reaching stormeye to the first incident listed, and
  Alertmanager's own grouping (``alertmanager_groups``: one notification per alertname).
- **prometheus**: a real Prometheus evaluates one alerting rule per alert (``vector(1) > 0`` with
  the alert's labels, ``evaluation_interval: 1s``) and sends to stormeye's ``/api/v2/alerts`` as
  its Alertmanager (with stormeye's bearer token). The same figures.

A program that is not installed is reported and its part skipped (exit 0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from stormeye.grouping.evaluation import pairwise_scores

ALERTS = [
    "HighLatency",
    "HighErrorRate",
    "PodCrashLooping",
    "CPUThrottlingHigh",
    "KubePodNotReady",
    "TargetDown",
    "SLOBurnRateFast",
    "QueueBacklog",
]
SERVICES = ["checkout", "payments", "search", "cart", "auth"]
TOKEN = "bench-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str | None:
    return shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class _Proc:
    def __init__(self, name: str, argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp / f"{name}.log"
        self._fh = self.log.open("wb")
        self.p = subprocess.Popen(
            argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        self._fh.close()


def storm(outages: int, instances: int, names: list[str]) -> list[dict[str, str]]:
    """The alerts' labels: every service of ``outages`` fails on its ``instances`` with ``names``."""
    return [
        {
            "alertname": n,
            "job": SERVICES[s],
            "instance": f"{SERVICES[s]}-{i}:8080",
            "severity": "critical" if k % 2 == 0 else "warning",
        }
        for s in range(outages)
        for i in range(instances)
        for k, n in enumerate(names)
    ]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _stormeye(tmp: Path, procs: list[_Proc]) -> httpx.Client:
    port = _port()
    env = {
        "STORMEYE_DATABASE_URL": f"sqlite:///{tmp / 'stormeye.db'}",
        "STORMEYE_API_TOKEN": TOKEN,
        "STORMEYE_TICK_S": "1",
        "STORMEYE_STEP_S": "60",
    }
    argv = [sys.executable, "-m", "stormeye.api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    procs.append(_Proc("stormeye", argv, tmp, env))
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10)
    _wait("stormeye serve", lambda: http.get("/healthz").status_code == 200, 60)
    return http


def _received(http: httpx.Client, source: str) -> float:
    text = http.get("/metrics").text
    got = re.search(rf'^stormeye_alerts_received_total\{{source="{source}"\}} (\S+)$', text, re.M)
    return float(got.group(1)) if got else 0.0


def _measure(http: httpx.Client, source: str, labels: list[dict[str, str]], timeout: float) -> dict[str, Any]:
    """Wait for the first alert to reach stormeye, then for the first incident, then for every
    alert to be in an incident; the figures of the grouping."""
    _wait(f"the first alert from {source}", lambda: _received(http, source) > 0, timeout, every=0.05)
    arrived = time.monotonic()
    _wait("the first incident", lambda: http.get("/api/v1/incidents").json()["incidents"], timeout, every=0.1)
    first = time.monotonic() - arrived

    def members() -> list[dict[str, Any]] | None:
        listed = http.get("/api/v1/incidents", params={"limit": 1000}).json()["incidents"]
        full = [http.get(f"/api/v1/incidents/{i['id']}").json() for i in listed]
        return full if sum(len(i["members"]) for i in full) >= len(labels) else None

    full = _wait("every alert in an incident", members, timeout, every=0.5)
    time.sleep(2.0)  # a tick or two more: a late merge would show
    full = members() or full
    predicted, truth = [], []
    for inc in full:
        for m in inc["members"]:
            predicted.append(inc["id"])
            truth.append(re.search(r'job="([^"]+)"', m["metric"]).group(1))  # type: ignore[union-attr]
    scores = pairwise_scores(predicted, truth)
    return {
        "incidents": len(full),
        "pairwise_f1": round(scores.f1, 4),
        "pairwise_precision": round(scores.precision, 4),
        "pairwise_recall": round(scores.recall, 4),
        "first_incident_s": round(first, 2),
        "alerts": len(labels),
        "members": len(predicted),
        "titles": sorted(i["title"] for i in full),
    }


def via_alertmanager(labels: list[dict[str, str]], tmp: Path) -> dict[str, Any]:
    binary = _binary("prometheus-alertmanager") or _binary("alertmanager")
    if binary is None:
        return {"skipped": "prometheus-alertmanager is not installed: apt-get install -y prometheus-alertmanager"}
    procs: list[_Proc] = []
    try:
        http = _stormeye(tmp, procs)
        port = _port()
        (tmp / "alertmanager.yml").write_text(
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
      - url: {http.base_url}/api/v1/alerts/alertmanager
        send_resolved: true
        http_config: {{authorization: {{credentials: {TOKEN}}}}}
"""
        )
        argv = [
            binary,
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ]
        procs.append(_Proc("alertmanager", argv, tmp))
        am = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        _wait("alertmanager", lambda: am.get("/-/ready").status_code == 200, 60)
        now = time.time()
        # the storm: every alert of an outage starts within its 2 minutes
        body = [
            {
                "labels": lab,
                "annotations": {"summary": f"{lab['alertname']} on {lab['instance']}"},
                "startsAt": _iso(now - 120 + (k * 37) % 120),
            }
            for k, lab in enumerate(labels)
        ]
        assert am.post("/api/v2/alerts", json=body).status_code == 200
        out = _measure(http, "alertmanager", labels, 120)
        out["alertmanager_groups"] = len(am.get("/api/v2/alerts/groups").json())
        am.close()
        http.close()
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def via_prometheus(labels: list[dict[str, str]], tmp: Path) -> dict[str, Any]:
    binary = _binary("prometheus")
    if binary is None:
        return {"skipped": "prometheus is not installed: apt-get install -y prometheus"}
    procs: list[_Proc] = []
    try:
        http = _stormeye(tmp, procs)
        rules = [
            "groups:",
            "  - name: storm",
            "    rules:",
        ]
        for lab in labels:
            rules.append(f"      - alert: {lab['alertname']}")
            rules.append("        expr: vector(1) > 0")
            extra = ", ".join(f'{k}: "{v}"' for k, v in lab.items() if k != "alertname")
            rules.append(f"        labels: {{{extra}}}")
        (tmp / "rules.yml").write_text("\n".join(rules) + "\n")
        port = _port()
        host = str(http.base_url).split("//", 1)[1].rstrip("/")
        (tmp / "prometheus.yml").write_text(
            f"""
global: {{scrape_interval: 15s, evaluation_interval: 1s}}
rule_files: [{tmp / "rules.yml"}]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["{host}"]}}]
      authorization: {{credentials: {TOKEN}}}
"""
        )
        argv = [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        procs.append(_Proc("prometheus", argv, tmp))
        out = _measure(http, "prometheus", labels, 120)
        http.close()
        return out
    finally:
        for p in reversed(procs):
            p.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 outages x 5 instances x 4 alerts")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    outages, instances, names = (2, 5, ALERTS[:4]) if args.quick else (5, 5, ALERTS)
    labels = storm(outages, instances, names)
    began = time.perf_counter()
    result: dict[str, Any] = {"outages": outages, "instances": instances, "alert_names": len(names), "tick_s": 1.0}
    with tempfile.TemporaryDirectory(prefix="stormeye-bench-alerts-") as d:
        (Path(d) / "am").mkdir()
        (Path(d) / "prom").mkdir()
        result["alertmanager"] = via_alertmanager(labels, Path(d) / "am")
        result["prometheus"] = via_prometheus(labels, Path(d) / "prom")
    result["seconds"] = round(time.perf_counter() - began, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"storm: {outages} outages x {instances} instances x {len(names)} alerts = {len(labels)} alerts")
    for sender in ("alertmanager", "prometheus"):
        r = result[sender]
        if "skipped" in r:
            print(f"{sender:>13}: skipped ({r['skipped']})")
            continue
        extra = f", Alertmanager's own groups {r['alertmanager_groups']}" if "alertmanager_groups" in r else ""
        print(
            f"{sender:>13}: {r['incidents']} incidents, pairwise F1 {r['pairwise_f1']:.3f}, "
            f"first incident {r['first_incident_s']:.1f} s after the first alert arrived{extra}"
        )
        for t in r["titles"]:
            print(f"{'':>15}{t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
