"""Embedded mode: the notifier in its own thread, woken after each tick, so it never slows the tick."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from stormeye.workers.notify.notifier import Notifier

log = logging.getLogger("stormeye.notify")


class NotifyLoop:
    """Runs :meth:`Notifier.run` every ``interval_s`` and whenever :meth:`wake` is called; errors are logged."""

    def __init__(self, notifier: Notifier, interval_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.notifier = notifier
        self.interval_s = interval_s
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.errors = 0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stormeye-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.notifier.run(self.clock())
                self.runs += 1
            except Exception:  # the database may be away for a moment: the next pass tries again
                self.errors += 1
                log.exception("notification pass failed; retrying in %g s", self.interval_s)
