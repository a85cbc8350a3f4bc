"""Reading points from the outside world, and replaying a history through the pipeline.

Every record is checked on its own: a bad one is rejected with a message that says what is
wrong and how to fix it (with its line or index), and every good one is kept. Accepted forms:

- CSV ``metric,timestamp,value`` (header optional, columns in any order when a header names
  them; quote metric names that contain commas, as any CSV writer does);
- JSON lines / JSON objects: ``{"metric": "cpu{host=\\"a\\"}", "timestamp": 1700000000, "value": 0.5}``,
  where ``metric`` may also be a label object and ``name`` + ``labels`` is accepted too.

Timestamps are UTC epoch seconds (milliseconds are recognised by their size) or ISO 8601 text.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stormeye.core.errors import BadInput
from stormeye.core.labels import ControlCharacterError, LabelLimits
from stormeye.core.times import BadTime, parse_time, seconds_from
from stormeye.grouping.graphite import GraphiteTemplates
from stormeye.grouping.names import MetricNameError, canonical, parse

MAX_ERRORS_KEPT = 1000
_NAME_FIELDS = ("metric", "name", "series", "__name__")
_TIME_FIELDS = ("timestamp", "time", "ts", "t")
_VALUE_FIELDS = ("value", "v", "val")


class PointError(BadInput):
    """One point is unusable; the message says why and what to send instead."""


class NotFinite(PointError):
    """A value is NaN or infinite (collectd writes ``nan`` for a value it has not got)."""


class UnsafeText(PointError):
    """A point's name holds a control character: the whole request is refused (400), not just the point."""


