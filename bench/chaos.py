"""Faults under a steady feed, in distributed mode: is anything lost, misfiled, paged twice or stalled?

``python bench/chaos.py [--quick] [--json]``

Everything is a real process of the bench's own, on free ports with its own data directories: a
Redis (AOF on), a PostgreSQL (``initdb``), two ``stormeye worker`` processes, ``stormeye beat``,
``stormeye serve`` (distributed) and a webhook receiver for the notifications. A feeder posts
every metric's point each step over HTTP, as a sender would (a request answered 503 or refused is
sent again while its step is open; what is never accepted is counted as refused, not lost). Each
metric's values are its own (``1000 x i`` plus a little), so a point stored under another metric is
seen. Each phase has an outage on one service (its metrics rise by half for 3 steps), then a fault:

- ``worker_kill``: one worker SIGKILLed, a new one started;
- ``redis_restart_persistent``: Redis SIGKILLed and started again on its AOF;
- ``postgres_restart``: PostgreSQL stopped (immediate) and started again;
- ``redis_restart_lost``: Redis SIGKILLed and started again with its data deleted (no persistence).

Compared at the end (and right before the data loss, for what Redis held until then): every point
accepted with what the window store holds at its step (``points_lost``: missing, ``points_misfiled``:
another value; points accepted before Redis lost its data are ``points_wiped`` — that is what a
Redis without persistence loses, and docs/distributed.md says so), every outage with the incidents
(``false_incidents``: incidents on services without an outage; ``outages_missed``) and the pages
(``duplicate_pages``: more than one firing notification per outage); ``stalled``: the pipeline did
not catch up after the last fault; ``recovery_s`` per fault: from the fault until a step after it
was committed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

STEP = 2
SERVICES = ["checkout", "search", "cart", "auth", "pay", "ship"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(what: str, cond: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    end = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except Exception:
            got = None
        if got:
            return got
        if time.monotonic() > end:
            raise SystemExit(f"chaos: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Redis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.dir = root / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait("Redis", lambda: redis.Redis(port=self.port, socket_connect_timeout=1).ping(), 20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, keep_data: bool) -> None:
        self.kill()
        if not keep_data:
            for p in self.dir.iterdir():
                if p.name != "redis.log":
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
        self.start()


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, or in Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise SystemExit(f"chaos: {name} not found (install PostgreSQL's server package)")


class Postgres:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.dir = root / "pg"
        self.dir.mkdir()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(root, "postgres")
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [
                *self.as_user,
                pg_bin("initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        argv = [
            *self.as_user,
            pg_bin("pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.dir / "pg.log"),
            "-o",
            opts,
        ]
        subprocess.run([*argv, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop("immediate")
        self.start()


class Receiver:
    """A webhook receiver: every notification's body, as received."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("content-length", 0))
                with contextlib.suppress(ValueError):
                    outer.bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Chaos:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.root = Path(tempfile.mkdtemp(prefix="stormeye-chaos-"))
        os.chmod(self.root, 0o755)
        self.per_service = 10 if quick else 50
        from stormeye.grouping.names import normalize

        # canonical names (labels sorted), as the workers register what the feeder posts
        self.names = [
            normalize(f'latency_ms{{service="{s}",instance="{s}-{k}"}}')
            for s in SERVICES
            for k in range(self.per_service)
        ]
        self.service_of = {n: SERVICES[i // self.per_service] for i, n in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sent: dict[tuple[int, int], tuple[float, float]] = {}  # (metric index, slot) -> (value, accepted at)
        self.refused = 0
        self.outages: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.loss_at: float | None = None
        self.checked: dict[tuple[int, int], str] = {}  # (metric, slot) -> ok | lost | misfiled | wiped
        self.stop_feed = threading.Event()
        self.active_outage: tuple[str, int, int] | None = None

    # -- processes ---------------------------------------------------------------------------

    def start(self) -> None:
        self.redis = Redis(self.root)
        self.pg = Postgres(self.root)
        self.receiver = Receiver()
        notify = self.root / "notify.yml"
        notify.write_text(
            "route:\n  receiver: hook\n  group_wait: 2s\n  group_interval: 1h\n  repeat_interval: 24h\n"
            f"receivers:\n  - name: hook\n    webhook_configs: [{{url: 'http://127.0.0.1:{self.receiver.port}/'}}]\n"
        )
        self.http_port = free_port()
        self.env = {
            "STORMEYE_MODE": "distributed",
            "STORMEYE_REDIS_URL": self.redis.url,
            "STORMEYE_DATABASE_URL": self.pg.url,
            "STORMEYE_REDIS_PREFIX": "chaos",
            "STORMEYE_SHARDS": "2",
            "STORMEYE_STEP_S": str(STEP),
            "STORMEYE_TICK_S": str(STEP),
            "STORMEYE_GRACE_S": "0.6",
            "STORMEYE_VISIBILITY_TIMEOUT_S": "6",
            "STORMEYE_RESEND_AFTER_S": "4",
            "STORMEYE_INGEST_WAIT_S": "3",
            "STORMEYE_TASK_RETRIES": "30",
            "STORMEYE_NOTIFY_CONFIG": str(notify),
            "STORMEYE_NOTIFY_INTERVAL_S": "1",
        }
        from stormeye.workers.distributed import Runtime
        from stormeye.workers.settings import Settings

        self.settings = Settings(**{k[9:].lower(): v for k, v in self.env.items()})
        self.rt = Runtime(self.settings)
        # history: an hour of each metric's own level, so the outages stand out
        now_slot = math.floor(time.time() / STEP)
        hist = (now_slot - 240 + np.arange(240)) * float(STEP)
        rng = np.random.default_rng(0)
        base = np.array([1000.0 * i for i in range(len(self.names))])[:, None]
        self.rt.load_history(self.names, hist, base + rng.integers(0, 7, size=(len(self.names), len(hist))))
        for k in range(2):
            self.spawn(f"worker{k}", ["worker", "--concurrency", "1", "--hostname", f"chaos{k}-{os.getpid()}@%h"])
        self.spawn("beat", ["beat", "--schedule", str(self.root / "beat-schedule")])
        self.spawn("serve", ["serve", "--port", str(self.http_port)])
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=10)
        wait("serve", lambda: self.http.get("/healthz").status_code == 200, 60)
        wait("two workers", lambda: len(self.http.get("/healthz").json()["workers"]) >= 2, 60)

    def spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "stormeye.api.cli", *args],
            cwd=self.root,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)

    def close(self) -> None:
        self.stop_feed.set()
        for _name, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():  # nothing to keep: no long goodbyes
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.rt.close()
        self.redis.kill()
        with contextlib.suppress(Exception):
            self.pg.stop("immediate")
        self.receiver.server.shutdown()

    # -- the feed ------------------------------------------------------------------------------

    def value(self, i: int, slot: int) -> float:
        v = 1000.0 * i + (slot + i) % 7
        out = self.active_outage
        if out is not None and self.service_of[self.names[i]] == out[0] and out[1] <= slot < out[2]:
            v *= 1.5  # half again: far beyond the detectors' floors for every metric
        return v

    def feed(self) -> None:
        while not self.stop_feed.is_set():
            slot = math.floor(time.time() / STEP)
            t = slot * STEP
            body = [{"metric": n, "timestamp": t, "value": self.value(i, slot)} for i, n in enumerate(self.names)]
            deadline = t + STEP + float(self.env["STORMEYE_GRACE_S"])
            todo = list(range(len(body)))
            while todo and time.time() < deadline:
                try:
                    r = self.http.post("/api/v1/points", json=[body[i] for i in todo], timeout=5)
                except httpx.HTTPError:
                    time.sleep(0.2)
                    continue
                if r.status_code in (202, 422):
                    got = r.json()
                    bad = {int(e["where"].split("[")[1].rstrip("]")) for e in got["errors"]}
                    now = time.time()
                    for j, i in enumerate(todo):
                        if j not in bad:
                            self.sent[(i, slot)] = (body[i]["value"], now)
                    todo = [todo[j] for j in sorted(bad)]
                    if todo:
                        time.sleep(0.2)
                else:
                    time.sleep(0.2)
            self.refused += len(todo)
            self.stop_feed.wait(max(0.0, (slot + 1) * STEP + 0.05 - time.time()))

    # -- checks --------------------------------------------------------------------------------

    def scored(self) -> int:
        try:
            return self.rt.scored_slot() or -1
        except Exception:
            return -1

    def verify(self, upto_slot: int) -> None:
        """Compare every accepted point of steps up to ``upto_slot`` not yet checked with the window store."""
        todo = [k for k in self.sent if k[1] <= upto_slot and k not in self.checked]
        if not todo:
            return
        rt = self.rt
        rt.registry.sync()
        slots = sorted({s for _, s in todo})
        lo, hi = slots[0], slots[-1]
        rows = np.array([rt.registry.row(n) if rt.registry.known(n) else -1 for n in self.names])
        known = rows >= 0
        vals = np.full((len(self.names), hi - lo + 1), np.nan)
        if known.any():
            vals[known] = rt.store.windows(rows[known], hi * STEP, hi - lo + 1)
        for i, s in todo:
            sent, at = self.sent[(i, s)]
            if self.loss_at is not None and at < self.loss_at:
                self.checked[(i, s)] = "wiped"
                continue
            got = vals[i, s - lo]
            if not np.isfinite(got):
                self.checked[(i, s)] = "lost"
            elif abs(got - sent) > 1e-3 * max(1.0, abs(sent)):
                self.checked[(i, s)] = "misfiled"
            else:
                self.checked[(i, s)] = "ok"

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        began = time.time()
        self.start()
        feeder = threading.Thread(target=self.feed, daemon=True)
        feeder.start()
        phase_steps = 7 if self.quick else 20
        faults = ["worker_kill", "redis_restart_persistent", "postgres_restart", "redis_restart_lost"]
        for k, fault in enumerate(faults):
            first = math.floor(time.time() / STEP) + 1
            service = SERVICES[k % len(SERVICES)]
            self.active_outage = (service, first, first + 3)
            self.outages.append({"service": service, "start": first * STEP, "end": (first + 3) * STEP})
            wait("the fault's step", lambda first=first: time.time() >= (first + 4) * STEP + 0.3, 60)
            if fault == "redis_restart_lost":
                wait("the steps so far to be scored", lambda: self.scored() >= math.floor(time.time() / STEP) - 2, 30)
                self.verify(self.scored())
            fault_slot = math.floor(time.time() / STEP)
            t0 = time.time()
            if fault == "worker_kill":
                self.kill("worker0")
                self.spawn("worker0b", ["worker", "--concurrency", "1", "--hostname", f"chaos2-{os.getpid()}@%h"])
            elif fault == "redis_restart_persistent":
                self.redis.restart(keep_data=True)
            elif fault == "postgres_restart":
                self.pg.restart()
            else:
                self.loss_at = time.time()
                self.redis.restart(keep_data=False)
            self.restart_exited()  # as a supervisor would: start what exited
            got = self._recovered(fault_slot, 60)
            self.faults.append({"fault": fault, "recovery_s": None if got is None else round(got - t0, 1)})
            rest = first + phase_steps
            wait("the phase's end", lambda rest=rest: time.time() >= rest * STEP, 120)
        # catch up and settle
        last = math.floor(time.time() / STEP) - 1
        stalled = self._recovered(last - 1, 30) is None
        self.stop_feed.set()
        feeder.join(10)
        final = max(k[1] for k in self.sent)
        wait("the last step to be scored", lambda: self.scored() >= final, 30) if not stalled else None
        self.verify(final)
        time.sleep(4)  # group_wait and a notifier pass
        report = self.evaluate(stalled)
        report["wall_s"] = round(time.time() - began, 1)
        (self.root / "pages.json").write_text(json.dumps(self.receiver.bodies))
        return report

    def restart_exited(self) -> None:
        args = {
            "worker1": ["worker", "--concurrency", "1", "--hostname", f"chaos1r-{os.getpid()}@%h"],
            "worker0b": ["worker", "--concurrency", "1", "--hostname", f"chaos2r-{os.getpid()}@%h"],
            "beat": ["beat", "--schedule", str(self.root / "beat-schedule")],
            "serve": ["serve", "--port", str(self.http_port)],
        }
        for name, argv in args.items():
            p = self.procs.get(name)
            if p is not None and p.poll() is not None:
                self.spawn(name, argv)

    def _recovered(self, slot: int, timeout: float) -> float | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.scored() > slot:
                return time.time()
            self.restart_exited()
            time.sleep(0.2)
        return None

    def evaluate(self, stalled: bool) -> dict[str, Any]:
        from stormeye.workers.db import Database

        counts = {k: 0 for k in ("ok", "lost", "misfiled", "wiped")}
        for v in self.checked.values():
            counts[v] += 1
        db = Database(self.pg.url)
        incidents = db.list_incidents(limit=10_000, include_merged=False)
        services: dict[str, set[str]] = {}
        for inc in incidents:
            got = db.get_incident(inc["id"]) or {"members": []}
            services[inc["id"]] = {self.service_of.get(m["metric"], "?") for m in got["members"]}
        db.dispose()
        outage_services = {o["service"] for o in self.outages}
        false_incidents = [i for i, s in services.items() if not (s & outage_services)]
        missed = [o for o in self.outages if not any(o["service"] in s for s in services.values())]
        firing: dict[str, int] = {}
        for body in self.receiver.bodies:
            if body.get("status") == "firing":
                for a in body.get("alerts", []):
                    svc = a.get("labels", {}).get("service") or a.get("labels", {}).get("root_service") or "?"
                    firing[svc] = firing.get(svc, 0) + 1
        dup = sum(max(0, firing.get(o["service"], 0) - 1) for o in self.outages)
        for o in self.outages:
            o["incidents"] = sorted(i for i, s in services.items() if o["service"] in s)
            o["pages"] = firing.get(o["service"], 0)
        stats = self.rt.stats()
        return {
            "quick": self.quick,
            "metrics": len(self.names),
            "points_accepted": len(self.sent),
            "points_checked": counts["ok"] + counts["lost"] + counts["misfiled"],
            "points_lost": counts["lost"],
            "points_misfiled": counts["misfiled"],
            "points_wiped": counts["wiped"],
            "points_refused": self.refused,
            "outages": len(self.outages),
            "outages_missed": len(missed),
            "incidents": len(incidents),
            "false_incidents": len(false_incidents),
            "pages": sum(firing.values()),
            "duplicate_pages": dup,
            "stalled": stalled,
            "faults": self.faults,
            "outage_detail": self.outages,
            "dead_letters": len(self.rt.dead_letters(10_000)),
            "steps_dead": stats.get("steps_dead", 0),
            "recovery_s": max((f["recovery_s"] or 1e9) for f in self.faults),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer metrics and shorter phases (CI)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    args = ap.parse_args()
    chaos = Chaos(args.quick)
    try:
        report = chaos.run()
    finally:
        chaos.close()
        if not args.keep:
            shutil.rmtree(chaos.root, ignore_errors=True)
        else:
            print(f"chaos: logs in {chaos.root}", file=sys.stderr)
    report["ok"] = (
        report["points_lost"] == 0
        and report["points_misfiled"] == 0
        and report["duplicate_pages"] == 0
        and report["false_incidents"] == 0
        and not report["stalled"]
        and report["recovery_s"] <= 60
    )
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:>18}: {v}")
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
