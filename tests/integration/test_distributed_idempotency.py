"""Every task body of distributed mode run twice — as a re-delivered task is — changes nothing the second time.

No worker runs here: the test runs the task bodies itself (as ``workers.tasks`` does), twice, and
in two threads at once; the follow-up tasks they queue go to the real Celery queue in Redis.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_each_stage_twice_or_concurrently_gives_one_result(deployment) -> None:  # type: ignore[no-untyped-def]
    rt, disp = deployment.runtime, deployment.dispatcher
    step = rt.step
    rng = np.random.default_rng(1)
    names = [f'latency{{host="h{i}",service="{"api" if i < 8 else "db"}"}}' for i in range(24)]
    t0 = 600_000 * step
    hist = t0 - step * np.arange(240, 0, -1)
    rt.load_history(names, hist, 100 + rng.normal(size=(24, 240)))
    for k in range(3):  # three steps; the api hosts jump from the second on
        t = t0 + k * step
        vals = 100 + rng.normal(size=24) + np.where(np.arange(24) < 8, 60.0 * (k >= 1), 0.0)
        res = rt.accept(names, np.full(24, t), vals, disp)
        assert res.accepted == 24
        out = rt.ingest(res.batch_id)
        assert out["stored"] == 24
        assert rt.ingest(res.batch_id) == {"stored": 0, "already": 1}  # the batch is gone once stored
        rt.advance(disp, until=t)
        slot = int(t // step)
        for shard in range(rt.settings.shards):
            rt.score_shard(shard, slot, disp)
            kept = rt.r.get(rt.k("step", slot, "shard", shard))
            rt.score_shard(shard, slot, disp)
            assert rt.r.get(rt.k("step", slot, "shard", shard)) == kept
        counts = []
        if k < 2:
            first = rt.correlate(slot, disp)
            counts.append(rt.database.counts())
            again = rt.correlate(slot, disp)
            assert first["committed"] and again.get("already")
        else:  # two deliveries at the same moment: one commits, the database holds one result
            results: list[dict[str, object]] = []

            def deliver(s: int = slot, out: list[dict[str, object]] = results) -> None:
                out.append(rt.correlate(s, disp))

            threads = [threading.Thread(target=deliver) for _ in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert sum(bool(r.get("committed")) for r in results) == 1, results
        counts.append(rt.database.counts())
        assert counts[0] == counts[-1]
        assert rt.scored_slot() == slot
        assert rt.score_shard(0, slot, disp).get("already")  # a late delivery after the commit
    (inc,) = rt.database.list_incidents()
    assert set(rt.database.incident_members()[inc["id"]]) == set(names[:8])
    events = rt.database.get_incident(inc["id"])["events"]
    assert len(events) == len({(e["kind"], e["at"]) for e in events})
