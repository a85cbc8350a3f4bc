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

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from stormeye.core.errors import StormeyeError
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stormeye-tick", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.tick_s):
            self.tick()

    def tick(self, until: float | None = None) -> int:
        """Score every step due (up to ``until``); returns how many steps were scored."""
        began = time.perf_counter()
        with self.lock:
            results = self.pipeline.tick(until)
        self.last_tick = time.time()
        self.last_tick_s = time.perf_counter() - began
        return len(results)

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
        }

    def ready(self) -> None:
        return None  # nothing beyond the database

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
