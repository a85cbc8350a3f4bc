"""Real programs for the edge tests: ``stormeye serve``, Prometheus, Alertmanager, collectd.

Each runs as a process on a free port of 127.0.0.1, in the test's temporary directory, and is
killed at teardown. A program that is not installed fails the test in CI and skips it elsewhere.
Waits are bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest


def need(binary: str, package: str) -> str:
    """The path of ``binary``; a missing one fails in CI (``.ci/run`` installs it) and skips elsewhere."""
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path:
        return path
    msg = f"{binary} is not installed: apt-get install -y {package}"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI must install it, see .ci/run)")
    pytest.skip(msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Proc:
    """A program started in its own process group, its output in a log file, killed on stop()."""

    def __init__(self, name: str, argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = tmp / f"{name}.log"
        self._fh = self.log.open("wb")
        self.p = subprocess.Popen(
            argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=10)
        self._fh.close()


class Stormeye:
    """``stormeye serve`` on a free port (the real command, as users run it)."""

    def __init__(self, tmp: Path, env: dict[str, str], token: str | None = "test-token") -> None:
        self.port = free_port()
        self.token = token
        self.db = tmp / "stormeye.db"
        full = {"STORMEYE_DATABASE_URL": f"sqlite:///{self.db}", **env}
        if token:
            full["STORMEYE_API_TOKEN"] = token
        argv = [sys.executable, "-m", "stormeye.api.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = Proc("stormeye", argv, tmp, full)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, headers=self.headers(), timeout=10)
        wait_for("stormeye serve to answer /healthz", self._up)

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def _up(self) -> bool:
        if not self.proc.alive():
            pytest.fail(f"stormeye serve exited:\n{self.proc.output()}")
        return self.http.get("/healthz").status_code == 200

    def metric_names(self) -> list[str]:
        """The metric names stormeye registered (from its database)."""
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{self.db}")
        try:
            with engine.connect() as conn:
                return [r[0] for r in conn.execute(sa.text("SELECT name FROM metric"))]
        except sa.exc.OperationalError:
            return []
        finally:
            engine.dispose()

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()
