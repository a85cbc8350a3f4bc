"""The JSON behind the page: the filtered list, one incident, its series and evidence graph, and the
metric search with "what else looks like this" — on a service that ran a simulated storm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import storm_helpers
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Pipeline]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('page-api') / 'stormeye.db'}"
    storm = storm_helpers.small_storm()
    pipe = storm_helpers.run_part(storm, url, until=storm.history_steps + 180)
    with TestClient(create_app(Settings(database_url=url, step_s=60), pipeline=pipe, start_ticker=False)) as c:
        yield c, pipe


def test_the_page_and_its_static_files_are_served(served: tuple[TestClient, Pipeline]) -> None:
    c, _ = served
    r = c.get("/")
    assert r.status_code == 200 and "stormeye" in r.text and "/static/app.js" in r.text
    for path in ("/static/app.js", "/static/style.css", "/static/vendor/uPlot.iife.min.js"):
        assert c.get(path).status_code == 200, path
    assert Path(__file__).parents[2].joinpath("api/static/vendor/uPlot.LICENSE").exists()


def test_list_is_open_first_by_priority_and_filters(served: tuple[TestClient, Pipeline]) -> None:
    c, pipe = served
    rows = c.get("/api/v1/page/incidents").json()["incidents"]
    opened = [r["status"] == "open" for r in rows]
    assert opened == sorted(opened, reverse=True)  # open first
    prios = [r["priority"] for r in rows if r["status"] == "open"]
    assert prios == sorted(prios)
    assert {"title", "priority", "size", "start", "root", "acknowledged"} <= set(rows[0])
    only_open = c.get("/api/v1/page/incidents", params={"status": "open"}).json()["incidents"]
    assert {r["id"] for r in only_open} == {i.id for i in pipe.incidents.open_incidents()}
    p2 = c.get("/api/v1/page/incidents", params={"priority": "2"}).json()["incidents"]
    assert p2 and all(r["priority"] == 2 for r in p2)
    search = c.get("/api/v1/page/incidents", params={"match": 'service="search"'}).json()["incidents"]
    assert search and len(search) < len(rows)
    for r in search:
        assert any('service="search"' in m for m in pipe.incidents.incidents[r["id"]].metrics)
    regex = c.get("/api/v1/page/incidents", params={"match": 'service=~"sea.*",region!="eu"'}).json()["incidents"]
    assert [r["id"] for r in regex] == [r["id"] for r in search]
    late = max(r["start"] for r in rows)
    assert all(r["end"] >= late for r in c.get("/api/v1/page/incidents", params={"since": late}).json()["incidents"])
    assert c.get("/api/v1/page/incidents", params={"until": 0}).json()["incidents"] == []
    bad = c.get("/api/v1/page/incidents", params={"match": "service=~(["})
    assert bad.status_code == 422 and "regular expression" in bad.json()["detail"]
    assert c.get("/api/v1/page/incidents", params={"match": "==="}).status_code == 422
    redos = c.get("/api/v1/page/incidents", params={"match": 'service=~"<im(.|.)*Z"'})  # issue 31: froze it 9.9 s
    assert redos.status_code == 422 and "exponential time" in redos.json()["detail"]
    assert c.get("/api/v1/page/incidents", params={"priority": "9"}).status_code == 422


def test_one_incident_its_series_and_its_evidence_graph(served: tuple[TestClient, Pipeline]) -> None:
    c, pipe = served
    inc = max(pipe.incidents.open_incidents(), key=lambda i: len(i.metrics))
    got = c.get(f"/api/v1/page/incidents/{inc.id}").json()
    starts = [m["start"] for m in got["members"]]
    assert starts == sorted(starts) and got["root"] == inc.root
    assert got["shared"] and got["timeline"][0]["kind"] == "opened" and got["acknowledged"] is None
    series = c.get(f"/api/v1/incidents/{inc.id}/series").json()["series"]
    assert set(series) == set(inc.metrics)
    lengths = {len(s["values"]) for s in series.values()}
    assert len(lengths) == 1 and len({s["start"] for s in series.values()}) == 1  # one time axis
    g = c.get(f"/api/v1/incidents/{inc.id}/graph").json()
    assert [n["metric"] for n in g["nodes"]] == list(dict.fromkeys(m["metric"] for m in got["members"]))
    assert len(g["edges"]) >= len(g["nodes"]) // 2
    assert sum(n["root"] for n in g["nodes"]) == 1
    for e in g["edges"]:
        assert set(e["kinds"]) <= {"names", "shape", "time", "topology"} and e["kinds"]
        assert 0 <= e["source"] < len(g["nodes"]) and 0 <= e["target"] < len(g["nodes"])
    for path in ("", "/series", "/graph"):
        url = "/api/v1/page/incidents/inc-nope" if not path else f"/api/v1/incidents/inc-nope{path}"
        assert c.get(url).status_code == 404


def test_metric_search_and_what_else_looks_like_this(served: tuple[TestClient, Pipeline]) -> None:
    c, pipe = served
    inc = max(pipe.incidents.open_incidents(), key=lambda i: len(i.metrics))
    root = str(inc.root)
    found = c.get("/api/v1/metrics/search", params={"q": root.split("{")[0].upper()}).json()["metrics"]
    assert root in found or len(found) == 20
    assert c.get("/api/v1/metrics/search", params={"q": "%"}).json()["metrics"] == []  # no wildcard injection
    s = c.get("/api/v1/metrics/series", params={"metric": root}).json()
    assert len(s["values"]) == 240 and s["step"] == 60
    sim = c.get("/api/v1/metrics/similar", params={"metric": root, "limit": 5}).json()
    by_name, by_shape = sim["by_name"], sim["by_shape"]
    assert len(by_name) == 5 and len(by_shape) == 5 and root not in [x["metric"] for x in by_name + by_shape]
    assert [x["similarity"] for x in by_name] == sorted((x["similarity"] for x in by_name), reverse=True)
    assert [abs(x["similarity"]) for x in by_shape] == sorted((abs(x["similarity"]) for x in by_shape), reverse=True)
    assert by_name[0]["similarity"] == pytest.approx(pipe.index.cosine(root, by_name[0]["metric"]), abs=1e-4)
    # the incident's other members look like its root: some of them rank among its most similar shapes
    wide = c.get("/api/v1/metrics/similar", params={"metric": root, "limit": 20}).json()["by_shape"]
    assert {x["metric"] for x in wide} & set(inc.metrics)
    assert c.get("/api/v1/metrics/similar", params={"metric": "nope"}).status_code == 404
    assert c.get("/api/v1/metrics/series", params={"metric": "nope"}).status_code == 404


def test_shape_search_does_not_rank_flat_or_monotone_series_at_one(tmp_path: Path) -> None:
    """Issue 34.9: "what else looks like this" ranked unrelated counters at r = ±1.00 — two counters
    that only grow correlate perfectly on their levels, and a flat series came out at 1.00 too. The
    search compares step-to-step changes and leaves out series whose changes do not vary."""
    from stormeye.workers.db import Database

    url = f"sqlite:///{tmp_path / 'stormeye.db'}"
    pipe = Pipeline(Settings(database_url=url, step_s=60), database=Database(url))
    rng = np.random.default_rng(3)
    n = 120
    steps = 1_767_225_600.0 + 60.0 * np.arange(n)
    base = np.cumsum(rng.normal(0, 1, n)) + 50.0
    series = {
        'requests_total{service="a"}': np.cumsum(rng.poisson(100, n)).astype(float),  # a busy counter
        'requests_total{service="b"}': np.cumsum(rng.poisson(40, n)).astype(float),  # an unrelated one
        'bytes_total{service="c"}': 1000.0 + 7.0 * np.arange(n),  # a constant rate: no shape
        'queue_depth{service="d"}': np.full(n, 3.0),  # flat
        'latency{service="e"}': base,
        'latency{service="f"}': np.concatenate([[base[0]], base[:-1]]) * 2.0 + rng.normal(0, 0.05, n),  # e, a step late
    }
    pipe.load_history(list(series), steps, np.array(list(series.values())))
    app = create_app(Settings(database_url=url, step_s=60), pipeline=pipe, start_ticker=False)
    with TestClient(app) as c:
        got = c.get("/api/v1/metrics/similar", params={"metric": 'requests_total{service="a"}'}).json()
        ranked = {x["metric"]: x["similarity"] for x in got["by_shape"]}
        assert 'bytes_total{service="c"}' not in ranked and 'queue_depth{service="d"}' not in ranked
        assert abs(ranked['requests_total{service="b"}']) < 0.5, ranked  # was 1.00 on the levels
        got = c.get("/api/v1/metrics/similar", params={"metric": 'latency{service="e"}'}).json()
        top = got["by_shape"][0]
        assert top["metric"] == 'latency{service="f"}' and top["similarity"] > 0.9 and top["lag_s"] in (60, -60), got
        flat = c.get("/api/v1/metrics/similar", params={"metric": 'queue_depth{service="d"}'}).json()
        assert flat["by_shape"] == [] and "flat" in flat["by_shape_note"]
