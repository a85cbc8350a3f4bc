"""Issue 31 item 8 (load): ingest beyond its bounds gets 429 or 503 with Retry-After, and /healthz
answers meanwhile (before, a point request waited for the tick on the event loop, and so did everything)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from storm_helpers import serving

from stormeye.api.app import create_app
from stormeye.workers.settings import Settings


def _point(t: float, host: str = "a") -> list[dict[str, object]]:
    return [{"metric": f'cpu{{host="{host}"}}', "timestamp": t, "value": 1.0}]


def test_429_with_retry_after_beyond_the_inflight_bound_and_healthz_answers(sqlite_url: str) -> None:
    app = create_app(Settings(database_url=sqlite_url, max_inflight_requests=2), start_ticker=False)
    svc = app.state.service
    t = time.time() - 30
    with serving(app) as url, httpx.Client(base_url=url, timeout=20) as http:
        got: list[int] = []
        with svc.backend.lock:  # a long tick holds the pipeline
            waiting = [
                threading.Thread(
                    target=lambda i=i: got.append(http.post("/api/v1/points", json=_point(t, f"h{i}")).status_code)
                )
                for i in range(2)
            ]
            for th in waiting:
                th.start()
            deadline = time.monotonic() + 10
            while svc.inflight < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert svc.inflight == 2
            r = http.post("/api/v1/points", json=_point(t, "extra"))
            assert r.status_code == 429, r.text
            assert r.headers["retry-after"] == "1" and "MAX_INFLIGHT_REQUESTS" in r.json()["detail"]
            h = http.get("/healthz", timeout=5)  # not behind the tick
            assert h.status_code == 200 and h.json()["status"] == "ok"
        for th in waiting:
            th.join(20)
        assert got == [202, 202]
        assert 'stormeye_points_rejected_total{reason="overloaded"} 1.0' in http.get("/metrics").text


@pytest.mark.redis
@pytest.mark.postgres
def test_503_with_retry_after_when_the_workers_are_behind(deployment) -> None:  # type: ignore[no-untyped-def]
    deployment.env.update(STORMEYE_MAX_PENDING_BATCHES="2", STORMEYE_TICK_S="30")
    t = time.time() - 30
    with TestClient(create_app(deployment.settings, start_ticker=False)) as client:
        for i in range(2):  # no worker runs: the batches wait in Redis
            assert client.post("/api/v1/points", json=_point(t, f"h{i}")).status_code == 202
        r = client.post("/api/v1/points", json=_point(t, "h9"))
        assert r.status_code == 503 and r.headers["retry-after"] == "30", r.text
        assert "wait for the workers" in r.json()["detail"]
        assert client.get("/healthz").json()["pending_batches"] == 2
