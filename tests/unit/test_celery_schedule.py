"""Beat's tick fires just after each step ends (aligned to the epoch), not at a drifting phase."""

from datetime import UTC, datetime

import pytest

from stormeye.workers.celery_app import aligned, make_app
from stormeye.workers.settings import Settings


class At(aligned):
    def __init__(self, every: float, offset: float, now: float) -> None:
        super().__init__(every, offset)
        self._now = now

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)


def ts(x: float) -> datetime:
    return datetime.fromtimestamp(x, UTC)


def test_due_once_per_boundary_plus_offset() -> None:
    # boundaries at 60k + 5
    s = At(60, 5, now=1_000_000 * 60 + 4.0)  # 1 s before the boundary
    due, wait = s.is_due(ts(1_000_000 * 60 - 50))
    assert not due and wait == pytest.approx(1.0)
    s = At(60, 5, now=1_000_000 * 60 + 5.5)  # just after it
    due, wait = s.is_due(ts(1_000_000 * 60 - 50))
    assert due and wait == pytest.approx(59.5)
    due, _ = s.is_due(ts(1_000_000 * 60 + 5.2))  # already ran after this boundary
    assert not due


def test_the_app_ticks_on_the_step_with_the_grace() -> None:
    app = make_app(Settings(tick_s=60, grace_s=5, redis_prefix="x"))
    sched = app.conf.beat_schedule["tick"]["schedule"]
    assert isinstance(sched, aligned) and sched.every == 60 and sched.offset == pytest.approx(5.2)
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.task_default_queue == "x"
    assert app.conf.broker_transport_options["global_keyprefix"] == "x:celery:"
