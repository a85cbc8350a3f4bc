"""Every edge refuses bad input with a 4xx that says what to fix, and keeps the good part of a batch."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import cramjam
import numpy as np
import pytest
from fastapi import Request
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.api.remote_write import STALE_NAN_BITS, WriteRequest
from stormeye.workers.settings import Settings

PB = {"content-type": "application/x-protobuf", "content-encoding": "snappy"}
STALE = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])


@pytest.fixture()
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(
        database_url=sqlite_url, step_s=60, api_tokens="alice=tok-a,bob=tok-b", max_body_bytes=64 * 1024
    )
    with TestClient(create_app(settings, start_ticker=False), headers={"authorization": "Bearer tok-a"}) as c:
        yield c


def write_request(series: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> bytes:
    req = WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for k, v in labels.items():
            lab = ts.labels.add()
            lab.name, lab.value = k, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = int(t * 1000), v
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def test_tokens_and_actor(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, api_token="single", api_tokens="alice=tok-a")
    app = create_app(settings, start_ticker=False)

    @app.get("/actor")
    def actor(request: Request) -> dict[str, str]:
        return {"actor": request.state.actor}

    with TestClient(app) as c:
        r = c.get("/api/v1/incidents")
        assert r.status_code == 401 and "Bearer" in r.json()["detail"] and r.headers["www-authenticate"]
        r = c.get("/api/v1/incidents", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and "not valid" in r.json()["detail"]
        r = c.get("/api/v1/incidents", headers={"authorization": "Basic abc"})
        assert r.status_code == 401
        assert c.get("/actor", headers={"authorization": "Bearer single"}).json() == {"actor": "api"}
        assert c.get("/actor", headers={"authorization": "Bearer tok-a"}).json() == {"actor": "alice"}
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(open_path).status_code == 200
        assert c.post("/api/v1/write", content=b"x", headers=PB).status_code == 401
        # the page's shell loads without a token (it holds no data); what it reads needs one
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        assert c.post("/").status_code == 401
        assert c.get("/api/v1/page/incidents").status_code == 401
    app = create_app(Settings(database_url=sqlite_url), start_ticker=False)
    app.get("/actor")(actor)
    with TestClient(app) as c:
        assert c.get("/actor").json() == {"actor": "local"}
        assert c.get("/api/v1/page/auth").json() == {"auth_required": False, "valid": True, "actor": "local"}


def test_the_page_its_icon_and_its_login_are_not_counted_unauthorized(sqlite_url: str) -> None:
    """Issue 34.10: a browser opening the page (and asking for /favicon.ico unasked) counted as
    reason="unauthorized". The page's login check is open; a wrong token there still counts."""
    settings = Settings(database_url=sqlite_url, api_tokens="alice=tok-a")
    with TestClient(create_app(settings, start_ticker=False)) as c:

        def unauthorized() -> float:
            text = c.get("/metrics").text
            return float(text.split('stormeye_points_rejected_total{reason="unauthorized"} ')[1].split()[0])

        for path in ("/", "/favicon.ico", "/static/app.js", "/static/style.css", "/static/vendor/uPlot.min.css"):
            assert c.get(path).status_code in (200, 204), path
        assert c.get("/api/v1/page/auth").json() == {"auth_required": True, "valid": False, "actor": None}
        assert unauthorized() == 0
        ok = c.get("/api/v1/page/auth", headers={"authorization": "Bearer tok-a"}).json()
        assert ok == {"auth_required": True, "valid": True, "actor": "alice"}
        bad = c.get("/api/v1/page/auth", headers={"authorization": "Bearer guess"})
        assert bad.status_code == 401 and "not valid" in bad.json()["detail"]
        r = c.get("/api/v1/page/incidents")
        assert r.status_code == 401 and "log in" in r.json()["detail"]  # the page's banner says how
        assert unauthorized() == 2


