"""Distributed mode: two real ``stormeye worker`` processes on the real Redis and PostgreSQL run the
notification task at the same time; each incident reaches the receiver once, and its resolve once."""

from __future__ import annotations

import time
from collections import Counter

import pytest
from distributed_helpers import wait_for
from notify_helpers import HttpReceiver, incident, save

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def test_two_workers_never_send_twice(deployment, tmp_path) -> None:  # type: ignore[no-untyped-def]
    receiver = HttpReceiver()
    receiver.delay_s = 0.05  # deliveries overlap the other worker's claims
    try:
        cfg = tmp_path / "notify.yml"
        cfg.write_text(f"""
route:
  receiver: oncall
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: oncall
    webhook_configs:
      - url: {receiver.url}/hook
""")
        deployment.env["STORMEYE_NOTIFY_CONFIG"] = str(cfg)
        deployment.start_worker(concurrency=1)
        deployment.start_worker(concurrency=1)
        db = deployment.runtime.database
        app = deployment.dispatcher.app
        now = time.time()
        metrics = {k: [f'latency{{service="svc{k}",host="h{j}"}}' for j in range(30)] for k in range(10)}
        save(db, *(incident(f"inc-{k:02d}", now - 30, metrics[k]) for k in range(10)))

        def burst() -> None:
            for _ in range(12):
                app.send_task("stormeye.notify_send")

        def bodies() -> list[dict[str, object]]:
            return [b["stormeye"] for b in receiver.bodies("/hook")]

        burst()
        wait_for("10 first notifications", lambda: len(bodies()) >= 10, timeout=60)
        save(
            db,
            *(incident(f"inc-{k:02d}", now - 30, metrics[k], status="resolved", resolved_at=now) for k in range(10)),
        )
        time.sleep(1.0)  # group_interval after the resolve
        burst()
        wait_for("10 resolves", lambda: sum(b["kind"] == "resolved" for b in bodies()) >= 10, timeout=60)
        burst()  # nothing is left to send: these must send nothing
        time.sleep(2.0)
        got = bodies()
        per = Counter((b["incident"], b["kind"]) for b in got)
        assert sorted(per) == sorted((f"inc-{k:02d}", kind) for k in range(10) for kind in ("firing", "resolved"))
        assert set(per.values()) == {1}, f"sent twice: {[k for k, c in per.items() if c > 1]}"
        ran = [deployment.log(i).count("stormeye.notify_send[") for i in range(2)]
        assert all(ran), f"both workers must have run the notification task: {ran}"
    finally:
        receiver.stop()
