"""Hostile input at every ingest edge (issue 31, items 2 and 5): control characters are refused with a
400 naming where, numbers beyond a float, deep nesting and non-UTF-8 bodies give 4xx (never 500), and
names too large for the limits are refused before they cost anything."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cramjam
import pytest
from fastapi.testclient import TestClient
from peers import wait_for

from stormeye.api.app import create_app
from stormeye.api.remote_write import WriteRequest
from stormeye.workers.settings import Settings

PB = {"content-type": "application/x-protobuf", "content-encoding": "snappy"}


@pytest.fixture()
def client(sqlite_url: str) -> Iterator[TestClient]:
    settings = Settings(database_url=sqlite_url, step_s=60, max_labels=64)
    with TestClient(create_app(settings, start_ticker=False)) as c:
        yield c


def write_request(series: list[dict[str, str]], t: float) -> bytes:
    req = WriteRequest()
    for labels in series:
        ts = req.timeseries.add()
        for k, v in labels.items():
            lab = ts.labels.add()
            lab.name, lab.value = k, v
        s = ts.samples.add()
        s.timestamp, s.value = int(t * 1000), 1.0
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def now() -> int:
    return int(time.time()) - 120


@pytest.mark.parametrize(
    "metric",
    [
        'cpu{host="a\\u0000b"}',  # JSON-escaped NUL inside the name text
        {"__name__": "cpu", "host": "a\u0000b"},
        {"__name__": "cpu", "host": "a\u001bb"},  # escape
        {"__name__": "cpu", "host": "a\nb"},  # newline
        {"__name__": "cp\u0000u"},
    ],
)
def test_control_characters_in_points_are_refused_naming_where(client: TestClient, metric: object) -> None:
    if isinstance(metric, str):
        body = '[{"metric":"ok","timestamp":%d,"value":1},{"metric":%s,"timestamp":%d,"value":1}]' % (  # noqa: UP031
            now(),
            json.dumps(metric).replace("\\\\u0000", "\\u0000"),
            now(),
        )
    else:
        body = json.dumps(
            [{"metric": "ok", "timestamp": now(), "value": 1}, {"metric": metric, "timestamp": now(), "value": 1}]
        )
    r = client.post("/api/v1/points", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "points[1]" in detail and "control character" in detail
    assert client.get("/healthz").json()["metrics"] == 0  # the whole request is refused


@pytest.mark.parametrize(
    "body",
    [
        b'[{"metric":"cpu{host=\\"a\\ud800\\"}","timestamp":%d,"value":1}]',  # in the name text
        b'[{"metric":{"__name__":"cpu","host":"a\\udc00"},"timestamp":%d,"value":1}]',  # a label's value
    ],
)
def test_lone_surrogates_in_points_are_refused_not_500(client: TestClient, body: bytes) -> None:
    """A JSON \\u escape of half a UTF-16 pair is no text: it gave 500 (UnicodeEncodeError) in serve and
    poisoned the workers in distributed mode."""
    r = client.post("/api/v1/points", content=body % now(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "points[0]" in r.json()["detail"] and "surrogate" in r.json()["detail"]
    r = client.post(
        "/api/v1/alerts",
        content=b'[{"labels":{"alertname":"Down","job":"a\\ud800"}}]',
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "surrogate" in r.json()["detail"], r.text


def test_tab_is_allowed(client: TestClient) -> None:
    r = client.post(
        "/api/v1/points", json=[{"metric": {"__name__": "cpu", "host": "a\tb"}, "timestamp": now(), "value": 1}]
    )
    assert r.status_code == 202, r.text


def test_control_characters_in_remote_write_are_refused(client: TestClient) -> None:
    body = write_request([{"__name__": "up", "job": "a"}, {"__name__": "up", "job": "a\x00b"}], now())
    r = client.post("/api/v1/write", content=body, headers=PB)
    assert r.status_code == 400
    assert "timeseries[1]" in r.json()["detail"] and "label 'job'" in r.json()["detail"]


@pytest.mark.parametrize("where", ["labels", "annotations", "commonLabels", "label name"])
def test_control_characters_in_alertmanager_alerts_are_refused(client: TestClient, where: str) -> None:
    alert = {"status": "firing", "labels": {"alertname": "Down", "job": "a"}, "startsAt": "2026-01-05T10:00:00Z"}
    body: dict[str, object] = {"version": "4", "alerts": [alert]}
    if where == "labels":
        alert["labels"] = {"alertname": "Down", "job": "a\x00b"}
    elif where == "annotations":
        alert["annotations"] = {"summary": "line one\nline two \x00"}
    elif where == "label name":
        alert["labels"] = {"alertname": "Down", "jo\x00b": "a"}
    else:
        body["commonLabels"] = {"team": "\x07"}
    r = client.post("/api/v1/alerts/alertmanager", json=body)
    assert r.status_code == 400, r.text
    assert "control character" in r.json()["detail"]
    assert client.get("/healthz").json()["metrics"] == 0


def test_annotations_may_hold_newlines(client: TestClient) -> None:
    alert = {
        "labels": {"alertname": "Down"},
        "annotations": {"description": "line one\nline two\ttabbed"},
        "startsAt": "2026-01-05T10:00:00Z",
    }
    r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [alert]})
    assert r.status_code == 200, r.text


def test_control_characters_in_generic_alerts_are_refused(client: TestClient) -> None:
    r = client.post("/api/v1/alerts", json=[{"name": "disk", "labels": {"host": "a\u0000b"}}])
    assert r.status_code == 400 and "alerts[0]" in r.json()["detail"] and "labels.host" in r.json()["detail"]
    r = client.post("/api/v1/alerts", json=[{"name": "di\u0000sk", "labels": {"host": "a"}}])
    assert r.status_code == 400 and "alerts[0]" in r.json()["detail"]


def test_control_characters_in_graphite_lines_are_refused(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, step_s=60, graphite_port=0)
    app = create_app(settings, start_ticker=False)
    with TestClient(app) as c:
        listener = app.state.service.graphite
        t = now()
        with socket.create_connection(("127.0.0.1", listener.port)) as s:
            s.sendall(f"good.path 1 {t}\nbad\x00path 1 {t}\nbad\x1bpath 2 {t}\n".encode())
        deadline = time.time() + 10
        while time.time() < deadline and c.get("/healthz").json()["metrics"] < 1:
            time.sleep(0.05)
        time.sleep(0.3)
        assert c.get("/healthz").json()["metrics"] == 1
        metrics = c.get("/metrics").text
        assert 'stormeye_points_rejected_total{reason="invalid"} 2.0' in metrics


# -- item 5: 500s and unbounded input -------------------------------------------------------


@pytest.mark.parametrize(
    "body, says",
    [
        ('[{"metric":"cpu","timestamp":%d,"value":1%s}]' % (0, "0" * 400), "value"),  # noqa: UP031
        ('[{"metric":"cpu","timestamp":1%s,"value":1}]' % ("0" * 400), "timestamp"),
        ('[{"metric":"cpu","timestamp":%d,"value":1e400}]', "not finite"),
        ('[{"metric":"cpu","timestamp":%d,"value":Infinity}]', "not finite"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('[{"metric":"cpu","timestamp":%d,"value":1%s}]' % (0, "0" * 5000), "digits"),  # noqa: UP031
    ],
)
def test_numbers_and_shapes_beyond_reason_give_4xx(client: TestClient, body: str, says: str) -> None:
    if "%d" in body:
        body = body % now()
    r = client.post("/api/v1/points", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert says in r.text
    assert client.get("/healthz").json()["metrics"] == 0


def test_body_not_utf8_gives_400(client: TestClient) -> None:
    for path in ("/api/v1/points", "/api/v1/alerts", "/api/v1/alerts/alertmanager"):
        r = client.post(path, content=b'[{"metric":"\xff\xfe\xfa"}]', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "UTF-8" in r.json()["detail"], (path, r.text)
    for path in ("/api/v1/alerts", "/api/v1/alerts/alertmanager"):
        r = client.post(path, content="[" * 100_000, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "nested too deeply" in r.json()["detail"]


def test_infinity_from_overflow_is_not_stored(client: TestClient) -> None:
    body = json.dumps([{"metric": "cpu", "timestamp": now(), "value": 1e308 * 10}])
    r = client.post("/api/v1/points", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not finite" in r.text
    r = client.post("/api/v1/points", json=[{"metric": "cpu", "timestamp": now(), "value": "1e309"}])
    assert r.status_code == 422 and "not finite" in r.text
    assert client.get("/healthz").json()["metrics"] == 0


def test_name_limits(client: TestClient) -> None:
    t = now()
    huge = "cpu_" + "x" * 4_000_000
    r = client.post("/api/v1/points", json=[{"metric": huge, "timestamp": t, "value": 1}])
    assert r.status_code == 422 and "STORMEYE_MAX_NAME_CHARS" in r.text
    many = {"__name__": "cpu", **{f"l{i}": "v" for i in range(64)}}
    r = client.post("/api/v1/points", json=[{"metric": many, "timestamp": t, "value": 1}])
    assert r.status_code == 422 and "65 labels" in r.text and "STORMEYE_MAX_LABELS" in r.text
    r = client.post(
        "/api/v1/points", json=[{"metric": {"__name__": "cpu", "h": "v" * 5000}, "timestamp": t, "value": 1}]
    )
    assert r.status_code == 422 and "STORMEYE_MAX_LABEL_VALUE_CHARS" in r.text
    alert = {"labels": {"alertname": "Down", "h": "v" * 5000}, "startsAt": "2026-01-05T10:00:00Z"}
    r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [alert]})
    assert r.status_code == 422 and "STORMEYE_MAX_LABEL_VALUE_CHARS" in r.text
    ok = {"__name__": "cpu", **{f"l{i}": "v" * 4000 for i in range(63)}}
    r = client.post("/api/v1/points", json=[{"metric": ok, "timestamp": t, "value": 1}])
    assert r.status_code == 422 and "STORMEYE_MAX_NAME_CHARS" in r.text  # the canonical text would be 250 kB
    assert client.get("/healthz").json()["metrics"] == 0


def test_remote_write_series_with_100000_labels_is_refused_early(client: TestClient) -> None:
    labels = {"__name__": "up", **{f"l{i}": "v" for i in range(100_000)}}
    body = write_request([labels, {"__name__": "up", "job": "a"}], now())
    began = time.perf_counter()
    r = client.post("/api/v1/write", content=body, headers=PB)
    took = time.perf_counter() - began
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["accepted"] == 1 and got["rejected"] == 1
    assert "timeseries[0]" in got["errors"][0]["where"] and "100001 labels" in got["errors"][0]["error"]
    print(f"100,000-label series refused in {took:.3f} s")


# -- item 8 (part): security headers, 503s counted ------------------------------------------


def test_security_headers_on_the_page_and_the_api(client: TestClient) -> None:
    for path in ("/", "/static/app.js", "/api/v1/incidents", "/healthz", "/api/v1/nope"):
        r = client.get(path)
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff", path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
    r = client.post("/api/v1/points", content=b"[", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["x-frame-options"] == "DENY"
    docs = client.get("/docs")  # FastAPI's docs page loads its script from a CDN: no CSP there
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    assert docs.headers["x-content-type-options"] == "nosniff"


def test_503s_are_counted_as_rejected(sqlite_url: str, tmp_path: Path) -> None:
    """A Redis of the test's own, stopped after the start: points and alerts get 503, counted."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = [redis_server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = Settings(database_url=sqlite_url, mode="distributed", redis_url=f"redis://127.0.0.1:{port}/0")
        wait_for("redis-server to answer", lambda: _answers(port))
        with TestClient(create_app(settings, start_ticker=False)) as c:
            redis.terminate()
            redis.wait(10)
            r = c.post("/api/v1/points", json=[{"metric": "cpu", "timestamp": now(), "value": 1}] * 3)
            assert r.status_code == 503, r.text
            alert = {"labels": {"alertname": "Down"}, "startsAt": "2026-01-05T10:00:00Z"}
            r = c.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": [alert]})
            assert r.status_code == 503, r.text
            metrics = c.get("/metrics").text
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait(10)
    assert 'stormeye_points_rejected_total{reason="unavailable"} 4.0' in metrics, metrics


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