def test_remote_write_bad_input(client: TestClient) -> None:
    good = write_request([({"__name__": "up", "job": "a"}, [(time.time() - 30, 1.0)])])
    r = client.post("/api/v1/write", content=good, headers={"content-type": "application/json"})
    assert r.status_code == 415 and "application/x-protobuf" in r.json()["detail"]
    r = client.post("/api/v1/write", content=good, headers={**PB, "content-encoding": "gzip"})
    assert r.status_code == 415 and "snappy" in r.json()["detail"]
    r = client.post("/api/v1/write", content=good[: len(good) // 2], headers=PB)
    assert r.status_code == 400 and "snappy" in r.json()["detail"]
    r = client.post("/api/v1/write", content=b"", headers=PB)
    assert r.status_code == 400 and "empty" in r.json()["detail"]
    junk = bytes(cramjam.snappy.compress_raw(b"\xff\xff\xff\xff not a protobuf"))
    r = client.post("/api/v1/write", content=junk, headers=PB)
    assert r.status_code == 400 and "protobuf WriteRequest" in r.json()["detail"]
    # a bomb: small compressed, large decompressed, refused before decompressing
    bomb = bytes(cramjam.snappy.compress_raw(b"\0" * (1 << 20)))
    assert len(bomb) < 64 * 1024
    r = client.post("/api/v1/write", content=bomb, headers=PB)
    assert r.status_code == 413 and "STORMEYE_MAX_BODY_BYTES" in r.json()["detail"]
    r = client.post("/api/v1/write", content=good, headers={**PB, "x-prometheus-remote-write-version": "2.0.0"})
    assert r.status_code == 415


def test_remote_write_keeps_good_series_and_skips_stale_markers_and_nan(client: TestClient) -> None:
    t = time.time() - 30
    body = write_request(
        [
            ({"__name__": "up", "job": "a", "instance": "x"}, [(t - 60, 1.0), (t, STALE)]),
            ({"__name__": "load", "host": "h"}, [(t, float("nan")), (t - 60, 0.5)]),
            ({"job": "no-name"}, [(t, 1.0)]),
            ({"__name__": "future"}, [(t + 86_400, 1.0)]),
        ]
    )
    r = client.post("/api/v1/write", content=body, headers=PB)
    got = r.json()
    assert r.status_code == 200, got
    assert got["accepted"] == 2 and got["stale"] == 1 and got["not_finite"] == 1 and got["rejected"] == 2
    where = {e["where"]: e["error"] for e in got["errors"]}
    assert "__name__" in where["timeseries[2]"] and "future" in where["timeseries[3]"]
    pipe = client.app.state.service.backend.pipeline  # type: ignore[attr-defined]
    assert sorted(pipe.registry.names) == ['load{host="h"}', 'up{instance="x",job="a"}']
    # nothing usable at all: 422, so Prometheus drops it rather than retrying forever
    only_bad = write_request([({"job": "no-name"}, [(t, 1.0)])])
    assert client.post("/api/v1/write", content=only_bad, headers=PB).status_code == 422


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_alertmanager_bad_input_and_repeats(client: TestClient) -> None:
    now = time.time()
    alert = {"status": "firing", "labels": {"alertname": "Down", "job": "api"}, "startsAt": _iso(now - 300)}
    r = client.post("/api/v1/alerts/alertmanager", json={"version": "3", "alerts": [alert]})
    assert r.status_code == 400 and 'version "4"' in r.json()["detail"]
    r = client.post("/api/v1/alerts/alertmanager", content=b"version=4", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post(
        "/api/v1/alerts/alertmanager", content=b'{"version": "4", "al', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    bad = [
        alert,
        {"status": "firing", "labels": {"alertname": "X"}, "startsAt": "yesterday"},
        {"status": "weird", "labels": {"alertname": "X"}, "startsAt": _iso(now)},
        {"status": "firing", "labels": {}, "startsAt": _iso(now)},
        {"status": "firing", "labels": {"alertname": "X"}, "startsAt": _iso(now + 86_400)},
        "nonsense",
    ]
    r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": bad})
    got = r.json()
    assert r.status_code == 200 and got["new"] == 1 and got["rejected"] == 5, got
    where = {e["where"]: e["error"] for e in got["errors"]}
    assert "RFC 3339" in where["alerts[1]"] and "status" in where["alerts[2]"] and "labels" in where["alerts[3]"]
    assert "future" in where["alerts[4]"] and "object" in where["alerts[5]"]
    # the same alert again (another replica: the replica label is left out of the fingerprint)
    again = {**alert, "labels": {**alert["labels"], "replica": "b"}}
    got = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [again]}).json()
    assert got["new"] == 0 and got["repeats"] == 1
    resolved = {**alert, "status": "resolved", "endsAt": _iso(now - 60)}
    got = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [resolved]}).json()
    assert got["resolved"] == 1 and got["repeats"] == 1
    pipe = client.app.state.service.backend.pipeline  # type: ignore[attr-defined]
    (a,) = pipe.alerts.changed(now)
    assert a.metric == 'Down{job="api"}' and not a.open and a.evidence["count"] == 3
    assert a.end == pytest.approx(now - 60)


