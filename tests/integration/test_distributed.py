"""Distributed mode with real Celery workers on the real Redis and PostgreSQL: same incidents, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from stormeye.sim.simulator import simulate_storm
from stormeye.workers.db import Database
from stormeye.workers.pipeline import detect
from stormeye.workers.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def assert_every_point_scored(dep, accepted: dict[int, int]) -> None:  # type: ignore[no-untyped-def]
    """Every accepted point was in its step's window when that step was scored (per-shard records)."""
    rt = dep.runtime
    for slot, n in accepted.items():
        results = [rt.shard_result(slot, s) for s in range(rt.settings.shards)]
        assert all(results), f"step {slot} was not scored by every shard"
        scored_with_point = sum(r.with_newest for r in results)
        assert scored_with_point == n, f"step {slot}: {n} points accepted, {scored_with_point} scored"


@pytest.fixture(scope="module")
def storm():  # type: ignore[no-untyped-def]
    # three days of history: the seasonal reference reads two days of 5-minute means in both modes
    return simulate_storm(seed=0, n_metrics=300, n_incidents=4, history_steps=3 * 1440)


@pytest.fixture(scope="module")
def reference(storm, tmp_path_factory):  # type: ignore[no-untyped-def]
    from distributed_helpers import run_storm_embedded, snapshot

    url = f"sqlite:///{tmp_path_factory.mktemp('embedded') / 'ref.db'}"
    db = Database(url)
    pipe = run_storm_embedded(storm, Settings(database_url=url), db)
    # the seasonal reference did score: its history is there, and it judged some metrics seasonal
    det = detect(pipe.detector, pipe.store, np.arange(len(storm.names)), float(storm.timestamps[-1]), pipe.seasons)
    assert det.scores.raw.get("seasonal_scale") is not None and (det.scores.raw["kind"] == 1).any()
    snap = snapshot(db)
    db.dispose()
    return snap


def test_a_storm_gives_the_same_incidents_in_both_modes(deployment, storm, reference) -> None:  # type: ignore[no-untyped-def]
    from distributed_helpers import run_storm_distributed, snapshot

    deployment.start_worker(concurrency=2)
    accepted = run_storm_distributed(deployment, storm)
    got = snapshot(deployment.runtime.database)
    assert_every_point_scored(deployment, accepted)
    assert reference["incidents"], "the storm must produce incidents for this test to mean anything"
    assert got["incidents"] == reference["incidents"]
    assert got["members"] == reference["members"]
    assert got["events"] == reference["events"]
    assert got["counts"] == reference["counts"]


class Killer(threading.Thread):
    """Watches the running-task records and SIGKILLs a worker in the middle of a scoring task, once per
    entry of ``kinds``, in order.

    ``"whole"``: kill the worker and all its processes (then start a new worker, as a supervisor
    would); ``"pool"``: only the pool process running the task (the worker replaces it).
    """

    def __init__(self, dep, kinds: list[str]) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.dep, self.kinds = dep, kinds
        self.caught = 0  # kinds done: a kind is tried again until its kill lands before the task's commit
        self.done: list[dict[str, object]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self) -> None:
        rt = self.dep.runtime
        killed: set[str] = set()
        while self.caught < len(self.kinds) and not self.stop.is_set():
            running = rt.r.hgetall(rt.k("running"))
            # a record left by a task already killed is not a task in flight
            hit = next(
                (
                    (k.decode(), json.loads(v))
                    for k, v in running.items()
                    if k.startswith(b"score_shard:") and json.loads(v)["by"] not in killed
                ),
                None,
            )
            if hit is None:
                time.sleep(0.001)
                continue
            marker, info = hit
            _, shard, slot = marker.split(":")
            pid = int(info["by"].rsplit("-", 1)[1])
            whole = self.kinds[self.caught] == "whole"
            try:
                if whole:  # the worker whose pool process runs the task, with all its processes
                    proc = next(p for p in self.dep.workers if p.poll() is None and p.pid == os.getpgid(pid))
                    self.dep.kill_worker(proc)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, StopIteration):
                continue  # the task ended and its process is gone: not a kill mid-task
            killed.add(info["by"])
            self.done.append(
                {
                    "task": marker,
                    "kind": "whole" if whole else "pool",
                    # the task never reached its end: its running record is still there
                    "interrupted": rt.r.hexists(rt.k("running"), marker),
                    "before_commit": not rt.r.exists(rt.k("step", slot, "shard", shard)),
                }
            )
            if self.done[-1]["interrupted"] and self.done[-1]["before_commit"]:
                self.caught += 1
            if whole:
                self.dep.start_worker(concurrency=1)
            else:
                time.sleep(1.0)  # let the worker replace its pool process


def test_a_pool_process_then_a_whole_worker_killed_mid_scoring_lose_and_duplicate_nothing(
    deployment, storm, reference
) -> None:  # type: ignore[no-untyped-def]
    """One storm run, two crashes in it: a pool process killed in the middle of a scoring task (its
    worker replaces it, the task is handed out again at once), then a whole worker with all its
    processes (a new worker is started; its tasks come back after the visibility timeout). Every
    accepted point was scored, and the incidents, members, changes and counts equal the embedded run's.
    (The two kills were two storm runs before; one run checks both and saves a minute of CI.)"""
    from distributed_helpers import run_storm_distributed, snapshot, wait_for

    deployment.start_worker(concurrency=1)
    killer = Killer(deployment, kinds=["pool", "whole"])
    killer.start()
    accepted = run_storm_distributed(deployment, storm)
    killer.stop.set()
    killer.join(30)
    assert killer.error is None, killer.error
    assert killer.caught == 2, killer.done
    for kind in ("pool", "whole"):  # each kind caught at least once before its task committed
        assert any(k["interrupted"] and k["before_commit"] for k in killer.done if k["kind"] == kind), killer.done
    rt = deployment.runtime
    # every interrupted task was delivered again and ran to its end
    wait_for("interrupted tasks to finish", lambda: rt.r.hlen(rt.k("running")) == 0, timeout=60)
    assert_every_point_scored(deployment, accepted)
    got = snapshot(rt.database)
    assert got["incidents"] == reference["incidents"]
    assert got["members"] == reference["members"]
    assert got["events"] == reference["events"]  # no incident change twice
    assert got["counts"] == reference["counts"]  # no anomaly twice
    assert rt.pending() == 0
