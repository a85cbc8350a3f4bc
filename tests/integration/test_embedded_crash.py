"""Issue 31 item 4: embedded mode after a crash, and two `serve` processes on one database.

A process killed with -9 leaves its incidents open in the database with nobody to update them; the
next `serve` resolves them with the reason in their timeline. One database is ticked by one process:
a lease row with a heartbeat; a second `serve` refuses to start, a crashed holder is taken over.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import storm_helpers
from fastapi.testclient import TestClient
from peers import Stormeye, wait_for

from stormeye.api.app import create_app
from stormeye.workers.backend import TickLeaseHeld
from stormeye.workers.db import Database
from stormeye.workers.settings import Settings

storm_template, db_url = storm_helpers.storm_template, storm_helpers.db_url  # the fixtures


def test_incidents_left_open_by_a_crash_are_closed_with_the_reason(db_url: str) -> None:
    db = Database(db_url)
    left = [i["id"] for i in db.list_incidents(status="open", limit=1000)]
    assert left, "the template should hold open incidents (its ticking process never closed them)"
    app = create_app(Settings(database_url=db_url, step_s=60, tick_s=30))
    with TestClient(app) as client:
        assert client.get("/api/v1/incidents?status=open").json()["incidents"] == []
        got = client.get(f"/api/v1/incidents/{left[0]}").json()
    assert got["status"] == "resolved"
    closed = [e for e in got["events"] if e["kind"] == "resolved"]
    assert closed and "stopped without closing it" in closed[-1]["details"]["reason"], got["events"]
    assert sorted(app.state.service.backend.reconciled) == sorted(left)
    db.dispose()


def test_a_second_serve_on_the_same_database_refuses_to_tick(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    settings = Settings(database_url=url, step_s=60, tick_s=30)
    with TestClient(create_app(settings)) as first:
        assert first.get("/readyz").status_code == 200
        with pytest.raises(TickLeaseHeld) as refused, TestClient(create_app(settings)):
            pass
        assert "another stormeye serve ticks the database" in str(refused.value)
        assert f":{os.getpid()}:" in str(refused.value)  # who holds it
    with TestClient(create_app(settings)) as again:  # the first let the lease go when it stopped
        assert again.get("/readyz").status_code == 200


def test_serve_killed_with_9_is_taken_over_by_the_next_and_a_second_one_exits(tmp_path: Path) -> None:
    env = {"STORMEYE_TICK_S": "30"}
    first = Stormeye(tmp_path, env, token=None)
    try:
        second = tmp_path / "second"
        second.mkdir()
        (second / "stormeye.db").symlink_to(first.db)  # the same SQLite file
        with pytest.raises(BaseException, match="exited") as exited:
            Stormeye(second, env, token=None)
        assert "another stormeye serve ticks the database" in str(exited.value), exited.value
        os.killpg(first.proc.p.pid, signal.SIGKILL)  # a crash: the lease is not let go
        first.proc.p.wait(10)
        third = Stormeye(tmp_path / "second", env, token=None)  # its holder is gone: taken over at once
        try:
            h = httpx.get(f"{third.url}/healthz", timeout=10).json()
            assert h["status"] == "ok"
            wait_for("readyz", lambda: httpx.get(f"{third.url}/readyz", timeout=10).status_code == 200)
        finally:
            third.stop()
    finally:
        first.stop()