def test_generic_alerts_with_a_mapping(sqlite_url: str) -> None:
    mapping = {"alerts": "items", "name": "check", "labels": "tags", "starts_at": "since", "status": "state"}
    settings = Settings(database_url=sqlite_url, alert_mapping=mapping)
    with TestClient(create_app(settings, start_ticker=False)) as c:
        body = {
            "items": [
                {"check": "disk_full", "tags": {"host": "db-1"}, "since": time.time() - 120, "state": "alerting"},
                {"check": "disk_full", "tags": {"host": "db-2"}, "state": "ok"},
                {"tags": {"host": "db-3"}},
            ]
        }
        r = c.post("/api/v1/alerts", json=body)
        got = r.json()
        assert r.status_code == 200 and got["new"] == 2 and got["resolved"] == 1 and got["rejected"] == 1, got
        assert "check" in got["errors"][0]["error"]
        assert c.post("/api/v1/alerts", json={"items": "x"}).status_code == 400
    with pytest.raises(ValueError, match="unknown field"):
        Settings(alert_mapping={"nmae": "check"})


def test_points_body_forms_and_size_limit(client: TestClient) -> None:
    t = time.time() - 30
    pts = [{"metric": "cpu", "timestamp": t, "value": 1}]
    assert client.post("/api/v1/points", json=pts).status_code == 202
    assert client.post("/api/v1/points", json={"points": pts}).status_code == 202
    big = [{"metric": f"cpu{i}", "timestamp": t, "value": 1} for i in range(5000)]
    r = client.post("/api/v1/points", json=big)
    assert r.status_code == 413 and "STORMEYE_MAX_BODY_BYTES" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b"["
        for _ in range(3000):
            yield b'{"metric": "cpu", "timestamp": 1, "value": 1},'
        yield b"{}]"

    r = client.post("/api/v1/points", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_graphite_lines(sqlite_url: str) -> None:
    from stormeye.api.graphite_listener import parse_lines
    from stormeye.workers.ingest import PointReader

    t = int(time.time()) - 30
    lines = [
        f"servers.web-1.cpu.load 0.5 {t}".encode(),
        b"servers.web-1.cpu.load high " + str(t).encode(),
        b"servers.web-1.cpu.load 0.5",
        b"servers.web-1.cpu.load 0.5 soon",
        f"servers..cpu 1 {t}".encode(),
        f"servers.web-2.cpu.load nan {t}".encode(),
        b"",
    ]
    batch = parse_lines(
        PointReader(Settings(graphite_templates=["servers.* .host.measurement*"]).graphite), lines, "p", 1
    )
    assert batch.names == ['cpu.load{host="web-1"}'] and batch.rejected == 5
    errors = {e.where: e.message for e in batch.errors}
    assert "not a number" in errors["p line 2"] and "timestamp" in errors["p line 3"]
    assert "ISO 8601" in errors["p line 4"] or "timestamp" in errors["p line 4"]
    assert "empty node" in errors["p line 5"] and "not finite" in errors["p line 6"]
    # through a live listener: good lines kept, bad ones counted as rejected
    settings = Settings(database_url=sqlite_url, graphite_port=0, graphite_templates=["servers.* .host.measurement*"])
    app = create_app(settings, start_ticker=False)
    with TestClient(app) as c:
        listener = app.state.service.graphite
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as s:
            s.sendall(b"\n".join(lines) + f"\nservers.web-3.mem.used 7 {t}\n".encode())
        deadline = time.monotonic() + 10
        names: list[str] = []
        while time.monotonic() < deadline and len(names) < 2:
            names = list(app.state.service.backend.pipeline.registry.names)
            time.sleep(0.05)
        assert sorted(names) == ['cpu.load{host="web-1"}', 'mem.used{host="web-3"}']
        text = c.get("/metrics").text
        assert 'stormeye_points_received_total{source="graphite"} 2.0' in text
        assert 'stormeye_points_rejected_total{reason="invalid"} 4.0' in text
        assert 'stormeye_points_rejected_total{reason="not_finite"} 1.0' in text  # the nan line (issue 34.10)


def test_serve_refuses_a_public_address_without_a_token() -> None:
    import subprocess
    import sys

    got = subprocess.run(
        [sys.executable, "-m", "stormeye.api.cli", "serve", "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in __import__("os").environ.items() if not k.startswith("STORMEYE_API_TOKEN")},
    )
    assert got.returncode == 2 and "--insecure" in got.stderr
