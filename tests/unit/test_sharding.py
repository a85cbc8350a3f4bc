"""Consistent sharding: stable values, even spread, little movement when shards are added."""

import numpy as np
import pytest

from stormeye.workers.sharding import jump_hash, name_key, shard_of, shards_of


def test_known_values_pin_the_hash_across_versions() -> None:
    # changing these would move every metric to another shard in a running deployment
    assert name_key("cpu") == 17870684844898284943
    assert shard_of("cpu", 16) == 15
    assert [jump_hash(k, 10) for k in range(5)] == [jump_hash(k, 10) for k in range(5)]


def test_even_spread_and_minimal_movement() -> None:
    names = [f'cpu{{host="h{i}"}}' for i in range(20_000)]
    s16 = shards_of(names, 16)
    counts = np.bincount(s16, minlength=16)
    assert counts.min() > 0.9 * len(names) / 16 and counts.max() < 1.1 * len(names) / 16
    s17 = shards_of(names, 17)
    moved = s16 != s17
    assert moved.mean() < 1.5 / 17  # a modulo would move ~16/17
    assert (s17[moved] == 16).all()  # metrics only move to the new shard


def test_bad_bucket_count() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        jump_hash(1, 0)
