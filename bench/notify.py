"""Notification figures on this machine: the real notifier, a real database and a real local HTTP receiver.

    python bench/notify.py            # 2,000 incidents; the 300-anomaly storm
    python bench/notify.py --quick    # 300 incidents (well under a minute)
    python bench/notify.py --json     # one JSON object instead of the table

What it measures:

- **notifications_per_s**: incidents already open past their ``group_wait`` are decided, claimed in
  the notification log and delivered through the webhook receiver (Alertmanager v4 bodies) to a
  local HTTP server, until all are sent; per wall second. Baseline in the same run: the same
  bodies POSTed straight to the same server, with no decision and no log (``baseline_posts_per_s``),
  so the price of never sending twice shows.
- **first_notification_delay_s**: a storm (10 services x 30 hosts, 300 anomalies) runs through the
  embedded pipeline on a simulated live clock — each step is scored when it is complete, the
  notifier runs every ``STORMEYE_NOTIFY_INTERVAL_S`` (5 s) — from the storm's first anomaly to the
  first notification arriving at the receiver, with the default ``group_wait`` (30 s). Baseline in
  the same run: the same storm with ``group_wait: 0s`` (detection and the notifier's interval alone),
  and how many notifications one page per anomaly would have sent.

Database: ``--database-url`` (e.g. PostgreSQL), else a SQLite file in a temp directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from notify_helpers import HttpReceiver, incident, save

from stormeye.workers.db import Database
from stormeye.workers.notify.config import parse_config
from stormeye.workers.notify.notifier import Notifier
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

T0 = 1_767_225_600.0
STEP = 60
CONFIG = """
route:
  receiver: oncall
  group_wait: {group_wait}
receivers:
  - name: oncall
    webhook_configs:
      - url: {url}/hook
"""


def throughput(n: int, url: str | None) -> dict[str, Any]:
    receiver = HttpReceiver()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(url or f"sqlite:///{tmp}/bench.db")
        now = time.time()
        incs = [
            incident(f"inc-{k:05d}", now - 600, [f'latency{{service="s{k}",host="h{j}"}}' for j in range(5)])
            for k in range(n)
        ]
        for lo in range(0, n, 500):
            save(db, *incs[lo : lo + 500])
        notifier = Notifier(parse_config(CONFIG.format(group_wait="0s", url=receiver.url)), db)
        started = time.perf_counter()
        passes = 0
        while len(receiver.bodies()) < n and passes < 50:
            notifier.run(time.time())
            passes += 1
        took = time.perf_counter() - started
        sent = len(receiver.bodies())
        # the baseline: the same bodies posted straight to the same server, sequentially
        messages = list(receiver.bodies())
        started = time.perf_counter()
        with httpx.Client() as client:
            for msg in messages:
                client.post(f"{receiver.url}/baseline", json=msg, timeout=10)
        base = time.perf_counter() - started
        db.dispose()
    receiver.stop()
    return {
        "incidents": n,
        "sent": sent,
        "passes": passes,
        "notifications_per_s": round(sent / took, 1),
        "baseline_posts_per_s": round(len(messages) / base, 1) if base else None,
    }


def storm() -> tuple[list[str], np.ndarray, np.ndarray, int]:
    rng = np.random.default_rng(0)
    history, steps = 500, 40
    names = [f'latency_ms{{service="svc{k}",host="h{j}"}}' for k in range(10) for j in range(30)]
    values = rng.normal(100.0, 5.0, (300, history + steps))
    for k in range(10):
        onset = history + 3 + 2 * k
        values[k * 30 : (k + 1) * 30, onset : onset + 25] += 80.0
    return names, T0 + np.arange(history + steps) * STEP, values, history


def first_delay(group_wait: str, interval_s: float = 5.0) -> dict[str, Any]:
    """From the storm's first anomaly to the first notification at the receiver, on a simulated live clock."""
    receiver = HttpReceiver()
    names, ts, values, history = storm()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/storm.db"
        db = Database(url)
        pipe = Pipeline(Settings(database_url=url), database=db)
        pipe.load_history(names, ts[:history], values[:, :history])
        rows = pipe.register(names)
        notifier = Notifier(parse_config(CONFIG.format(group_wait=group_wait, url=receiver.url)), Database(url))
        arrived: float | None = None
        for j in range(history, len(ts)):
            t = float(ts[j])
            pipe.store.append(rows, np.full(len(rows), t), values[:, j])
            pipe.tick(t)  # the step ending at t + STEP is scored when it is complete
            for k in range(int(STEP / interval_s)):
                now = t + STEP + k * interval_s
                before = len(receiver.bodies())
                notifier.run(now)
                if arrived is None and len(receiver.bodies()) > before:
                    arrived = now
        with db.sessions() as s:
            from sqlalchemy import func, select

            from stormeye.workers import models as m

            first_anomaly = float(s.scalar(select(func.min(m.Anomaly.start))) or 0)
            anomalies = int(s.scalar(select(func.count()).select_from(m.Anomaly)) or 0)
        got = [b["stormeye"] for b in receiver.bodies()]
        notifier.db.dispose()
        db.dispose()
    receiver.stop()
    return {
        "delay_s": None if arrived is None else round(arrived - first_anomaly, 1),
        "anomalies": anomalies,
        "first_notifications": sum(g["kind"] == "firing" for g in got),
        "notifications": len(got),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="300 incidents instead of 2,000")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--database-url", default=None, help="database for the throughput run (default: SQLite)")
    args = ap.parse_args()
    n = 300 if args.quick else 2000
    tp = throughput(n, args.database_url)
    default = first_delay("30s")
    zero = first_delay("0s")
    out = {
        "notifications_per_s": tp["notifications_per_s"],
        "baseline_posts_per_s": tp["baseline_posts_per_s"],
        "incidents_notified": tp["sent"],
        "first_notification_delay_s": default["delay_s"],
        "baseline_delay_s_group_wait_0": zero["delay_s"],
        "storm_anomalies": default["anomalies"],
        "storm_first_notifications": default["first_notifications"],
        "storm_notifications": default["notifications"],
        "group_wait_s": 30,
        "notify_interval_s": 5,
    }
    if args.json:
        print(json.dumps(out))
        return
    print("notifications (webhook receiver, local HTTP server)")
    print(f"  notifications/s, decided + claimed in the log + delivered : {out['notifications_per_s']:>9}")
    print(f"  baseline: the same bodies POSTed straight, no log          : {out['baseline_posts_per_s']:>9}")
    print(f"storm of {out['storm_anomalies']} anomalies (10 services x 30 hosts)")
    print(f"  first notification after the first anomaly (group_wait 30s) : {out['first_notification_delay_s']} s")
    print(f"  baseline: group_wait 0s                                     : {out['baseline_delay_s_group_wait_0']} s")
    print(f"  first notifications sent / pages one per anomaly            : "
          f"{out['storm_first_notifications']} / {out['storm_anomalies']}")  # fmt: skip


if __name__ == "__main__":
    main()
