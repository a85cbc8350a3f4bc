"""Issue 31 items 2 and 3 in distributed mode, with a real worker and PostgreSQL: a poisoned item goes
to the dead letters with its reason and the next steps proceed; /readyz and /healthz tell the truth."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import sqlalchemy as sa
from distributed_helpers import wait_for
from fastapi.testclient import TestClient

from stormeye.api.app import create_app
from stormeye.workers.alerts import Alert, receive_distributed

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

STEP = 2


def _refuse_anomalies_of(engine: sa.Engine, start: float) -> None:
    """PostgreSQL refuses the anomalies starting at ``start`` (a trigger: a real database error, every attempt)."""
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE FUNCTION refuse_step() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.start = {start!r} THEN RAISE EXCEPTION 'anomalies of step % refused by a test trigger', "
                "NEW.start; END IF; RETURN NEW; END $$"
            )
        )
        c.execute(
            sa.text(
                "CREATE TRIGGER refuse_step BEFORE INSERT OR UPDATE ON anomaly "
                "FOR EACH ROW EXECUTE FUNCTION refuse_step()"
            )
        )


def test_stalled_pipeline_is_not_ready_then_poison_is_dead_lettered_and_the_tick_goes_on(deployment) -> None:  # type: ignore[no-untyped-def]
    deployment.env.update(
        STORMEYE_STEP_S=str(STEP),
        STORMEYE_TICK_S="1",
        STORMEYE_GRACE_S="0.2",
        STORMEYE_RESEND_AFTER_S="2",
        STORMEYE_INGEST_WAIT_S="5",
    )
    rt = deployment.runtime
    names = [f'errors{{host="h{i}",service="checkout"}}' for i in range(4)]
    rng = np.random.default_rng(1)
    last = math.floor(time.time() / STEP) - 1
    hist_t = (last - 120 + 1 + np.arange(120)) * float(STEP)
    rt.load_history(names, hist_t, 10 + rng.normal(size=(len(names), len(hist_t))))
    with TestClient(create_app(deployment.settings)) as client:
        # item 3: no worker runs; steps fall due and nothing commits them: not ready, and health says why
        r = wait_for("/readyz to answer 503", lambda: (got := client.get("/readyz")).status_code == 503 and got, 30)
        assert "has not committed a step" in r.text and "workers alive: 0" in r.text, r.text
        h = client.get("/healthz").json()
        assert h["status"] == "degraded" and h["stalled"] is True and h["steps_behind"] >= 1, h
        assert h["tick_age_s"] > 3 and h["redis_epoch"], h

        deployment.start_worker(concurrency=2)
        t1 = float(math.floor(time.time() / STEP) * STEP)
        _refuse_anomalies_of(rt.database.engine, t1)
        # an alert this worker cannot read (a lone surrogate, queued past an older edge) and a good one
        bad = Alert(
            labels={"alertname": "Odd", "host": "h\ud800"},
            starts_at=t1,
            ends_at=None,
            resolved=False,
            source="alertmanager",
        )
        good = [  # one service's instances alerting together: one incident
            Alert(
                labels={"alertname": name, "instance": f"search-{k}", "service": "search"},
                starts_at=t1 + STEP,
                ends_at=None,
                resolved=False,
                source="alertmanager",
            )
            for k, name in enumerate(("HighErrorRate", "HighErrorRate", "HighLatency"))
        ]
        receive_distributed(rt, [bad, *good])
        # a spike at t1 opens anomalies the database refuses: the step's correlate fails every attempt
        deployment.accept(names, np.full(len(names), t1), np.full(len(names), 80.0))
        deployment.tick_until(t1, timeout=60)
        dead = rt.dead_letters()
        step_dead = [d for d in dead if d["kind"] == "step"]
        assert len(step_dead) == 1 and step_dead[0]["ref"] == str(int(t1 // STEP)), dead
        assert "refused by a test trigger" in step_dead[0]["reason"], step_dead
        alert_dead = [d for d in dead if d["kind"] == "alert"]
        assert len(alert_dead) == 1 and "surrogate" in alert_dead[0]["reason"], dead

        # the next steps proceed: values back to normal, the good alert opens its incident
        for k in (1, 2):
            t = t1 + k * STEP
            wait_for("the step to start", lambda t=t: time.time() >= t, timeout=10)
            deployment.accept(names, np.full(len(names), t), 10 + rng.normal(size=len(names)))
            deployment.tick_until(t, timeout=60)
        incidents = rt.database.list_incidents(limit=100)
        assert any('service="search"' in (i["root"] or "") for i in incidents), (incidents, rt.dead_letters())
        h = client.get("/healthz").json()
        assert "refused by a test trigger" in (h["last_error"] or ""), h
        assert rt.stats().get("steps_dead") == 1
        assert client.get("/readyz").status_code == 200
