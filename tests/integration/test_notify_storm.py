"""A storm through the real embedded pipeline: 300 anomalies of 10 incidents give at most 10 first
notifications, and a restart in the middle (even between a claim and its delivery) gives no duplicate."""

from __future__ import annotations

from collections import Counter

import numpy as np
from notify_helpers import HttpReceiver

from stormeye.workers.db import Database
from stormeye.workers.notify.config import parse_config
from stormeye.workers.notify.notifier import Notifier
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

T0 = 1_767_225_600.0
STEP = 60


def storm(history: int = 500, steps: int = 60) -> tuple[list[str], np.ndarray, np.ndarray]:
    """10 services x 30 hosts; each service's latency rises on every host, three minutes after the one before."""
    rng = np.random.default_rng(0)
    names = [f'latency_ms{{service="svc{k}",host="h{j}"}}' for k in range(10) for j in range(30)]
    values = rng.normal(100.0, 5.0, (300, history + steps))
    for k in range(10):
        onset = history + 3 + 3 * k
        values[k * 30 : (k + 1) * 30, onset : onset + 25] += 80.0
    return names, T0 + np.arange(history + steps) * STEP, values


CONFIG = """
route:
  receiver: oncall
  group_wait: 2m
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: oncall
    webhook_configs:
      - url: {url}/hook
"""


def test_storm_restart_no_duplicates(sqlite_url) -> None:  # type: ignore[no-untyped-def]
    receiver = HttpReceiver()
    try:
        names, ts, values = storm()
        db = Database(sqlite_url)
        pipe = Pipeline(Settings(database_url=sqlite_url), database=db)
        history = 500
        pipe.load_history(names, ts[:history], values[:, :history])
        rows = pipe.register(names)
        cfg = parse_config(CONFIG.format(url=receiver.url))
        notifier = Notifier(cfg, Database(sqlite_url))
        for j in range(history, len(ts)):
            t = float(ts[j])
            pipe.store.append(rows, np.full(len(rows), t), values[:, j])
            pipe.tick(t)
            if j == history + 20:
                # a crash between claiming and sending: the claim is in the log, the send never happened
                notifier.evaluate(t + 30)
                notifier.db.dispose()
                notifier = Notifier(cfg, Database(sqlite_url))  # the restarted process
                continue
            if j == history + 30:
                notifier.db.dispose()
                notifier = Notifier(cfg, Database(sqlite_url))  # a clean restart
            notifier.run(t + 30)
        notifier.run(float(ts[-1]) + 90)  # past the lease of anything claimed and not sent
        counts = db.counts()
        assert counts["anomaly"] >= 300
        incidents = db.list_incidents(limit=1000)
        assert 1 <= len(incidents) <= 10
        got = [b["stormeye"] for b in receiver.bodies("/hook")]
        firing = [g["incident"] for g in got if g["kind"] == "firing"]
        assert len(firing) <= 10, f"{len(firing)} first notifications for {len(incidents)} incidents"
        assert set(firing) == {i["id"] for i in incidents}, "every incident was notified"
        dup = [k for k, c in Counter((g["thread"], g["seq"]) for g in got).items() if c > 1]
        assert not dup, f"sent twice: {dup}"
        opened = {i["id"]: i["opened_at"] for i in incidents}
        firsts = {g["incident"]: g["at"] for g in got if g["kind"] == "firing"}
        assert all(firsts[i] >= opened[i] + 120 for i in firsts), "each first notification waited group_wait"
        sent = db.counts()  # the log and the receiver agree
        with notifier.db.sessions() as s:
            from sqlalchemy import func, select

            from stormeye.workers import models as m

            n_sent = s.scalar(select(func.count()).select_from(m.Notification).where(m.Notification.status == "sent"))
        assert n_sent == len(got), (n_sent, len(got), sent)
        notifier.db.dispose()
        db.dispose()
    finally:
        receiver.stop()
