"""A small estate with a routine daily move (a nightly batch on one service's pod), for the noise
profile tests: points as ``stormeye ingest`` reads them, replayed through the real pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stormeye.workers.db import Database
from stormeye.workers.ingest import PointBatch, replay
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

STEP = 300
DAY = 86400
T0 = 1_767_225_600  # 2026-01-01 00:00 UTC
BATCH_AT = 2 * 3600  # the nightly batch: 02:00 UTC ...
BATCH_S = 1800  # ... for half an hour
POD = "batch-7d9f8b-x2k4q"
# names as stored: labels in canonical (sorted) order
ROUTINE = (f'cpu_seconds{{pod="{POD}",service="batch"}}', f'disk_io_bytes{{pod="{POD}",service="batch"}}')
#: a measure of the same pod that the batch does not move: moving with it, it is a member beyond the profile
BEYOND = f'memory_bytes{{pod="{POD}",service="batch"}}'


@dataclass
class Day:
    """What the batch does on one day: ``size`` x its usual move (0: no batch), on which pod, and
    whether the pod's memory moves with it (a member beyond the profile)."""

    size: float = 1.0
    pod: str = POD
    beyond: bool = False


def points(days: list[Day], seed: int = 0, warmup_days: int = 1) -> PointBatch:
    """``warmup_days`` quiet days, then one day per entry of ``days``."""
    rng = np.random.default_rng(seed)
    n = (warmup_days + len(days)) * DAY // STEP
    ts = T0 + np.arange(n) * STEP
    names: list[str] = []
    times: list[float] = []
    values: list[float] = []

    def series(name: str, level: float, moves: np.ndarray) -> None:
        v = level + rng.normal(0, 1.0, n) + moves
        names.extend([name] * n)
        times.extend(ts.tolist())
        values.extend(v.tolist())

    pods = sorted({d.pod for d in days} | {POD})
    for pod in pods:
        for k, base in enumerate(("cpu_seconds", "disk_io_bytes")):
            moves = np.zeros(n)
            for i, d in enumerate(days):
                if d.pod != pod or d.size <= 0:
                    continue
                lo = ((warmup_days + i) * DAY + BATCH_AT) // STEP
                moves[lo : lo + BATCH_S // STEP] = d.size * (12.0 if k == 0 else 10.0)
            series(f'{base}{{service="batch",pod="{pod}"}}', 100.0 + 50 * k, moves)
    memory = np.zeros(n)
    for i, d in enumerate(days):
        if d.beyond:
            lo = ((warmup_days + i) * DAY + BATCH_AT) // STEP
            memory[lo : lo + BATCH_S // STEP] = 30.0
    series(BEYOND, 300.0, memory)
    return PointBatch(names=names, timestamps=times, values=values)


def settings(url: str) -> Settings:
    return Settings(database_url=url, step_s=STEP)


def pipeline(url: str) -> Pipeline:
    s = settings(url)
    return Pipeline(s, database=Database(url), keep_archive=True)


def day_of(t: float, warmup_days: int = 1) -> int:
    """The entry of ``days`` a time falls on (negative: the warm-up)."""
    return int((t - T0) // DAY) - warmup_days


def split(batch: PointBatch, at: float) -> tuple[PointBatch, PointBatch]:
    """The points before ``at`` and from it on."""
    a = [i for i, t in enumerate(batch.timestamps) if t < at]
    b = [i for i, t in enumerate(batch.timestamps) if t >= at]

    def part(ix: list[int]) -> PointBatch:
        return PointBatch(
            names=[batch.names[i] for i in ix],
            timestamps=[batch.timestamps[i] for i in ix],
            values=[batch.values[i] for i in ix],
        )

    return part(a), part(b)


def run(pipe: Pipeline, batch: PointBatch, finish: bool = True) -> None:
    replay(pipe, batch, finish=finish)
