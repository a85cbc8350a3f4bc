"""One point stamped 11 months ago on a fresh ``stormeye serve`` (issue 31.7) made the first tick score
every step since (~490,000): the tick never completed, later requests hung behind it and SIGTERM did
not stop the process. The live tick's catch-up is bounded (STORMEYE_MAX_CATCHUP_STEPS) and lets go of
the lock between chunks; older steps stay unscored history."""

from __future__ import annotations

import time
from pathlib import Path

from peers import Stormeye, wait_for


def test_a_point_11_months_old_does_not_stall_the_next_tick(tmp_path: Path) -> None:
    se = Stormeye(tmp_path, {"STORMEYE_TICK_S": "1", "STORMEYE_STEP_S": "60"})
    try:
        old = int(time.time()) - 330 * 86400
        r = se.http.post("/api/v1/points", json=[{"metric": 'cpu{host="a"}', "timestamp": old, "value": 1}])
        assert r.status_code == 202, r.text
        health = wait_for("a tick to complete", lambda: (h := se.http.get("/healthz").json())["last_tick"] and h)
        assert health["steps_skipped"] > 400_000 and health["steps_behind"] == 0, health
        now = int(time.time()) - 60
        r = se.http.post("/api/v1/points", json=[{"metric": 'cpu{host="a"}', "timestamp": now, "value": 2}])
        assert r.status_code == 202, r.text
        assert se.http.get("/readyz").status_code == 200
    finally:
        se.proc.stop()
    assert se.proc.p.returncode is not None
