"""Noise profiles in distributed mode: learnt in PostgreSQL, read by every real Celery worker, and
still there for a worker started after the one that saw the routine was killed (issue 29). The
routine comes back on a new pod of the same service: the profile's pod pattern matches it."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from stormeye.grouping.names import normalize
from stormeye.workers import models as m
from stormeye.workers.actions import Actions

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

PODS = ("batch-7d9f8b-x2k4q", "batch-55c4d9-p8m2z")  # the second: a new pod of the same service
ROUTINE = [f'{measure}{{service="batch",pod="{pod}"}}' for pod in PODS for measure in ("cpu_seconds", "disk_io_bytes")]
QUIET = [f'request_latency_ms{{service="web",pod="web-5c6d7f-{c}"}}' for c in ("abcde", "fghij")]
# the names above are written with their labels out of canonical order, as clients do; the history
# and the points land on one row each, stored under the canonical name
STORED = {normalize(n) for n in ROUTINE}


def test_a_profile_learnt_in_the_database_keeps_the_routine_quiet_on_a_new_worker(deployment) -> None:  # type: ignore[no-untyped-def]
    dep = deployment
    dep.env["STORMEYE_DETECTOR"] = "robust_z"  # the grouping is under test, not the detector: keep it quick
    rt = dep.runtime
    step = rt.step
    names = ROUTINE + QUIET
    rng = np.random.default_rng(5)
    t0 = 600_000 * step
    rt.load_history(names, t0 - step * np.arange(240, 0, -1), 100 + rng.normal(size=(len(names), 240)))

    def send(lo: int, hi: int, batch_at: range, pod: int) -> None:
        ks = np.arange(lo, hi)
        ts = np.repeat(t0 + ks * step, len(names)).astype(float)
        on = [2 * pod, 2 * pod + 1]  # the batch's two measures on that pod
        jump = np.array([[40.0 * (k in batch_at) * (i in on) for i in range(len(names))] for k in ks])
        vals = (100 + rng.normal(size=(len(ks), len(names))) + jump).reshape(-1)
        dep.accept(names * len(ks), ts, vals)
        dep.tick_until(float(t0 + (hi - 1) * step))

    first = dep.start_worker()
    send(0, 10, range(2, 6), pod=0)
    (day0,) = [
        i for i in rt.database.list_incidents(limit=100) if STORED & set(rt.database.incident_members()[i["id"]])
    ]
    actions = Actions(rt.database)
    profile = actions.noise(day0["id"], "dana")["details"]["profile"]
    dep.kill_worker(first)  # the worker that saw it is gone; a new one knows only the database
    dep.start_worker()
    send(10, 30, range(20, 24), pod=1)
    later = [i for i in rt.database.list_incidents(limit=100) if i["start"] >= t0 + 19 * step]
    assert [i["profile"] for i in later] == [profile], later
    with rt.database.sessions() as s:
        escalated = list(s.scalars(select(m.IncidentEvent).where(m.IncidentEvent.kind == "escalated")))
    assert escalated == []
    assert actions.profiles()[0]["matched"] == 1
