"""The live tick survives a database error (issue 31.4): a SQLite file locked by another connection
fails ticks, which are logged, counted and retried; /healthz and /readyz tell the truth meanwhile, and
the tick's writes are made once the lock is gone."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from peers import wait_for

from stormeye.api.app import create_app
from stormeye.workers.settings import Settings


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def test_a_locked_database_does_not_end_the_tick(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    settings = Settings(database_url=f"sqlite:///{path}", step_s=60, tick_s=0.3, grace_s=0)
    app = create_app(settings)
    with TestClient(app) as client:
        backend = app.state.service.backend
        wait_for("a first tick", lambda: backend.last_tick is not None or backend.tick_errors)
        assert client.get("/readyz").status_code == 200
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer (a CLI action) holds the write lock
        try:
            start = time.time() - 300
            alerts = [
                {"labels": {"alertname": "Down", "service": "checkout", "instance": str(i)}, "startsAt": _iso(start)}
                for i in range(3)
            ]
            r = client.post("/api/v1/alerts/alertmanager", json={"version": "4", "alerts": alerts})
            assert r.status_code == 200, r.text
            # the tick waits on the lock: after 3 ticks without progress the service is not ready
            r = wait_for("/readyz to say 503", lambda: (x := client.get("/readyz")).status_code == 503 and x)
            assert "tick has not completed" in r.json()["detail"]
            assert client.get("/healthz").json()["status"] == "degraded"
            wait_for("a failed tick", lambda: backend.tick_errors >= 1, timeout=90)
            health = client.get("/healthz").json()
            assert health["status"] == "degraded" and "locked" in health["last_error"], health
            assert health["unsaved_ticks"] >= 1 and health["tick_errors"] >= 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_for("the tick to write what it scored", lambda: not backend.pipeline.unsaved, timeout=90)
        wait_for("/readyz to say ready", lambda: client.get("/readyz").status_code == 200)
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["unsaved_ticks"] == 0
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM anomaly").fetchone()[0] >= 1
