"""The Celery application of distributed mode: Redis as broker, the tick on Celery beat.

``celery -A workers.celery_app worker`` and ``celery -A workers.celery_app beat`` work as
well as ``stormeye worker`` / ``stormeye beat`` (which check Redis, PostgreSQL and the shard
count first and run the migrations). Settings come from ``STORMEYE_*`` as everywhere.

Delivery: a task is acknowledged only after it finished (``acks_late``), and a task whose
worker process died is handed out again (``task_reject_on_worker_lost``; a worker killed as a
whole leaves its tasks unacknowledged in Redis, and they are delivered again after
``STORMEYE_VISIBILITY_TIMEOUT_S``). Every task is idempotent (:mod:`workers.distributed`), so
a second delivery changes nothing. Each worker process reserves ``STORMEYE_PREFETCH`` tasks
(1 by default: long scoring tasks should not queue behind each other on one process).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import schedstate, schedule

from stormeye.workers.settings import Settings, get_settings


class aligned(schedule):
    """Every ``every`` seconds at ``offset`` past a multiple of ``every`` (epoch-aligned).

    With the tick equal to the step and the offset equal to the grace, each step is scored as
    soon as it is complete, instead of up to a whole tick later.
    """

    def __init__(self, every: float, offset: float = 0.0, app: Any = None) -> None:
        super().__init__(run_every=timedelta(seconds=every), app=app)
        self.every = float(every)
        self.offset = float(offset) % self.every

    def _phase(self) -> tuple[float, float]:
        now = self.now().timestamp()
        since = (now - self.offset) % self.every
        return now - since, self.every - since  # the last boundary, seconds to the next

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return timedelta(seconds=self._phase()[1])

    def is_due(self, last_run_at: datetime) -> schedstate:
        boundary, wait = self._phase()
        due = last_run_at.timestamp() < boundary
        return schedstate(due, min(wait, self.every))

    def __reduce__(self) -> Any:
        return (self.__class__, (self.every, self.offset))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, aligned) and (other.every, other.offset) == (self.every, self.offset)

    def __hash__(self) -> int:
        return hash((self.every, self.offset))

    def __repr__(self) -> str:
        return f"<aligned every {self.every:g}s at +{self.offset:g}s>"


def configure(app: Celery, settings: Settings) -> None:
    prefix = settings.redis_prefix
    restore_every = max(1, min(10, int(settings.visibility_timeout_s / 4)))
    app.conf.update(
        broker_url=settings.redis_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "global_keyprefix": f"{prefix}:celery:",
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            # the restore scan holds a lock in Redis for a moment; a worker killed while holding it
            # would stop every other worker from restoring a dead worker's tasks for kombu's default
            # 5 minutes
            "unacked_mutex_expire": max(5, restore_every * 3),
        },
        task_default_queue=prefix,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=settings.prefetch,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule={
            "tick": {
                "task": "stormeye.tick",
                # a moment after the grace, so points stamped at the step's very end are in
                "schedule": aligned(settings.tick_s, settings.grace_s + min(0.2, settings.tick_s / 20)),
                "options": {"expires": settings.tick_s * 2},
            }
        },
    )


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("stormeye", include=["stormeye.workers.tasks", "stormeye.workers.notify.tasks"])
    configure(app, settings)
    if settings.notify_config:  # notifications (workers/notify/tasks.py): decided and sent on beat
        app.conf.beat_schedule["notify"] = {"task": "stormeye.notify_send", "schedule": settings.notify_interval_s}
    return app


class CeleryDispatcher:
    """Hands work to the queue of ``app`` by task name (callers need not import the tasks)."""

    def __init__(self, celery: Celery) -> None:
        self.app = celery

    def ingest(self, batch_id: str) -> None:
        self.app.send_task("stormeye.ingest", (batch_id,))

    def score_shard(self, shard: int, slot: int) -> None:
        self.app.send_task("stormeye.score_shard", (shard, slot))

    def correlate(self, slot: int) -> None:
        self.app.send_task("stormeye.correlate", (slot,))

    def tick(self, countdown: float = 0.0, until: float | None = None, drive_only: bool = False) -> None:
        self.app.send_task(
            "stormeye.tick", kwargs={"until": until, "drive_only": drive_only}, countdown=countdown or None
        )


app = make_app()
