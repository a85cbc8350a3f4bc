"""Distributed mode: the notifier as a Celery task, on Celery beat every ``STORMEYE_NOTIFY_INTERVAL_S``.

Any number of workers may run it at once: claims are unique in the database and deliveries are
leased, so each notification is sent once. Errors are logged and the next beat tries again; the
task never touches the tick's own tasks.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from stormeye.workers.celery_app import app
from stormeye.workers.db import Database
from stormeye.workers.notify.notifier import Notifier
from stormeye.workers.settings import get_settings

log = logging.getLogger("stormeye.notify")

_notifier: tuple[int, Notifier | None] | None = None


def notifier() -> Notifier | None:
    """This process's notifier (made after the fork: no connection shared between processes)."""
    global _notifier
    if _notifier is None or _notifier[0] != os.getpid():
        settings = get_settings()
        n = Notifier.from_settings(settings, Database(settings.database_url, migrate=False))
        _notifier = (os.getpid(), n)
    return _notifier[1]


@app.task(name="stormeye.notify_send", acks_late=False, ignore_result=True)
def notify_send() -> dict[str, Any]:
    """Decide, claim and deliver due notifications (a no-op without ``STORMEYE_NOTIFY_CONFIG``)."""
    try:
        n = notifier()
        return n.run() if n is not None else {}
    except Exception as exc:  # the next beat tries again
        log.exception("notification pass failed")
        return {"error": f"{type(exc).__name__}: {exc}"}
