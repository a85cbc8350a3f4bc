"""The Celery tasks of distributed mode: thin wrappers around :mod:`workers.distributed`.

Each task retries with exponential backoff (1 s doubling to 60 s, jittered, up to
``STORMEYE_TASK_RETRIES`` times) when Redis or the database fails; an ingest batch that still
cannot be stored is dead-lettered, never dropped. Errors of every task are recorded in the
capped stream ``<prefix>:errors`` for monitoring.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from celery import Task, signals
from sqlalchemy.exc import DBAPIError, OperationalError

from stormeye.workers.celery_app import CeleryDispatcher, app
from stormeye.workers.distributed import Runtime
from stormeye.workers.settings import get_settings

log = logging.getLogger("stormeye.tasks")

TRANSIENT = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OperationalError, DBAPIError)

_runtime: Runtime | None = None
_runtime_pid: int | None = None


def runtime() -> Runtime:
    """This process's runtime (made after the fork, so no connection is shared between processes)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = Runtime(get_settings(mode="distributed"))
        _runtime_pid = os.getpid()
    return _runtime


dispatcher = CeleryDispatcher(app)


class StormeyeTask(Task):
    autoretry_for = TRANSIENT
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    acks_late = True
    reject_on_worker_lost = True
    max_retries = get_settings().task_retries

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        with contextlib.suppress(redis.RedisError):
            rt = runtime()
            rt.r.hincrby(rt.k("stats"), "task_retries", 1)
        log.warning("%s%r will be retried: %s: %s", self.name, tuple(args), type(exc).__name__, exc)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        try:
            rt = runtime()
            rt.r.xadd(
                rt.k("errors"),
                {
                    "task": self.name,
                    "args": json.dumps(args),
                    "error": f"{type(exc).__name__}: {exc}",
                    "at": time.time(),
                },
                maxlen=10_000,
                approximate=True,
            )
        except redis.RedisError:
            log.exception("cannot record the failure of %s%r", self.name, args)


@app.task(base=StormeyeTask, name="stormeye.ingest", bind=True)
def ingest_batch(self: Task, batch_id: str) -> dict[str, int]:
    """Store one accepted batch of points in the window store."""
    rt = runtime()
    try:
        return rt.ingest(batch_id)
    except TRANSIENT:
        # a failure we saw is not a death of the worker: do not count it towards "poison"
        with contextlib.suppress(redis.RedisError):
            rt.r.hincrby(rt.k("ingest", "batch", batch_id), "attempts", -1)
        if self.request.retries >= self.max_retries:
            rt.dead_letter_batch(batch_id, f"still failing after {self.request.retries} retries")
            return {"stored": 0, "dead": 1}
        raise


@app.task(base=StormeyeTask, name="stormeye.score_shard")
def score_shard(shard: int, slot: int) -> dict[str, Any]:
    """Score one shard of metrics for one step."""
    return runtime().score_shard(shard, slot, dispatcher)


@app.task(base=StormeyeTask, name="stormeye.correlate")
def correlate_step(slot: int) -> dict[str, Any]:
    """Group one step's anomalies into incidents and store them."""
    return runtime().correlate(slot, dispatcher)


@app.task(base=StormeyeTask, name="stormeye.tick")
def tick(until: float | None = None, drive_only: bool = False) -> str:
    """Celery beat's tick: score every complete step not yet scored (``until`` a time: up to its step).

    ``drive_only``: only push the step in flight on (the pipeline's own follow-ups use it).
    """
    return runtime().advance(dispatcher, until=until, drive_only=drive_only)


# -- worker liveness: a heartbeat key per worker process, for `stormeye status` and tests ---------


def _beat_forever(name: str, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            runtime().heartbeat(name)
        except redis.RedisError:
            log.warning("heartbeat to Redis failed", exc_info=True)
        stop.wait(10)


_stop = threading.Event()


@signals.worker_process_init.connect
def _child_start(**_: Any) -> None:
    global _runtime
    _runtime = None  # never reuse the parent's connections
    name = f"{socket.gethostname()}-{os.getpid()}"
    threading.Thread(target=_beat_forever, args=(name, _stop), daemon=True, name="stormeye-heartbeat").start()
    # index the metric names now, not in the first correlate task (100,000 names take seconds)
    threading.Thread(target=_warm, daemon=True, name="stormeye-warm").start()


def _warm() -> None:
    try:
        runtime().warm()
    except Exception:  # a cold start only costs time; the first task will try again
        log.warning("warming up the name index failed", exc_info=True)


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    rt.r.zadd(rt.k("ready"), {f"{socket.gethostname()}:{os.getpid()}": time.time()})


@signals.worker_shutdown.connect
def _shutdown(**_: Any) -> None:
    _stop.set()
