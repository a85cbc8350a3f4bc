"""The page's series and shape search in distributed mode: they read the window store in Redis that
the workers score (the same answers as the embedded page gives from its in-process store). No worker
runs: the test runs the task bodies itself, as ``test_distributed_actions`` does."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stormeye.api.app import create_app

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def test_series_and_shape_search_read_the_redis_window_store(deployment) -> None:  # type: ignore[no-untyped-def]
    rt, disp = deployment.runtime, deployment.dispatcher
    step = rt.step
    rng = np.random.default_rng(3)
    api = [f'latency{{host="a{i}",service="api"}}' for i in range(6)]
    db = [f'latency{{host="d{i}",service="db"}}' for i in range(6)]
    names = api + db
    t0 = 700_000 * step
    rt.load_history(names, t0 - step * np.arange(240, 0, -1), 100 + rng.normal(size=(12, 240)))
    sent: dict[str, list[float]] = {n: [] for n in names}
    for k in range(4):  # the api hosts jump from step 1 on; the db hosts stay flat
        t = t0 + k * step
        values = 100 + rng.normal(size=12) + np.where(np.arange(12) < 6, 60.0 * (k >= 1), 0.0)
        for n, v in zip(names, values):
            sent[n].append(float(v))
        res = rt.accept(names, np.full(12, t), values, disp)
        rt.ingest(res.batch_id)
        rt.advance(disp, until=t)
        slot = int(t // step)
        for shard in range(rt.settings.shards):
            rt.score_shard(shard, slot, disp)
        assert rt.correlate(slot, disp).get("committed")
    (inc,) = rt.database.list_incidents("open")
    members = sorted({m["metric"] for m in rt.database.get_incident(inc["id"])["members"]})
    assert set(members) <= set(api) and len(members) >= 3

    # a fresh API process: it knows no metric until it reads the registry in Redis
    with TestClient(create_app(deployment.settings, start_ticker=False)) as c:
        got = c.get(f"/api/v1/incidents/{inc['id']}/series", params={"before": 5})
        assert got.status_code == 200, got.text
        series = got.json()["series"]
        assert sorted(series) == members
        for m in members:  # the steps the workers stored, on one time axis ending at the incident's end
            values = series[m]["values"]
            assert values[-3:] == pytest.approx(sent[m][1:], rel=1e-5)
        assert len({s["start"] for s in series.values()}) == 1

        one = c.get("/api/v1/metrics/series", params={"metric": db[0], "points": 16}).json()
        assert len(one["values"]) == 16 and one["values"][-4:] == pytest.approx(sent[db[0]], rel=1e-5)
        assert one["start"] + 15 * step == t0 + 3 * step

        sim = c.get("/api/v1/metrics/similar", params={"metric": api[0], "limit": 5}).json()
        assert {x["metric"] for x in sim["by_shape"]} == set(api[1:])  # the hosts that jumped with it
        assert sim["by_name"] and sim["by_name"][0]["metric"] in names
        assert c.get("/api/v1/metrics/series", params={"metric": "nope"}).status_code == 404
