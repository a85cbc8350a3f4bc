"""People's actions reach the distributed mode's tracker: a manual resolve is not reopened by the
next steps' anomalies, and a split pair stays apart. No worker runs: the test runs the task bodies
itself, as ``test_distributed_idempotency`` does."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.workers.actions import Actions

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_a_resolve_and_a_split_hold_on_the_next_steps(deployment) -> None:  # type: ignore[no-untyped-def]
    rt, disp = deployment.runtime, deployment.dispatcher
    step = rt.step
    rng = np.random.default_rng(1)
    names = [f'latency{{host="h{i}",service="{"api" if i < 8 else "db"}"}}' for i in range(24)]
    t0 = 600_000 * step
    rt.load_history(names, t0 - step * np.arange(240, 0, -1), 100 + rng.normal(size=(24, 240)))

    def run(k: int) -> None:  # one step: the api hosts jump from step 1 on, the db hosts from step 4 on
        t = t0 + k * step
        jump = np.where(np.arange(24) < 8, 60.0 * (k >= 1), 60.0 * (k >= 4))
        res = rt.accept(names, np.full(24, t), 100 + rng.normal(size=24) + jump, disp)
        rt.ingest(res.batch_id)
        rt.advance(disp, until=t)
        slot = int(t // step)
        for shard in range(rt.settings.shards):
            rt.score_shard(shard, slot, disp)
        assert rt.correlate(slot, disp).get("committed")

    for k in range(4):
        run(k)
    opened = rt.database.list_incidents("open")
    assert opened, "the api hosts' jump opened no incident"
    inc = rt.database.get_incident(opened[0]["id"])
    metrics = sorted({m["metric"] for m in inc["members"]})
    actions = Actions(rt.database)

    def holding_a_split_pair() -> set[str]:
        held = rt.database.incident_members().items()
        return {i for i, ms in held if metrics[0] in ms and set(ms) & set(metrics[1:])}

    before = holding_a_split_pair() - {inc["id"]}  # other anomalies of these metrics may be together already
    if len(metrics) > 1:
        actions.split(inc["id"], metrics[:1], "dana")
    actions.resolve(inc["id"], "dana")
    for k in range(4, 7):  # the anomalies go on: the tracker touches the incident again
        run(k)
    assert rt.database.get_incident(inc["id"])["status"] == "resolved"
    timeline = [(e["kind"], e["actor"]) for e in actions.history(inc["id"])]
    assert ("resolve", "dana") in timeline
    assert int(rt.r.get(rt.k("tick", "people"))) == actions.last_action_id()
    if len(metrics) > 1:
        assert holding_a_split_pair() <= before, "a split pair was grouped again"


def test_a_split_through_the_api_stores_what_the_workers_tracker_decides(deployment) -> None:  # type: ignore[no-untyped-def]
    """Distributed mode: the API process holds no tracker; it decides the split on one built like the
    workers' (their name index and topology), and the workers' tracker, applying the recorded split
    from its state in Redis, decides the same members, root, title, priority and start."""
    rt, disp = deployment.runtime, deployment.dispatcher
    step = rt.step
    rng = np.random.default_rng(2)
    names = [f'latency{{host="h{i}",service="{"api" if i < 8 else "db"}"}}' for i in range(16)]
    t0 = 610_000 * step
    rt.load_history(names, t0 - step * np.arange(240, 0, -1), 100 + rng.normal(size=(16, 240)))
    for k in range(4):  # the api hosts jump from step 1 on
        t = t0 + k * step
        res = rt.accept(names, np.full(16, t), 100 + rng.normal(size=16) + 60.0 * (np.arange(16) < 8) * (k >= 1), disp)
        rt.ingest(res.batch_id)
        rt.advance(disp, until=t)
        for shard in range(rt.settings.shards):
            rt.score_shard(shard, int(t // step), disp)
        assert rt.correlate(int(t // step), disp).get("committed")
    (inc,) = [i for i in rt.database.list_incidents("open") if i["member_count"] >= 3]
    metrics = sorted({m["metric"] for m in rt.database.get_incident(inc["id"])["members"]})
    with TestClient(create_app(deployment.settings, start_ticker=False)) as c:
        r = c.post(f"/api/v1/incidents/{inc['id']}/split", json={"metrics": metrics[:2]})
        assert r.status_code == 201, r.text
        new_id = r.json()["incident"]
    columns = ("status", "root", "root_entity", "title", "priority", "priority_score", "start", "end", "member_count")
    stored = {i: {c: rt.database.get_incident(i)[c] for c in columns} for i in (inc["id"], new_id)}
    tracker = rt._trackers(rt.scored_slot()).incidents  # the workers' tracker, as committed in Redis
    rt._people_sync().sync(tracker, float(t0 + 4 * step), save=False)  # what the next correlate does first
    decided = {
        i: {
            **{c: getattr(tracker.incidents[i], c) for c in columns[:-1]},
            "member_count": len(tracker.incidents[i].members),
        }
        for i in (inc["id"], new_id)
    }
    assert stored == decided
    assert sorted(tracker.incidents[new_id].metrics) == metrics[:2]
