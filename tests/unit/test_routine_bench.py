"""bench/routine.py: the features its rules read, and its run without the data."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "bench" / "routine.py"


def load() -> Any:
    spec = importlib.util.spec_from_file_location("routine_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_size_is_news_only_beyond_the_day_before_and_repeat_counts_shared_members() -> None:
    routine = load()
    t = np.arange(0.0, 2 * 86400, 60.0)
    a = np.where(np.arange(len(t)) % 2 == 0, 1.0, -1.0)  # +-1 around 0
    a[(t >= 30_000) & (t < 30_600)] = 5.0  # a burst to 5 in the look-back
    a[(t >= 100_000) & (t < 100_300)] = 5.0  # the same burst again: not news
    a[(t >= 120_000) & (t < 120_300)] = 9.0  # further than anything before: news
    b = np.where(np.arange(len(t)) % 2 == 0, 1.0, -1.0)
    series = {"a": (t, a), "b": (t, b), "c": (t[:5], b[:5])}
    incidents = [
        {"start": 100_000, "end": 100_240, "members": ["a", "b"]},
        {"start": 120_000, "end": 120_240, "members": ["a"]},
        {"start": 130_000, "end": 130_240, "members": ["c", "gone"]},
    ]
    f = routine.features(series, incidents)
    assert f[0]["size"][0] == 5.0 / 5.0 and f[0]["size"][1] == 1.0 and f[0]["repeat"] == 0.0
    back = a[(t >= 120_000 - 86_400) & (t <= 120_000 - 600)]  # the day before, up to 10 minutes before
    med = np.median(back)
    assert (
        f[1]["size"][0] == (9.0 - med) / (5.0 - med) > 1.0 and f[1]["repeat"] == 1.0
    )  # all its members were in the first
    assert np.isinf(f[2]["size"][0]) and len(f[2]["size"]) == 1  # no look-back is news; no points: left out
    rules = routine.rules(quick=True)
    assert not rules["news 3"](f[1]) and rules["repeat 0.5 & news 1 q 1"](f[1])
    assert rules["repeat 0.5 & news 1 q 1"](f[0])  # not news, but repeats nothing: kept


def test_routine_bench_without_predictions_skips_each_data_set(tmp_path: Path) -> None:
    args = [sys.executable, str(BENCH), "--json", "--predictions", str(tmp_path / "absent")]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out["skipped"]) == {"asd", "smd", "nezha"} and out["rows"] == []
    assert "--save-predictions" in res.stderr
