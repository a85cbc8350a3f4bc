"""Window stores: the recent points of every metric, aligned to the step.

One interface, two backends: :class:`MemoryWindowStore` here (embedded mode) and a Redis
store for distributed mode. Metrics are addressed by their row (a dense integer id given by
the metric registry). A point lands in the slot ``floor(timestamp / step)``; a later point for
the same slot replaces the earlier one (within one append, the last one given wins, and the
points so replaced are counted in ``merged``). Points older than the retention are *rejected*
and counted (never silently dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class AppendResult:
    accepted: int
    too_old: int  # rejected: older than the retention allows
    merged: int = 0  # replaced by a later point of the same metric and slot in the same append


class WindowStore(Protocol):
    step: int
    length: int

    def append(self, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> AppendResult: ...

    def windows(self, rows: np.ndarray, end: float, points: int) -> np.ndarray: ...

    def newest(self) -> float | None: ...

    def segments(self, rows: np.ndarray, spans: Sequence[tuple[float, int]]) -> list[np.ndarray]: ...

    def mark_oldest(self, at: float) -> None: ...

    def oldest(self) -> float | None: ...


def last_of_each(rows: np.ndarray, slots: np.ndarray) -> tuple[np.ndarray, int]:
    """Which points stand for their (row, slot): the last one given of each; and how many others there were.

    numpy does not promise which of repeated indices an assignment keeps, so the store writes
    only these.
    """
    n = len(rows)
    if n < 2:
        return np.ones(n, dtype=bool), 0
    order = np.lexsort((np.arange(n), slots, rows))
    r, s = rows[order], slots[order]
    end = np.ones(n, dtype=bool)
    end[:-1] = (r[1:] != r[:-1]) | (s[1:] != s[:-1])
    last = np.zeros(n, dtype=bool)
    last[order[end]] = True
    return last, int(n - end.sum())


class MemoryWindowStore:
    """A 2-D ring buffer (metrics x retention) shared by all metrics, float32.

    All metrics share the step, so one column holds one step of every metric and a window
    read is a single gather. Memory: ``4 * length`` bytes per metric (480 points: 1.9 kB).
    """

    def __init__(self, step: int, length: int, capacity: int = 1024) -> None:
        if step <= 0 or length < 2:
            raise ValueError("step must be positive and length at least 2")
        self.step = int(step)
        self.length = int(length)
        self._buf = np.full((max(capacity, 1), self.length), np.nan, dtype=np.float32)
        self._head: int | None = None  # newest slot number written
        self._oldest: int | None = None  # see mark_oldest
        # rows ever written: those past it hold only NaN, so advancing the head clears only these
        # (the buffer is allocated for 1,024 metrics; a replay of one metric cleared all of them)
        self._used = 0

    @property
    def rows(self) -> int:
        return self._buf.shape[0]

    def _ensure(self, n: int) -> None:
        if n > self._buf.shape[0]:
            grow = max(n, 2 * self._buf.shape[0])
            extra = np.full((grow - self._buf.shape[0], self.length), np.nan, dtype=np.float32)
            self._buf = np.vstack([self._buf, extra])

    def newest(self) -> float | None:
        return None if self._head is None else float(self._head * self.step)

    def mark_oldest(self, at: float) -> None:
        """Remember the oldest step written (kept: the earliest ever marked)."""
        slot = int(at // self.step)
        self._oldest = slot if self._oldest is None else min(self._oldest, slot)

    def oldest(self) -> float | None:
        """The oldest step :meth:`mark_oldest` was given (None: never)."""
        return None if self._oldest is None else float(self._oldest * self.step)

    def _advance(self, new_head: int) -> None:
        used = self._buf[: self._used]
        if self._head is None:
            used[:] = np.nan
        elif new_head > self._head:
            gap = new_head - self._head
            if gap >= self.length:
                used[:] = np.nan
            else:
                cols = np.arange(self._head + 1, new_head + 1) % self.length
                used[:, cols] = np.nan
        else:
            return
        self._head = new_head

    def append(self, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> AppendResult:
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return AppendResult(0, 0)
        slots = np.floor(np.asarray(timestamps, dtype=np.float64) / self.step).astype(np.int64)
        self._ensure(int(rows.max()) + 1)
        self._used = max(self._used, int(rows.max()) + 1)
        top = int(slots.max())
        if self._head is None or top > self._head:
            self._advance(top)
        assert self._head is not None
        ok = slots > self._head - self.length
        last, merged = last_of_each(rows, slots)
        w = ok & last
        self._buf[rows[w], slots[w] % self.length] = np.asarray(values, dtype=np.float32)[w]
        return AppendResult(int(ok.sum()), int((~ok).sum()), merged)

    def load(self, rows: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> AppendResult:
        """Bulk-load a matrix (rows x len(timestamps)) of history, e.g. at start-up or in the demo."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(timestamps, dtype=np.float64)
        keep = slice(max(0, len(ts) - self.length), len(ts))
        vals = np.asarray(values)[:, keep]
        ts = ts[keep]
        r = np.repeat(rows, len(ts))
        t = np.tile(ts, len(rows))
        return self.append(r, t, vals.reshape(-1))

    def windows(self, rows: np.ndarray, end: float, points: int) -> np.ndarray:
        """Windows of ``points`` steps ending at the step of ``end`` (float64, NaN where missing)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.full((len(rows), points), np.nan)
        if self._head is None or not len(rows):
            return out
        end_slot = int(np.floor(end / self.step))
        slots = np.arange(end_slot - points + 1, end_slot + 1)
        valid = (slots <= self._head) & (slots > self._head - self.length)
        if valid.any():
            known = rows < self._buf.shape[0]
            cols = slots[valid] % self.length
            if known.all() and np.array_equal(rows, np.arange(len(rows))):
                sub = self._buf[: len(rows), cols]  # every metric (a tick): one gather
            else:
                sub = self._buf[np.ix_(rows[known], cols)]
            out[np.ix_(np.flatnonzero(known), np.flatnonzero(valid))] = sub
        return out

    def segments(self, rows: np.ndarray, spans: Sequence[tuple[float, int]]) -> list[np.ndarray]:
        """:meth:`windows` for each ``(end, points)`` of ``spans``."""
        return [self.windows(rows, end, points) for end, points in spans]

    def nbytes(self) -> int:
        return int(self._buf.nbytes)
