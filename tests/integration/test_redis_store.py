"""The Redis window store behaves exactly like the in-process one; the registry is shared and race-free."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormeye.workers.distributed import wipe
from stormeye.workers.redis_store import RedisMetricRegistry, RedisWindowStore, ShardConfigError
from stormeye.workers.store import MemoryWindowStore

pytestmark = pytest.mark.redis


@pytest.fixture()
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture()
def prefix(client: redis.Redis) -> Iterator[str]:
    p = f"test-{uuid.uuid4().hex[:10]}"
    yield p
    wipe(client, p)


batches = st.lists(
    st.tuples(
        st.integers(0, 5),  # how far the clock moves, in steps
        st.lists(st.tuples(st.integers(0, 9), st.integers(-25, 0), st.floats(-1e6, 1e6, width=32)), max_size=25),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=batches)
def test_same_windows_and_rejections_as_the_memory_store(client: redis.Redis, batches) -> None:  # type: ignore[no-untyped-def]
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    try:
        mem = MemoryWindowStore(step=10, length=12, capacity=2)
        red = RedisWindowStore(client, prefix, step=10, length=12)
        now = 10_000
        for move, pts in batches:
            now += 10 * move
            rows = np.array([p[0] for p in pts], dtype=np.int64)
            ts = np.array([now + 10 * p[1] + 3 for p in pts], dtype=np.float64)
            vals = np.array([p[2] for p in pts])
            a, b = mem.append(rows, ts, vals), red.append(rows, ts, vals)
            assert (a.accepted, a.too_old, a.merged) == (b.accepted, b.too_old, b.merged)
            assert mem.newest() == red.newest()
            for end in (now, now - 40, now + 20):
                np.testing.assert_array_equal(
                    mem.windows(np.arange(11), end, 8), red.windows(np.arange(11), end, 8), err_msg=f"end={end}"
                )
    finally:
        wipe(client, prefix)


class CountingConnection(redis.connection.Connection):
    """A real connection that counts its round trips (each send of packed commands is one: a
    pipeline sends all its commands at once). The server-wide command count is not usable here:
    every other client of the shared Redis adds to it."""

    sends = 0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def test_windows_of_ten_thousand_metrics_in_one_round_trip(redis_url: str, prefix: str) -> None:
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    store = RedisWindowStore(client, prefix, step=60, length=480)
    rows = np.arange(10_000)
    ts = np.arange(100) * 60.0 + 6e8
    vals = np.arange(10_000 * 100, dtype=np.float64).reshape(10_000, 100) % 977
    store.load(rows, ts, vals)
    before = CountingConnection.sends
    w = store.windows(rows, ts[-1], 60)
    used = CountingConnection.sends - before
    np.testing.assert_array_equal(w, vals[:, -60:].astype(np.float32))
    assert used == 2  # GET newest, then one pipeline of MGETs
    # compact: the packed ring plus Redis' own overhead per key
    per_metric = store.memory_usage(rows[:100]) / 100
    assert 4 + 4 * 480 <= per_metric < 2 * (4 + 4 * 480)
    client.close()


def test_retention_by_age_lets_silent_metrics_expire(client: redis.Redis, prefix: str) -> None:
    store = RedisWindowStore(client, prefix, step=1, length=4, ttl_s=1.0)
    store.append(np.array([0]), np.array([100.0]), np.array([1.0]))
    ttl = client.pttl(store.keys.window(0))
    assert 0 < ttl <= 1000


def test_rows_are_shared_and_never_given_twice(client: redis.Redis, prefix: str) -> None:
    names = [f'cpu{{host="h{i}"}}' for i in range(3000)]
    regs = [RedisMetricRegistry(client, prefix, shards=4) for _ in range(4)]
    rng = np.random.default_rng(0)
    orders = [list(rng.permutation(names)) for _ in regs]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda ro: ro[0].rows(ro[1]), zip(regs, orders)))
    maps = [dict(zip(order, rows.tolist())) for order, (rows, _) in zip(orders, results)]
    assert all(mp == maps[0] for mp in maps)
    assert sorted(maps[0].values()) == list(range(3000))
    assert sorted(n for _, new in results for n in new) == sorted(names)  # each name was new exactly once
    fresh = RedisMetricRegistry(client, prefix, shards=4)
    fresh.refresh()
    assert [fresh.names[r] for r in range(3000)] == [regs[0].names[r] for r in range(3000)]
    shard_rows = np.concatenate([fresh.shard_rows(s) for s in range(4)])
    assert sorted(shard_rows.tolist()) == list(range(3000))


def test_the_shard_count_of_a_deployment_cannot_change_silently(client: redis.Redis, prefix: str) -> None:
    RedisMetricRegistry(client, prefix, shards=4).check_shards()
    with pytest.raises(ShardConfigError, match="set up with 4 shards but STORMEYE_SHARDS=8"):
        RedisMetricRegistry(client, prefix, shards=8).check_shards()


def test_a_metric_lands_in_the_same_shard_in_every_process() -> None:
    from stormeye.workers.sharding import shards_of

    names = [f'revenue{{country="c{i}",device="d{i % 3}"}}' for i in range(500)]
    code = (
        "import sys, json; from workers.sharding import shards_of; "
        "print(json.dumps(shards_of(json.load(sys.stdin), 16).tolist()))"
    )

    outs = [
        subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(names), capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    assert json.loads(outs[0]) == json.loads(outs[1]) == shards_of(names, 16).tolist()


def test_bulk_load_equals_appending_every_point(client: redis.Redis, prefix: str) -> None:
    rng = np.random.default_rng(3)
    vals = rng.normal(size=(6, 30))
    vals[rng.random(vals.shape) < 0.2] = np.nan
    ts = 600.0 + 10 * np.arange(30)
    mem = MemoryWindowStore(step=10, length=16)
    red = RedisWindowStore(client, prefix, step=10, length=16)
    red.append(np.array([2]), np.array([500.0]), np.array([7.0]))  # a metric that already holds a point
    mem.append(np.array([2]), np.array([500.0]), np.array([7.0]))
    mem.load(np.arange(6), ts, vals)
    b = red.load(np.arange(6), ts, vals)
    assert (b.accepted, b.too_old) == (int(np.isfinite(vals[:, -16:]).sum()), 0)
    assert mem.newest() == red.newest()
    np.testing.assert_array_equal(mem.windows(np.arange(7), ts[-1], 16), red.windows(np.arange(7), ts[-1], 16))


def test_the_coarse_seasonal_history_is_the_same_in_redis(client: redis.Redis, prefix: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from stormeye.workers.distributed import Runtime
    from stormeye.workers.pipeline import Pipeline
    from stormeye.workers.settings import Settings

    # a 4-hour season at 60 s: two seasons do not fit the 480-point store, so 5-minute means are kept
    common = dict(step_s=60, season_s=14_400, retention_points=480)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'd.db'}", redis_prefix=prefix, **common)
    rt = Runtime(settings, client=client)
    pipe = Pipeline(Settings(database_url="sqlite://", **common))
    rng = np.random.default_rng(0)
    names = [f'cpu{{host="h{i}"}}' for i in range(5)]
    ts = 1_700_006_400.0 + 60.0 * np.arange(3 * 240)
    vals = rng.normal(50, 5, (5, len(ts)))
    vals[2, 100:130] = np.nan  # a gap: its buckets are unknown in both
    rt.load_history(names, ts, vals)
    pipe.load_history(names, ts, vals)
    assert rt.seasons is not None and pipe.seasons is not None
    # how far back anything was written (detect skips the read while no earlier day can be there)
    first = pipe.seasons.oldest()  # the oldest bucket the ring can hold of what was loaded
    assert first is not None and rt.seasons.oldest() == first and ts[0] <= first < ts[-1]
    rt.seasons.mark_oldest(first + 3600)  # a later one does not replace it
    assert rt.seasons.oldest() == first
    spans = [(ts[-1] - 300.0 * k, 40) for k in (0, 48, 100)]
    rows = np.arange(5)
    for a, b in zip(rt.seasons.segments(rows, spans), pipe.seasons.segments(rows, spans), strict=True):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).any()
    # the detector reads it the same way in both modes
    from stormeye.workers.pipeline import detect

    at = float(ts[-1])
    np.testing.assert_array_equal(
        detect(rt.detector, rt.store, rows, at, rt.seasons).scores.score,
        detect(pipe.detector, pipe.store, rows, at, pipe.seasons).scores.score,
    )
