"""Replay scores many steps at once (issue 33): the incidents are those of the step-by-step replay,
and a live pipeline reads people's actions only when there are new ones, yet sees each at the next tick."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import storm_helpers
from sqlalchemy import event

from stormeye.sim.simulator import Storm, simulate_storm
from stormeye.workers.actions import Actions
from stormeye.workers.db import Database
from stormeye.workers.ingest import PointBatch, replay
from stormeye.workers.pipeline import Pipeline, max_block_steps
from stormeye.workers.settings import Settings

#: a four-hour season at one-minute steps: the coarse seasonal history (5-minute buckets) fills
#: after 480 steps, so a short replay runs every path of the detector (warming, earlier days read)
SETTINGS = {"step_s": 60, "season_s": 4 * 3600, "retention_points": 480}


def batch_of(storm: Storm, drop_steps: tuple[int, ...] = (), repeat: int = 0) -> PointBatch:
    """Every point of the storm, step by step in time order (``drop_steps``: steps left out
    entirely, gaps; ``repeat``: that many points given again with another value, merged)."""
    values = storm.values.copy()
    values[:, list(drop_steps)] = np.nan
    r, c = np.nonzero(np.isfinite(values.T))  # step-major: the order a live feed gives
    rows, cols = c, r
    b = PointBatch()
    b.names = [storm.names[i] for i in rows]
    b.timestamps = list(storm.timestamps[cols].astype(float))
    b.values = list(values[rows, cols])
    rng = np.random.default_rng(1)
    for i in rng.choice(len(rows), repeat, replace=False):
        b.names.append(b.names[i])
        b.timestamps.append(b.timestamps[i] + 1.0)  # the same step, later in the file: it wins
        b.values.append(b.values[i] * 3.0)
    return b


def run(
    batch: PointBatch,
    block: bool,
    prefetch: bool | None = False,
    pipe_cls: type[Pipeline] = Pipeline,
    **settings: object,
) -> tuple[Pipeline, list, list]:
    pipe = pipe_cls(Settings(**{**SETTINGS, **settings}), keep_archive=True)  # type: ignore[arg-type]
    res = replay(pipe, batch, block=block, prefetch=prefetch)
    pipe.prefetched = res.prefetched  # type: ignore[attr-defined]
    return pipe, pipe.incident_list(include_merged=True), pipe.anomaly_list()


def test_a_second_process_scoring_the_blocks_ahead_changes_nothing() -> None:
    """The prefetch (a forked process scoring the next blocks while this one groups) gives the
    step-by-step incidents, the tail ledger's record included, over gaps and merged points."""
    storm = simulate_storm(seed=0, n_metrics=20, n_incidents=3, step=60, history_steps=520)
    batch = batch_of(storm, drop_steps=(300, 301), repeat=50)
    ledger = {"calibration_halflife_s": 6 * 3600, "threshold": 0.3, "release": 0.2}
    ahead_pipe, ahead_incidents, ahead_anomalies = run(batch, block=True, prefetch=True, **ledger)
    step_pipe, step_incidents, step_anomalies = run(batch, block=False, **ledger)
    assert ahead_pipe.prefetched >= 5  # type: ignore[attr-defined]  # the blocks came from the other process
    assert len(step_anomalies) >= 10 and len(step_incidents) >= 2
    assert ahead_anomalies == step_anomalies
    assert ahead_incidents == step_incidents
    for key, v in step_pipe.ledger.to_state().items():
        np.testing.assert_array_equal(ahead_pipe.ledger.to_state()[key], v)
    # the store and the coarse seasonal history end as they do without the prefetch
    rows = np.arange(len(step_pipe.registry))
    at = float(step_pipe.last_scored * 60)
    np.testing.assert_array_equal(ahead_pipe.store.windows(rows, at, 480), step_pipe.store.windows(rows, at, 480))
    assert ahead_pipe.seasons is not None and step_pipe.seasons is not None
    n = ahead_pipe.seasons.length
    sat = float(ahead_pipe.seasons.newest())
    np.testing.assert_array_equal(ahead_pipe.seasons.windows(rows, sat, n), step_pipe.seasons.windows(rows, sat, n))


