"""Silences and notification logs through the HTTP API and the ``stormeye`` command line;
``stormeye serve``'s notifier thread sends to a real local HTTP receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from fastapi.testclient import TestClient
from notify_helpers import HttpReceiver, incident, save

from stormeye.api.app import create_app
from stormeye.workers.db import Database
from stormeye.workers.settings import Settings


def cli(args: list[str], env: dict[str, str]) -> Any:
    """The ``stormeye`` command in this process (Typer's runner): the same app a user's shell runs."""
    from typer.testing import CliRunner

    from stormeye.api.cli import app

    return CliRunner().invoke(app, args, env=env)


def test_embedded_notifier_thread_silences_and_log(sqlite_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = HttpReceiver()
    try:
        cfg = tmp_path / "notify.yml"
        cfg.write_text(f"""
route: {{receiver: r, group_wait: 0s}}
receivers:
  - name: r
    webhook_configs: [{{url: "{receiver.url}/hook"}}]
""")
        settings = Settings(database_url=sqlite_url, notify_config=cfg, notify_interval_s=0.2, public_url="http://x")
        now = time.time()
        with TestClient(create_app(settings)) as c:
            r = c.post("/api/v1/silences", json={"matchers": ['service="batch"'], "duration_s": 3600, "comment": "x"})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            assert c.post("/api/v1/silences", json={"matchers": ["service~=x"], "duration_s": 60}).status_code == 422
            db = c.app.state.service.database  # type: ignore[attr-defined]
            save(
                db,
                incident("inc-web", now - 60, ['errors{service="web",host="a"}', 'errors{service="web",host="b"}']),
                incident("inc-batch", now - 60, ['jobs{service="batch",host="a"}', 'lag{service="batch",host="a"}']),
            )
            deadline = time.monotonic() + 20
            while not receiver.bodies("/hook") and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            assert [b["stormeye"]["incident"] for b in receiver.bodies("/hook")] == ["inc-web"]
            got = c.get("/api/v1/incidents/inc-web/notifications").json()
            assert got["notifications"][0]["status"] == "sent" and got["notifications"][0]["attempts"][0]["ok"]
            muted = c.get("/api/v1/incidents/inc-batch/notifications").json()
            assert muted["receivers"][0]["suppressed_by"] == {"silenced_by": [sid]}
            assert c.get("/api/v1/incidents/nope/notifications").status_code == 404
            assert [s["id"] for s in c.get("/api/v1/silences").json()["silences"]] == [sid]
            assert c.delete(f"/api/v1/silences/{sid}").json()["state"] == "expired"
            assert c.get("/api/v1/silences").json()["silences"] == []
            assert c.get("/api/v1/silences?all=true").json()["silences"][0]["id"] == sid
    finally:
        receiver.stop()


def test_cli_silences_and_notifications(sqlite_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"STORMEYE_DATABASE_URL": sqlite_url}
    db = Database(sqlite_url)
    save(db, incident("inc-cli", time.time() - 60, ['a{service="web"}', 'b{service="web"}']))
    added = cli(["silences", "add", 'service="web"', "--duration", "1h", "--comment", "deploy", "--json"], env)
    assert added.exit_code == 0, added.output
    sid = json.loads(added.stdout)["id"]
    listed = cli(["silences", "list", "--json"], env)
    assert [s["id"] for s in json.loads(listed.stdout)["silences"]] == [sid]
    bad = cli(["silences", "add", "service~=web"], env)
    assert bad.exit_code == 2 and "is not a matcher" in bad.output
    assert cli(["silences", "expire", sid], env).exit_code == 0
    assert json.loads(cli(["silences", "list", "--json"], env).stdout)["silences"] == []
    log = cli(["notifications", "inc-cli", "--json"], env)
    assert log.exit_code == 0 and json.loads(log.stdout)["incident"] == "inc-cli"
    table = cli(["notifications", "inc-cli"], env)
    assert table.exit_code == 0 and "notifications of inc-cli" in table.stdout
    assert cli(["notifications", "nope"], env).exit_code == 2
    db.dispose()


def test_serve_refuses_a_bad_config_with_its_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A real process, as a user starts it."""
    cfg = tmp_path / "notify.yml"
    cfg.write_text(
        "route:\n  receiver: nobody\nreceivers:\n  - name: r\n    webhook_configs: [{url: http://127.0.0.1:1}]\n"
    )
    env = {"STORMEYE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "STORMEYE_NOTIFY_CONFIG": str(cfg)}
    got = subprocess.run(
        [sys.executable, "-m", "stormeye.api.cli", "serve", "--port", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert got.returncode == 2 and "notify.yml:2: unknown receiver 'nobody'" in got.stderr.replace("\n", ""), got.stderr
