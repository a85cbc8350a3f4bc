"""Which shard a metric belongs to: stable across processes, machines and Python versions.

Python's ``hash`` of a string is salted per process, so it cannot place a metric. A metric's
canonical name is hashed with BLAKE2b (64 bits) and mapped to a shard with jump consistent
hashing (Lamping & Veach, 2014): every shard gets an equal share, and growing from ``n`` to
``n + 1`` shards moves only ``1 / (n + 1)`` of the metrics (a modulo would move almost all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

_MASK = (1 << 64) - 1


def name_key(name: str) -> int:
    """A 64-bit key of a canonical metric name, the same everywhere."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit key into ``[0, buckets)``."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(name: str, shards: int) -> int:
    """The shard of one metric."""
    return jump_hash(name_key(name), shards)


def shards_of(names: Iterable[str], shards: int) -> np.ndarray:
    """Shards of many metrics (int32)."""
    return np.fromiter((jump_hash(name_key(n), shards) for n in names), dtype=np.int32)
