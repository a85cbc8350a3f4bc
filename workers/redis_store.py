"""Distributed mode's storage in Redis: the window store and the metric registry.

:class:`RedisWindowStore` has the interface of :class:`workers.store.MemoryWindowStore` and the
same semantics, so the pipeline cannot tell them apart: points land in the slot
``floor(timestamp / step)``, a later point for a slot replaces the earlier one, points older
than the retention (relative to the newest point of the whole store) are rejected and counted.

Layout: one Redis string per metric, ``4 + 4 * length`` bytes — the newest slot written
(uint32) then a float32 ring of ``length`` slots (slot ``s`` at position ``s % length``, NaN
where missing). 480 points take 1,924 bytes plus Redis' per-key overhead. Appends run in one
Lua script per batch, so they are atomic (a batch is either stored or not) and idempotent
(storing the same batch twice leaves the same bytes). Each append renews the key's expiry to
the retention, so a metric that stops reporting leaves Redis after ``length`` steps (retention
by age); the ring keeps at most ``length`` steps (retention by count). Reading the windows of
10,000 metrics is one ``MGET`` (parsed by hiredis).

:class:`RedisMetricRegistry` gives every metric a dense row, shared by all processes: a hash
(name → row), a list (row → name) and per shard a list of its rows, written by one Lua script
so that concurrent registrations never give a name two rows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import redis

from stormeye.core.errors import Conflict, Unavailable
from stormeye.workers.sharding import shards_of
from stormeye.workers.store import AppendResult, last_of_each

log = logging.getLogger("stormeye.registry")

_NAN32 = np.array([np.nan], dtype="<f4").tobytes()

# KEYS[1] = the oldest-slot key; ARGV[1] = a slot: kept if older than the one there
_MARK_OLDEST = """
local v = redis.call('GET', KEYS[1])
if (not v) or tonumber(v) > tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS[1] = the registry's epoch; ARGV[1] = the epoch expected, then any script's arguments: the
# guard put in front of the append so points are written under rows of the registry Redis holds now
_EPOCH_GUARD = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0, 0} end
"""


# KEYS[1] = the registry's epoch, KEYS[2] = newest-slot key, KEYS[3..] = metric keys (distinct).
# ARGV: the epoch expected ('' = do not check), length, ttl_ms, NaN bytes, counts (uint32 per metric),
# slots (uint32, ascending per metric), values (float32). Returns {accepted, too_old, newest slot},
# or {-1, 0, 0} when the registry's epoch is not the one expected (nothing written).
_APPEND = (
    _EPOCH_GUARD
    + """
local L = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local RENEW = 8  -- the expiry is renewed every 8th step (and the TTL covers 8 more steps)
local NAN = ARGV[4]
local counts, slots, vals = ARGV[5], ARGV[6], ARGV[7]
local npts = #slots / 4
local top = -1
for p = 0, npts - 1 do
  local s = struct.unpack('<I4', slots, 4 * p + 1)
  if s > top then top = s end
end
local g = redis.call('GET', KEYS[2])
local newest = top
if g and tonumber(g) > newest then newest = tonumber(g) end
local minslot = newest - L + 1
local function fill(key, a, n)
  -- NaN into slots a .. a + n - 1 (n < L), wrapping around the ring
  local pos = a % L
  local first = math.min(n, L - pos)
  if first > 0 then redis.call('SETRANGE', key, 4 + 4 * pos, string.rep(NAN, first)) end
  if n - first > 0 then redis.call('SETRANGE', key, 4, string.rep(NAN, n - first)) end
end
local accepted, old = 0, 0
local p = 0
for i = 3, #KEYS do
  local key = KEYS[i]
  local n = struct.unpack('<I4', counts, 4 * (i - 3) + 1)
  local hb = redis.call('GETRANGE', key, 0, 3)
  local head = -1
  if #hb == 4 then head = struct.unpack('<I4', hb) end
  local renew = head < 0
  for j = 1, n do
    local s = struct.unpack('<I4', slots, 4 * p + 1)
    local v = string.sub(vals, 4 * p + 1, 4 * p + 4)
    p = p + 1
    if s < minslot or (head >= 0 and s <= head - L) then
      old = old + 1
    else
      if head < 0 or s - head >= L then
        redis.call('SET', key, struct.pack('<I4', s) .. string.rep(NAN, L))
        head = s
        renew = true
      elseif s > head then
        if s - head > 1 then fill(key, head + 1, s - head - 1) end
        redis.call('SETRANGE', key, 0, struct.pack('<I4', s))
        head = s
      end
      redis.call('SETRANGE', key, 4 + 4 * (s % L), v)
      accepted = accepted + 1
      if s % RENEW == 0 then renew = true end
    end
  end
  if renew and ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
