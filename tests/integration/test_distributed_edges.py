"""Distributed mode at its edges: the HTTP API and Celery beat, dead letters, and settings that cannot work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.workers.distributed import RedisUnavailable

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def _cli(args: list[str], env: dict[str, str], cwd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stormeye.api.cli", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_points_posted_while_no_worker_runs_are_kept_then_beat_turns_them_into_an_incident(deployment) -> None:  # type: ignore[no-untyped-def]
    from distributed_helpers import wait_for

    step = 2
    deployment.env.update(STORMEYE_STEP_S=str(step), STORMEYE_TICK_S=str(step), STORMEYE_GRACE_S="0.3")
    rt = deployment.runtime
    hosts = [f"h{i}" for i in range(5)]
    checkout = [f'errors{{host="{h}",service="checkout"}}' for h in hosts]
    search = [f'errors{{host="s{i}",service="search"}}' for i in range(5)]
    rng = np.random.default_rng(0)
    now = time.time()
    hist_t = (np.floor(now / step) - 241 + np.arange(240)) * step
    rt.load_history(checkout + search, hist_t, 10 + rng.normal(size=(10, 240)))
    with TestClient(create_app(deployment.settings)) as client:
        # no worker yet: the points are accepted into Redis and wait there
        t = float(np.floor(time.time() / step) * step)
        body = [{"metric": m, "timestamp": t, "value": 10 + rng.normal()} for m in checkout + search]
        r = client.post("/api/v1/points", json=body)
        assert r.status_code == 202 and r.json()["accepted"] == 10, r.text
        assert client.get("/healthz").json()["pending_batches"] == 1
        deployment.start_worker(concurrency=2)
        wait_for("the batch to be stored", lambda: rt.pending() == 0, timeout=30)
        # beat drives the tick; live points with a level shift on checkout become one incident
        beat = subprocess.Popen(
            [sys.executable, "-m", "stormeye.api.cli", "beat", "--schedule", str(deployment.tmp / "beat-schedule")],
            cwd=deployment.tmp,
            env={**os.environ, **deployment.env},
            stdout=open(deployment.tmp / "beat.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deployment.workers.append(beat)  # stopped with the workers
        deadline = time.time() + 60
        incidents: list[dict[str, object]] = []
        sent = 0
        while time.time() < deadline and not incidents:
            t = time.time()
            shift = 40.0 if sent >= 2 else 0.0
            body = [{"metric": m, "timestamp": t, "value": 10 + rng.normal() + shift} for m in checkout]
            body += [{"metric": m, "timestamp": t, "value": 10 + rng.normal()} for m in search]
            r = client.post("/api/v1/points", json=body)
            assert r.status_code == 202, r.text
            sent += 1
            time.sleep(step)
            incidents = client.get("/api/v1/incidents").json()["incidents"]
        beat_log = (deployment.tmp / "beat.log").read_text()[-2000:]
        assert incidents, f"no incident after {sent} steps; beat log: {beat_log}"
        (inc,) = incidents
        got = client.get(f"/api/v1/incidents/{inc['id']}").json()
        assert {m["metric"] for m in got["members"]} == set(checkout)
        health = client.get("/healthz").json()
        assert health["mode"] == "distributed" and health["metrics"] == 10 and health["open_incidents"] == 1
        # a point for a step already scored is refused with the reason, not silently dropped
        scored = rt.scored_slot()
        r = client.post("/api/v1/points", json=[{"metric": checkout[0], "timestamp": scored * step, "value": 1.0}])
        assert r.status_code == 422
        assert "already scored" in r.json()["errors"][0]["error"]


def test_input_that_cannot_be_stored_is_dead_lettered_and_can_be_requeued(deployment) -> None:  # type: ignore[no-untyped-def]
    from distributed_helpers import wait_for

    rt = deployment.runtime
    deployment.start_worker(concurrency=1)
    t0 = float(np.floor(time.time() / 60) * 60)
    # a batch from a source that skipped validation: one good point, one unreadable name
    res = rt.accept(['cpu{host="a"}', 'cpu{host="b"'], np.array([t0, t0]), np.array([1.0, 2.0]), deployment.dispatcher)
    assert res.accepted == 2
    wait_for("the batch to be handled", lambda: rt.pending() == 0, timeout=30)
    assert rt.stats()["points_stored"] == 1 and rt.stats()["points_dead"] == 1

    # a batch whose ingest task keeps dying (poison): parked after a few attempts, not retried forever
    class Held:  # queue the batch only once it is marked poison: a fast worker would store it first
        def ingest(self, batch_id: str) -> None:
            pass

    res = rt.accept(['cpu{host="c"}'], np.array([t0]), np.array([3.0]), Held())  # type: ignore[arg-type]
    rt.r.hset(rt.k("ingest", "batch", res.batch_id), "attempts", 99)
    deployment.dispatcher.ingest(res.batch_id)
    wait_for("the poison batch to be parked", lambda: rt.pending() == 0, timeout=30)
    out = _cli(["deadletter", "--json"], deployment.env, str(deployment.tmp))
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    by_kind = {r["kind"]: r for r in records}
    assert "braces" in json.loads(by_kind["points"]["points"])[0]["error"]
    assert by_kind["batch"]["ref"] == res.batch_id and "died" in by_kind["batch"]["reason"]
    # the operator fixed the cause: requeue it, and it is stored
    out = _cli(["deadletter", "--requeue", res.batch_id], deployment.env, str(deployment.tmp))
    assert out.returncode == 0 and json.loads(out.stdout)["accepted"] == 1, out.stderr
    wait_for("the requeued batch to be stored", lambda: rt.stats().get("points_stored") == 2, timeout=30)
    row = rt.registry.row('cpu{host="c"}')
    assert rt.store.windows(np.array([row]), t0, 1)[0, 0] == 3.0
    out = _cli(["deadletter", "--requeue", "nope"], deployment.env, str(deployment.tmp))
    assert out.returncode == 2 and "no dead-lettered batch" in out.stderr
    status = _cli(["status", "--json"], deployment.env, str(deployment.tmp))
    assert status.returncode == 0, status.stderr
    health = json.loads(status.stdout)
    assert health["dead_letters"] == 2 and health["pending_batches"] == 0 and health["metrics"] == 2
    assert health["workers"] and health["stats"]["batches_dead"] == 1


def test_settings_that_cannot_work_are_refused_with_what_to_fix(deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = dict(deployment.env)
    bad = _cli(["worker"], {**env, "STORMEYE_REDIS_URL": "http://127.0.0.1:6379"}, str(tmp_path))
    assert bad.returncode == 2 and "is not a Redis URL" in bad.stderr
    down = _cli(["worker"], {**env, "STORMEYE_REDIS_URL": "redis://127.0.0.1:1/0"}, str(tmp_path))
    assert down.returncode == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in down.stderr
    nodb = _cli(["worker"], {**env, "STORMEYE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"}, str(tmp_path))
    assert nodb.returncode == 2 and "cannot use the database" in nodb.stderr
    deployment.runtime.registry.check_shards()  # the deployment is set up with 2 shards
    other = _cli(["worker"], {**env, "STORMEYE_SHARDS": "3"}, str(tmp_path))
    assert other.returncode == 2 and "was set up with 2 shards" in other.stderr
    with pytest.raises(RedisUnavailable, match="STORMEYE_REDIS_URL"):
        from stormeye.workers.settings import Settings

        create_app(Settings(mode="distributed", redis_url="redis://127.0.0.1:1/0"))


def test_a_database_error_is_retried_with_backoff_and_the_step_commits_once(deployment) -> None:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa
    from distributed_helpers import wait_for

    # the workers give up on a lock after 300 ms: holding one makes the database fail for them
    url = deployment.env["STORMEYE_DATABASE_URL"]
    deployment.env["STORMEYE_DATABASE_URL"] = url.replace("options=", "options=-clock_timeout%3D300%20")
    rt = deployment.runtime
    step = rt.step
    rng = np.random.default_rng(2)
    # error rates (priority weight 2): five of them jumping for one sample have the evidence to open an incident
    names = [f'error_rate{{host="q{i}",service="{"mail" if i < 5 else "web"}"}}' for i in range(10)]
    t0 = float(np.floor(time.time() / step) * step) - 10 * step
    rt.load_history(names, t0 - step * np.arange(240, 0, -1), 50 + rng.normal(size=(10, 240)))
    deployment.start_worker(concurrency=1)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        conn.execute(sa.text("LOCK TABLE incident IN ACCESS EXCLUSIVE MODE"))
        deployment.accept(names, np.full(10, t0), 50 + rng.normal(size=10) + np.where(np.arange(10) < 5, 30.0, 0.0))
        deployment.dispatcher.tick(until=t0)
        wait_for("the correlate task to fail and be retried", lambda: rt.stats().get("task_retries", 0) >= 2, 60)
        assert rt.scored_slot() < t0 // step
        conn.rollback()  # the database is back
    engine.dispose()
    wait_for("the step to commit", lambda: rt.scored_slot() == t0 // step, timeout=90)
    (inc,) = rt.database.list_incidents()
    assert inc["member_count"] == 5
    assert [e["kind"] for e in rt.database.get_incident(inc["id"])["events"]] == ["opened"]


def test_serve_refuses_to_start_without_redis(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"STORMEYE_MODE": "distributed", "STORMEYE_REDIS_URL": "redis://127.0.0.1:1/0"}
    res = _cli(["serve", "--database", f"sqlite:///{tmp_path}/s.db"], env, str(tmp_path))
    assert res.returncode == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in res.stderr