@dataclass
class RowError:
    where: str  # "line 12" or "points[3]"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class PointBatch:
    """Validated points: canonical metric names, epoch seconds and finite values."""

    names: list[str] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # where each kept point came from
    errors: list[RowError] = field(default_factory=list)
    rejected: int = 0
    not_finite: int = 0  # of ``rejected``: values that were NaN or infinite (counted apart, docs/ingest.md)

    def __len__(self) -> int:
        return len(self.names)

    def reject(self, where: str, message: str, not_finite: bool = False) -> None:
        self.rejected += 1
        self.not_finite += int(not_finite)
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(RowError(where, message))

    def arrays(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        return self.names, np.asarray(self.timestamps, dtype=np.float64), np.asarray(self.values, dtype=np.float64)


class PointReader:
    """Validates points one by one, caching parsed metric names (``graphite``: templates for dotted names;
    ``limits``: how large a name may be)."""

    def __init__(
        self, graphite: GraphiteTemplates | None = None, limits: LabelLimits | None = None, refuse: bool = True
    ) -> None:
        self._names: dict[str, str] = {}
        self.graphite = graphite
        self.limits = limits
        self.refuse = refuse  # False (files): a control character rejects its point only

    def metric(self, raw: Any) -> str:
        """The canonical name; :class:`UnsafeText` for a control character, :class:`PointError` else."""
        if isinstance(raw, Mapping):
            try:
                return canonical(parse(raw, limits=self.limits))
            except ControlCharacterError as exc:
                raise UnsafeText(f"metric: {exc}") from None
            except MetricNameError as exc:
                raise PointError(f"metric: {exc}") from None
        if not isinstance(raw, str):
            raise PointError(f"metric must be text or a label object, got {type(raw).__name__}")
        got = self._names.get(raw)
        if got is None:
            try:
                got = canonical(parse(raw, self.graphite, self.limits))
            except ControlCharacterError as exc:
                raise UnsafeText(f"metric: {exc}") from None
            except MetricNameError as exc:
                raise PointError(f"metric: {exc}") from None
            if len(self._names) < 2_000_000:
                self._names[raw] = got
        return got

    def add(self, batch: PointBatch, where: str, metric: Any, timestamp: Any, value: Any) -> None:
        """Keep the point or reject it with the reason; raises :class:`UnsafeText` (naming ``where``) for
        a control character, which refuses the whole request."""
        try:
            name = self.metric(metric)
            ts = parse_timestamp(timestamp)
            val = parse_value(value)
        except UnsafeText as exc:
            if not self.refuse:
                batch.reject(where, str(exc))
                return
            raise UnsafeText(f"{where}: {exc}") from None
        except PointError as exc:
            batch.reject(where, str(exc), isinstance(exc, NotFinite))
            return
        batch.names.append(name)
        batch.timestamps.append(ts)
        batch.values.append(val)
        batch.sources.append(where)

    def add_records(self, batch: PointBatch, records: list[Any], prefix: str = "points") -> None:
        """Add a list of records (``{prefix}[i]`` in messages): the same result as :meth:`add_record` on
        each, with the common shape — every record exactly ``{"metric": text, "timestamp": number,
        "value": number}`` and every one good — checked and converted for the whole list at once."""
        fast = _fast_columns(records)
        if fast is not None:
            ts, vals = fast
            names: list[str] = []
            get = self._names.get
            try:
                for rec in records:
                    raw = rec["metric"]
                    names.append(get(raw) or self.metric(raw))
            except PointError:
                fast = None
        if fast is None:
            for i, rec in enumerate(records):
                self.add_record(batch, f"{prefix}[{i}]", rec)
            return
        big = ts > 1e11
        if big.any():
            ts = np.where(big, ts / 1000.0, ts)
        batch.names.extend(names)
        if not batch.timestamps:  # the whole batch: keep the arrays (arrays() takes them as they are)
            batch.timestamps, batch.values = ts, vals  # type: ignore[assignment]
            batch.sources = _Where(prefix, len(records))  # type: ignore[assignment]
        else:
            batch.timestamps.extend(ts.tolist())
            batch.values.extend(vals.tolist())
            batch.sources.extend(f"{prefix}[{i}]" for i in range(len(records)))

    def add_record(self, batch: PointBatch, where: str, rec: Any) -> None:
        if not isinstance(rec, Mapping):
            batch.reject(
                where, f"a point must be a JSON object with metric, timestamp and value, got {type(rec).__name__}"
            )
            return
        metric = _first(rec, _NAME_FIELDS)
        if isinstance(metric, str) and isinstance(rec.get("labels"), Mapping):
            metric = {**rec["labels"], "__name__": metric}
        elif metric is None and isinstance(rec.get("labels"), Mapping):
            metric = rec["labels"]
        ts = _first(rec, _TIME_FIELDS)
        val = _first(rec, _VALUE_FIELDS, missing=_MISSING)
        missing = [n for n, v in (("metric", metric), ("timestamp", ts)) if v is None]
        if val is _MISSING:
            missing.append("value")
        if missing:
            batch.reject(where, f"missing field(s) {', '.join(missing)}: a point needs metric, timestamp and value")
            return
        self.add(batch, where, metric, ts, val)


_MISSING = object()
_NUMBER = {int, float}


class _Where:
    """``prefix[i]`` for every index, made only when asked (for the few points rejected later)."""

    def __init__(self, prefix: str, n: int) -> None:
        self.prefix, self.n = prefix, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> str:
        return f"{self.prefix}[{int(k)}]"


def _fast_columns(records: list[Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """Timestamps and values when every record is ``{"metric": text, "timestamp": number, "value": number}``
    with finite numbers and plausible times; None sends the list through the per-record path."""
    if not records or set(map(type, records)) != {dict} or set(map(len, records)) != {3}:
        return None
    try:
        metrics = [r["metric"] for r in records]
        raw_ts = [r["timestamp"] for r in records]
        raw_vals = [r["value"] for r in records]
    except KeyError:
        return None
    if set(map(type, metrics)) != {str} or not set(map(type, raw_ts)) <= _NUMBER:
        return None
    if not set(map(type, raw_vals)) <= _NUMBER:
        return None
    try:
        ts = np.array(raw_ts, dtype=np.float64)
        vals = np.array(raw_vals, dtype=np.float64)
    except OverflowError:
        return None
    if not (np.isfinite(vals).all() and np.isfinite(ts).all() and (ts >= 0).all() and (ts <= 1e14).all()):
        return None
    return ts, vals


def _first(rec: Mapping[str, Any], keys: tuple[str, ...], missing: Any = None) -> Any:
    for k in keys:
        if k in rec:
            return rec[k]
    return missing


def parse_timestamp(raw: Any) -> float:
    """Epoch seconds from seconds, milliseconds or ISO 8601 text (``core.times``), 1970 to 5138."""
    try:
        t = parse_time(raw, "timestamp")
    except BadTime as exc:
        raise PointError(str(exc)) from None
    if t > 1e14:
        raise PointError(f"timestamp {raw!r} is too large: send epoch seconds (or milliseconds)")
    t = seconds_from(t)
    if t < 0:
        raise PointError(f"timestamp {raw!r} is before 1970: send UTC epoch seconds")
    return t


def parse_value(raw: Any) -> float:
    """A finite float; NaN and infinities are refused (send no point for a missing value)."""
    if isinstance(raw, bool) or raw is None:
        raise PointError(f"value must be a number, got {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            v = float(raw)
        except OverflowError:  # an integer beyond any float, 10**400
            raise PointError(f"value {raw} is too large: values are 64-bit floats (at most about 1.8e308)") from None
    elif isinstance(raw, str):
        try:
            v = float(raw.strip())
        except ValueError:
            raise PointError(f"value {raw!r} is not a number") from None
    else:
        raise PointError(f"value must be a number, got {type(raw).__name__}")
    if not math.isfinite(v):
        raise NotFinite(
            f"value {raw!r} is not finite: NaN and infinity are refused; leave the point out when there is no value"
        )
    return v


# -- files ---------------------------------------------------------------------------------


def read_points(path: str | Path, graphite: GraphiteTemplates | None = None) -> PointBatch:
    """Read a CSV or JSON-lines file of points (by extension, else by its first character)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    with p.open("r", encoding="utf-8", errors="replace", newline="") as f:
        head = f.read(4096)
        f.seek(0)
        first = head.lstrip()[:1]
        if p.suffix.lower() in (".jsonl", ".ndjson", ".json") or first in ("{", "["):
            return read_jsonl(f, graphite)
        return read_csv(f, graphite)


def read_jsonl(lines: Iterable[str], graphite: GraphiteTemplates | None = None) -> PointBatch:
    batch = PointBatch()
    reader = PointReader(graphite, refuse=False)
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as exc:
            batch.reject(f"line {n}", f"not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        recs = rec if isinstance(rec, list) else [rec]
        for k, r in enumerate(recs):
            reader.add_record(batch, f"line {n}" + (f"[{k}]" if isinstance(rec, list) else ""), r)
    return batch


def read_csv(f: Iterable[str] | io.TextIOBase, graphite: GraphiteTemplates | None = None) -> PointBatch:
    batch = PointBatch()
    reader = PointReader(graphite, refuse=False)
    rows: Iterator[list[str]] = csv.reader(f)
    cols = (0, 1, 2)
    width = 3
    first = True
    for n, row in enumerate(rows, start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if first:
            first = False
            if _looks_like_header(row):
                header = [c.strip().lower() for c in row]
                try:
                    cols = (_col(header, _NAME_FIELDS), _col(header, _TIME_FIELDS), _col(header, _VALUE_FIELDS))
                except PointError as exc:
                    batch.reject(f"line {n}", str(exc))
                    return batch
                width = len(header)
                continue
        if len(row) != width:
            batch.reject(
                f"line {n}",
                f"expected {width} fields (metric,timestamp,value), got {len(row)}; "
                "quote metric names that contain commas",
            )
            continue
        reader.add(batch, f"line {n}", row[cols[0]], row[cols[1]], row[cols[2]])
    return batch


def _looks_like_header(row: list[str]) -> bool:
    return any(c.strip().lower() in _VALUE_FIELDS for c in row) and any(c.strip().lower() in _TIME_FIELDS for c in row)


def _col(header: list[str], names: tuple[str, ...]) -> int:
    for nm in names:
        if nm in header:
            return header.index(nm)
    raise PointError(f"header {','.join(header)!r} has no column named {names[0]!r}")


# -- replay --------------------------------------------------------------------------------


def infer_step(names: list[str], timestamps: np.ndarray) -> int:
    """The most common positive gap between consecutive points of one metric, in seconds."""
    if len(names) < 2:
        return 60
    codes = np.unique(np.asarray(names), return_inverse=True)[1]
    order = np.lexsort((timestamps, codes))
    c, t = codes[order], timestamps[order]
    same = c[1:] == c[:-1]
    gaps = np.round(np.diff(t)[same]).astype(np.int64)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return 60
    vals, counts = np.unique(gaps, return_counts=True)
    return int(vals[np.argmax(counts)])


@dataclass
class ReplayResult:
    points: int
    steps: int
    rejected_too_old: int
    first: float | None
    last: float | None
    merged: int = 0  # points replaced by a later one of the same metric in the same step (last given wins)
    reordered: int = 0  # points of a metric given before the point preceding them in time (sorted into place)
    prefetched: int = 0  # blocks the scoring processes scored ahead (replay's prefetch); the rest were scored here


def replay(
    pipeline: Any,
    batch: PointBatch,
    progress: Callable[[int, int], None] | None = None,
    finish: bool = True,
    block: bool = True,
    prefetch: bool | None = None,
) -> ReplayResult:
    """Feed a history through the pipeline in time order, as if live.

    Rows may come in any order: they are sorted by step. Points of one metric that share a
    step (a repeated timestamp, or two within one step) are merged: the last one given wins,
    and the others are counted in ``merged``.

    ``block`` (default): runs of consecutive steps are scored many at once
    (:meth:`Pipeline.replay_block`: one vectorized pass of the detector, then each step's
    anomalies to the trackers in order), which gives the same incidents as ``block=False``, the
    reference that stores and ticks one step at a time. A step after a gap (no point of any
    metric in the steps before it) goes the step-by-step way, and so does every step of a
    pipeline that cannot score blocks (alerts, another window store).

    ``prefetch``: two forked processes score the blocks ahead (:class:`BlockPrefetch`) while
    this one hands their steps to the trackers. None (default): on Linux, when the machine has a
    second core, this process runs no other thread (forking one that does is unsafe) and the replay
    holds at least :data:`PREFETCH_MIN_BLOCKS` blocks in a row; False: never; True: whenever it
    can fork. The incidents are the same either way (``ReplayResult.prefetched``: how many
    blocks came from the scorers).
    """
    names, ts, vals = batch.arrays()
    if not len(ts):
        return ReplayResult(0, 0, 0, None, None)
    step = pipeline.step
    slots = np.floor(ts / step).astype(np.int64)
    order = np.argsort(slots, kind="stable")  # within a step, the order given (the last one wins)
    ts, vals, slots = ts[order], vals[order], slots[order]
    rows = pipeline.register([names[i] for i in order])
    reordered = _reordered(rows, order)
    bounds = np.flatnonzero(np.diff(slots)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(ts)]])
    first_slots = slots[starts]
    before = pipeline.rejected_too_old
    merged = 0
    total = int(slots[-1] - slots[0] + 1)
    can_block = block and hasattr(pipeline, "replay_block")
    ticks_blocked = getattr(pipeline, "block_ticks", None)
    if ticks_blocked is not None:
        pipeline.block_ticks = block  # step by step: a tick after a gap too
    most = max_block(pipeline) if can_block else 1
    use_prefetch = can_block and _may_prefetch(prefetch) and hasattr(pipeline, "score_replay_block")
    ahead: BlockPrefetch | None = None
    k, shown, prefetched = 0, -1, 0
    try:
        while k < len(starts):
            lo = int(starts[k])
            s0 = int(first_slots[k])
            if can_block and pipeline.can_replay_block(s0):
                j = _block_end(first_slots, k, most)
                hi = int(ends[j - 1])
                if ahead is None and use_prefetch:
                    plan = _plan_blocks(first_slots, starts, ends, k, most)
                    if len(plan) >= (PREFETCH_MIN_BLOCKS if prefetch is None else 2):
                        ahead = BlockPrefetch(pipeline, plan, rows, ts, vals)
                scored = None
                if ahead is not None:
                    scored = ahead.next(lo, hi, s0, j - k)
                    prefetched += scored is not None
                    if ahead.failed:
                        use_prefetch = False  # it would fail again: the rest is scored here
                    if ahead.finished:
                        ahead = None
                merged += pipeline.replay_block(rows[lo:hi], ts[lo:hi], vals[lo:hi], s0, j - k, scored=scored)
            else:
                if ahead is not None:  # off the plan (an alert, an unsaved tick): the rest scored here
                    ahead.close()
                    ahead = None
                j, hi = k + 1, int(ends[k])
                res = pipeline.store.append(rows[lo:hi], ts[lo:hi], vals[lo:hi])
                pipeline.rejected_too_old += res.too_old
                merged += res.merged
                pipeline.tick(float(s0 * step))
            if progress is not None and (j // 50 != shown or hi == len(ts)):
                shown = j // 50
                progress(int(first_slots[j - 1] - slots[0] + 1), total)
            k = j
    finally:
        if ahead is not None:
            ahead.close()
    if ticks_blocked is not None:
        pipeline.block_ticks = ticks_blocked
    if finish:
        pipeline.finish(float((slots[-1] + 1) * step))
    return ReplayResult(
        len(ts),
        total,
        pipeline.rejected_too_old - before,
        float(ts.min()),
        float(ts.max()),
        merged,
        reordered,
        prefetched,
    )


def _block_end(first_slots: np.ndarray, k: int, most: int) -> int:
    """The end (exclusive) of the block from step ``k``: the run of consecutive steps, at most ``most``."""
    j = k + 1
    while j < len(first_slots) and j - k < most and first_slots[j] == first_slots[j - 1] + 1:
        j += 1
    return j


def _plan_blocks(
    first_slots: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int, most: int
) -> list[tuple[int, int, int, int]]:
    """The blocks :func:`replay` scores from step ``k`` up to the next gap, as (first point, end
    point, first slot, steps): what a prefetch scores ahead."""
    plan = []
    while k < len(first_slots):
        j = _block_end(first_slots, k, most)
        plan.append((int(starts[k]), int(ends[j - 1]), int(first_slots[k]), j - k))
        if j < len(first_slots) and first_slots[j] != first_slots[j - 1] + 1:
            break  # a gap: the step after it goes the step-by-step way
        k = j
    return plan


#: blocks in a row a replay needs before :func:`replay` starts a prefetch by itself (forking and
#: the first block's wait cost about what one block does)
PREFETCH_MIN_BLOCKS = 8


def _may_prefetch(prefetch: bool | None) -> bool:
    import multiprocessing
    import os
    import sys
    import threading

    if prefetch is False or "fork" not in multiprocessing.get_all_start_methods():
        return False
    if prefetch:
        return True
    # by itself only on Linux: macOS's system libraries are not safe to fork (Python's own default
    # there is spawn since 3.8)
    return sys.platform.startswith("linux") and (os.cpu_count() or 1) > 1 and threading.active_count() == 1


class BlockPrefetch:
    """Forked processes scoring a replay's planned blocks ahead of the one that tracks and groups them.

    Detection is causal and reads only the window store and the coarse seasonal history, which a
    replay advances block by block whatever the trackers do. Each child, a copy of the pipeline at
    the fork, takes every ``scorers``-th block of the plan: it scores its own
    (:meth:`Pipeline.score_replay_block`) and only advances its store and history over the others
    (cheap: no detector), so that each of its blocks is scored from the state
    :meth:`Pipeline.replay_block` would score it from. It sends each of its blocks' scores through
    a pipe of its own, a sending thread keeping it at most ``depth`` blocks ahead (memory stays a
    few blocks' scores). The parent takes them in plan order (:meth:`next`) and does everything
    else as without them. When the parent leaves the plan (a block that does not match, a child
    that failed or died), it scores the rest itself: the results never depend on the prefetch.

    The parent keeps only the reading end of each pipe, so a child that dies, even halfway
    through sending a block (killed for memory, say), is an end of file to the parent, never a
    wait for ever. A child whose parent is gone stops at its next block.

    Two scorers by default: on a 2-core machine the trackers' half of a replay takes about as long
    as half the detector's, so the three processes keep both cores busy.
    """

    def __init__(
        self,
        pipeline: Any,
        plan: list[tuple[int, int, int, int]],
        rows: np.ndarray,
        ts: np.ndarray,
        vals: np.ndarray,
        scorers: int = 2,
        depth: int = 4,
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self.plan = plan
        self.done = 0
        #: a child failed (or vanished): what it would have scored is scored by the caller
        self.failed = False
        n = max(1, min(scorers, len(plan)))
        self.conns: list[Any] = []
        self.procs: list[Any] | None = []
        for i in range(n):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_prefetch_main,
                args=(pipeline, plan, rows, ts, vals, writer, i, n, depth),
                daemon=True,
                name=f"stormeye-prefetch-{i}",
            )
            proc.start()
            writer.close()  # the child's alone: its death ends the pipe
            self.conns.append(reader)
            self.procs.append(proc)

    @property
    def finished(self) -> bool:
        """Every planned block was handed over (or the prefetch was given up): the children are gone."""
        return self.procs is None

    def next(self, lo: int, hi: int, first_slot: int, steps: int) -> Any:
        """The scores of the next block if it is the planned one (points ``lo:hi``, from
        ``first_slot``, ``steps`` steps); None (and the prefetch given up) when it is not, or
        a child failed: the caller scores it."""
        if self.procs is None or self.done >= len(self.plan) or self.plan[self.done] != (lo, hi, first_slot, steps):
            self.close()
            return None
        import pickle

        k = self.done % len(self.conns)
        conn, proc = self.conns[k], self.procs[k]
        try:
            while not conn.poll(1.0):
                if not proc.is_alive() and not conn.poll(0):
                    raise EOFError
            kind, payload = conn.recv()
        except (EOFError, OSError, pickle.UnpicklingError):  # dead, perhaps halfway through a block
            proc.join(timeout=5.0)
            kind, payload = "error", f"the scoring process {proc.name} ended (exit code {proc.exitcode})"
        if kind != "block":
            import logging

            logging.getLogger(__name__).warning("replay: a process scoring ahead failed; scoring here\n%s", payload)
            self.failed = True
            self.close()  # the caller scores the block and meets the error itself, if it is one
            return None
        self.done += 1
        if self.done == len(self.plan):
            self.close()
        return payload

    def close(self) -> None:
        if self.procs is None:
            return
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
        for conn in self.conns:
            conn.close()
        self.procs = None


def _prefetch_main(
    pipeline: Any,
    plan: list[tuple[int, int, int, int]],
    rows: np.ndarray,
    ts: np.ndarray,
    vals: np.ndarray,
    conn: Any,
    me: int,
    scorers: int,
    depth: int,
) -> None:
    """A child of :class:`BlockPrefetch`: score the plan's blocks ``me``, ``me + scorers``, ... in
    order and send their scores (a thread sends while this one scores the next, at most ``depth``
    ahead), advancing over the others. It stops when its parent is gone."""
    import os
    import queue
    import threading
    import traceback

    parent = os.getppid()
    out: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=depth)

    def feed() -> None:
        while True:
            item = out.get()
            if item is None:
                return
            try:
                conn.send(item)
            except OSError:  # the parent stopped reading
                return

    sender = threading.Thread(target=feed, daemon=True)
    sender.start()

    def put(item: tuple[str, Any] | None) -> bool:
        while True:
            try:
                out.put(item, timeout=1.0)
                return True
            except queue.Full:
                if os.getppid() != parent or not sender.is_alive():
                    return False

    try:
        for b, (lo, hi, first_slot, steps) in enumerate(plan):
            mine = b % scorers == me
            scored = pipeline.score_replay_block(rows[lo:hi], ts[lo:hi], vals[lo:hi], first_slot, steps, score=mine)
            if mine and not put(("block", scored)):
                return
    except BaseException:  # told to the parent, which scores the block itself
        put(("error", traceback.format_exc()))
    if put(None):
        while sender.is_alive() and os.getppid() == parent:
            sender.join(timeout=1.0)


def max_block(pipeline: Any) -> int:
    """Steps :meth:`Pipeline.replay_block` scores at once for the pipeline's metrics."""
    from stormeye.workers.pipeline import max_block_steps

    return max_block_steps(pipeline.detector, max(1, len(pipeline.registry)))


def _reordered(rows: np.ndarray, order: np.ndarray) -> int:
    """Points of a metric given before the point preceding them in time (``order``: the sort by step)."""
    by = np.lexsort((np.arange(len(rows)), rows))  # per metric, in step order
    g = order[by]  # the position in the input of each
    same = rows[by][1:] == rows[by][:-1]
    return int(np.sum(same & (g[1:] < g[:-1])))


# -- replay in parts: where the last ingest stopped, kept in its database ------------------------

#: the parts of the pipeline a replay carries on with (its settings and database are the caller's)
_CARRIED = ("registry", "index", "store", "seasons", "detector", "anomalies", "incidents", "collective", "alerts")
REPLAY_STATE = "ingest"


def save_replay_state(pipeline: Any) -> None:
    """Keep where this replay stopped in its database (``replay_state``): the window store, the
    detector, the anomaly and incident trackers (the incidents still going on, the learnt topology)
    and the cursor of people's actions. The next :func:`resume` on that database continues from it.
    A pickle: it is read back only by ``stormeye ingest`` from the database it is told to use."""
    import pickle
    import time

    from stormeye.workers import models as m

    db = pipeline.database
    if db is None:
        return
    state = {k: getattr(pipeline, k) for k in _CARRIED}
    state["last_scored"] = pipeline.last_scored
    state["cursor"] = pipeline.people.cursor if pipeline.people is not None else 0
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    with db.sessions.begin() as s:
        row = s.get(m.ReplayState, REPLAY_STATE)
        if row is None:
            s.add(m.ReplayState(name=REPLAY_STATE, at=time.time(), state=blob))
        else:
            row.at, row.state = time.time(), blob


def resume(pipeline: Any) -> bool:
    """Continue from where the last replay into this database stopped (:func:`save_replay_state`);
    False when it holds none. People's actions since then are replayed at the next tick."""
    import pickle

    from stormeye.workers import models as m

    db = pipeline.database
    if db is None:
        return False
    with db.sessions() as s:
        row = s.get(m.ReplayState, REPLAY_STATE)
        blob = None if row is None else bytes(row.state)
    if blob is None:
        return False
    state = pickle.loads(blob)  # written by save_replay_state into the database the user named
    if state["store"].step != pipeline.step:
        raise ValueError(
            f"the last ingest into this database ran at a {state['store'].step} s step, this one at {pipeline.step} s: "
            "give --step to match, or --fresh to start anew"
        )
    for k in _CARRIED:
        setattr(pipeline, k, state[k])
    pipeline.per_metric.index = pipeline.index
    pipeline.last_scored = state["last_scored"]
    if pipeline.people is not None:
        pipeline.people.cursor = int(state["cursor"])
    return True
