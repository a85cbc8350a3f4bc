"""The one interface the HTTP API runs on, and the embedded implementation of it.

The API (:mod:`api.app` and its routes) talks to a :class:`Backend` and never asks which mode
runs: :func:`open_backend` picks the implementation once, at start, from ``STORMEYE_MODE``.

- :class:`EmbeddedBackend` (here): one :class:`~workers.pipeline.Pipeline` in this process,
  a lock around it, and the tick in a background thread every ``STORMEYE_TICK_S`` seconds.
- :class:`~workers.distributed.DistributedBackend`: the Redis :class:`~workers.distributed.Runtime`
  and the Celery dispatcher; Celery beat drives the tick. It needs the ``stormeye[distributed]``
  extra (celery, redis), imported only when that mode is chosen.

Both build their stages in one place (:func:`workers.pipeline.build_trackers`,
:class:`workers.pipeline.MetricStages`), so the same input gives the same incidents.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from stormeye.core.errors import StormeyeError, Unavailable
from stormeye.grouping.names import NameIndex
from stormeye.grouping.topology import Topology
from stormeye.workers.alerts import Alert
from stormeye.workers.db import Database
from stormeye.workers.pipeline import Pipeline, due_slot
from stormeye.workers.settings import Settings
from stormeye.workers.store import WindowStore

if TYPE_CHECKING:
    from stormeye.workers.notify.runner import NotifyLoop

T = TypeVar("T")
log = logging.getLogger("stormeye.tick")
#: steps the live tick scores under one hold of the lock
TICK_CHUNK = 50


class MetricRows(Protocol):
    """Registered metric names and their rows in the window store."""

    names: list[str]

    def __len__(self) -> int: ...

    def row(self, name: str) -> int: ...


class SeriesSource(Protocol):
    """What the page's series and shape search read: the registry, the window store, the step, the name index."""

    @property
    def registry(self) -> MetricRows: ...

    @property
    def store(self) -> WindowStore: ...

    @property
    def step(self) -> int: ...

    @property
    def index(self) -> NameIndex: ...

    @property
    def topology(self) -> Topology:
        """The running tracker's service topology (an action's tracker is built with it)."""
        ...


@dataclass
class Stored:
    """What became of validated points handed to the backend."""

    accepted: int
    late: int = 0  # kept as history only: their step was scored already (embedded mode)
    refused: list[tuple[int, str]] = field(default_factory=list)  # (index into the points, why)


