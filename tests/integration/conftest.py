"""A distributed deployment for tests: real ``stormeye worker`` processes on the real Redis and PostgreSQL.

Each test gets its own Redis key prefix (so its own queue, window store and tick) and its own
PostgreSQL schema; everything is deleted afterwards. Workers are real processes started with
the ``stormeye worker`` command; tests kill them with SIGKILL like a crashed machine would.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed_helpers import Deployment


@pytest.fixture()
def deployment(redis_url: str, postgres_url: str, tmp_path: Path) -> Iterator[Deployment]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    env = {
        "STORMEYE_MODE": "distributed",
        "STORMEYE_REDIS_URL": redis_url,
        "STORMEYE_DATABASE_URL": postgres_url,
        "STORMEYE_REDIS_PREFIX": prefix,
        "STORMEYE_SHARDS": "2",
        "STORMEYE_STEP_S": "60",
        "STORMEYE_VISIBILITY_TIMEOUT_S": "6",
        "STORMEYE_RESEND_AFTER_S": "20",
        "STORMEYE_INGEST_WAIT_S": "60",
    }
    dep = Deployment(env=env, tmp=tmp_path)
    try:
        yield dep
    finally:
        dep.stop()
        from stormeye.workers.distributed import wipe

        if dep._rt is not None:
            dep._rt.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        wipe(client, prefix)
        client.close()