class _FailingChild(Pipeline):
    """Scores nothing in a forked process: the prefetch's child fails at its third block."""

    parent = os.getpid()
    calls = 0

    def fail(self) -> None:
        raise RuntimeError("the scoring process failed")

    def score_replay_block(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        self.calls += 1
        if os.getpid() != self.parent and self.calls == 3:
            self.fail()
        return super().score_replay_block(*args, **kwargs)  # type: ignore[arg-type]


class _KilledChild(_FailingChild):
    """A scoring process killed outright (SIGKILL, as the kernel kills for memory) at its third block."""

    def fail(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class _OffThePlan(Pipeline):
    """A pipeline that cannot score a block at one step mid-replay (as with an alert or an unsaved
    tick): the replay leaves the prefetch's plan there and starts another after it."""

    def can_replay_block(self, first_slot: int) -> bool:
        return first_slot != self.off and super().can_replay_block(first_slot)


def test_a_failed_or_killed_scoring_process_or_a_step_off_the_plan_leaves_the_incidents_as_they_were() -> None:
    storm = simulate_storm(seed=0, n_metrics=20, n_incidents=3, step=60, history_steps=520)
    batch = batch_of(storm)
    _, step_incidents, step_anomalies = run(batch, block=False)
    assert len(step_incidents) >= 3
    failing, incidents, anomalies = run(batch, block=True, prefetch=True, pipe_cls=_FailingChild)
    assert failing.prefetched == 2  # type: ignore[attr-defined]  # two blocks, then this process scored the rest
    assert (incidents, anomalies) == (step_incidents, step_anomalies)
    killed, incidents, anomalies = run(batch, block=True, prefetch=True, pipe_cls=_KilledChild)
    # what the killed scorer's sending thread got out before the kill (none of it, some, or a
    # block cut halfway: an end of file to the parent, not a wait for ever); the rest scored here
    assert killed.prefetched <= 2  # type: ignore[attr-defined]
    assert (incidents, anomalies) == (step_incidents, step_anomalies)
    _OffThePlan.off = int(storm.timestamps[len(storm.timestamps) // 2]) // 60  # type: ignore[attr-defined]
    off, incidents, anomalies = run(batch, block=True, prefetch=True, pipe_cls=_OffThePlan)
    assert off.prefetched >= 4  # type: ignore[attr-defined]  # both sides of the step off the plan
    assert (incidents, anomalies) == (step_incidents, step_anomalies)


def test_with_the_tail_ledger_on_block_replay_still_gives_the_step_by_step_incidents() -> None:
    """The ledger learns from every step, quiet ones too: the block calibrates all its steps, in
    order, before handing any over. A low threshold (the ledger's scores are lower) makes it open
    anomalies, and a short half-life makes its record matter within the replay."""
    storm = simulate_storm(seed=0, n_metrics=20, n_incidents=3, step=60, history_steps=520)
    batch = batch_of(storm, drop_steps=(300, 301), repeat=50)
    ledger = {"calibration_halflife_s": 6 * 3600, "threshold": 0.3, "release": 0.2}
    block_pipe, block_incidents, block_anomalies = run(batch, block=True, **ledger)
    step_pipe, step_incidents, step_anomalies = run(batch, block=False, **ledger)
    assert block_pipe.ledger is not None and block_pipe.can_replay_block(block_pipe.last_scored + 1)
    assert len(step_anomalies) >= 10 and len(step_incidents) >= 2
    assert block_anomalies == step_anomalies
    assert block_incidents == step_incidents
    # the ledger's record is the same too (quiet steps were counted, not skipped)
    for key, v in step_pipe.ledger.to_state().items():
        np.testing.assert_array_equal(block_pipe.ledger.to_state()[key], v)


def test_block_replay_gives_the_incidents_of_the_step_by_step_replay_on_the_simulator() -> None:
    storm = simulate_storm(seed=0, n_metrics=20, n_incidents=3, step=60, history_steps=520)
    batch = batch_of(storm)
    block_pipe, block_incidents, block_anomalies = run(batch, block=True)
    _, step_incidents, step_anomalies = run(batch, block=False)
    assert max_block_steps(block_pipe.detector, len(block_pipe.registry)) > 1  # it did score blocks
    assert block_pipe.seasons is not None and block_pipe.seasons.oldest() is not None  # earlier days were read
    assert len(step_incidents) >= 3 and len(step_anomalies) >= 10
    assert block_anomalies == step_anomalies
    assert block_incidents == step_incidents


def test_gaps_and_merged_points_replay_the_same_either_way() -> None:
    storm = simulate_storm(seed=0, n_metrics=20, n_incidents=2, step=60, history_steps=520)
    # a one-step gap, a longer one, and a gap longer than the detector's windows
    drops = (100, 300, 301, 302, *range(400, 400 + 260))
    batch = batch_of(storm, drop_steps=drops, repeat=200)
    _, block_incidents, block_anomalies = run(batch, block=True)
    _, step_incidents, step_anomalies = run(batch, block=False)
    assert block_anomalies == step_anomalies and len(step_anomalies) > 0
    assert block_incidents == step_incidents


def test_a_tick_with_many_steps_due_scores_them_in_one_call_with_the_same_incidents() -> None:
    storm = simulate_storm(seed=0, n_metrics=20, n_incidents=2, step=60, history_steps=520)
    got = []
    for blocks in (True, False):
        pipe = Pipeline(Settings(**SETTINGS), keep_archive=True)  # type: ignore[arg-type]
        pipe.block_ticks = blocks
        rows = pipe.register(storm.names)
        for lo in range(0, len(storm.timestamps), 150):  # a live service catching up 150 steps at a time
            cols = np.arange(lo, min(lo + 150, len(storm.timestamps)))
            vals = storm.values[:, cols]
            ok = np.isfinite(vals)
            r, c = np.nonzero(ok)
            pipe.store.append(rows[r], storm.timestamps[cols][c].astype(float), vals[ok])
            pipe.tick(float(storm.timestamps[cols[-1]]))
        pipe.finish(float(storm.timestamps[-1]) + 60)
        got.append((pipe.incident_list(include_merged=True), pipe.anomaly_list()))
    assert len(got[1][1]) > 0
    assert got[0] == got[1]


def _people_reads(db: Database) -> list[str]:
    """The statements that read people's tables, recorded while the list is alive."""
    seen: list[str] = []

    def record(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        s = statement.lower()
        if "from incident_action" in s or "from feedback_pair" in s or "from metric_priority" in s:
            seen.append(s)

    event.listen(db.engine, "before_cursor_execute", record)
    return seen


@pytest.mark.postgres
def test_an_action_between_two_ticks_is_seen_by_the_next_tick_and_a_quiet_tick_reads_one_id(
    postgres_url: str,
) -> None:
    storm = storm_helpers.small_storm()
    h = storm.history_steps
    pipe = storm_helpers.run_part(storm, postgres_url, until=h + 150)
    assert pipe.database is not None
    reads = _people_reads(pipe.database)
    pipe = storm_helpers.run_part(storm, postgres_url, until=h + 152, pipe=pipe)
    # nobody acted: each tick asked for the newest action's id, once, and read nothing else
    assert len(reads) == 2 and all("max(incident_action.id)" in s for s in reads), reads
    target = sorted(pipe.incidents.open_incidents(), key=lambda i: i.id)[0]
    metric = target.metrics[0]
    other = Database(postgres_url)  # another process: the API of another replica
    Actions(other).resolve(target.id, "alice", at=float(storm.timestamps[h + 152]))
    Actions(other).set_metric_priority(metric, "bob", weight=7.0)
    other.dispose()
    assert pipe.incidents.incidents[target.id].status == "open"  # not before a tick
    reads.clear()
    pipe = storm_helpers.run_part(storm, postgres_url, until=h + 153, pipe=pipe)
    assert pipe.incidents.incidents[target.id].status == "resolved"
    assert pipe.incidents.priority.overrides[metric] == (7.0, None)  # type: ignore[attr-defined]
    assert len(reads) > 1  # this tick read the actions and the feedback
    reads.clear()
    pipe = storm_helpers.run_part(storm, postgres_url, until=h + 154, pipe=pipe)
    assert len(reads) == 1 and pipe.incidents.priority.overrides[metric] == (7.0, None)  # type: ignore[attr-defined]
    pipe.database.dispose()
