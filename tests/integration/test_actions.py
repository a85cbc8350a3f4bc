"""People's actions over the HTTP API, on a database holding a simulated storm's open incidents:
every action done well, and every way to get one wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import storm_helpers
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.grouping.incidents import Incident, Member
from stormeye.sim.simulator import simulate_storm
from stormeye.workers import models
from stormeye.workers.actions import Actions
from stormeye.workers.db import Database
from stormeye.workers.settings import Settings

storm_template, db_url = storm_helpers.storm_template, storm_helpers.db_url  # the fixtures


@pytest.fixture()
def api(db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=db_url, step_s=60), start_ticker=False)) as c:
        yield c


def open_incidents(c: TestClient, members: int = 2) -> list[dict]:
    got = c.get("/api/v1/incidents", params={"status": "open"}).json()["incidents"]
    return [i for i in got if i["member_count"] >= members]


def kinds(c: TestClient, iid: str) -> list[tuple[str, str | None]]:
    return [(e["kind"], e["actor"]) for e in c.get(f"/api/v1/incidents/{iid}/timeline").json()["timeline"]]


def test_acknowledge_keeps_it_open_records_who_and_refuses_twice(api: TestClient) -> None:
    inc = open_incidents(api)[0]
    r = api.post(f"/api/v1/incidents/{inc['id']}/acknowledge", json={"note": "looking"})
    assert r.status_code == 200, r.text
    act = r.json()["action"]
    assert act["kind"] == "acknowledge" and act["actor"] == "local" and act["details"]["note"] == "looking"
    assert api.get(f"/api/v1/incidents/{inc['id']}").json()["status"] == "open"
    assert ("acknowledge", "local") in kinds(api, inc["id"])
    assert ("opened", None) in kinds(api, inc["id"])  # the pipeline's own events are in the timeline too
    again = api.post(f"/api/v1/incidents/{inc['id']}/acknowledge")
    assert again.status_code == 409 and "acknowledged already by local" in again.json()["detail"]
    # the list tells who still needs someone: acknowledged and unacknowledged open incidents
    acked = api.get("/api/v1/incidents", params={"status": "acknowledged"}).json()
    assert [i["id"] for i in acked["incidents"]] == [inc["id"]] and acked["total"] == 1
    waiting = api.get("/api/v1/incidents", params={"status": "unacknowledged", "limit": 1000}).json()
    n_open = api.get("/api/v1/incidents", params={"status": "open"}).json()["total"]
    assert inc["id"] not in {i["id"] for i in waiting["incidents"]} and waiting["total"] == n_open - 1
    assert all(i["status"] == "open" for i in waiting["incidents"])
    everything = api.get("/api/v1/incidents", params={"limit": 1000}).json()["incidents"]
    statuses = [i["status"] for i in everything]
    assert statuses == sorted(statuses, key=lambda st: st != "open")  # open ones first
    assert api.get("/api/v1/incidents", params={"status": "acked"}).status_code == 422


def test_resolve_then_acknowledge_or_resolve_again_is_a_conflict(api: TestClient) -> None:
    inc = open_incidents(api)[0]
    assert api.post(f"/api/v1/incidents/{inc['id']}/resolve").status_code == 200
    got = api.get(f"/api/v1/incidents/{inc['id']}").json()
    assert got["status"] == "resolved" and got["resolved_at"]
    r = api.post(f"/api/v1/incidents/{inc['id']}/acknowledge")
    assert r.status_code == 409 and "is resolved" in r.json()["detail"]
    assert api.post(f"/api/v1/incidents/{inc['id']}/resolve").status_code == 409
    assert ("resolve", "local") in kinds(api, inc["id"])


def test_merge_moves_every_member_and_records_the_pairs_as_together(api: TestClient, db_url: str) -> None:
    a, b = open_incidents(api)[:2]
    r = api.post(f"/api/v1/incidents/{a['id']}/merge", json={"from": b["id"]})
    assert r.status_code == 200, r.text
    merged = api.get(f"/api/v1/incidents/{b['id']}").json()
    assert merged["status"] == "merged" and merged["merged_into"] == a["id"] and not merged["members"]
    target = api.get(f"/api/v1/incidents/{a['id']}").json()
    assert len(target["members"]) == a["member_count"] + b["member_count"] == target["member_count"]
    assert ("merge", "local") in kinds(api, a["id"]) and ("merged", "local") in kinds(api, b["id"])
    from sqlalchemy import select

    from stormeye.workers import models as m

    with Database(db_url).sessions() as s:
        verdicts = set(s.scalars(select(m.FeedbackPair.verdict)))
    assert verdicts == {"together"}
    # the merged one can take no more actions
    assert api.post(f"/api/v1/incidents/{b['id']}/acknowledge").status_code == 409


def test_bad_merges(api: TestClient) -> None:
    a = open_incidents(api)[0]
    r = api.post(f"/api/v1/incidents/{a['id']}/merge", json={"from": a["id"]})
    assert r.status_code == 422 and "with itself" in r.json()["detail"]
    r = api.post(f"/api/v1/incidents/{a['id']}/merge", json={"from": "inc-nope"})
    assert r.status_code == 404 and "inc-nope" in r.json()["detail"]
    r = api.post("/api/v1/incidents/inc-nope/merge", json={"from": a["id"]})
    assert r.status_code == 404
    assert api.post(f"/api/v1/incidents/{a['id']}/merge", json={}).status_code == 422


def test_split_moves_members_into_a_new_incident_and_keeps_the_pairs_apart(api: TestClient) -> None:
    inc = api.get(f"/api/v1/incidents/{open_incidents(api, 4)[0]['id']}").json()
    metrics = sorted({m["metric"] for m in inc["members"]})
    off = metrics[: len(metrics) // 2]
    r = api.post(f"/api/v1/incidents/{inc['id']}/split", json={"metrics": off})
    assert r.status_code == 201, r.text
    new_id = r.json()["incident"]
    new = api.get(f"/api/v1/incidents/{new_id}").json()
    assert sorted({m["metric"] for m in new["members"]}) == off and new["status"] == "open"
    assert new["title"] and new["root"] in off
    rest = api.get(f"/api/v1/incidents/{inc['id']}").json()
    assert sorted({m["metric"] for m in rest["members"]}) == metrics[len(metrics) // 2 :]
    assert ("split", "local") in kinds(api, inc["id"]) and ("split_from", "local") in kinds(api, new_id)
    assert new_id in [i["id"] for i in api.get("/api/v1/incidents").json()["incidents"]]


def test_bad_splits(api: TestClient) -> None:
    inc = api.get(f"/api/v1/incidents/{open_incidents(api)[0]['id']}").json()
    every = sorted({m["metric"] for m in inc["members"]})
    r = api.post(f"/api/v1/incidents/{inc['id']}/split", json={"metrics": every})
    assert r.status_code == 422 and "every member" in r.json()["detail"]
    r = api.post(f"/api/v1/incidents/{inc['id']}/split", json={"metrics": ["not_a_member"]})
    assert r.status_code == 422 and "not members" in r.json()["detail"]
    assert api.post(f"/api/v1/incidents/{inc['id']}/split", json={"metrics": []}).status_code == 422
    assert api.post("/api/v1/incidents/inc-nope/split", json={"metrics": every[:1]}).status_code == 404


def test_unknown_incident_is_404_for_every_action(api: TestClient) -> None:
    for action in ("acknowledge", "resolve"):
        r = api.post(f"/api/v1/incidents/inc-nope/{action}")
        assert r.status_code == 404 and "inc-nope" in r.json()["detail"]
    assert api.get("/api/v1/incidents/inc-nope/timeline").status_code == 404


def test_metric_priority_override(api: TestClient) -> None:
    inc = api.get(f"/api/v1/incidents/{open_incidents(api)[0]['id']}").json()
    metric = inc["members"][0]["metric"]
    r = api.put("/api/v1/metrics/priority", json={"metric": metric, "weight": 8, "kpi": True})
    assert r.status_code == 200, r.text
    assert r.json()["action"]["details"] == {"metric": metric, "weight": 8.0, "kpi": True}
    pipe = api.app.state.service.backend.pipeline  # type: ignore[attr-defined]
    assert pipe.incidents.weight(metric) == 8.0  # the running tracker uses it from now on
    assert api.put("/api/v1/metrics/priority", json={"metric": "nope", "weight": 2}).status_code == 404
    r = api.put("/api/v1/metrics/priority", json={"metric": metric, "weight": -1})
    assert r.status_code == 422 and "positive" in r.json()["detail"]


def test_the_actor_is_the_requests(db_url: str) -> None:
    # the token that authenticated the request names who acted (api/auth.py)
    app = create_app(Settings(database_url=db_url, step_s=60, api_tokens="alice=tok-a"), start_ticker=False)
    with TestClient(app, headers={"authorization": "Bearer tok-a"}) as c:
        inc = open_incidents(c)[0]
        assert c.post(f"/api/v1/incidents/{inc['id']}/acknowledge").json()["action"]["actor"] == "alice"
        assert ("acknowledge", "alice") in kinds(c, inc["id"])


@pytest.mark.postgres
def test_actions_on_postgresql(postgres_url: str) -> None:
    storm = storm_helpers.small_storm()
    storm_helpers.run_part(storm, postgres_url, until=storm.history_steps + 150).database.dispose()  # type: ignore[union-attr]
    with TestClient(create_app(Settings(database_url=postgres_url, step_s=60), start_ticker=False)) as c:
        a, b = open_incidents(c)[:2]
        assert c.post(f"/api/v1/incidents/{a['id']}/acknowledge").status_code == 200
        assert c.post(f"/api/v1/incidents/{a['id']}/acknowledge").status_code == 409
        assert c.post(f"/api/v1/incidents/{a['id']}/merge", json={"from": b["id"]}).status_code == 200
        every = sorted({m["metric"] for m in c.get(f"/api/v1/incidents/{a['id']}").json()["members"]})
        r = c.post(f"/api/v1/incidents/{a['id']}/split", json={"metrics": every[:1]})
        assert r.status_code == 201, r.text
        assert c.post(f"/api/v1/incidents/{a['id']}/split", json={"metrics": every[1:]}).status_code == 422
        assert c.post(f"/api/v1/incidents/{r.json()['incident']}/resolve").status_code == 200
        assert ("split", "local") in kinds(c, a["id"])
    assert len(Actions(Database(postgres_url)).apart_pairs()) == len(every) - 1


def test_a_split_off_incident_is_dated_like_the_tracker_dates_one(tmp_path: Path) -> None:
    def member(metric: str, start: float, end: float) -> Member:
        return Member(metric, start, end, 1.0, start, 1, False, joined_at=end)

    db = Database(f"sqlite:///{tmp_path / 'split.db'}")
    inc = Incident(id="inc-a", opened_at=300.0, updated_at=600.0)
    # "blip" was seen once, three minutes before the rest; "late" is what lasted of what is split off
    for mem in (member("cpu", 120.0, 600.0), member("blip", 0.0, 0.0), member("late", 180.0, 600.0)):
        inc.members[mem.key] = mem
    db.save_tick([], [inc], [])
    new_id = Actions(db).split("inc-a", ["blip", "late"], "ann", at=700.0)["details"]["into"]
    with db.sessions() as s:
        assert s.get(models.Incident, new_id).start == 180.0  # not the blip's 0.0
        assert s.get(models.Incident, "inc-a").start == 120.0


@pytest.mark.parametrize("served", [False, True])
def test_the_database_stores_what_the_running_tracker_decides_for_a_split_and_a_merge(
    tmp_path: Path, served: bool
) -> None:
    """An action on the database alone (the CLI without a server; ``served``: the API, which lends
    the running name index) stores the incidents as the running tracker decides them when it applies
    the recorded action: members, root (a cascade's callee-most failing service), title, priority,
    start. ``_recompute`` of old worked them out a second way and missed the cascade root."""
    storm = simulate_storm(seed=0, n_metrics=240, n_incidents=2, step=60, history_steps=600, cascades=3)
    url = f"sqlite:///{tmp_path / 'cascade.db'}"
    pipe = storm_helpers.run_part(storm, url, until=660)  # the invoice-svc cascade is open, spread to callers
    assert pipe.database is not None and pipe.people is not None
    tracker = pipe.incidents
    cascade = next(i for i in tracker.open_incidents() if i.root_entity == "service=invoice-svc")
    assert len({tracker.props(x)["service"] for x in cascade.metrics}) >= 3
    other = next(i for i in tracker.open_incidents() if i.id != cascade.id)
    columns = ("status", "root", "root_entity", "root_service", "title", "priority", "priority_score", "start", "end")

    def stored(ids: list[str]) -> dict[str, dict[str, object]]:
        got = {i: pipe.database.get_incident(i) for i in ids}  # type: ignore[union-attr]
        with pipe.database.sessions() as s:  # type: ignore[union-attr]
            service = {i: s.get(models.Incident, i).root_service for i in ids}
        return {
            i: {**{c: d[c] for c in columns if c != "root_service"}, "root_service": service[i], "members": sorted(
                {m["metric"] for m in d["members"]})} for i, d in got.items() if d
        }  # fmt: skip

    def decided(ids: list[str]) -> dict[str, dict[str, object]]:
        incs = {i: tracker.incidents[i] for i in ids}
        return {i: {**{c: getattr(inc, c) for c in columns}, "members": inc.metrics} for i, inc in incs.items()}

    actions = Actions(pipe.database, pipe.settings, *((pipe.index, pipe.topology) if served else ()))
    at = float(storm.timestamps[660])
    # split off the callers furthest from the root: what stays is still a cascade over two services or more
    by_service: dict[str, list[str]] = {}
    for x in cascade.metrics:
        by_service.setdefault(tracker.props(x)["service"], []).append(x)
    last = max(
        by_service, key=lambda svc: min(m.start for m in cascade.members.values() if m.metric in by_service[svc])
    )
    new_id = actions.split(cascade.id, by_service[last], "ann", at=at)["details"]["into"]
    on_database = stored([cascade.id, new_id])
    pipe.people.sync(tracker, at + 60)  # the running tracker applies the recorded split
    assert on_database == decided([cascade.id, new_id])
    assert on_database[cascade.id]["root_entity"] == "service=invoice-svc"  # the cascade's root, not the loudest
    actions.merge(cascade.id, other.id, "ann", at=at + 60)
    on_database = stored([cascade.id, other.id])
    pipe.people.sync(tracker, at + 120)
    assert on_database == decided([cascade.id, other.id])
    assert on_database[other.id]["status"] == "merged" and not on_database[other.id]["members"]
    assert on_database[cascade.id]["root_entity"] == "service=invoice-svc"
