"""A small simulated storm ticked part way, so that incidents are still open: for action tests."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from stormeye.sim.simulator import Storm, simulate_storm
from stormeye.workers.db import Database
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

STEP = 60


def small_storm(seed: int = 3, n_metrics: int = 240, n_incidents: int = 4) -> Storm:
    return simulate_storm(seed=seed, n_metrics=n_metrics, n_incidents=n_incidents, step=STEP, history_steps=600)


def run_part(storm: Storm, url: str, until: int | None = None, pipe: Pipeline | None = None) -> Pipeline:
    """Tick the storm's steps up to ``until`` (from where ``pipe`` stopped); nothing is resolved at the end."""
    settings = Settings(database_url=url, step_s=STEP)
    h = storm.history_steps
    if pipe is None:
        pipe = Pipeline(settings, database=Database(url))
        keep = max(0, h - settings.retention_points)
        pipe.load_history(storm.names, storm.timestamps[keep:h], storm.values[:, keep:h])
    rows = pipe.register(storm.names)
    first = h if pipe.last_scored is None else int(pipe.last_scored - storm.timestamps[0] // STEP) + 1
    for j in range(max(first, h), until or len(storm.timestamps)):
        t = float(storm.timestamps[j])
        col = storm.values[:, j]
        ok = col == col
        pipe.store.append(rows[ok], [t] * int(ok.sum()), col[ok])
        pipe.tick(t)
    return pipe


@pytest.fixture(scope="session")
def storm_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with the storm ticked 180 steps in: open incidents with several members."""
    path = tmp_path_factory.mktemp("storm") / "template.db"
    storm = small_storm()
    pipe = run_part(storm, f"sqlite:///{path}", until=storm.history_steps + 180)
    assert pipe.database is not None
    pipe.database.dispose()
    return path


@pytest.fixture()
def db_url(storm_template: Path, tmp_path: Path) -> str:
    """A copy of the template for one test."""
    shutil.copy(storm_template, tmp_path / "stormeye.db")
    return f"sqlite:///{tmp_path / 'stormeye.db'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
