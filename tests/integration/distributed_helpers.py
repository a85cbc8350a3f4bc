"""Helpers for distributed-mode tests: a deployment of real ``stormeye worker`` processes, storm runners.

Imported by the tests as ``distributed_helpers`` (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 60.0, every: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something true; fail with ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class Deployment:
    env: dict[str, str]
    tmp: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _rt: Any = None
    _dispatcher: Any = None

    @property
    def settings(self) -> Any:
        from stormeye.workers.settings import Settings

        return Settings(**{k[len("STORMEYE_") :].lower(): v for k, v in self.env.items() if k.startswith("STORMEYE_")})

    @property
    def runtime(self) -> Any:
        from stormeye.workers.distributed import Runtime

        if self._rt is None:
            self._rt = Runtime(self.settings)
        return self._rt

    @property
    def dispatcher(self) -> Any:
        from stormeye.workers.celery_app import CeleryDispatcher, make_app

        if self._dispatcher is None:
            self._dispatcher = CeleryDispatcher(make_app(self.settings))
        return self._dispatcher

    def start_worker(self, concurrency: int = 1, wait: bool = True) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        log = open(self.tmp / f"worker{n}.log", "ab")  # noqa: SIM115 - the process writes it until it ends
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stormeye.api.cli",
                "worker",
                "--concurrency",
                str(concurrency),
                "--hostname",
                f"w{n}-{uuid.uuid4().hex[:6]}@%h",
                "--loglevel",
                "info",
            ],
            cwd=self.tmp,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        if wait:
            rt = self.runtime

            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"worker exited with {proc.returncode}: {self.log(n)[-3000:]}")
                return any(m.decode().endswith(f":{proc.pid}") for m in rt.r.zrange(rt.k("ready"), 0, -1))

            wait_for("the worker to be ready", ready, timeout=60)
        return proc

    def log(self, n: int) -> str:
        return (self.tmp / f"worker{n}.log").read_text(errors="replace")

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool processes at once, as a machine crash would."""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    # -- driving the pipeline ----------------------------------------------------------------

    def tick_until(self, t: float, timeout: float = 120.0) -> None:
        """Ask the workers (a real ``stormeye.tick`` task) to score up to the step of ``t``; wait for it.

        While waiting, a tick goes out every 5 s, as Celery beat would send them: the tick is what
        hands out again a step whose tasks were lost.
        """
        rt = self.runtime
        slot = int(t // rt.step)
        last = 0.0

        def scored() -> bool:
            nonlocal last
            if time.monotonic() - last > 5:
                self.dispatcher.tick(until=t)
                last = time.monotonic()
            return (rt.scored_slot() or -1) >= slot

        wait_for(f"step {slot} to be scored", scored, timeout=timeout)

    def accept(self, names: list[str], ts: np.ndarray, values: np.ndarray) -> int:
        res = self.runtime.accept(names, ts, values, self.dispatcher)
        assert len(res.late) == 0, "points refused as late"
        return int(res.accepted)


def run_storm_distributed(
    dep: Deployment,
    storm: Any,
    chunk_steps: int = 10,
    between: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """The storm through distributed mode as :func:`workers.demo.run_storm` runs it embedded (without finish).

    History is seeded, then every ``chunk_steps`` steps of points are accepted (queued for the
    workers) and the tick is asked to score them. Returns the points accepted per step slot.
    """
    rt = dep.runtime
    h = storm.history_steps
    # all of it, as the embedded demo loads it: the window store keeps its retention, the
    # seasonal history (5-minute means at 60 s) what is older
    rt.load_history(storm.names, storm.timestamps[:h], storm.values[:, :h])
    accepted: dict[int, int] = {}
    total = len(storm.timestamps)
    for k, lo in enumerate(range(h, total, chunk_steps)):
        hi = min(total, lo + chunk_steps)
        names, ts, vals = storm.points(lo, hi)
        dep.accept(names, ts, vals)
        for slot, n in zip(*np.unique(np.floor(ts / rt.step).astype(np.int64), return_counts=True)):
            accepted[int(slot)] = accepted.get(int(slot), 0) + int(n)
        if between is not None:
            between(k)
        dep.tick_until(float(storm.timestamps[hi - 1]))
    return accepted


def run_storm_embedded(storm: Any, settings: Any, database: Any) -> Any:
    """The reference: the embedded pipeline over the same storm, step by step, without finish."""
    from stormeye.workers.pipeline import Pipeline

    pipe = Pipeline(settings, database=database)
    h = storm.history_steps
    pipe.load_history(storm.names, storm.timestamps[:h], storm.values[:, :h])
    rows = pipe.register(storm.names)
    for j in range(h, len(storm.timestamps)):
        t = float(storm.timestamps[j])
        col = storm.values[:, j]
        ok = np.isfinite(col)
        pipe.store.append(rows[ok], np.full(int(ok.sum()), t), col[ok])
        pipe.tick(t)
    return pipe


def snapshot(db: Any) -> dict[str, Any]:
    """Everything a user sees of the incidents in a database, comparable across modes."""
    incidents = {
        i["id"]: {k: i[k] for k in ("status", "priority", "title", "root", "root_entity", "merged_into", "follows")}
        for i in db.list_incidents(limit=100_000, include_merged=True)
    }
    members = db.incident_members()
    events: list[tuple[str, str, float, str]] = []
    for iid in incidents:
        got = db.get_incident(iid)
        events += [(iid, e["kind"], e["at"], json.dumps(e["details"], sort_keys=True)) for e in got["events"]]
    return {"incidents": incidents, "members": members, "events": sorted(events), "counts": db.counts()}


class OwnRedis:
    """A redis-server process of the test's own on a free port, to restart (with or without its data)."""

    def __init__(self, tmp: Path, persistence: bool = False) -> None:
        import shutil
        import socket

        server = shutil.which("redis-server")
        if server is None:
            raise AssertionError("redis-server is not installed: this test needs a real one to restart")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.argv = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        self.argv += ["--appendonly", "yes", "--appendfsync", "always"] if persistence else ["--save", ""]
        self.argv += ["--appendonly", "no"] if not persistence else []
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the server writes it until it ends
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def answers() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_for("redis-server to answer", answers, timeout=20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        """SIGKILL and start again: without persistence, everything Redis held is gone."""
        self.kill()
        self.start()