if accepted > 0 and (not g or newest > tonumber(g)) then redis.call('SET', KEYS[2], newest) end
return {accepted, old, newest}
"""
)

# KEYS[1] = the registry's epoch, KEYS[2] = name->row hash, KEYS[3] = row->name list, KEYS[4..] = shard
# row lists. ARGV: the epoch the caller's rows belong to, then pairs of (name, shard). Returns {-1} when
# the epoch is not that one (Redis lost or rebuilt its registry), else {0, rows..., how many were new}.
_REGISTER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local out = {0}
local new = 0
for i = 2, #ARGV, 2 do
  local name = ARGV[i]
  local row = redis.call('HGET', KEYS[2], name)
  if not row then
    row = redis.call('RPUSH', KEYS[3], name) - 1
    redis.call('HSET', KEYS[2], name, row)
    redis.call('RPUSH', KEYS[4 + tonumber(ARGV[i + 1])], row)
    new = new + 1
  end
  out[#out + 1] = tonumber(row)
end
out[#out + 1] = new
return out
"""


def as_bytes(value: object) -> bytes:
    """A reply of the client (which never decodes replies) as the bytes it is."""
    if not isinstance(value, bytes):
        raise TypeError(
            f"a Redis reply of bytes was expected, got {type(value).__name__}: connect with decode_responses=False"
        )
    return value


def as_text(value: object) -> str:
    """A reply of the client holding text (a name, an id), decoded."""
    return as_bytes(value).decode()