class Backend(Protocol):
    """Points and alerts in; series, actions on incidents, health and readiness out."""

    settings: Settings
    database: Database
    last_tick: float | None  # when the newest tick in this process ended (epoch seconds)
    last_tick_s: float | None  # how long it took

    @property
    def lock(self) -> AbstractContextManager[object]:
        """Held while the series are read, so a read sees one tick's store (the embedded tick holds it)."""
        ...

    def start(self) -> None:
        """Start what runs in the background (the embedded tick)."""
        ...

    def stop(self) -> None: ...

    def newest_point(self) -> float | None:
        """The newest point's time in the window store (None while it is empty)."""
        ...

    def store_points(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> Stored:
        """Keep validated points (canonical names, epoch seconds, finite values)."""
        ...

    def receive_alerts(self, alerts: Sequence[Alert]) -> dict[str, int]:
        """Hand alerts over to be grouped with the anomalies at the next tick; the counts to answer with."""
        ...

    def series(self) -> SeriesSource:
        """The metric registry, window store, step and name index, up to date."""
        ...

    def act(self, do: Callable[[], T]) -> T:
        """Run a person's action on the database and let the tracker see it."""
        ...

    def health(self) -> dict[str, object]:
        """Counters for ``/healthz``."""
        ...

    def ready(self) -> None:
        """Raise :class:`~core.errors.Unavailable` when a service the backend needs does not answer."""
        ...

    def gauges(self) -> dict[str, float]:
        """``backlog_steps`` and what else of the backend's state ``/metrics`` shows."""
        ...

    def notify_loop(self) -> NotifyLoop | None:
        """The thread sending notifications from this process (None when something else sends them)."""
        ...


LEASE_KEY = "embedded-tick"


class TickLeaseHeld(StormeyeError, RuntimeError):
    """Another ``serve`` process ticks this database."""

    http_status = 409


def _gone(holder: str) -> bool:
    """Whether a lease holder (``host:pid:nonce``) was a process of this machine that no longer runs."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class MissingExtra(StormeyeError, ImportError):
    """A mode or feature needs a package of an extra that is not installed."""

    http_status = 500


class EmbeddedBackend:
    """One pipeline in this process, a lock around it and the tick in a background thread."""

    def __init__(self, settings: Settings, pipeline: Pipeline | None = None) -> None:
        self.settings = settings
        self.database = pipeline.database if pipeline and pipeline.database else Database(settings.database_url)
        self.pipeline = pipeline or Pipeline(settings, database=self.database)
        self.lock = threading.Lock()
        self.last_tick: float | None = None
        self.last_tick_s: float | None = None
        self.started: float | None = None
        self.failures = 0  # ticks failed in a row
        self.tick_errors = 0  # ticks failed since start
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat: threading.Thread | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl_s = max(30.0, 3 * settings.tick_s)
        self.lease_lost: str | None = None
        self.reconciled: list[str] = []

    def start(self) -> None:
        """Take the database's tick lease (or refuse: another ``serve`` ticks it), close the incidents a
        crashed process left open, then start the tick and its heartbeat."""
        self.started = time.time()
        holder = self.database.take_lease(LEASE_KEY, self.owner, time.time(), self.lease_ttl_s, _gone)
        if holder is not None:
            raise TickLeaseHeld(
                f"another stormeye serve ticks the database {self.settings.database_url}: {holder}. Two would "
                "score and page every outage twice; stop it first, or give this one its own STORMEYE_DATABASE_URL "
                f"(a holder that stopped without letting go is taken over {self.lease_ttl_s:.0f} s after its last "
                "heartbeat)"
            )
        self._reconcile()
        self._thread = threading.Thread(target=self._run, name="stormeye-tick", daemon=True)
        self._thread.start()
        self._beat = threading.Thread(target=self._heartbeat, name="stormeye-lease", daemon=True)
        self._beat.start()

    def _reconcile(self) -> None:
        """Incidents open in the database that this process's tracker does not hold were left by a process
        that stopped without closing them (a crash, kill -9): nothing will update them any more, so
        they are resolved now with the reason in their timeline (the anomaly data before the restart
        is gone with that process; a problem that goes on opens a new incident)."""
        keep = set(self.pipeline.incidents.incidents)
        now = time.time()
        reason = (
            "closed when stormeye serve started again: the process that tracked this incident stopped "
            "without closing it, and its recent data went with it; if the problem goes on, a new incident opens"
        )
        closed = self.database.close_left_open(keep, now, reason)
        if closed:
            log.warning("closed %d incidents left open by a process that stopped: %s", len(closed), closed[:10])
        self.reconciled = closed

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_ttl_s / 3):
            try:
                holder = self.database.take_lease(LEASE_KEY, self.owner, time.time(), self.lease_ttl_s, _gone)
            except Exception as exc:  # the database is down: the tick fails too and says so
                log.warning("renewing the tick lease failed: %s", exc)
                continue
            if holder is not None:
                self.lease_lost = holder
                self.last_error = f"the tick lease was taken by {holder}; this process stopped ticking"
                self.last_error_at = time.time()
                log.error(self.last_error)
                self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._thread is not None and self.lease_lost is None:
            try:
                self.database.drop_lease(LEASE_KEY, self.owner)
            except Exception:
                log.warning("could not let the tick lease go; it is taken over after %.0f s", self.lease_ttl_s)

    def _run(self) -> None:
        """The live tick: a failing tick (the database locked or down) is logged and counted, and the
        next is tried after a back-off (twice the wait per failure in a row, at most 10 ticks)."""
        wait = self.settings.tick_s
        while not self._stop.wait(wait):
            try:
                self.tick(max_steps=self.settings.max_catchup_steps)
            except Exception as exc:
                self.failures += 1
                self.tick_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self.last_error_at = time.time()
                wait = self.settings.tick_s * min(2**self.failures, 10)
                log.exception("tick failed (%d in a row); next try in %.1f s", self.failures, wait)
            else:
                self.failures = 0
                wait = self.settings.tick_s

    def tick(self, until: float | None = None, max_steps: int | None = None) -> int:
        """Score every step due (up to ``until``); returns how many steps were scored. ``max_steps`` bounds a
        catch-up (older steps are left unscored). The lock is let go every :data:`TICK_CHUNK` steps, so
        points and reads are served during a long catch-up, and a stop is seen."""
        began = time.perf_counter()
        p = self.pipeline
        if until is None:
            until = due_slot(p.clock(), p.step, self.settings.grace_s) * p.step
        done = 0
        while True:
            with self.lock:
                results = p.tick(until, max_steps=max_steps, chunk=TICK_CHUNK)
            done += len(results)
            if len(results) < TICK_CHUNK or self._stop.is_set():
                break
        self.last_tick = time.time()
        self.last_tick_s = time.perf_counter() - began
        return done

    def newest_point(self) -> float | None:
        return self.pipeline.store.newest()

    def store_points(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> Stored:
        """A point for a step already scored is kept as history for later windows (counted as late)."""
        with self.lock:
            before = self.pipeline.late_points
            accepted = self.pipeline.ingest(names, timestamps, values)
            return Stored(accepted, late=self.pipeline.late_points - before)

    def receive_alerts(self, alerts: Sequence[Alert]) -> dict[str, int]:
        with self.lock:
            res = self.pipeline.alerts.receive(alerts)
        return {"alerts": len(alerts), "new": res.new, "repeats": res.repeats, "resolved": res.resolved}

    def series(self) -> SeriesSource:
        return self.pipeline

    def act(self, do: Callable[[], T]) -> T:
        """The action is replayed on the running tracker at once (under the tick's lock)."""
        with self.lock:
            out = do()
            pipe = self.pipeline
            if pipe.people is not None:
                last = pipe.last_scored
                pipe.people.sync(pipe.incidents, last * pipe.step if last is not None else time.time())
            return out

    def health(self) -> dict[str, object]:
        p = self.pipeline
        return {
            "metrics": len(p.registry),
            "open_incidents": len(p.incidents.open_incidents()),
            "last_tick": self.last_tick,
            "newest_point": p.store.newest(),
            **self.tick_health(),
        }

    def tick_health(self) -> dict[str, object]:
        """How the live tick is doing: its age, steps behind, errors, and ``stalled`` when it has not
        completed for 3 ticks (``/readyz`` answers 503 then)."""
        since = self.last_tick or self.started
        age = None if since is None else round(time.time() - since, 3)
        return {
            "tick_age_s": age,
            "steps_behind": int(self.gauges()["backlog_steps"]),
            "steps_skipped": self.pipeline.skipped_steps,
            "unsaved_ticks": len(self.pipeline.unsaved),
            "tick_errors": self.tick_errors,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "stalled": self._thread is not None and age is not None and age > 3 * self.settings.tick_s,
        }

    def ready(self) -> None:
        """Not ready when the live tick has not completed for 3 ticks (a tick hung or failing)."""
        h = self.tick_health()
        if h["stalled"]:
            raise Unavailable(
                f"the tick has not completed for {h['tick_age_s']:.0f} s (more than 3 ticks of "
                f"{self.settings.tick_s:g} s); last error: {h['last_error'] or 'none (a tick is still running)'}"
            )

    def gauges(self) -> dict[str, float]:

        p = self.pipeline
        behind = 0
        if p.last_scored is not None:
            behind = max(0, due_slot(time.time(), p.step, self.settings.grace_s) - p.last_scored)
        return {
            "backlog_steps": float(behind),
            "anomalies_open": float(len(p.anomalies.open_anomalies) + len(p.alerts)),
        }

    def notify_loop(self) -> NotifyLoop | None:
        """With ``STORMEYE_NOTIFY_CONFIG``: the notifier's thread, woken after each tick's write. A bad
        config fails here, at start."""
        from stormeye.workers.notify.notifier import Notifier
        from stormeye.workers.notify.runner import NotifyLoop

        notifier = Notifier.from_settings(self.settings, self.database)
        if notifier is None:
            return None
        loop = NotifyLoop(notifier, self.settings.notify_interval_s)
        self.pipeline.after_persist.append(loop.wake)
        return loop


def require_distributed() -> None:
    """Raise :class:`MissingExtra` naming the extra to install when distributed mode's packages are missing."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        raise MissingExtra(
            f"distributed mode needs {exc.name}, which is not installed: pip install 'stormeye[distributed]' "
            "(or run the embedded mode, STORMEYE_MODE=embedded)"
        ) from None


def open_backend(settings: Settings, pipeline: Pipeline | None = None) -> Backend:
    """The backend ``STORMEYE_MODE`` names (an embedded one around ``pipeline`` when one is given)."""
    if settings.mode != "distributed" or pipeline is not None:
        return EmbeddedBackend(settings, pipeline)
    require_distributed()
    from stormeye.workers.distributed import DistributedBackend

    return DistributedBackend(settings)
