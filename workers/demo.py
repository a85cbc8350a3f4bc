"""The demo job: simulate a storm, run the embedded pipeline over it, measure the result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stormeye.sim.quality import evaluate_storm
from stormeye.sim.simulator import Storm, simulate_storm
from stormeye.workers.db import Database
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings


@dataclass
class DemoResult:
    storm: Storm
    incidents: list[dict[str, Any]]
    figures: dict[str, Any]


def run_storm(
    storm: Storm,
    settings: Settings,
    database: Database | None = None,
    progress: Callable[[int, int], None] | None = None,
    pipeline: Pipeline | None = None,
) -> tuple[Pipeline, list[dict[str, Any]]]:
    """History is bulk-loaded (a running service already holds it); the storm is ticked step by step."""
    pipe = pipeline or Pipeline(settings, database=database, keep_archive=True)
    h = storm.history_steps
    # all of it: the window store keeps its retention, the coarse seasonal history (if any) the rest
    pipe.load_history(storm.names, storm.timestamps[:h], storm.values[:, :h])
    rows = pipe.register(storm.names)
    total = len(storm.timestamps) - h
    for k, j in enumerate(range(h, len(storm.timestamps))):
        t = float(storm.timestamps[j])
        col = storm.values[:, j]
        ok = col == col  # finite (NaN != NaN)
        pipe.store.append(rows[ok], np.full(int(ok.sum()), t), col[ok])
        pipe.tick(t)
        if progress is not None:
            progress(k + 1, total)
    pipe.finish(float(storm.timestamps[-1]) + storm.step)
    return pipe, pipe.incident_list()


def run_demo(
    settings: Settings,
    seed: int = 0,
    n_metrics: int = 2000,
    n_incidents: int = 10,
    database: Database | None = None,
    progress: Callable[[int, int], None] | None = None,
    cascades: int = 4,
    history_steps: int = 1440,
) -> DemoResult:
    """The demo storm: ``n_metrics`` metrics with ``n_incidents`` incidents (and the simulator's
    other patterns), plus a microservice estate with ``cascades`` cascades (0: the storm as it
    was before cascades, value for value), after ``history_steps`` steps of normal history (at
    60 s, 2,880 or more give the seasonal reference its two earlier days)."""
    t0 = time.perf_counter()
    storm = simulate_storm(
        seed=seed,
        n_metrics=n_metrics,
        n_incidents=n_incidents,
        step=settings.step_s,
        cascades=cascades,
        history_steps=history_steps,
    )
    pipe, incidents = run_storm(storm, settings, database, progress)
    figures = evaluate_storm(storm, incidents, anomalies=pipe.anomaly_list())
    figures["seconds"] = round(time.perf_counter() - t0, 2)
    figures["seed"] = seed
    return DemoResult(storm, incidents, figures)
