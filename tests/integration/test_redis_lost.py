"""Issue 31 item 1: a Redis that lost its data (restarted without persistence, or flushed) must not
misfile points, lose the tick, or stall distributed mode.

The registry's rows and the tick's committed state are in the database too; Redis' registry has an
epoch, and a process that finds it gone rebuilds the registry (same rows) and the tick from the
database before anything is registered or stored (workers/redis_store.py, workers/distributed.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distributed_helpers import Deployment, OwnRedis

from stormeye.workers.distributed import Runtime, wipe
from stormeye.workers.settings import Settings

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

STEP = 60


def _settings(redis_url: str, postgres_url: str, prefix: str) -> Settings:
    return Settings(
        mode="distributed",
        redis_url=redis_url,
        database_url=postgres_url,
        redis_prefix=prefix,
        shards=2,
        step_s=STEP,
    )


def test_registry_survives_a_wipe_same_rows_and_new_names_after_them(redis_url: str, postgres_url: str) -> None:
    """Two processes with cached rows; Redis loses the deployment's keys; a third process registers
    new names first: they must get rows after the old ones, and the old names keep their rows."""
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    s = _settings(redis_url, postgres_url, prefix)
    a, b = Runtime(s), Runtime(s)
    try:
        old = [f'cpu{{host="h{i}"}}' for i in range(30)]
        rows_a, new = a.registry.rows(old)
        assert list(rows_a) == list(range(30)) and new == old
        rows_b, _ = b.registry.rows(old[::-1])
        assert list(rows_b) == list(range(29, -1, -1))
        wipe(a.r, prefix)  # what a Redis restart without persistence does to this deployment
        c = Runtime(s)  # a process started after the loss: knows nothing
        fresh = [f'mem{{host="n{i}"}}' for i in range(10)]
        rows_c, new_c = c.registry.rows(fresh + old)
        assert list(rows_c) == list(range(30, 40)) + list(range(30)), "a new name took an old name's row"
        assert new_c == fresh
        # the processes with a cache see the rebuilt registry and agree
        assert list(a.registry.rows(fresh)[0]) == list(range(30, 40))
        assert [b.registry.row(n) for n in old] == list(range(30))
        assert sorted(b.registry.shard_rows(0).tolist() + b.registry.shard_rows(1).tolist()) == list(range(40))
        assert c.registry.rebuilds == 1 and a.registry.rebuilds == 0
        c.close()
    finally:
        wipe(a.r, prefix)
        a.close()
        b.close()


def test_a_stale_process_cannot_write_under_rows_of_another_registry(redis_url: str, postgres_url: str) -> None:
    """The window store's append carries the epoch the rows came from: after a loss it writes nothing."""
    from stormeye.workers.redis_store import RegistryStale

    prefix = f"test-{uuid.uuid4().hex[:10]}"
    rt = Runtime(_settings(redis_url, postgres_url, prefix))
    try:
        rows, _ = rt.registry.rows(["cpu", "mem"])
        epoch = (rt.registry.epoch_key, rt.registry.epoch or "")
        assert rt.store.append(rows, np.array([60.0, 60.0]), np.array([1.0, 2.0]), epoch).accepted == 2
        wipe(rt.r, prefix)
        with pytest.raises(RegistryStale):
            rt.store.append(rows, np.array([120.0, 120.0]), np.array([1.0, 2.0]), epoch)
        assert rt.r.keys(f"{prefix}:w:*") == []
    finally:
        wipe(rt.r, prefix)
        rt.close()


@pytest.fixture()
def own_deployment(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Deployment, OwnRedis]]:
    own = OwnRedis(tmp_path, persistence=False)
    env = {
        "STORMEYE_MODE": "distributed",
        "STORMEYE_REDIS_URL": own.url,
        "STORMEYE_DATABASE_URL": postgres_url,
        "STORMEYE_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
        "STORMEYE_SHARDS": "2",
        "STORMEYE_STEP_S": str(STEP),
        "STORMEYE_VISIBILITY_TIMEOUT_S": "6",
        "STORMEYE_RESEND_AFTER_S": "5",
        "STORMEYE_INGEST_WAIT_S": "20",
    }
    dep = Deployment(env=env, tmp=tmp_path)
    try:
        yield dep, own
    finally:
        dep.stop()
        if dep._rt is not None:
            dep._rt.close()
        own.kill()


def test_redis_restarted_without_its_data_misfiles_nothing_and_the_tick_goes_on(own_deployment) -> None:  # type: ignore[no-untyped-def]
    """Real worker processes; Redis SIGKILLed and started again empty between two steps. Points sent
    afterwards, new names first, are stored each under its own metric, and the next steps are scored."""
    dep, own = own_deployment
    old = [f'cpu{{host="a{i}"}}' for i in range(40)]
    fresh = [f'mem{{host="b{j}"}}' for j in range(20)]
    value = {n: 1000.0 + i for i, n in enumerate(old)} | {n: 5000.0 + j for j, n in enumerate(fresh)}
    rt = dep.runtime
    t0 = float(np.floor(1_800_000_000 / STEP) * STEP)
    hist = t0 - STEP * np.arange(30, 0, -1)
    rt.load_history(old, hist, np.array([[value[n]] * len(hist) for n in old]))
    dep.start_worker(concurrency=2)
    n = len(old)
    assert dep.accept(old, np.full(n, t0), np.array([value[m] for m in old])) == n
    dep.tick_until(t0)  # the worker holds every old name's row now

    own.restart()  # no persistence: the registry, windows, tick and queue are gone
    # a worker started afterwards knows nothing (it numbered names from row 0 again); the first one keeps its
    # cache, or exits: Celery's worker may stop with "Unrecoverable error" when its broker restarts, and
    # its supervisor starts it again (docs/distributed.md)
    dep.start_worker(concurrency=1)
    dep._rt = None  # the API process after the loss (a new runtime, as after its own restart)
    dep._dispatcher = None
    rt = dep.runtime
    names = fresh + old  # new names first: a registry numbering from 0 again would give them old rows
    for k in (1, 2):
        t = t0 + k * STEP
        assert dep.accept(names, np.full(len(names), t), np.array([value[m] for m in names])) == len(names)
        dep.tick_until(t, timeout=90)

    check = Runtime(dep.settings)  # what anyone reads now
    try:
        rows = np.array([check.registry.row(m) for m in names])
        assert sorted(rows.tolist()) == list(range(60)), rows
        assert [check.registry.row(m) for m in old] == list(range(40)), "the old names moved rows"
        got = check.store.windows(rows, t0 + 2 * STEP, 2)
        want = np.array([value[m] for m in names])
        misfiled = [m for m, g in zip(names, got) if not np.array_equal(g, [want[names.index(m)]] * 2)]
        assert not misfiled, f"{len(misfiled)} metrics hold other values than sent, e.g. {misfiled[:3]}"
        health = check.health()
        assert health["scored_step"] >= t0 + 2 * STEP
        assert check.stats().get("redis_data_lost") == 1
        errors = check.r.xrange(check.k("errors"))
        assert not errors, errors
    finally:
        check.close()