class Keys:
    """Every Redis key of one deployment, under its prefix (``STORMEYE_REDIS_PREFIX``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, *parts: object) -> str:
        return ":".join([self.prefix, *map(str, parts)])

    def window(self, row: int) -> str:
        return f"{self.prefix}:w:{row}"


class RedisWindowStore:
    """The window store in Redis (see the module docstring); same interface as the in-process one."""

    def __init__(self, client: redis.Redis, prefix: str, step: int, length: int, ttl_s: float | None = None) -> None:
        if step <= 0 or length < 2:
            raise ValueError("step must be positive and length at least 2")
        self.r = client
        self.keys = Keys(prefix)
        self.step = int(step)
        self.length = int(length)
        # a metric silent for its whole retention holds nothing: let Redis drop it then
        # renewed every 8th step, so it covers 8 steps more than the retention
        self.ttl_ms = int(1000 * (ttl_s if ttl_s is not None else self.step * (self.length + 9)))
        self._append = client.register_script(_APPEND)
        self._mark_oldest = client.register_script(_MARK_OLDEST)
        self._newest_key = self.keys("newest_slot")

    def newest(self) -> float | None:
        v = self.r.get(self._newest_key)
        return None if v is None else float(int(v) * self.step)

    def mark_oldest(self, at: float) -> None:
        """Remember the oldest step written (kept: the earliest ever marked)."""
        self._mark_oldest(keys=[self.keys("oldest_slot")], args=[int(at // self.step)])

    def oldest(self) -> float | None:
        """The oldest step :meth:`mark_oldest` was given (None: never)."""
        v = self.r.get(self.keys("oldest_slot"))
        return None if v is None else float(int(v) * self.step)

    def append(
        self, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray, epoch: tuple[str, str] | None = None
    ) -> AppendResult:
        """Store points; with ``epoch`` (the registry's epoch key and the epoch ``rows`` belong to) only
        while Redis' registry is still that one, else :class:`RegistryStale` and nothing is written."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return AppendResult(0, 0)
        slots = np.floor(np.asarray(timestamps, dtype=np.float64) / self.step).astype(np.int64)
        if slots.min() < 0 or slots.max() >= 2**32:
            raise ValueError("timestamps must lie between 1970 and the year 2106 at this step")
        vals = np.asarray(values, dtype=np.float64)
        # repeats of a (metric, slot) in this batch are counted; the last one given wins, since
        # the script writes in the order below
        merged = last_of_each(rows, slots)[1]
        # per metric, in slot order; equal slots keep their arrival order (the later one wins)
        order = np.lexsort((np.arange(len(rows)), slots, rows))
        rows, slots, vals = rows[order], slots[order], vals[order]
        uniq, counts = np.unique(rows, return_counts=True)
        keys = [epoch[0] if epoch else self.keys("registry", "epoch"), self._newest_key]
        keys += [self.keys.window(int(r)) for r in uniq]
        args: list[bytes | str | int | float] = [
            epoch[1] if epoch else "",
            self.length,
            self.ttl_ms,
            _NAN32,
            counts.astype("<u4").tobytes(),
            slots.astype("<u4").tobytes(),
            vals.astype("<f4").tobytes(),
        ]
        accepted, old, _ = self._append(keys=keys, args=args)
        if int(accepted) < 0:
            raise RegistryStale(f"the registry's epoch is no longer {epoch[1] if epoch else ''!r}; nothing was written")
        return AppendResult(int(accepted), int(old), merged)

    def load(self, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> AppendResult:
        """Bulk-load a matrix (rows x len(timestamps)) of history, e.g. to seed a deployment.

        Metrics that hold nothing yet get their whole ring in one ``SET NX`` (pipelined: a
        hundred thousand metrics in seconds); the others take the points through :meth:`append`.
        NaN means no point. As in the in-process store, only the newest ``length`` columns are
        loaded; the windows are then the same as after appending every point.
        """
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(timestamps, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64).reshape(len(rows), len(ts))
        ts, vals = ts[-self.length :], vals[:, -self.length :]
        if not len(rows) or not len(ts):
            return AppendResult(0, 0)
        slots = np.floor(ts / self.step).astype(np.int64)
        # the newest point of the whole store after this load, and what the retention keeps
        old = self.r.get(self._newest_key)
        top = int(slots.max()) if old is None else max(int(old), int(slots.max()))
        keep = slots > top - self.length
        order = np.argsort(slots[keep], kind="stable")  # a later column of the same slot wins
        kslots, kvals = slots[keep][order], vals[:, keep][:, order]
        finite = np.isfinite(kvals)
        too_old = int(np.isfinite(vals[:, ~keep]).sum())
        ring = np.full((len(rows), self.length), np.nan, dtype="<f4")
        for j, s in enumerate(kslots):
            col = kvals[:, j]
            ok = finite[:, j]
            ring[ok, s % self.length] = col[ok]
        has = finite.any(axis=1)
        # each metric's newest slot written: the last finite column
        last = np.where(has, len(kslots) - 1 - np.argmax(finite[:, ::-1], axis=1), 0)
        heads = kslots[last] if len(kslots) else np.zeros(len(rows), dtype=np.int64)
        fresh = np.zeros(len(rows), dtype=bool)
        todo = np.flatnonzero(has)
        for lo in range(0, len(todo), 10_000):
            part = todo[lo : lo + 10_000]
            pipe = self.r.pipeline(transaction=False)
            for i in part:
                blob = heads[i].astype("<u4").tobytes() + ring[i].tobytes()
                pipe.set(self.keys.window(int(rows[i])), blob, nx=True, px=self.ttl_ms)
            fresh[part] = np.asarray(pipe.execute(), dtype=bool)
        accepted = int(finite[fresh].sum())
        if accepted:
            self.r.eval(
                "local c = tonumber(redis.call('GET', KEYS[1]) or '-1') "
                "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end return 1",
                1,
                self._newest_key,
                int(heads[fresh & has].max()),
            )
        result = AppendResult(accepted, too_old)
        rest = np.flatnonzero(has & ~fresh)  # metrics that already held points
        per_call = max(1, 200_000 // len(kslots)) if len(kslots) else 1
        for lo in range(0, len(rest), per_call):
            part = rest[lo : lo + per_call]
            r = np.repeat(rows[part], len(kslots))
            t = np.tile(kslots * float(self.step), len(part))
            v = kvals[part].reshape(-1)
            ok = np.isfinite(v)
            res = self.append(r[ok], t[ok], v[ok])
            result = AppendResult(result.accepted + res.accepted, result.too_old + res.too_old)
        return result

    @property
    def window_bytes(self) -> int:
        return 4 + 4 * self.length

    def raw(self, rows: np.ndarray) -> bytes:
        """The stored windows of ``rows``, concatenated, in one round-trip (``MGET``s in one pipeline).

        A missing window reads as 0xFF bytes: its newest slot is then 2^32 - 1, so none of its
        slots is valid.
        """
        if not len(rows):
            return b""
        size = self.window_bytes
        missing = b"\xff" * size
        pipe = self.r.pipeline(transaction=False)
        for lo in range(0, len(rows), 10_000):
            pipe.mget([self.keys.window(int(r)) for r in rows[lo : lo + 10_000]])
        return b"".join(b if b is not None and len(b) == size else missing for part in pipe.execute() for b in part)

    def windows(self, rows: np.ndarray, end: float, points: int) -> np.ndarray:
        """Windows of ``points`` steps ending at the step of ``end`` (float64, NaN where missing)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full((len(rows), points), np.nan)
        if not len(rows):
            return out
        newest = self.newest()
        if newest is None:
            return out
        return self.decode(self.raw(rows), end, points, int(newest // self.step))

    def segments(self, rows: np.ndarray, spans: Sequence[tuple[float, int]]) -> list[np.ndarray]:
        """:meth:`windows` for each ``(end, points)`` of ``spans``, from one read of the rows' rings."""
        rows = np.asarray(rows, dtype=np.int64)
        newest = self.newest()
        if not len(rows) or newest is None:
            return [np.full((len(rows), points), np.nan) for _, points in spans]
        blob = self.raw(rows)
        return [self.decode(blob, end, points, int(newest // self.step)) for end, points in spans]

    def decode(self, blob: bytes, end: float, points: int, newest_slot: int) -> np.ndarray:
        """Windows from :meth:`raw`'s bytes: the slots ``end - points + 1 .. end`` of each metric's ring."""
        L, size = self.length, self.window_bytes
        buf = np.frombuffer(blob, dtype=np.uint8).reshape(-1, size)
        heads = buf[:, :4].copy().view("<u4").ravel().astype(np.int64)
        end_slot = int(np.floor(end / self.step))
        slots = np.arange(end_slot - points + 1, end_slot + 1)
        pos = 4 + 4 * (slots % L)
        cols = (pos[:, None] + np.arange(4)[None, :]).ravel()  # the bytes of the wanted slots only
        vals = buf[:, cols].copy().view("<f4").astype(np.float64)
        valid = (
            (slots[None, :] <= heads[:, None])
            & (slots[None, :] > heads[:, None] - L)
            & (slots[None, :] > newest_slot - L)
        )
        return np.where(valid, vals, np.nan)

    def memory_usage(self, rows: Sequence[int]) -> int:
        """Bytes Redis spends on the windows of ``rows`` (``MEMORY USAGE``, values and key overhead)."""
        pipe = self.r.pipeline(transaction=False)
        for r in rows:
            pipe.memory_usage(self.keys.window(int(r)), samples=0)
        return int(sum(v or 0 for v in pipe.execute()))


class RegistryStale(Unavailable, RuntimeError):
    """Redis' registry is not the one the caller's rows came from (Redis lost its data, or it was rebuilt)."""


class Durable(Protocol):
    """Where the registry keeps every row it gives out, to rebuild Redis' copy from (the database)."""

    def save(self, pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int, str]]: ...

    def load(self) -> list[tuple[int, str]]: ...

    def restored(self) -> None:
        """Called, under the rebuild lock, after Redis' registry was rebuilt (restore what else Redis lost)."""


LOST_ROW = "stormeye_lost_row"  # the placeholder name of a row the database never heard of


class ShardConfigError(Conflict, RuntimeError):
    """The Redis deployment was set up with another shard count than this process has."""


class RedisMetricRegistry:
    """Metric names ↔ dense rows ↔ shards, shared by every process through Redis.

    Each process keeps a copy of the append-only lists and fetches only what is new. The copy
    belongs to one *epoch* of Redis' registry (a random id in ``<prefix>:registry:epoch``): a Redis
    that lost its data has no epoch, and the first process to notice rebuilds the registry from
    ``durable`` (the database, where every row is written before a point is stored under it) under a
    lock, with a new epoch; every process then drops its copy. Registration and the window store's
    append refuse to work under another epoch than the caller's, so no name gets a row that
    another name holds, and no point is written under a row that means another metric now.
    """

    def __init__(self, client: redis.Redis, prefix: str, shards: int, durable: Durable | None = None) -> None:
        self.r = client
        self.keys = Keys(prefix)
        self.shards = int(shards)
        self.durable = durable
        self._register = client.register_script(_REGISTER)
        self._rows: dict[str, int] = {}
        self.names: list[str] = []
        self._shard_rows: dict[int, list[int]] = {}
        self.epoch_key = self.keys("registry", "epoch")
        self.epoch: str | None = None
        self.generation = 0  # bumped whenever this process's copy is dropped (the names may differ now)
        self.rebuilds = 0  # how many times this process rebuilt Redis' registry
        self._list_keys = [self.keys("metric", "rows"), self.keys("metric", "names")]
        self._shard_keys = [self.keys("shard", k, "rows") for k in range(self.shards)]

    def check_shards(self) -> None:
        """Fix the shard count of the deployment on first use; refuse a different one later."""
        key = self.keys("config", "shards")
        self.r.set(key, self.shards, nx=True)
        have = int(self.r.get(key) or self.shards)
        if have != self.shards:
            raise ShardConfigError(
                f"the deployment under Redis prefix {self.keys.prefix!r} was set up with {have} shards but "
                f"STORMEYE_SHARDS={self.shards}: metrics would land in other shards than their state. "
                f"Set STORMEYE_SHARDS={have}, or start a new deployment under another STORMEYE_REDIS_PREFIX."
            )

    def __len__(self) -> int:
        return int(self.r.llen(self._list_keys[1]))

    # -- the epoch ---------------------------------------------------------------------------

    def sync(self) -> str:
        """Make this process's copy belong to the registry Redis holds now (rebuilt first if Redis lost it)."""
        raw = self.r.get(self.epoch_key)
        epoch = as_text(raw) if raw is not None else self._recover()
        if epoch != self.epoch:
            if self.epoch is not None:
                log.warning("Redis' metric registry changed (epoch %s -> %s): reloading it", self.epoch, epoch)
            self._rows = {}
            self.names = []
            self._shard_rows = {}
            self.epoch = epoch
            self.generation += 1
            self._fetch()
        return epoch

    def _recover(self) -> str:
        """Redis holds no epoch: a new deployment, one from before epochs, or a Redis that lost its data."""
        with self.r.lock(self.keys("registry", "rebuild"), timeout=300, blocking_timeout=300):
            raw = self.r.get(self.epoch_key)
            if raw is not None:
                return as_text(raw)  # another process rebuilt it meanwhile
            held = [as_text(b) for b in self.r.lrange(self._list_keys[1], 0, -1)]
            if held:
                # a deployment from before the epoch: Redis' registry stands; the database learns it
                if self.durable is not None:
                    conflicts = self.durable.save(list(zip(held, range(len(held)))))
                    if conflicts:
                        raise RuntimeError(
                            f"Redis' metric registry under {self.keys.prefix!r} holds {len(held)} names without an "
                            f"epoch and disagrees with the database (e.g. {conflicts[0]}): delete Redis' keys "
                            f"{self.keys.prefix}:metric:* and {self.keys.prefix}:shard:* to rebuild them from "
                            "the database"
                        )
                log.warning("metric registry of %d names adopted as it is in Redis", len(held))
            else:
                pairs = self.durable.load() if self.durable is not None else []
                if pairs:
                    self._rebuild(pairs)
                    self.rebuilds += 1
                    log.error(
                        "Redis lost its data (no registry epoch under %r): rebuilt the registry of %d metric "
                        "rows from the database; points and batches that were only in Redis are gone",
                        self.keys.prefix,
                        len(pairs),
                    )
                if self.durable is not None:
                    self.durable.restored()
            self.r.set(self.epoch_key, uuid.uuid4().hex, nx=True)
            return as_text(self.r.get(self.epoch_key))

    def _rebuild(self, pairs: Sequence[tuple[int, str]]) -> None:
        """Write the registry ``pairs`` (row, name) back into Redis; a row missing there gets a placeholder name."""
        by_row = dict(pairs)
        n = max(by_row) + 1
        names = [by_row.get(r, f'{LOST_ROW}{{row="{r}"}}') for r in range(n)]
        shards = shards_of(names, self.shards)
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(*self._list_keys, *self._shard_keys)
        for lo in range(0, n, 5000):
            chunk = names[lo : lo + 5000]
            pipe.rpush(self._list_keys[1], *chunk)
            pipe.hset(self._list_keys[0], mapping={nm: lo + i for i, nm in enumerate(chunk)})
            pipe.execute()
        for k in range(self.shards):
            rows = np.flatnonzero(shards == k)
            for lo in range(0, len(rows), 5000):
                pipe.rpush(self._shard_keys[k], *(int(r) for r in rows[lo : lo + 5000]))
        pipe.execute()

    # -- names and rows ----------------------------------------------------------------------

    def _fetch(self) -> list[str]:
        new = self.r.lrange(self._list_keys[1], len(self.names), -1)
        added = [as_text(b) for b in new]
        for n in added:
            self._rows[n] = len(self.names)
            self.names.append(n)
        return added

    def refresh(self) -> list[str]:
        """Fetch the names registered since the last call (by any process); returns them."""
        gen = self.generation
        self.sync()
        added = self._fetch()
        return list(self.names) if gen != self.generation else added

    def rows(self, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of ``names``, registering unknown ones; returns (rows, names new to the deployment).

        Rows of new names are written to ``durable`` before they are returned, so no point is ever
        stored under a row the database does not know.
        """
        for _ in range(5):
            got = self._rows_once(names)
            if got is not None:
                return got
        raise RegistryStale("Redis' metric registry kept changing while names were registered; retry")

    def _rows_once(self, names: Sequence[str]) -> tuple[np.ndarray, list[str]] | None:
        epoch = self.sync()
        out = np.empty(len(names), dtype=np.int64)
        unknown: dict[str, list[int]] = {}
        get = self._rows.get
        for i, n in enumerate(names):
            r = get(n)
            if r is None:
                unknown.setdefault(n, []).append(i)
            else:
                out[i] = r
        new: list[str] = []
        if unknown:
            todo = list(unknown)
            shards = shards_of(todo, self.shards)
            for lo in range(0, len(todo), 5000):
                chunk = todo[lo : lo + 5000]
                args: list[Any] = [epoch]
                for n, s in zip(chunk, shards[lo : lo + 5000]):
                    args += [n, int(s)]
                res = self._register(keys=[self.epoch_key, *self._list_keys, *self._shard_keys], args=args)
                if int(res[0]) < 0:
                    return None  # Redis lost or rebuilt its registry meanwhile: start again
                got = [int(r) for r in res[1:-1]]
                n_new = int(res[-1])
                for n, r in zip(chunk, got):
                    out[unknown[n]] = r
                # names new to the deployment were given the highest rows of this chunk
                fresh = sorted(zip(got, chunk))[-n_new:] if n_new else []
                new += [n for _, n in fresh]
                if self.durable is not None:
                    # every row of the chunk: a row given out by a process that died before writing it is kept too
                    conflicts = self.durable.save(list(zip(chunk, got)))
                    if conflicts:
                        # Redis' registry is not the database's: make every process rebuild it from the database
                        log.error("Redis' registry disagrees with the database (%s): rebuilding it", conflicts[:3])
                        self.r.eval(
                            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[2], "
                            "KEYS[3]) end return 0",
                            3,
                            self.epoch_key,
                            *self._list_keys,
                            epoch,
                        )
                        return None
            self._fetch()
        return out, new

    def known(self, name: str) -> bool:
        """Whether this process already knows ``name`` as a registered (canonical) metric."""
        return name in self._rows

    def row(self, name: str) -> int:
        r = self._rows.get(name)
        if r is None:
            self.refresh()
            r = self._rows[name]
        return r

    def shard_rows(self, shard: int) -> np.ndarray:
        """Rows of one shard, in registration order."""
        self.sync()
        have = self._shard_rows.setdefault(shard, [])
        new = self.r.lrange(self._shard_keys[shard], len(have), -1)
        have.extend(int(b) for b in new)
        return np.asarray(have, dtype=np.int64)
