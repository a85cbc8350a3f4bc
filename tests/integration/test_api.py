"""The HTTP API on embedded defaults: points in (good kept, bad explained), incidents out."""

import time

import numpy as np
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.workers.settings import Settings


def client(sqlite_url: str) -> TestClient:
    return TestClient(create_app(Settings(database_url=sqlite_url, step_s=60), start_ticker=False))


def test_points_good_are_kept_and_bad_are_explained(sqlite_url: str) -> None:
    now = time.time()
    with client(sqlite_url) as c:
        body = {
            "points": [
                {"metric": 'cpu{host="a"}', "timestamp": now - 60, "value": 1.0},
                {"metric": 'cpu{host="a"', "timestamp": now - 60, "value": 1.0},
                {"metric": "cpu", "timestamp": now - 60, "value": "NaN"},
                {"metric": "cpu", "timestamp": now - 60},
                {"metric": "cpu", "timestamp": now + 86400, "value": 1},
                {"metric": "cpu", "timestamp": "soon", "value": 1},
                "nonsense",
            ]
        }
        r = c.post("/api/v1/points", json=body)
        assert r.status_code == 202
        got = r.json()
        assert got["accepted"] == 1 and got["rejected"] == 6
        where = {e["where"]: e["error"] for e in got["errors"]}
        assert "braces" in where["points[1]"]
        assert "not finite" in where["points[2]"]
        assert "missing field(s) value" in where["points[3]"]
        assert "in the future" in where["points[4]"]
        assert "ISO 8601" in where["points[5]"]
        assert "JSON object" in where["points[6]"]
        assert c.get("/healthz").json()["metrics"] == 1


def test_requests_that_are_wrong_as_a_whole(sqlite_url: str) -> None:
    with client(sqlite_url) as c:
        r = c.post("/api/v1/points", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
        r = c.post("/api/v1/points", json={"pts": []})
        assert r.status_code == 400 and "JSON list of points" in r.json()["detail"]
        r = c.post("/api/v1/points", json=[{"metric": "cpu", "timestamp": 1, "value": "x"}])
        assert r.status_code == 422 and r.json()["accepted"] == 0
        assert c.get("/api/v1/incidents/nope").status_code == 404
        assert c.get("/api/v1/incidents?status=bogus").status_code == 422


def test_points_become_an_incident_through_the_tick(sqlite_url: str) -> None:
    rng = np.random.default_rng(0)
    step = 60
    t0 = (int(time.time()) // step - 200) * step
    hosts = [f"h{i}" for i in range(4)]
    with client(sqlite_url) as c:
        for k in range(200):
            t = t0 + k * step
            shift = 30.0 if k >= 190 else 0.0
            pts = [
                {
                    "metric": f'errors{{service="checkout",host="{h}"}}',
                    "timestamp": t,
                    "value": 10 + rng.normal() + shift,
                }
                for h in hosts
            ]
            pts += [
                {"metric": f'errors{{service="search",host="s{i}"}}', "timestamp": t, "value": 10 + rng.normal()}
                for i in range(4)
            ]
            assert c.post("/api/v1/points", json=pts).json()["accepted"] == 8
            c.app.state.service.backend.tick(t)
        listed = c.get("/api/v1/incidents").json()
        assert listed["total"] == 1
        inc = c.get(f"/api/v1/incidents/{listed['incidents'][0]['id']}").json()
        assert {m["metric"] for m in inc["members"]} == {f'errors{{host="{h}",service="checkout"}}' for h in hosts}
        assert inc["root_entity"] == "service=checkout" and "rose" in inc["title"]
        assert inc["summary"].startswith(f"[P{inc['priority']}]")
        report = c.get(f"/api/v1/incidents/{inc['id']}/report?before=20").json()
        assert report["summary"] == inc["summary"] and len(report["members"]) == 4
        series = report["windows"]['errors{host="h0",service="checkout"}']
        values = [v for v in series["values"] if v is not None]
        assert series["step"] == step and len(series["values"]) >= 20
        assert max(values) > 35 and min(values) < 15  # the shift is in the window
        assert all(m["evidence"].get("name", 0) >= 0.5 for m in report["members"] if m["evidence"])


def test_a_point_after_its_tick_is_kept_as_history_and_reported_late(sqlite_url: str) -> None:
    step = 60
    t0 = (int(time.time()) // step - 50) * step
    with client(sqlite_url) as c:
        for k in range(40):
            got = c.post("/api/v1/points", json=[{"metric": "cpu", "timestamp": t0 + k * step, "value": 1.0 + k % 3}])
            assert got.json() == {"accepted": 1, "late": 0, "merged": 0, "rejected": 0, "errors": []}
            c.app.state.service.backend.tick(t0 + k * step)
        # step 20 was scored long ago: the point is stored (later windows see it) and reported late
        got = c.post("/api/v1/points", json=[{"metric": "cpu", "timestamp": t0 + 20 * step, "value": 5.0}]).json()
        assert got["accepted"] == 1 and got["late"] == 1
        pipe = c.app.state.service.backend.pipeline
        window = pipe.store.windows(np.array([pipe.registry.row("cpu")]), t0 + 39 * step, 40)
        assert window[0, 20] == 5.0


def test_repeated_points_in_one_request_are_merged_last_one_wins(sqlite_url: str) -> None:
    step = 60
    t0 = (int(time.time()) // step - 5) * step
    pts = [
        {"metric": "cpu", "timestamp": t0, "value": 1.0},
        {"metric": "mem", "timestamp": t0, "value": 7.0},
        {"metric": "cpu", "timestamp": t0 + 10, "value": 2.0},  # the same step: replaces the first
        {"metric": "cpu", "timestamp": t0, "value": 3.0},  # and this one replaces both
    ]
    with client(sqlite_url) as c:
        got = c.post("/api/v1/points", json=pts).json()
        assert (got["accepted"], got["merged"], got["rejected"]) == (4, 2, 0)
        pipe = c.app.state.service.backend.pipeline
        assert pipe.store.windows(np.array([pipe.registry.row("cpu")]), t0, 1)[0, 0] == 3.0
        assert pipe.merged_points == 2
