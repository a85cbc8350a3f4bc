"""Distributed mode: the pipeline's stages over Redis and PostgreSQL, one step at a time.

The Celery tasks (:mod:`workers.tasks`) are thin: each calls one function here with the
process's :class:`Runtime`. What happens to a point (docs/distributed.md has the picture):

1. **accept** (API process): the batch is written to Redis and queued for ingest before the
   HTTP answer; a Lua script makes this atomic with the tick, so a point is either accepted
   for a step that will be scored, or refused as late — never accepted and then skipped.
2. **ingest** (task): names get their shared rows (:class:`RedisMetricRegistry`), points go to
   the Redis window store; then the batch leaves the pending set. Running it twice is harmless.
3. **advance** (task ``tick``, driven by Celery beat): under a lock, picks the next step to
   score once all accepted points of that step are stored (or ``ingest_wait_s`` passed), and
   hands out one ``score_shard`` per shard. The next step's scoring starts as soon as every shard
   has scored a step (at most one step ahead of the incidents); incidents follow strictly in order.
4. **score_shard** (task): :func:`workers.pipeline.detect` — the detector, the expensive
   per-metric part — over the shard's windows; the scores are kept in Redis for the step.
   Stateless, so a re-delivered task writes the same bytes. The last shard to finish queues
   ``correlate`` and moves the tick on.
5. **correlate** (task): all shards' scores in row order → :func:`workers.pipeline.track`
   (anomaly events, and whatever looks across metrics) → :func:`workers.pipeline.correlate`
   (incidents), with both trackers' state from Redis; idempotent upserts to the database, then
   the trackers' state and the step number in one Redis transaction. A step's correlate waits
   for the one before it, which queues it when it commits.

Notifications are decided and sent from the database (:mod:`workers.notify`, on Celery beat).

Within a step, shards run in parallel on any worker; while step ``s`` is correlated, step
``s + 1`` is already being scored.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import redis
import scipy.sparse as sp
from sqlalchemy.exc import InterfaceError, OperationalError

from stormeye.core.errors import Backlogged, Unavailable
from stormeye.detectors import Detector, Scores
from stormeye.detectors.calibration import TailLedger
from stormeye.detectors.rules import CompiledRules
from stormeye.grouping.names import MetricNameError, NameIndex, normalize, parse
from stormeye.grouping.topology import Topology
from stormeye.workers.actions import PeopleSync, own_changes
from stormeye.workers.alerts import Alert, AlertBook, receive_distributed, take_inbox, windows_with_alerts
from stormeye.workers.backend import Stored
from stormeye.workers.db import Database
from stormeye.workers.pipeline import (
    Detected,
    MetricStages,
    Trackers,
    build_trackers,
    correlate,
    detect,
    due_slot,
    load_seasons,
    make_detector,
    touched_incidents,
    track,
)
from stormeye.workers.redis_store import (
    Keys,
    RedisMetricRegistry,
    RedisWindowStore,
    RegistryStale,
    as_bytes,
    as_text,
)
from stormeye.workers.settings import Settings

log = logging.getLogger("stormeye.distributed")
T = TypeVar("T")

RESULT_TTL_S = 86400  # per-step shard results and markers: kept a day for inspection
MAX_INGEST_ATTEMPTS = 5  # a batch whose task died this often (its worker with it) is poison: dead-lettered


# failures that say nothing about the work itself: the task is retried (workers/tasks.py), never dead-lettered
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    OperationalError,
    InterfaceError,
)


class RedisUnavailable(Unavailable, RuntimeError):
    """Redis cannot be reached; the message says where we looked and what to do."""


def connect_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=60, health_check_interval=30)


def check_redis(url: str) -> redis.Redis:
    """A connected client, or :class:`RedisUnavailable` saying how to fix it."""
    client = connect_redis(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(
            f"cannot reach Redis at {url} ({exc}): start Redis there or point STORMEYE_REDIS_URL at a running one"
        ) from None
    return client


class Dispatcher(Protocol):
    """How the runtime hands work to the task queue (Celery in production)."""

    def ingest(self, batch_id: str) -> None: ...

    def score_shard(self, shard: int, slot: int) -> None: ...

    def correlate(self, slot: int) -> None: ...

    def tick(self, countdown: float = 0.0, until: float | None = None, drive_only: bool = False) -> None: ...


# KEYS: pending zset, batch hash, scored, inflight hash, stats.
# ARGV: batch id, min slot, names (JSON), timestamps (float64), values (float64), now, n points.
# Refuses (returns the closed slot) when some point is for a step already closed for scoring.
_ACCEPT = """
local closed = tonumber(redis.call('GET', KEYS[3]) or '-1')
local inflight = tonumber(redis.call('HGET', KEYS[4], 'slot') or '-1')
if inflight > closed then closed = inflight end
if tonumber(ARGV[2]) <= closed then return closed end
redis.call('HSET', KEYS[2], 'names', ARGV[3], 'ts', ARGV[4], 'values', ARGV[5], 'accepted_at', ARGV[6],
           'min_slot', ARGV[2], 'attempts', 0)
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[5], 'points_accepted', ARGV[7])
return -2
"""


@dataclass
class AcceptResult:
    accepted: int
    late: np.ndarray  # indices of the points refused because their step was already scored
    batch_id: str | None
    closed_slot: int  # newest step closed for scoring when the batch was accepted


class Runtime:
    """One process's handles on the shared state: Redis, metric registry, window store, database."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None, database: Database | None = None):
        self.settings = settings
        self.r = client if client is not None else connect_redis(settings.redis_url)
        self.keys = Keys(settings.redis_prefix)
        self.step = settings.step_s
        durable = _DurableRegistry(self)
        self.registry = RedisMetricRegistry(self.r, settings.redis_prefix, settings.shards, durable=durable)
        self._index_generation = 0
        self._indexed = 0  # registry names in the index
        self.store = RedisWindowStore(self.r, settings.redis_prefix, settings.step_s, settings.retention_points)
        self._database = database
        self._detector: Detector | None = None
        self._seasons: RedisWindowStore | None = None
        self.index = NameIndex(graphite=settings.graphite)
        self.per_metric = MetricStages(settings, self.index)
        self.topology = settings.topology()  # declared, plus what service-graph metrics name (see warm)
        # (step they are at, anomaly tracker, incident tracker, collective evidence): kept while this
        # process commits steps
        self._state: tuple[int, Trackers] | None = None
        self._people: PeopleSync | None = None
        self._accept = self.r.register_script(_ACCEPT)
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._index_lock = threading.Lock()

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = Database(self.settings.database_url)  # at the newest schema (a no-op when it is)
        return self._database

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = make_detector(self.settings)
        return self._detector

    @property
    def seasons(self) -> RedisWindowStore | None:
        """The coarse seasonal history in Redis, when the detector reads one (docs/detectors.md)."""
        season = getattr(self.detector, "season", None)
        if season is None:
            return None
        if self._seasons is None:
            prefix = f"{self.settings.redis_prefix}:season"
            self._seasons = RedisWindowStore(self.r, prefix, self.step * season.factor, season.season_points)
        return self._seasons

    def close(self) -> None:
        if self._database is not None:
            self._database.dispose()
        self.r.close()

    # -- keys ----------------------------------------------------------------------------

    def k(self, *parts: object) -> str:
        return self.keys(*parts)

    def stat(self, pipe: Any, field: str, n: int = 1) -> None:
        if n:
            pipe.hincrby(self.k("stats"), field, n)

    def stats(self) -> dict[str, int]:
        return {as_text(k): int(v) for k, v in self.r.hgetall(self.k("stats")).items()}

    def scored_slot(self) -> int | None:
        v = self.r.get(self.k("tick", "scored"))
        return None if v is None else int(v)

    # -- 1. accept -----------------------------------------------------------------------

    def accept(
        self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray, dispatcher: Dispatcher
    ) -> AcceptResult:
        """Write validated points to Redis and queue their ingest; late ones (step already scored) are refused.

        Once this returns, the accepted points survive any worker's death: they stay pending in
        Redis until a worker has stored them.
        """
        ts = np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64)
        slots = np.floor(ts / self.step).astype(np.int64)
        idx = np.arange(len(ts))
        late = np.zeros(0, dtype=np.int64)
        closed = -1
        for _ in range(100):
            if not len(idx):
                return AcceptResult(0, late, None, closed)
            batch_id = uuid.uuid4().hex
            got = self._accept(
                keys=[
                    self.k("ingest", "pending"),
                    self.k("ingest", "batch", batch_id),
                    self.k("tick", "scored"),
                    self.k("tick", "inflight"),
                    self.k("stats"),
                ],
                args=[
                    batch_id,
                    int(slots[idx].min()),
                    json.dumps([names[int(i)] for i in idx]),
                    ts[idx].astype("<f8").tobytes(),
                    vals[idx].astype("<f8").tobytes(),
                    time.time(),
                    len(idx),
                ],
            )
            if int(got) == -2:
                dispatcher.ingest(batch_id)
                return AcceptResult(len(idx), late, batch_id, closed)
            closed = int(got)
            is_late = slots[idx] <= closed
            late = np.concatenate([late, idx[is_late]])
            idx = idx[~is_late]
        raise RuntimeError("the tick kept closing steps while points were accepted; retry the request")

    def load_history(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> None:
        """Seed the deployment with a matrix of past points (names x timestamps) without scoring it.

        The same as :meth:`workers.pipeline.Pipeline.load_history`: scoring starts after its last step.
        Names are normalized as ingest normalizes points' names: ingest takes a name this process has
        registered for canonical, so a name registered here as written would get a second row there.
        """
        rows, new = self.registry.rows([normalize(n) for n in names])
        if new:
            self.database.ensure_metrics(new)
        self.store.load(rows, timestamps, values)
        load_seasons(self.detector, self.seasons, rows, timestamps, values)
        last = math.floor(float(np.max(timestamps)) / self.step)
        self.r.set(self.k("tick", "scored"), max(last, self.scored_slot() or last))
        self.r.set(self.k("tick", "committed_at"), time.time(), nx=True)  # the tick's age counts from here

    def pending(self) -> int:
        return int(self.r.zcard(self.k("ingest", "pending")))

    # -- 2. ingest -----------------------------------------------------------------------

    def ingest(self, batch_id: str) -> dict[str, int]:
        """Store one accepted batch in the window store (idempotent: a stored batch is gone from Redis)."""
        bkey = self.k("ingest", "batch", batch_id)
        if not self.r.exists(bkey):
            return {"stored": 0, "already": 1}
        attempts = int(self.r.hincrby(bkey, "attempts", 1))
        if attempts > MAX_INGEST_ATTEMPTS:
            self.dead_letter_batch(batch_id, f"its ingest task died {attempts - 1} times (poison batch?)")
            return {"stored": 0, "dead": 1}
        raw = self.r.hgetall(bkey)
        try:
            names = json.loads(raw[b"names"])
            ts = np.frombuffer(as_bytes(raw[b"ts"]), dtype="<f8")
            vals = np.frombuffer(as_bytes(raw[b"values"]), dtype="<f8")
            if not (len(names) == len(ts) == len(vals)):
                raise ValueError(f"{len(names)} names, {len(ts)} timestamps and {len(vals)} values")
        except (KeyError, ValueError, TypeError) as exc:
            self.dead_letter_batch(batch_id, f"the batch cannot be read: {exc}")
            return {"stored": 0, "dead": 1}
        good: list[int] = []
        canon: list[str] = []
        bad: list[dict[str, Any]] = []
        known = self.registry.known
        for i, n in enumerate(names):
            try:
                c = n if known(n) else normalize(n)  # registered names are canonical already
            except (MetricNameError, TypeError) as exc:
                bad.append({"metric": str(n), "timestamp": float(ts[i]), "value": float(vals[i]), "error": str(exc)})
                continue
            if not math.isfinite(ts[i]) or not math.isfinite(vals[i]):
                bad.append({"metric": c, "timestamp": float(ts[i]), "value": float(vals[i]), "error": "not finite"})
                continue
            good.append(i)
            canon.append(c)
        stored = too_old = late = 0
        if good:
            sel = np.asarray(good)
            for attempt in range(5):
                rows, new = self.registry.rows(canon)  # their rows are in the database before any point
                if new:
                    self.database.ensure_metrics(new)  # the metric table knows every metric too
                try:
                    # written only while Redis' registry is the one the rows came from
                    epoch = (self.registry.epoch_key, self.registry.epoch or "")
                    res = self.store.append(rows, ts[sel], vals[sel], epoch)
                    break
                except RegistryStale:
                    if attempt == 4:
                        raise
                    log.warning("batch %s: Redis' registry changed while it was stored; storing it again", batch_id)
            stored, too_old = res.accepted, res.too_old
            scored = self.scored_slot()
            if scored is not None:
                late = int((np.floor(ts[sel] / self.step) <= scored).sum())
        pipe = self.r.pipeline(transaction=True)
        if bad:
            pipe.xadd(
                self.k("deadletter"),
                {
                    "kind": "points",
                    "ref": batch_id,
                    "reason": f"{len(bad)} points cannot be stored",
                    "at": time.time(),
                    "points": json.dumps(bad[:1000]),
                },
                maxlen=100_000,
                approximate=True,
            )
        pipe.zrem(self.k("ingest", "pending"), batch_id)
        pipe.delete(bkey)
        self.stat(pipe, "points_stored", stored)
        self.stat(pipe, "points_too_old", too_old)
        self.stat(pipe, "points_late", late)
        self.stat(pipe, "points_dead", len(bad))
        pipe.execute()
        if too_old or late:
            log.warning(
                "batch %s: %d points older than the window store keeps, %d for steps already scored",
                batch_id,
                too_old,
                late,
            )
        return {"stored": stored, "too_old": too_old, "late": late, "dead": len(bad)}

    def dead_letter_batch(self, batch_id: str, reason: str) -> None:
        """Park a batch that can never be stored, with the reason; ``stormeye deadletter`` shows and requeues it."""
        bkey = self.k("ingest", "batch", batch_id)
        dkey = self.k("dead", "batch", batch_id)
        n = 0
        with contextlib.suppress(ValueError):
            n = len(json.loads(self.r.hget(bkey, "names") or b"[]"))
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(self.k("ingest", "pending"), batch_id)
        pipe.copy(bkey, dkey, replace=True)
        pipe.delete(bkey)
        pipe.xadd(
            self.k("deadletter"),
            {"kind": "batch", "ref": batch_id, "reason": reason, "at": time.time(), "points": n},
            maxlen=100_000,
            approximate=True,
        )
        self.stat(pipe, "batches_dead")
        pipe.execute()
        log.error("dead-lettered batch %s (%d points): %s", batch_id, n, reason)

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        out = []
        for eid, fields in self.r.xrevrange(self.k("deadletter"), count=count) or []:
            d = {as_text(k): as_text(v) for k, v in (fields or {}).items()}
            d["id"] = as_text(eid)
            out.append(d)
        return out

    def requeue_dead_batch(self, batch_id: str, dispatcher: Dispatcher) -> AcceptResult:
        """Offer a dead-lettered batch again (through :meth:`accept`: points for scored steps are refused)."""
        raw = self.r.hgetall(self.k("dead", "batch", batch_id))
        if not raw:
            raise KeyError(f"no dead-lettered batch {batch_id!r}")
        names = json.loads(raw[b"names"])
        res = self.accept(
            names,
            np.frombuffer(as_bytes(raw[b"ts"]), dtype="<f8"),
            np.frombuffer(as_bytes(raw[b"values"]), dtype="<f8"),
            dispatcher,
        )
        self.r.delete(self.k("dead", "batch", batch_id))
        return res

    # -- 3. advance ----------------------------------------------------------------------

    def advance(
        self, dispatcher: Dispatcher, now: float | None = None, until: float | None = None, drive_only: bool = False
    ) -> str:
        """Move the tick on: raise the target step, start the next step or drive the one in flight.

        The target becomes the step of ``until`` (a time) or, by default, the newest complete step
        (``now - grace - step``); ``drive_only`` leaves it as it is. Idempotent and safe to call
        from several processes at once.
        """
        now = time.time() if now is None else now
        if not drive_only:
            s = self.settings
            top = math.floor(until / self.step) if until is not None else due_slot(now, self.step, s.grace_s)
            self.r.eval(
                "local c = tonumber(redis.call('GET', KEYS[1]) or '-1') "
                "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 1",
                1,
                self.k("tick", "target"),
                top,
            )
        lock = self.r.lock(self.k("tick", "lock"), timeout=60, blocking_timeout=10)
        if not lock.acquire():
            return "busy: another process is advancing the tick"
        try:
            return self._advance_locked(dispatcher, now)
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("the tick lock expired while advancing")

    def _advance_locked(self, dispatcher: Dispatcher, now: float) -> str:
        """The step in flight is the one being scored. Its successor starts once all its shards are
        done — while it is still being correlated (scoring needs only the shards' own state), but
        never more than one step ahead of the incidents."""
        ikey = self.k("tick", "inflight")
        inflight = {as_text(k): float(v) for k, v in self.r.hgetall(ikey).items()}
        target = int(self.r.get(self.k("tick", "target")) or -1)
        scored = self.scored_slot()
        if inflight and "slot" in inflight:
            slot = int(inflight["slot"])
            if int(self.r.scard(self.k("step", slot, "done"))) < self.settings.shards:
                return self._drive(dispatcher, slot, inflight, now)
            # scored by every shard; the correlate of this step is queued
            if (
                scored is not None
                and scored < slot
                and now - inflight.get("fanned", now) >= self.settings.resend_after_s
            ):
                dispatcher.correlate(scored + 1)  # perhaps its message was lost: correlate is idempotent
                self._mark(slot, "fanned", now)
            if slot >= target:
                return f"idle: step {slot} scored by every shard, nothing more due"
            if scored is None or scored < slot - 1:
                return f"step {slot + 1} waits for the incidents of step {slot - 1}"
            slot += 1
        else:
            if scored is None:
                newest = self.store.newest()
                if newest is None:
                    return "idle: no points stored yet"
                self.r.set(self.k("tick", "scored"), min(target, int(newest // self.step)) - 1, nx=True)
                scored = self.scored_slot()
                assert scored is not None
            if scored >= target:
                return f"idle: step {scored} scored, nothing due"
            slot = scored + 1
        state = {"slot": slot, "started": now, "fanned": 0.0}
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(ikey)
        pipe.hset(ikey, items=[x for kv in state.items() for x in kv])
        pipe.execute()
        return self._drive(dispatcher, slot, state, now)

    def _mark(self, slot: int, field: str, value: float) -> None:
        """Set a field of the step in flight, unless another step is in flight by now."""
        self.r.eval(
            "if redis.call('HGET', KEYS[1], 'slot') == ARGV[1] then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end",
            1,
            self.k("tick", "inflight"),
            str(slot),
            field,
            value,
        )

    def _drive(self, dispatcher: Dispatcher, slot: int, state: dict[str, float], now: float) -> str:
        if not state.get("fanned"):
            waited = now - state["started"]
            blocking = self.r.zrangebyscore(self.k("ingest", "pending"), "-inf", slot, start=0, num=1000)
            if blocking and waited < self.settings.ingest_wait_s:
                if waited >= self.settings.ingest_wait_s / 2 and not state.get("nudged"):
                    for b in blocking:  # perhaps their messages were lost: ingest is idempotent
                        dispatcher.ingest(as_text(b))
                    self._mark(slot, "nudged", now)
                dispatcher.tick(countdown=min(0.25, max(self.settings.ingest_wait_s - waited, 0.01)), drive_only=True)
                return f"step {slot}: waiting for {len(blocking)} accepted batches to be stored"
            if blocking:
                log.warning(
                    "step %d: %d accepted batches still not stored after %.1f s; scoring without them",
                    slot,
                    len(blocking),
                    waited,
                )
            for shard in range(self.settings.shards):
                dispatcher.score_shard(shard, slot)
            self._mark(slot, "fanned", now)
            return f"step {slot}: handed out {self.settings.shards} shards"
        if now - state["fanned"] >= self.settings.resend_after_s:
            done = {int(x) for x in self.r.smembers(self.k("step", slot, "done"))}
            missing = [s for s in range(self.settings.shards) if s not in done]
            for shard in missing:
                dispatcher.score_shard(shard, slot)
            self._mark(slot, "fanned", now)
            return f"step {slot}: handed out again ({len(missing)} shards missing)"
        return f"step {slot}: in flight"

    # -- 4. score a shard ----------------------------------------------------------------

    def score_shard(self, shard: int, slot: int, dispatcher: Dispatcher) -> dict[str, Any]:
        """Run the detector over one shard's windows at one step and keep the scores for ``correlate``.

        Stateless: the result depends only on the stored windows, so a second delivery writes the
        same bytes again (or, once the step is committed, does nothing).
        """
        if not 0 <= shard < self.settings.shards:
            raise ValueError(f"shard {shard} is outside 0..{self.settings.shards - 1}")
        scored = self.scored_slot()
        dkey = self.k("step", slot, "done")
        outcome: dict[str, Any] = {"shard": shard, "slot": slot}
        if scored is not None and scored >= slot:
            outcome["already"] = True
        else:
            marker = f"score_shard:{shard}:{slot}"
            running = self.k("running")
            self.r.hset(running, marker, json.dumps({"by": self.consumer, "since": time.time()}))
            rows = self.registry.shard_rows(shard)
            det = detect(self.detector, self.store, rows, float(slot * self.step), self.seasons)
            pipe = self.r.pipeline(transaction=True)
            pipe.set(self.k("step", slot, "shard", shard), pack_detected(det), ex=RESULT_TTL_S)
            pipe.sadd(dkey, shard)
            pipe.expire(dkey, RESULT_TTL_S)
            self.stat(pipe, "windows_scored", len(det.rows))
            pipe.hdel(running, marker)
            pipe.execute()
            outcome["rows"] = len(det.rows)
        if int(self.r.scard(dkey)) >= self.settings.shards:
            dispatcher.correlate(slot)
            dispatcher.tick(drive_only=True)  # the next step's scoring need not wait for the incidents
        return outcome

    def shard_result(self, slot: int, shard: int) -> Detected | None:
        """What ``score_shard`` kept for a shard and step (for ``correlate``, and for inspection)."""
        raw = self.r.get(self.k("step", slot, "shard", shard))
        return None if raw is None else unpack_detected(as_bytes(raw))

    # -- 5. correlate --------------------------------------------------------------------

    def warm(self) -> int:
        """Load every metric name and index it (a new process does this once; later calls add new ones)."""
        with self._index_lock:
            self.registry.refresh()
            if self.registry.generation != self._index_generation:
                if self._indexed:  # the registry was rebuilt: index its names afresh
                    self.index = NameIndex(graphite=self.settings.graphite)
                    self.per_metric = MetricStages(self.settings, self.index)
                    self.topology = self.settings.topology()
                    self._state = None
                    self._indexed = 0
                self._index_generation = self.registry.generation
            # registered names are indexed in registration order; the incident tracker adds alerts'
            # metrics to the same index, so count what was taken from the registry, not the index
            known = self._indexed
            if known < len(self.registry.names):
                added = self.registry.names[known:]
                self.index.add([n for n in added if n not in self.index])
                self._indexed = len(self.registry.names)
                # service-graph metrics name dependencies
                self.topology.learn_names(parse(n) for n in added if Topology.may_name_edge(n))
            return len(self.index)

    def rules(self) -> CompiledRules | None:
        """The per-metric detector settings of every registered metric (resolved again when metrics arrive)."""
        return self.per_metric.rules(self.registry.names)

    def membership(self) -> sp.csr_matrix:
        """The groups of collective evidence over every registered metric, in registration order."""
        return self.per_metric.membership(self.registry.names)

    def _trackers(self, at_slot: int | None) -> Trackers:
        """The anomaly and incident trackers, the collective evidence and the tail ledger as committed
        for ``at_slot``: this process's copy when current, else Redis'."""
        self.warm()
        cached, self._state = self._state, None
        if cached is not None and cached[0] == at_slot:
            return cached[1]
        trackers = build_trackers(self.settings, self.detector, self.index, self.topology.copy())
        raw = self.r.get(self.k("tick", "state"))
        if raw:
            state = json.loads(zlib.decompress(as_bytes(raw)))
            if state.get("slot") != at_slot:
                log.warning("tracker state is at step %s, expected %s", state.get("slot"), at_slot)
            trackers.anomalies.load_state(state["anomalies"])
            trackers.incidents.load_state(state["incidents"])
            if trackers.collective is not None and "collective" in state:
                trackers.collective.load_state(state["collective"])
        if trackers.ledger is not None:
            blob = self.r.get(self.k("tick", "ledger"))
            if blob:
                with np.load(io.BytesIO(zlib.decompress(as_bytes(blob)))) as z:
                    trackers.ledger.load_state({k: z[k] for k in z.files})
        return trackers

    def _people_sync(self) -> PeopleSync:
        """This process's reader of people's actions, at the cursor committed with the tracker's state."""
        if self._people is None:
            self._people = PeopleSync(self.database, self.settings.priority_model)
        raw = self.r.get(self.k("tick", "people"))
        if raw is not None:
            self._people.cursor = int(raw)
        return self._people

    def windows_at(self, at: float, points: int, alerts: AlertBook | None = None) -> Any:
        def read(metrics: Sequence[str]) -> np.ndarray:
            rows = np.fromiter((self.registry.row(mt) for mt in metrics), np.int64, len(metrics))
            return self.store.windows(rows, at, points)

        if alerts is None or not len(alerts):
            return read
        return lambda metrics: windows_with_alerts(metrics, at, points, self.registry.known, read, alerts)

    def _alert_book(self) -> tuple[AlertBook, int]:
        """The alerts held between steps, with those the API queued since (and how many to trim once committed)."""
        book = AlertBook(self.settings.step_s, self.settings.alert_fingerprint_ignore)
        raw = self.r.get(self.k("alerts", "book"))
        if raw:
            book.load_state(json.loads(zlib.decompress(as_bytes(raw))))
        return book, take_inbox(self, book)

    def correlate(self, slot: int, dispatcher: Dispatcher) -> dict[str, Any]:
        """:meth:`_correlate`; a step that keeps failing for a reason other than a lost connection
        (bad data the database refuses, a bug) is dead-lettered after ``poison_attempts`` attempts
        and the tick goes on, rather than failing every step after it."""
        try:
            return self._correlate(slot, dispatcher)
        except CONNECTION_FAILURES:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            attempts = int(self.r.hincrby(self.k("tick", "failures"), str(slot), 1))
            self.r.expire(self.k("tick", "failures"), RESULT_TTL_S)
            if attempts < self.settings.poison_attempts:
                log.warning("correlate of step %d failed (attempt %d): %s", slot, attempts, reason)
                raise
            log.exception("correlate of step %d failed %d times: dead-lettered", slot, attempts)
            return self.dead_letter_step(slot, reason, dispatcher)

    def dead_letter_step(self, slot: int, reason: str, dispatcher: Dispatcher) -> dict[str, Any]:
        """Give up on one step's incidents: record it with the reason, and commit the step with the
        trackers' state and the alert book unchanged so the next step proceeds (alerts queued meanwhile
        stay in the inbox for it; one that cannot be read leaves it alone, see
        :func:`workers.alerts.take_inbox`). ``stormeye deadletter`` lists it."""
        committed = False
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(self.k("tick", "scored"))
            now_scored = pipe.get(self.k("tick", "scored"))
            if now_scored is None or int(now_scored) < slot:
                pipe.multi()
                pipe.xadd(
                    self.k("deadletter"),
                    {
                        "kind": "step",
                        "ref": slot,
                        "reason": f"the incidents of step {slot} (t={slot * self.step}) were not made: {reason}",
                        "at": time.time(),
                    },
                    maxlen=100_000,
                    approximate=True,
                )
                pipe.set(self.k("tick", "scored"), slot)
                pipe.hset(self.k("tick", "done"), slot, time.time())
                pipe.set(self.k("tick", "committed_at"), time.time())
                pipe.hset(self.k("tick", "last_error"), mapping={"at": time.time(), "step": slot, "error": reason})
                pipe.hdel(self.k("tick", "failures"), str(slot))
                self.stat(pipe, "steps_dead")
                try:
                    pipe.execute()
                    committed = True
                except redis.WatchError:
                    pass
        self._state = None
        if committed:
            if int(self.r.scard(self.k("step", slot + 1, "done"))) >= self.settings.shards:
                dispatcher.correlate(slot + 1)
            self.advance(dispatcher, drive_only=True)
        return {"slot": slot, "committed": committed, "dead": True, "reason": reason}

    def _correlate(self, slot: int, dispatcher: Dispatcher) -> dict[str, Any]:
        """Every shard's scores of one step → anomalies → incidents; store them; queue what follows.

        Idempotent: database writes are upserts; the trackers' state, the step number and the
        step's incident changes commit in one Redis transaction, under a watch on the step number.
        """
        scored = self.scored_slot()
        if scored is not None and scored >= slot:
            return {"slot": slot, "already": True}
        if scored is not None and scored < slot - 1:
            # step slot - 1 is not committed yet: its correlate queues this one when it is
            return {"slot": slot, "waiting_for": scored + 1}
        blobs = self.r.mget([self.k("step", slot, "shard", s) for s in range(self.settings.shards)])
        missing = [s for s, v in enumerate(blobs) if v is None]
        if missing:
            for s in missing:
                dispatcher.score_shard(s, slot)
            return {"slot": slot, "missing": missing}
        det = merge_detected([unpack_detected(as_bytes(b)) for b in blobs if b is not None])
        at = float(slot * self.step)
        trackers = self._trackers(scored)
        anomalies, incidents, collective = trackers.anomalies, trackers.incidents, trackers.collective
        det = known_rows(det, len(self.registry.names))
        people = self._people_sync()  # people's actions and feedback (workers.actions) onto the tracker
        manual = people.sync(incidents, at, save=False)
        membership = self.membership() if collective is not None else None
        symptoms = incidents.symptom_candidates if self.settings.symptoms else None
        upd = track(
            anomalies, at, det, self.registry.names, collective, membership, self.rules(), symptoms, trackers.ledger
        )
        book, inbox = self._alert_book()  # alerts others fired (workers/alerts.py)
        changed = upd.changed + book.changed(at)
        changes = correlate(incidents, at, changed, self.windows_at(at, self.settings.shape_points, book))
        touched = touched_incidents(incidents, changed, changes + manual)
        self.database.save_tick(changed, touched, own_changes(manual) + changes)  # upserts
        state = {"slot": slot, "anomalies": anomalies.to_state(), "incidents": incidents.to_state()}
        if collective is not None:
            state["collective"] = collective.to_state()
        book_state = book.to_state()
        # the same, durable: a Redis that loses its data restores the tick from here (_DurableRegistry)
        durable = {"slot": slot, "state": state, "people": people.cursor, "book": book_state}
        blob = zlib.compress(json.dumps(durable).encode())
        self.database.save_runtime_state(self.settings.redis_prefix, "tick", blob)
        committed = False
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(self.k("tick", "scored"))
            now_scored = pipe.get(self.k("tick", "scored"))
            if now_scored is None or int(now_scored) < slot:
                pipe.multi()
                pipe.set(self.k("tick", "state"), zlib.compress(json.dumps(state).encode()))
                if trackers.ledger is not None:
                    pipe.set(self.k("tick", "ledger"), ledger_blob(trackers.ledger))
                pipe.set(self.k("tick", "people"), people.cursor)
                pipe.set(self.k("tick", "scored"), slot)
                pipe.set(self.k("alerts", "book"), zlib.compress(json.dumps(book_state).encode()))
                if inbox:
                    pipe.ltrim(self.k("alerts", "inbox"), inbox, -1)
                pipe.hset(self.k("tick", "done"), slot, time.time())
                pipe.set(self.k("tick", "committed_at"), time.time())
                self.stat(pipe, "steps_scored")
                self.stat(pipe, "anomaly_changes", len(changed))
                self.stat(pipe, "incident_changes", len(changes))
                try:
                    pipe.execute()
                    committed = True
                except redis.WatchError:
                    pass
        if committed:
            self._state = (slot, trackers)
            self.r.hdel(self.k("tick", "done"), slot - 10_000)  # keep the last 10,000 completion times
            if int(self.r.scard(self.k("step", slot + 1, "done"))) >= self.settings.shards:
                dispatcher.correlate(slot + 1)  # its shards finished while this step was correlated
            self.advance(dispatcher, drive_only=True)  # the next step, if one is due already
        return {
            "slot": slot,
            "committed": committed,
            "anomalies": len(changed),
            "changes": len(changes),
            "with_newest": det.with_newest,
        }

    # -- health --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """What to watch: tick progress and lag, backlog, dead letters, workers alive."""
        scored = self.scored_slot()
        inflight = {as_text(k): float(v) for k, v in self.r.hgetall(self.k("tick", "inflight")).items()}
        now = time.time()
        wkey = self.k("workers")
        self.r.zremrangebyscore(wkey, "-inf", now - 300)
        workers = [as_text(w) for w in self.r.zrangebyscore(wkey, now - 30, "+inf")]
        newest = self.store.newest()
        due = due_slot(now, self.step, self.settings.grace_s)
        behind = None if scored is None else max(0, due - scored)
        raw_at = self.r.get(self.k("tick", "committed_at"))
        committed_at = None if raw_at is None else float(raw_at)
        age = None if committed_at is None else round(now - committed_at, 3)
        last = self.r.xrevrange(self.k("errors"), count=1)
        last_error = None
        if last:
            fields = {as_text(k): as_text(v) for k, v in (last[0][1] or {}).items()}
            last_error = f"{fields.get('task', '?')}{fields.get('args', '')}: {fields.get('error', '')}"
            last_error_at: float | None = float(fields.get("at", 0)) or None
        else:
            last_error_at = None
        dead = {as_text(k): as_text(v) for k, v in self.r.hgetall(self.k("tick", "last_error")).items()}
        if dead and (last_error_at is None or float(dead["at"]) > last_error_at):
            last_error = f"step {dead['step']} dead-lettered: {dead['error']}"
            last_error_at = float(dead["at"])
        epoch = self.r.get(self.registry.epoch_key)
        rebuilt = self.r.get(self.k("registry", "rebuilt_at"))
        return {
            "metrics": len(self.registry),
            "scored_step": None if scored is None else scored * self.step,
            "steps_behind": behind,
            # the pipeline has not committed a step for 3 ticks while steps are due: /readyz answers 503
            "tick_age_s": age,
            "stalled": bool(behind and age is not None and age > 3 * self.settings.tick_s),
            "last_error": last_error,
            "last_error_at": last_error_at,
            "redis_epoch": None if epoch is None else as_text(epoch),
            "redis_data_lost_at": None if rebuilt is None else float(rebuilt),
            "inflight_step": inflight.get("slot", 0) * self.step if inflight else None,
            "pending_batches": self.pending(),
            "dead_letters": int(self.r.xlen(self.k("deadletter"))),
            "running_tasks": int(self.r.hlen(self.k("running"))),
            "workers": sorted(workers),
            "newest_point": newest,
            "stats": self.stats(),
        }

    def heartbeat(self, name: str) -> None:
        """A worker process is alive (``health`` lists those seen in the last 30 s)."""
        self.r.zadd(self.k("workers"), {name: time.time()})


class DistributedBackend:
    """The API's :class:`~workers.backend.Backend` in distributed mode: points and alerts go to Redis
    and the workers (before the answer, so a worker's death cannot lose them), Celery beat drives
    the tick, and a point whose step was already scored is refused with that reason."""

    def __init__(self, settings: Settings) -> None:
        from stormeye.workers.celery_app import CeleryDispatcher, make_app

        self.settings = settings
        self.database = Database(settings.database_url)
        self.runtime = Runtime(settings, client=check_redis(settings.redis_url), database=self.database)
        self.dispatcher = CeleryDispatcher(make_app(settings))
        self.lock = threading.Lock()
        self.last_tick: float | None = None  # the tick runs in the workers
        self.last_tick_s: float | None = None

    @contextlib.contextmanager
    def _redis(self, what: str) -> Iterator[None]:
        """Redis failing becomes :class:`RedisUnavailable` (503 at the API), its message starting with ``what``."""
        try:
            yield
        except redis.RedisError as exc:
            raise RedisUnavailable(what.format(url=self.settings.redis_url, exc=exc)) from None

    _POINTS_LOST = "points not accepted: Redis at {url} failed ({exc}); nothing of this request was kept, send it again"

    def start(self) -> None:
        return None  # Celery beat drives the tick

    def stop(self) -> None:
        return None

    def newest_point(self) -> float | None:
        with self._redis(self._POINTS_LOST):
            return self.runtime.store.newest()

    def store_points(self, names: Sequence[str], timestamps: np.ndarray, values: np.ndarray) -> Stored:
        with self._redis(self._POINTS_LOST):
            pending = self.runtime.pending()
            if pending >= self.settings.max_pending_batches:
                raise Backlogged(
                    f"{pending} accepted batches wait for the workers (STORMEYE_MAX_PENDING_BATCHES="
                    f"{self.settings.max_pending_batches}): the workers are behind or down; nothing of this "
                    "request was kept, send it again after Retry-After seconds",
                    retry_after=max(1.0, self.settings.tick_s),
                )
            res = self.runtime.accept(names, timestamps, values, self.dispatcher)
        step = self.runtime.step
        refused = [
            (
                int(i),
                f"timestamp {timestamps[int(i)]:.0f} is for a step already scored (steps up to "
                f"{(res.closed_slot + 1) * step:.0f} are closed); send points within STORMEYE_GRACE_S="
                f"{self.settings.grace_s:g} s after their step ends, or raise it",
            )
            for i in res.late
        ]
        return Stored(res.accepted, refused=refused)

    def receive_alerts(self, alerts: Sequence[Alert]) -> dict[str, int]:
        """Queued in Redis; the next correlate step counts the repeats."""
        with self._redis("Redis at {url} failed, the alerts were not queued; send them again: {exc}"):
            receive_distributed(self.runtime, alerts)
        return {"alerts": len(alerts), "queued": len(alerts)}

    def series(self) -> Runtime:
        """The Redis runtime, brought up to date with the metrics other processes registered."""
        self.runtime.warm()
        return self.runtime

    def act(self, do: Callable[[], T]) -> T:
        """The correlating worker reads the action from the database at its next step."""
        return do()

    def health(self) -> dict[str, object]:
        with self._redis("Redis at {url} failed: {exc}"):
            h = self.runtime.health()
        return {**h, "open_incidents": self.database.count_incidents("open")}

    def ready(self) -> None:
        """Not ready when Redis does not answer, or the pipeline has not committed a step for 3 ticks while
        steps are due (workers down or every correlate failing)."""
        with self._redis("Redis at {url} does not answer: {exc}"):
            self.runtime.r.ping()
            h = self.runtime.health()
        if h["stalled"]:
            raise Unavailable(
                f"the pipeline has not committed a step for {h['tick_age_s']:.0f} s (more than 3 ticks of "
                f"{self.settings.tick_s:g} s) and is {h['steps_behind']} steps behind; workers alive: "
                f"{len(h['workers'])}; last error: {h['last_error'] or 'none'}"
            )

    def gauges(self) -> dict[str, float]:
        with self._redis("Redis at {url} failed: {exc}"):
            h = self.runtime.health()
        return {"backlog_steps": float(h["steps_behind"] or 0), "backlog_batches": float(h["pending_batches"])}

    def notify_loop(self) -> None:
        return None  # Celery beat decides and sends notifications (workers/notify/tasks.py)


class _DurableRegistry:
    """The registry's rows and the tick's committed state in the database (tables registry_row and
    runtime_state, one deployment per Redis prefix), for :class:`RedisMetricRegistry` to rebuild from."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def save(self, pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int, str]]:
        return self.rt.database.save_registry_rows(self.rt.settings.redis_prefix, pairs)

    def load(self) -> list[tuple[int, str]]:
        return self.rt.database.registry_rows(self.rt.settings.redis_prefix)

    def restored(self) -> None:
        """Put the tick back where the database says it was committed: its step, the trackers' state,
        the people's-actions cursor and the alert book (else open incidents would be opened again)."""
        rt = self.rt
        raw = rt.database.runtime_state(rt.settings.redis_prefix, "tick")
        if raw is None:
            return
        saved = json.loads(zlib.decompress(raw))
        pipe = rt.r.pipeline(transaction=True)
        pipe.set(rt.k("tick", "state"), zlib.compress(json.dumps(saved["state"]).encode()))
        pipe.set(rt.k("tick", "people"), int(saved["people"]))
        pipe.set(rt.k("alerts", "book"), zlib.compress(json.dumps(saved["book"]).encode()))
        pipe.set(rt.k("tick", "scored"), int(saved["slot"]))
        pipe.hincrby(rt.k("stats"), "redis_data_lost", 1)
        pipe.set(rt.k("registry", "rebuilt_at"), time.time())
        pipe.execute()
        rt._state = None
        log.error("tick restored from the database at step %d after Redis lost its data", saved["slot"])


def known_rows(det: Detected, n: int) -> Detected:
    """Scores of rows this process knows a name for, each row once (a shard's scores from another
    registry would otherwise fail the trackers; they are dropped with a warning)."""
    rows = det.rows
    keep = rows < n
    if len(rows) > 1:
        keep[1:] &= rows[1:] != rows[:-1]  # merge_detected sorts by row
    if keep.all():
        return det
    log.warning("%d scores for rows without a name or repeated were dropped", int((~keep).sum()))
    sc = det.scores
    return Detected(
        rows[keep],
        Scores(
            score=sc.score[keep],
            direction=sc.direction[keep],
            status=sc.status[keep],
            raw={k: v[keep] for k, v in sc.raw.items()},
        ),
        det.with_newest,
    )


def pack_detected(det: Detected) -> bytes:
    """A shard's scores as bytes (a JSON header, then the arrays), the same bytes for the same scores."""
    sc = det.scores
    keys = sorted(sc.raw)
    head = json.dumps({"n": len(det.rows), "raw": keys, "with_newest": det.with_newest}).encode()
    parts = [
        len(head).to_bytes(4, "little"),
        head,
        det.rows.astype("<i8").tobytes(),
        np.asarray(sc.score, dtype="<f8").tobytes(),
        np.asarray(sc.direction, dtype="i1").tobytes(),
        np.asarray(sc.status, dtype="u1").tobytes(),
        *(np.asarray(sc.raw[k], dtype="<f8").tobytes() for k in keys),
    ]
    return b"".join(parts)


def ledger_blob(ledger: TailLedger) -> bytes:
    """The tail ledger's state as compressed bytes (numpy's own format: its arrays, one per metric)."""
    buf = io.BytesIO()
    np.savez(buf, **ledger.to_state())  # type: ignore[arg-type]
    return zlib.compress(buf.getvalue(), 1)


def unpack_detected(blob: bytes) -> Detected:
    size = int.from_bytes(blob[:4], "little")
    head = json.loads(blob[4 : 4 + size])
    n, pos = head["n"], 4 + size

    def take(dtype: str, width: int) -> np.ndarray:
        nonlocal pos
        arr = np.frombuffer(blob, dtype=dtype, count=n, offset=pos)
        pos += n * width
        return arr

    rows = take("<i8", 8).astype(np.int64)
    score, direction, status = take("<f8", 8).copy(), take("i1", 1).copy(), take("u1", 1).copy()
    raw = {k: take("<f8", 8).copy() for k in head["raw"]}
    return Detected(rows, Scores(score=score, direction=direction, status=status, raw=raw), head["with_newest"])


def merge_detected(parts: Sequence[Detected]) -> Detected:
    """All shards' scores of a step as one, in row order (the order embedded mode scores them in)."""
    rows = np.concatenate([p.rows for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    keys = set.intersection(*(set(p.scores.raw) for p in parts)) if parts else set()

    def cat(get: Any) -> np.ndarray:
        return np.concatenate([get(p) for p in parts])[order] if parts else np.zeros(0)

    scores = Scores(
        score=cat(lambda p: p.scores.score),
        direction=cat(lambda p: p.scores.direction),
        status=cat(lambda p: p.scores.status),
        raw={k: cat(lambda p, k=k: p.scores.raw[k]) for k in sorted(keys)},
    )
    return Detected(rows[order], scores, sum(p.with_newest for p in parts))


def wipe(client: redis.Redis, prefix: str) -> int:
    """Delete every key of one deployment (tests, benches); never touches other prefixes."""
    n = 0
    batch: list[bytes] = []
    for key in client.scan_iter(f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            n += int(client.delete(*batch))
            batch = []
    if batch:
        n += int(client.delete(*batch))
    return n
