"""Distributed mode's figures on this machine: real `stormeye worker` / `stormeye beat` processes,
the real Redis and a real database.

    python bench/distributed.py            # 100,000 metrics, a real 60 s tick (about 6 minutes)
    python bench/distributed.py --quick    # 10,000 metrics, 5 s tick (under a minute)
    python bench/distributed.py --json     # one JSON object instead of the table

What it measures:

- **points/s ingested**: points accepted (written to Redis and queued, as the HTTP API does
  after parsing) until two worker processes have stored all of them in the window store; and
  the accepting side alone.
- **metric-windows/s scored** with 1 and then 2 worker processes (one pool process each): the
  tick scores a run of steps of every metric (all shards, then correlate); windows/s = metrics
  x steps / wall time. Alongside, the cores the workers actually got (their CPU seconds per
  second, from /proc): on a shared machine other work takes the rest, and windows per worker
  CPU-second shows whether the design wastes any.
- **latency**: points arrive all through each step, stamped with their arrival time, as live
  senders would; Celery beat ticks every ``--tick`` seconds (aligned to the step, plus the grace);
  a point's latency is from its arrival to the commit of its step's incident update (the moment
  the step's anomalies and incident changes are in the database).
  A level shift on one service makes an incident open and grow during the run.
- **Redis memory per metric**: ``used_memory`` growth over the seeded metrics (windows,
  registry and shard lists), and the window key alone (``MEMORY USAGE``).

Redis: ``--redis-url`` or ``STORMEYE_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``);
all keys are under a fresh prefix and deleted at the end. Database: ``--database-url`` or
``STORMEYE_TEST_POSTGRES_URL`` (a fresh schema, dropped at the end), else a SQLite file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from stormeye.workers.celery_app import CeleryDispatcher, make_app
from stormeye.workers.distributed import Runtime, check_redis, wipe
from stormeye.workers.settings import Settings


def cpu_seconds(groups: list[int]) -> tuple[float, float]:
    """CPU time used so far by every process of these process groups, and time they spent ready
    to run but waiting for a CPU (taken by other work), in seconds (Linux /proc schedstat)."""
    ran = waited = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                pgrp = int(f.read().rsplit(")", 1)[1].split()[2])
            if pgrp not in groups:
                continue
            for task in os.listdir(f"/proc/{entry}/task"):
                with open(f"/proc/{entry}/task/{task}/schedstat") as f:
                    on_cpu, on_queue, _ = f.read().split()
                ran += int(on_cpu)
                waited += int(on_queue)
        except OSError:
            continue
    return ran / 1e9, waited / 1e9


def metric_names(n: int) -> list[str]:
    return [
        f'http_requests{{host="h{i % 5000}",region="r{i % 4}",route="/r{i % 37}",service="svc{i % 200}"}}'
        for i in range(n)
    ]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="stormeye-bench-"))
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.schema: str | None = None
        self.db_url = self._database()
        self.env = {
            "STORMEYE_MODE": "distributed",
            "STORMEYE_REDIS_URL": args.redis_url,
            "STORMEYE_DATABASE_URL": self.db_url,
            "STORMEYE_REDIS_PREFIX": self.prefix,
            "STORMEYE_SHARDS": str(args.shards),
            "STORMEYE_STEP_S": str(args.tick),
            "STORMEYE_TICK_S": str(args.tick),
            "STORMEYE_GRACE_S": str(args.grace),
            "STORMEYE_RETENTION_POINTS": "480",
        }
        self.settings = Settings(**{k[9:].lower(): v for k, v in self.env.items()})
        self.rt = Runtime(self.settings, client=check_redis(args.redis_url))
        self.dispatch = CeleryDispatcher(make_app(self.settings))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names = metric_names(args.metrics)
        self.rng = np.random.default_rng(0)

    def _database(self) -> str:
        if self.args.database_url:
            return str(self.args.database_url)
        pg = os.environ.get("STORMEYE_TEST_POSTGRES_URL")
        if not pg:
            return f"sqlite:///{self.tmp / 'bench.db'}"
        import sqlalchemy as sa

        base = pg.replace("postgresql://", "postgresql+psycopg://", 1)
        self.schema = f"bench_{uuid.uuid4().hex[:8]}"
        eng = sa.create_engine(base)
        with eng.begin() as c:
            c.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
        eng.dispose()
        return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{self.schema}"

    def log(self, msg: str) -> None:
        if not self.args.json:
            print(f"  … {msg}", file=sys.stderr, flush=True)

    # -- processes -------------------------------------------------------------------------

    def start(self, what: str) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        cmd = [sys.executable, "-m", "stormeye.api.cli", what]
        if what == "worker":
            cmd += ["--concurrency", "1", "--hostname", f"bench{n}@%h", "--loglevel", "warning"]
        else:
            cmd += ["--schedule", str(self.tmp / "beat-schedule"), "--loglevel", "warning"]
        proc = subprocess.Popen(
            cmd,
            cwd=self.tmp,
            env={**os.environ, **self.env},
            stdout=open(self.tmp / f"{what}{n}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        if what == "worker":
            end = time.time() + 90
            while not any(m.decode().endswith(f":{proc.pid}") for m in self.rt.r.zrange(self.rt.k("ready"), 0, -1)):
                if proc.poll() is not None or time.time() > end:
                    raise SystemExit(f"worker did not start: {(self.tmp / f'worker{n}.log').read_text()[-2000:]}")
                time.sleep(0.1)
        return proc

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.procs = []

    def close(self) -> None:
        self.stop_all()
        wipe(self.rt.r, self.prefix)
        self.rt.close()
        if self.schema:
            import sqlalchemy as sa

            eng = sa.create_engine(self.db_url.split("?")[0])
            with eng.begin() as c:
                c.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            eng.dispose()

    # -- phases ----------------------------------------------------------------------------

    def seed(self, end_slot: int, columns: int) -> dict[str, float]:
        """Register every metric and load ``columns`` steps of history ending at ``end_slot``."""
        step = self.settings.step_s
        before = int(self.rt.r.info("memory")["used_memory"])
        t0 = time.perf_counter()
        ts = (end_slot - columns + 1 + np.arange(columns)) * float(step)
        level = self.rng.uniform(50, 500, size=(len(self.names), 1))
        vals = level + self.rng.normal(size=(len(self.names), columns)) * 0.05 * level
        self.rt.load_history(self.names, ts, vals)
        self.level = level.ravel()
        after = int(self.rt.r.info("memory")["used_memory"])
        rows = [self.rt.registry.row(n) for n in self.names[:200]]
        return {
            "seed_s": time.perf_counter() - t0,
            "redis_bytes_per_metric": (after - before) / len(self.names),
            "window_bytes_per_metric": self.rt.store.memory_usage(rows) / len(rows),
        }

    def wait_scored(self, slot: int, timeout: float) -> None:
        end = time.time() + timeout
        while (self.rt.scored_slot() or -1) < slot:
            if time.time() > end:
                raise SystemExit(f"step {slot} not scored within {timeout:.0f} s: {self.rt.health()}")
            time.sleep(0.02)

    def ingest(self, first_slot: int, steps: int) -> dict[str, float]:
        """Accept one point per metric per step, as the API would; time until the workers stored them all."""
        step = self.settings.step_s
        batch = 10_000
        stored0 = self.rt.stats().get("points_stored", 0)
        n = 0
        t0 = time.perf_counter()
        for k in range(steps):
            t = (first_slot + k) * float(step)
            vals = self.level * (1 + 0.05 * self.rng.normal(size=len(self.names)))
            for lo in range(0, len(self.names), batch):
                hi = min(lo + batch, len(self.names))
                res = self.rt.accept(self.names[lo:hi], np.full(hi - lo, t), vals[lo:hi], self.dispatch)
                n += res.accepted
        accepted_s = time.perf_counter() - t0
        while self.rt.pending():
            time.sleep(0.005)
        total_s = time.perf_counter() - t0
        assert self.rt.stats().get("points_stored", 0) - stored0 == n, "points were lost"
        return {"points": n, "points_per_s": n / total_s, "accept_points_per_s": n / accepted_s}

    def score(self, first_slot: int, steps: int) -> tuple[float, float, float]:
        """Windows/s while the tick scores ``steps`` steps of every metric (already stored), the
        cores the workers got meanwhile (CPU seconds per second) and how many more they waited
        for (ready to run while other work on the machine had the CPUs).

        One step first, untimed: a process new to the deployment loads the metric names once.
        """
        self.dispatch.tick(until=first_slot * float(self.settings.step_s))
        self.wait_scored(first_slot, 600)
        first_slot += 1
        steps -= 1
        groups = [p.pid for p in self.procs if p.poll() is None]
        (ran0, waited0), t0 = cpu_seconds(groups), time.perf_counter()
        self.dispatch.tick(until=(first_slot + steps - 1) * float(self.settings.step_s))
        self.wait_scored(first_slot + steps - 1, 600)
        wall = time.perf_counter() - t0
        ran, waited = cpu_seconds(groups)
        return len(self.names) * steps / wall, (ran - ran0) / wall, (waited - waited0) / wall

    def latency(self, steps: int) -> dict[str, Any]:
        """Live: points arrive all through each step; beat ticks; latency = arrival → step committed."""
        step = self.settings.step_s
        rt = self.rt
        arrivals: list[tuple[int, float, int]] = []  # (slot, arrival time, points)
        shifted = np.array([i for i, n in enumerate(self.names) if 'service="svc7"' in n])
        # steps between the throughput runs and now hold no points: score them first, so the live
        # run measures a deployment that keeps up, not one catching up
        self.dispatch.tick(until=time.time() - step)
        self.wait_scored(int(time.time() // step) - 1, 600)
        start_slot = int(time.time() // step) + 1
        time.sleep(max(0.0, start_slot * step - time.time()))
        slices = 20
        for k in range(steps):
            slot = start_slot + k
            order = self.rng.permutation(len(self.names))
            parts = np.array_split(order, slices)
            vals = self.level * (1 + 0.05 * self.rng.normal(size=len(self.names)))
            if k >= 1:
                vals[shifted] *= 1.8  # the incident: a level shift on one service
            for j, part in enumerate(parts):
                due = slot * step + (j + self.rng.random()) * step / slices
                time.sleep(max(0.0, due - time.time()))
                t = time.time()
                if int(t // step) != slot:
                    continue  # fell behind: the point belongs to the next step
                part = np.sort(part)
                res = rt.accept([self.names[i] for i in part], np.full(len(part), t), vals[part], self.dispatch)
                arrivals.append((slot, t, res.accepted))
        last = start_slot + steps - 1
        self.wait_scored(last, 10 * step + 120)
        done = {int(k): float(v) for k, v in rt.r.hgetall(rt.k("tick", "done")).items()}
        lat = np.concatenate([np.full(n, done[s] - t) for s, t, n in arrivals if n])
        proc = [done[s] - (s + 1) * step for s in range(start_slot, last + 1)]
        changes = self.rt.database.count_incidents()
        return {
            "latency_p50_s": float(np.percentile(lat, 50)),
            "latency_p99_s": float(np.percentile(lat, 99)),
            "latency_max_s": float(lat.max()),
            "step_done_after_step_end_s": [round(p, 2) for p in proc],
            "latency_points": len(lat),
            "incidents": changes,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 metrics and a 5 s tick: under a minute")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--metrics", type=int, default=None, help="metrics (default 100,000; --quick 10,000)")
    ap.add_argument("--tick", type=int, default=None, help="tick = step, seconds (default 60; --quick 5)")
    ap.add_argument("--grace", type=float, default=1.0, help="seconds a tick waits after its step ends")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--latency-steps", type=int, default=None, help="live steps measured (default 3; --quick 2)")
    ap.add_argument("--redis-url", default=os.environ.get("STORMEYE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    args.metrics = args.metrics or (10_000 if args.quick else 100_000)
    args.tick = args.tick or (5 if args.quick else 60)
    args.latency_steps = args.latency_steps or (2 if args.quick else 3)
    score_steps = 6 if args.quick else 5  # the first of each run warms up, untimed

    b = Bench(args)
    out: dict[str, Any] = {"metrics": args.metrics, "tick_s": args.tick, "step_s": args.tick, "shards": args.shards}
    # other work on the machine skews every figure: say how busy it was
    out["load_average_at_start"] = round(os.getloadavg()[0], 2)
    t_start = time.perf_counter()
    try:
        step = args.tick
        # history, then 2 x score_steps steps of points just before now: ingested, then scored
        # as fast as the workers can; then the live run goes on from there in real time
        hist_end = int(time.time() // step) - 2 * score_steps - 2
        b.log(f"seeding {args.metrics:,} metrics with 241 steps of history")
        out.update(b.seed(hist_end, 241))
        b.start("worker")
        second = b.start("worker")
        b.log("ingest with 2 worker processes")
        out.update(b.ingest(hist_end + 1, 2 * score_steps))
        os.killpg(second.pid, signal.SIGTERM)  # a warm shutdown: it finishes what it holds
        second.wait(60)
        b.log(f"scoring {score_steps} steps with 1 worker process")
        (
            out["windows_per_s_1_worker"],
            out["worker_cores_used_1_worker"],
            out["worker_cores_waited_1_worker"],
        ) = b.score(hist_end + 1, score_steps)
        b.start("worker")
        b.log(f"scoring {score_steps} steps with 2 worker processes")
        (
            out["windows_per_s_2_workers"],
            out["worker_cores_used_2_workers"],
            out["worker_cores_waited_2_workers"],
        ) = b.score(hist_end + 1 + score_steps, score_steps)
        out["scaling_2_vs_1"] = out["windows_per_s_2_workers"] / out["windows_per_s_1_worker"]
        # what the design does with the CPU it gets, independent of other work on the machine
        out["windows_per_cpu_s_1_worker"] = out["windows_per_s_1_worker"] / max(out["worker_cores_used_1_worker"], 1e-9)
        out["windows_per_cpu_s_2_workers"] = out["windows_per_s_2_workers"] / max(
            out["worker_cores_used_2_workers"], 1e-9
        )
        b.start("beat")
        b.log(f"live run: {args.latency_steps} steps of {step} s with beat and 2 worker processes")
        out.update(b.latency(args.latency_steps))
    finally:
        b.close()
    out["target_scaling_met"] = out["scaling_2_vs_1"] >= 1.4
    out["target_latency_p99_s"] = args.tick + 5.0
    out["target_latency_met"] = out["latency_p99_s"] <= args.tick + 5.0
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    if args.json:
        print(json.dumps(out))
        return
    rows = [
        ("metrics / shards", f"{args.metrics:,} / {args.shards}"),
        ("points/s ingested (accept → stored, 2 workers)", f"{out['points_per_s']:,.0f}"),
        ("points/s accepted (the API's side alone)", f"{out['accept_points_per_s']:,.0f}"),
        ("metric-windows/s scored, 1 worker process", f"{out['windows_per_s_1_worker']:,.0f}"),
        ("metric-windows/s scored, 2 worker processes", f"{out['windows_per_s_2_workers']:,.0f}"),
        ("scaling 2 vs 1 (target ≥ 1.4)", f"{out['scaling_2_vs_1']:.2f}"),
        (
            "cores the workers got, 1 / 2 workers",
            f"{out['worker_cores_used_1_worker']:.2f} / {out['worker_cores_used_2_workers']:.2f}",
        ),
        (
            "cores the workers waited for (others had them)",
            f"{out['worker_cores_waited_1_worker']:.2f} / {out['worker_cores_waited_2_workers']:.2f}",
        ),
        (
            "windows per worker CPU-second, 1 / 2 workers",
            f"{out['windows_per_cpu_s_1_worker']:,.0f} / {out['windows_per_cpu_s_2_workers']:,.0f}",
        ),
        (f"latency p50, tick {args.tick} s", f"{out['latency_p50_s']:.1f} s"),
        (f"latency p99 (target ≤ {args.tick + 5} s)", f"{out['latency_p99_s']:.1f} s"),
        ("latency max", f"{out['latency_max_s']:.1f} s"),
        ("step committed after the step ended", ", ".join(f"{p:.1f} s" for p in out["step_done_after_step_end_s"])),
        ("Redis memory per metric (all keys)", f"{out['redis_bytes_per_metric']:,.0f} B"),
        ("Redis memory per metric (window key)", f"{out['window_bytes_per_metric']:,.0f} B"),
        ("load average at start (other work on the machine)", f"{out['load_average_at_start']}"),
        ("bench seconds", f"{out['seconds']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"stormeye distributed bench ({os.cpu_count()} cores)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v:>14}")


if __name__ == "__main__":
    main()
