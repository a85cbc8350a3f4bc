"""Learning from the on-call (issue 29): a routine marked ``noise`` stays quiet when it repeats, is
listed ``recognised`` with its profile, and still pages when it is clearly larger or has a new member;
``forget`` brings paging back; an ingest in two parts gives the incidents of one.

The real pipeline over a small estate (feedback_helpers: a nightly batch on one pod), the robust
z-score alone as the detector to keep it quick, a real database; actions through the public API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from feedback_helpers import BEYOND, DAY, ROUTINE, STEP, T0, Day, day_of, points, split
from sqlalchemy import select

from stormeye.api.app import create_app
from stormeye.workers import models as m
from stormeye.workers.actions import Actions, _repeats_daily
from stormeye.workers.db import Database
from stormeye.workers.ingest import replay, resume, save_replay_state
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings


def _settings(url: str) -> Settings:
    return Settings(database_url=url, step_s=STEP, detector="robust_z")


def _pipeline(url: str) -> Pipeline:
    return Pipeline(_settings(url), database=Database(url), keep_archive=True)


def _paged(db: Database) -> dict[int, list[str]]:
    """Per day, the incidents that paged someone: opened not recognised, or escalated since."""
    with db.sessions() as s:
        incs = list(s.scalars(select(m.Incident).where(m.Incident.status != "merged")))
        escalated = set(s.scalars(select(m.IncidentEvent.incident_id).where(m.IncidentEvent.kind == "escalated")))
    out: dict[int, list[str]] = {}
    for inc in incs:
        if inc.profile_id is None or inc.id in escalated:
            out.setdefault(day_of(inc.start), []).append(inc.id)
    return out


def _on_day(db: Database, day: int) -> list[dict[str, Any]]:
    return [i for i in db.list_incidents(limit=1000) if day_of(i["start"]) == day]


def test_a_routine_marked_noise_stays_quiet_larger_or_wider_pages_and_forget_brings_paging_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'noise.db'}"
    days = [Day(), Day(), Day(), Day(size=2.0), Day(beyond=True), Day()]
    batch = points(days)
    first, rest = split(batch, T0 + 2 * DAY)  # warm-up and day 0
    middle, last = split(rest, T0 + 6 * DAY)  # days 1-4, and day 5
    pipe = _pipeline(url)
    db = pipe.database
    assert db is not None
    replay(pipe, first, finish=False)
    (day0,) = _on_day(db, 0)
    assert set(ROUTINE) <= {mem["metric"] for mem in db.get_incident(day0["id"])["members"]}  # type: ignore[index]
    with TestClient(create_app(_settings(url), pipeline=pipe, start_ticker=False)) as c:
        r = c.post(f"/api/v1/incidents/{day0['id']}/noise", json={"scope": "daily", "note": "nightly batch"})
        assert r.status_code == 200, r.text
        profile = r.json()["action"]["details"]["profile"]
        assert c.post(f"/api/v1/incidents/{day0['id']}/noise", json={}).status_code == 409  # once is enough
        listed = c.get("/api/v1/profiles").json()["profiles"]
        assert [p["id"] for p in listed] == [profile] and listed[0]["scope"].startswith("daily 01:00-")
    replay(pipe, middle, finish=False)
    paged = _paged(db)
    # days 1 and 2: the same move, recognised, paging nobody, shown with the profile it matched
    assert 1 not in paged and 2 not in paged, paged
    for day in (1, 2):
        (inc,) = _on_day(db, day)
        assert inc["profile"] == profile
    with TestClient(create_app(_settings(url), pipeline=pipe, start_ticker=False)) as c:
        listed = c.get("/api/v1/profiles").json()["profiles"]
        assert listed[0]["matched"] == 2 and [i["status"] for i in listed[0]["matched_incidents"]] == ["resolved"] * 2
    # day 3: the same move at twice its size pages; day 4: a member beyond the profile pages
    assert len(paged.get(3, [])) == 1 and len(paged.get(4, [])) == 1, paged
    (wider,) = _on_day(db, 4)
    assert BEYOND in {mem["metric"] for mem in db.get_incident(wider["id"])["members"]}  # type: ignore[index]
    Actions(db).forget(profile, "bob")
    assert Actions(db).profiles() == []
    replay(pipe, last)
    assert len(_paged(db).get(5, [])) == 1  # forgotten: the routine pages again
    kinds = [a["kind"] for a in Actions(db).actions_since(0)]
    assert kinds == ["noise", "forget"]


def test_a_recognised_incident_is_listed_with_its_profile_and_this_one_is_real_pages_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'real.db'}"
    batch = points([Day(), Day()])
    first, rest = split(batch, T0 + 2 * DAY)
    pipe = _pipeline(url)
    db = pipe.database
    assert db is not None
    replay(pipe, first, finish=False)
    (day0,) = _on_day(db, 0)
    Actions(db).noise(day0["id"], "alice")
    # stop while day 1's batch is going on: its incident is still recognised
    during, _ = split(rest, T0 + 2 * DAY + 2 * 3600 + 1200)
    replay(pipe, during, finish=False)
    (day1,) = _on_day(db, 1)
    assert day1["status"] == "recognised"
    with TestClient(create_app(_settings(url), pipeline=pipe, start_ticker=False)) as c:
        got = c.get("/api/v1/incidents", params={"status": "recognised"}).json()["incidents"]
        assert [i["id"] for i in got] == [day1["id"]] and got[0]["profile"]
        one = c.get(f"/api/v1/incidents/{day1['id']}").json()
        assert one["profile"] and one["profile_detail"]["incident"] == day0["id"]
        r = c.post(f"/api/v1/incidents/{day1['id']}/real", json={})
        assert r.status_code == 200, r.text
        assert c.get(f"/api/v1/incidents/{day1['id']}").json()["status"] == "open"
        assert c.post(f"/api/v1/incidents/{day1['id']}/real", json={}).status_code == 409
        # missed: a labelled event on a metric and span; bad input says what to fix
        r = c.post("/api/v1/missed", json={"metric": ROUTINE[0], "start": T0, "end": T0 + 600, "note": "x"})
        assert r.status_code == 200, r.text
        assert c.post("/api/v1/missed", json={"metric": ROUTINE[0], "start": T0 + 600, "end": T0}).status_code == 422
        assert c.post("/api/v1/missed", json={"metric": "nope", "start": T0, "end": T0}).status_code == 404
        assert c.post(f"/api/v1/incidents/{day0['id']}/noise", json={"scope": "25:00-26:00"}).status_code == 422
    assert pipe.incidents.incidents[day1["id"]].status == "open"  # replayed on the running tracker
    events = Actions(db).labelled_events()
    assert [(e["metric"], e["label"], e["actor"]) for e in events] == [(ROUTINE[0], "missed", "local")]


def _incidents(db: Database) -> list[tuple[Any, ...]]:
    return sorted(
        (i["id"], i["status"], i["start"], i["end"], tuple(sorted({mem["metric"] for mem in i["members"]})))
        for i in (db.get_incident(x["id"]) for x in db.list_incidents(limit=1000, include_merged=True))
        if i is not None
    )


def test_an_ingest_in_two_parts_gives_the_incidents_of_one(tmp_path: Path) -> None:
    batch = points([Day(), Day(beyond=True)])
    one_url, two_url = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    one = _pipeline(one_url)
    replay(one, batch)
    first, rest = split(batch, T0 + 2 * DAY + 2 * 3600 + 900)  # cut while day 0's batch is going on
    part = _pipeline(two_url)
    replay(part, first, finish=False)
    save_replay_state(part)
    again = _pipeline(two_url)  # a new process
    assert resume(again)
    replay(again, rest)
    assert one.database is not None and again.database is not None
    got, want = _incidents(again.database), _incidents(one.database)
    assert len(want) >= 2 and got == want


def test_left_unsaid_the_scope_is_daily_only_when_most_of_the_move_repeated_at_that_time_of_day(
    tmp_path: Path,
) -> None:
    """``noise`` with no scope is daily when the move came back at about that time of day on an
    earlier day: most of its metrics then, in an incident, on one day. One metric of several doing
    so is a coincidence on a busy host, not the routine repeating (it was daily on any one metric)."""
    db = Database(f"sqlite:///{tmp_path / 'scope.db'}")
    names = ['a{host="h1"}', 'b{host="h1"}', 'c{host="h1"}']
    ids = db.ensure_metrics(names)
    now = T0 + 10 * DAY + 2 * 3600  # 02:00 on day 10

    def seen(metric: str, at: float, incident: str | None = "inc-old") -> None:
        with db.sessions.begin() as s:
            s.add(
                m.Anomaly(
                    id=f"{metric}@{at}",
                    metric_id=ids[metric],
                    start=at,
                    end=at + 600,
                    peak_score=0.9,
                    peak_at=at,
                    direction=1,
                    open=False,
                    detector="test",
                    evidence={},
                    incident_id=incident,
                )
            )

    def daily() -> bool:
        with db.sessions() as s:
            return _repeats_daily(s, names, now)

    seen(names[0], now - DAY + 600)  # one of three, yesterday at about that time
    seen(names[1], now - DAY + 900, incident=None)  # not in an incident: not a sign
    seen(names[1], now - 2 * DAY)  # another day: the move did not come back whole on either
    seen(names[2], now - DAY - 3 * 3600)  # yesterday, but three hours earlier
    assert not daily()
    seen(names[2], now - DAY - 1800)  # two of three, yesterday at about that time
    assert daily()
