"""Issue 31 item 6: the Graphite listener holds a bounded number of connections, closes idle ones,
skips a huge line with one log line, and is not opened beyond this machine without a token."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from peers import wait_for

from stormeye.api.app import create_app
from stormeye.workers.settings import Settings


def _closed_by_server(s: socket.socket, within: float) -> bool:
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_excess_and_idle_connections_are_closed(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, graphite_port=0, graphite_max_connections=3, graphite_idle_s=1.5)
    app = create_app(settings, start_ticker=False)
    with TestClient(app):
        g = app.state.service.graphite
        held = [socket.create_connection(("127.0.0.1", g.port), timeout=5) for _ in range(3)]
        try:
            wait_for("3 connections held", lambda: g.connections == 3)
            extra = socket.create_connection(("127.0.0.1", g.port), timeout=5)
            assert _closed_by_server(extra, 5), "a connection beyond the cap was kept"
            extra.close()
            assert g.refused == 1
            # the held ones send nothing: closed after the idle timeout
            assert all(_closed_by_server(s, 10) for s in held)
            assert g.idle_closed == 3 and g.connections == 0
        finally:
            for s in held:
                s.close()
        # and then a sender is served again
        t = int(time.time()) - 60
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
            s.sendall(f"web.cpu 1 {t}\n".encode())
        wait_for("the point", lambda: len(app.state.service.backend.pipeline.registry.names) == 1)


def test_a_huge_line_is_skipped_with_one_log_line(sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(database_url=sqlite_url, graphite_port=0)
    app = create_app(settings, start_ticker=False)
    t = int(time.time()) - 60
    with TestClient(app) as c, caplog.at_level(logging.INFO, logger="stormeye.graphite"):
        g = app.state.service.graphite
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
            s.sendall(f"before.line 1 {t}\n".encode())
            chunk = b"x" * (1 << 20)
            for _ in range(20):  # 20 MiB without a newline
                s.sendall(chunk)
            s.sendall(f" 1 {t}\nafter.line 2 {t}\n".encode())
        names = app.state.service.backend.pipeline.registry.names
        wait_for("both good lines", lambda: len(names) == 2, timeout=20)
        assert sorted(names) == ["after.line", "before.line"]
        huge = [r for r in caplog.records if "longer than 64 KiB" in r.getMessage()]
        assert len(huge) == 1 and "line 2" in huge[0].getMessage(), [r.getMessage() for r in caplog.records]
        assert 'stormeye_points_rejected_total{reason="invalid"} 1.0' in c.get("/metrics").text


def test_graphite_beyond_this_machine_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMEYE_API_TOKEN")}
    env.update(
        STORMEYE_GRAPHITE_PORT="0", STORMEYE_GRAPHITE_HOST="0.0.0.0", STORMEYE_DATABASE_URL=f"sqlite:///{tmp_path}/x.db"
    )
    got = subprocess.run(
        [sys.executable, "-m", "stormeye.api.cli", "serve", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert got.returncode == 2, got.stderr
    assert "refusing to listen for Graphite on 0.0.0.0" in got.stderr and "--insecure" in got.stderr
