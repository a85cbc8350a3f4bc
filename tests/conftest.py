"""Shared fixtures: real PostgreSQL and Redis from the environment, never mocks.

``STORMEYE_TEST_POSTGRES_URL`` and ``STORMEYE_TEST_REDIS_URL`` name the servers. Outside CI a
test that needs a missing one is skipped with the reason printed; in CI (``CI`` set) it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

IN_CI = bool(os.environ.get("CI"))

# no timings in tests: hypothesis' per-example deadline fails property tests on a loaded machine
settings.register_profile("stormeye", deadline=None)
settings.load_profile("stormeye")

#: modules whose tests run real Celery workers (or their own Redis): README's test command runs the
#: suite on three pytest-xdist processes with ``--dist loadgroup``, and these share one of them, so
#: two deployments of worker processes never compete for the machine's two cores at once. (The
#: schemathesis run, tests/integration/test_schema_fuzz.py, gives all its cases one node id, which
#: loadgroup runs none of: README's command runs that file on its own, after the rest.)
CELERY_MODULES = {
    "test_distributed",
    "test_distributed_actions",
    "test_distributed_edges",
    "test_distributed_idempotency",
    "test_edges_distributed",
    "test_noise_distributed",
    "test_notify_distributed",
    "test_page_distributed",
    "test_poison_health",
    "test_redis_lost",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
        if name in CELERY_MODULES or "deployment" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("celery"))


def _need(var: str, what: str) -> str:
    url = os.environ.get(var)
    if url:
        return url
    msg = f"{var} is not set: this test needs a real {what}"
    if IN_CI:
        pytest.fail(msg + " (CI must provide it)")
    pytest.skip(msg)


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh schema in the test PostgreSQL database, dropped afterwards."""
    url = _need("STORMEYE_TEST_POSTGRES_URL", "PostgreSQL server")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:10]}"
    base = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(base)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # a configured but unreachable server is a failure, not a skip
        pytest.fail(f"cannot reach PostgreSQL at {url}: {exc}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture()
def redis_url() -> str:
    url = _need("STORMEYE_TEST_REDIS_URL", "Redis server")
    import redis

    try:
        redis.Redis.from_url(url).ping()
    except Exception as exc:
        pytest.fail(f"cannot reach Redis at {url}: {exc}")
    return url


@pytest.fixture()
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'stormeye.db'}"
