"""Remote write and alerts in distributed mode: the API hands them to real workers through Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import cramjam
import numpy as np
import pytest
from distributed_helpers import wait_for
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.api.remote_write import WriteRequest

pytestmark = pytest.mark.slow


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_remote_write_and_alerts_reach_the_workers(deployment) -> None:  # type: ignore[no-untyped-def]
    rt = deployment.runtime
    step = 60
    now = time.time()
    last = (int(now) // step - 1) * step  # the newest complete step
    services = ["checkout", "search", "auth", "cart"]
    names = [f'http_requests{{instance="{s}-{i}",service="{s}"}}' for s in services for i in range(3)]
    hist_t = last - step * np.arange(30, 0, -1, dtype=np.float64)
    rt.load_history(names, hist_t, 10 + np.random.default_rng(0).normal(size=(len(names), len(hist_t))))
    deployment.start_worker(concurrency=1)
    with TestClient(create_app(deployment.settings)) as client:
        req = WriteRequest()
        ts = req.timeseries.add()
        for k, v in (("__name__", "up"), ("job", "node"), ("instance", "n1")):
            lab = ts.labels.add()
            lab.name, lab.value = k, v
        sample = ts.samples.add()
        sample.value, sample.timestamp = 1.0, int(last * 1000)
        body = bytes(cramjam.snappy.compress_raw(req.SerializeToString()))
        headers = {"content-type": "application/x-protobuf", "content-encoding": "snappy"}
        r = client.post("/api/v1/write", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        wait_for("the sample to be stored", lambda: rt.pending() == 0, timeout=30)
        rt.registry.refresh()
        assert rt.registry.known('up{instance="n1",job="node"}')
        alerts = [
            {
                "status": "firing",
                "labels": {"alertname": name, "service": svc, "instance": f"{svc}-{i}"},
                "startsAt": _iso(start + 60 * i),
                "endsAt": "0001-01-01T00:00:00Z",
            }
            for svc, start in (("checkout", last - 8 * step), ("search", last - 7 * step))
            for name, i in (("HighErrorRate", 0), ("HighErrorRate", 1), ("HighLatency", 2))
        ]
        for name in ("HighErrorRate", "HighLatency"):  # one body per alertname, each mixing both outages
            group = [a for a in alerts if a["labels"]["alertname"] == name]
            r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "status": "firing", "alerts": group})
            assert r.status_code == 200 and r.json()["queued"] == len(group), r.text
        # a repeat is counted on the anomaly, not added
        r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": alerts[:1]})
        assert r.status_code == 200
        deployment.tick_until(last)
        listed = client.get("/api/v1/incidents").json()["incidents"]
        got = [client.get(f"/api/v1/incidents/{i['id']}").json() for i in listed]
    services_of = sorted(sorted({m["metric"].split('service="')[1].split('"')[0] for m in i["members"]}) for i in got)
    assert services_of == [["checkout"], ["search"]], got
    assert int(rt.r.llen(rt.k("alerts", "inbox"))) == 0


def test_a_nul_alert_is_refused_and_correlate_keeps_running(deployment) -> None:  # type: ignore[no-untyped-def]
    """Issue 31.2: an alert whose label held NUL was queued (200), then every correlate failed on
    PostgreSQL ("text fields cannot contain NUL"). The edge refuses it now; the next alert is grouped."""
    rt = deployment.runtime
    step = 60
    last = (int(time.time()) // step - 1) * step
    names = [f'http_requests{{service="checkout",instance="{i}"}}' for i in range(3)]
    hist_t = last - step * np.arange(30, 0, -1, dtype=np.float64)
    rt.load_history(names, hist_t, 10 + np.random.default_rng(0).normal(size=(len(names), len(hist_t))))
    deployment.start_worker(concurrency=1)
    with TestClient(create_app(deployment.settings)) as client:
        bad = {"labels": {"alertname": "Down", "service": "a\u0000b"}, "startsAt": _iso(last - 3 * step)}
        r = client.post("/api/v1/alerts", json=[bad])
        assert r.status_code == 400 and "alerts[0]" in r.json()["detail"] and "labels.service" in r.json()["detail"]
        r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [bad]})
        assert r.status_code == 400, r.text
        assert int(rt.r.llen(rt.k("alerts", "inbox"))) == 0  # nothing reached Redis
        good = {"labels": {"alertname": "Down", "service": "checkout"}, "startsAt": _iso(last - 3 * step)}
        r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [good]})
        assert r.status_code == 200 and r.json()["queued"] == 1, r.text
        deployment.tick_until(last, timeout=60)  # correlate ran: before, it failed on every tick from here
    assert int(rt.r.llen(rt.k("alerts", "inbox"))) == 0  # the good alert was taken in
