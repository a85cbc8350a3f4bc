"""Helpers for notification tests: a real local HTTP receiver, incidents written to a real database.

Imported by the tests as ``notify_helpers`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from stormeye.grouping.incidents import Incident, Member
from stormeye.grouping.names import parse
from stormeye.grouping.report import root_service, shared_scope
from stormeye.workers.db import Database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpReceiver:
    """A small HTTP server on 127.0.0.1 that records every JSON body posted to it.

    ``fail(n, status)`` makes the next ``n`` requests answer ``status`` (a receiver that is down
    and then recovers); ``delay_s`` makes every answer slow.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.lock = threading.Lock()
        self.failures = 0
        self.fail_status = 500
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                with outer.lock:
                    failing = outer.failures > 0
                    if failing:
                        outer.failures -= 1
                    else:
                        try:
                            body: Any = json.loads(raw) if raw else None
                        except json.JSONDecodeError:
                            body = raw.decode(errors="replace")
                        outer.requests.append((self.path, body))
                status = outer.fail_status if failing else 200
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError):  # the client gave up waiting (a timeout test)
                    self.wfile.write(b'{"status": "ok"}' if status == 200 else b'{"error": "down"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, n: int, status: int = 500) -> None:
        with self.lock:
            self.failures, self.fail_status = n, status

    def bodies(self, path: str | None = None) -> list[Any]:
        with self.lock:
            return [b for p, b in self.requests if path is None or p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def incident(
    iid: str,
    opened_at: float,
    metrics: list[str],
    status: str = "open",
    priority: int = 3,
    follows: str | None = None,
    resolved_at: float | None = None,
    root: str | None = None,
    kpi: bool = False,
    title: str | None = None,
) -> Incident:
    """An incident as the tracker makes it, with one member anomaly per metric."""
    members = {
        (mt, opened_at): Member(mt, opened_at, opened_at + 60, 0.9 - 0.01 * i, opened_at, 1, True, opened_at,
                                {} if i == 0 else {"to": metrics[0], "weight": 0.8, "name": 0.8, "shape": 0.6})
        for i, mt in enumerate(metrics)
    }  # fmt: skip
    return Incident(
        id=iid,
        opened_at=opened_at,
        updated_at=resolved_at or opened_at,
        status=status,
        resolved_at=resolved_at,
        follows=follows,
        members=members,
        priority=priority,
        priority_score=10.0,
        priority_parts={"kpi": 1.0 if kpi else 0.0},
        title=title or f"{len(metrics)} metrics of {iid}",
        root=root or metrics[0],
        root_entity=None,
        # the service as the tracker decides it (the notifier reads the stored one)
        root_service=root_service(
            parse(root or metrics[0]), shared_scope(metrics, {x: parse(x) for x in metrics}), None
        ),
    )


def save(db: Database, *incidents: Incident) -> None:
    db.save_tick([], list(incidents), [])


def set_status(db: Database, iid: str, status: str) -> None:
    """What issue 19's acknowledge action does: only the status column changes."""
    from sqlalchemy import update

    from stormeye.workers import models as m

    with db.sessions.begin() as s:
        s.execute(update(m.Incident).where(m.Incident.id == iid).values(status=status))


@pytest.fixture()
def receiver():  # type: ignore[no-untyped-def]
    r = HttpReceiver()
    yield r
    r.stop()


@pytest.fixture()
def db(sqlite_url):  # type: ignore[no-untyped-def]
    d = Database(sqlite_url)
    yield d
    d.dispose()
