"""A small simulated storm ticked part way, so that incidents are still open: for action tests."""

from __future__ import annotations

from workers.db import Database
from workers.pipeline import Pipeline
from workers.settings import Settings
from workers.simulator import Storm, simulate_storm

STEP = 60


def small_storm(seed: int = 3, n_metrics: int = 240, n_incidents: int = 4) -> Storm:
    return simulate_storm(seed=seed, n_metrics=n_metrics, n_incidents=n_incidents, step=STEP, history_steps=600)


def run_part(storm: Storm, url: str, until: int | None = None, pipe: Pipeline | None = None) -> Pipeline:
    """Tick the storm's steps up to ``until`` (from where ``pipe`` stopped); nothing is resolved at the end."""
    settings = Settings(database_url=url, step_s=STEP)
    h = storm.history_steps
    if pipe is None:
        pipe = Pipeline(settings, database=Database(url))
        keep = max(0, h - settings.retention_points)
        pipe.load_history(storm.names, storm.timestamps[keep:h], storm.values[:, keep:h])
    rows = pipe.register(storm.names)
    first = h if pipe.last_scored is None else int(pipe.last_scored - storm.timestamps[0] // STEP) + 1
    for j in range(max(first, h), until or len(storm.timestamps)):
        t = float(storm.timestamps[j])
        col = storm.values[:, j]
        ok = col == col
        pipe.store.append(rows[ok], [t] * int(ok.sum()), col[ok])
        pipe.tick(t)
    return pipe
