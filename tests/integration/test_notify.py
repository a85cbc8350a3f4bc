"""Notifications against a real local HTTP receiver and a real database: timers, change, flapping,
silences, inhibition, retries, the log. The clock is the test's: ``Notifier.run(now)``."""

from __future__ import annotations

import time

import notify_helpers
from notify_helpers import HttpReceiver, incident, save, set_status

from stormeye.workers.db import Database
from stormeye.workers.notify import silences as sil
from stormeye.workers.notify.config import parse_config
from stormeye.workers.notify.notifier import DeliverySettings, Notifier, notifications

T0 = 1_800_000_000.0

db, receiver = notify_helpers.db, notify_helpers.receiver  # the fixtures


def config(url: str, extra: str = "", route: str = "") -> str:
    return f"""
route:
  receiver: hook
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
{route}
receivers:
  - name: hook
    webhook_configs:
      - url: {url}/hook
  - name: other
    webhook_configs:
      - url: {url}/other
{extra}
"""


def notifier(db: Database, text: str, **kw) -> Notifier:  # type: ignore[no-untyped-def]
    delivery = DeliverySettings(timeout_s=2.0, backoff_s=10.0, **kw)
    return Notifier(parse_config(text), db, public_url="http://stormeye.test", delivery=delivery)


def kinds(receiver: HttpReceiver, path: str = "/hook") -> list[tuple[str, str]]:
    return [(b["stormeye"]["incident"], b["stormeye"]["kind"]) for b in receiver.bodies(path)]


def test_group_wait_change_repeat_ack_resolve(db, receiver) -> None:  # type: ignore[no-untyped-def]
    n = notifier(db, config(receiver.url))
    metrics = [f'errors{{service="pay",host="h{i}"}}' for i in range(4)]
    save(db, incident("inc-a", T0, metrics))
    n.run(T0 + 10)  # the notifier sees it now: group_wait starts
    n.run(T0 + 39)
    assert kinds(receiver) == [], "the first notification waits group_wait"
    n.run(T0 + 41)
    assert kinds(receiver) == [("inc-a", "firing")]
    body = receiver.bodies("/hook")[0]
    assert body["version"] == "4" and body["status"] == "firing"
    alert = body["alerts"][0]
    assert alert["labels"]["service"] == "pay" and alert["labels"]["priority"] == "P3"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert body["stormeye"]["link"] == "http://stormeye.test/#/incident/inc-a"
    assert "why grouped" in alert["annotations"]["description"]

    # one more member: not a real change (4 -> 5 < +50%)
    save(db, incident("inc-a", T0, [*metrics, 'errors{service="pay",host="h9"}']))
    n.run(T0 + 400)
    assert len(kinds(receiver)) == 1
    # doubled: a real change, but only once group_interval has passed since the last one
    more = [*metrics, *(f'errors{{service="pay",host="x{i}"}}' for i in range(4))]
    save(db, incident("inc-a", T0, more))
    n.run(T0 + 401)
    assert kinds(receiver)[-1] == ("inc-a", "update")
    assert receiver.bodies("/hook")[-1]["stormeye"]["reason"].startswith("members grew")
    # priority raised: another update, after group_interval
    save(db, incident("inc-a", T0, more, priority=1))
    n.run(T0 + 500)
    assert len(kinds(receiver)) == 2
    n.run(T0 + 401 + 300)
    assert kinds(receiver)[-1] == ("inc-a", "update")
    # repeat while open and unacknowledged
    n.run(T0 + 701 + 4 * 3600)
    assert kinds(receiver)[-1] == ("inc-a", "repeat")
    count = len(kinds(receiver))
    # acknowledged (issue 19 sets the status): no more repeats
    set_status(db, "inc-a", "acknowledged")
    n.run(T0 + 701 + 9 * 3600)
    assert len(kinds(receiver)) == count
    # resolved: one notification, group_interval after it resolved
    save(db, incident("inc-a", T0, more, priority=1, status="resolved", resolved_at=T0 + 10 * 3600))
    n.run(T0 + 10 * 3600 + 10)
    assert len(kinds(receiver)) == count
    n.run(T0 + 10 * 3600 + 301)
    assert kinds(receiver)[-1] == ("inc-a", "resolved")
    last = receiver.bodies("/hook")[-1]
    assert last["status"] == "resolved" and last["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    for t in range(5):
        n.run(T0 + 11 * 3600 + t * 3600)
    assert len(kinds(receiver)) == count + 1, "resolved once, nothing after"
    log = notifications(db, "inc-a")
    assert [x["kind"] for x in log["notifications"]] == ["firing", "update", "update", "repeat", "resolved"]
    assert all(x["status"] == "sent" and len(x["attempts"]) == 1 for x in log["notifications"])


def test_flapping_is_held_down_and_notified_with_its_count(db, receiver) -> None:  # type: ignore[no-untyped-def]
    """An incident opening and resolving 10 times in an hour: paged once, then one notification with the count."""
    n = notifier(db, config(receiver.url, "flapping: {window: 1h, threshold: 3, hold: 15m}"))
    metrics = ['latency{service="cart"}', 'errors{service="cart"}']
    prev = None
    t = T0
    for k in range(10):  # open 3 minutes, resolved 3 minutes, 10 times: 20 transitions in an hour
        iid = f"inc-f{k}"
        save(db, incident(iid, t, metrics, follows=prev))
        for dt in range(0, 180, 30):
            n.run(t + dt)
        save(db, incident(iid, t, metrics, follows=prev, status="resolved", resolved_at=t + 180))
        for dt in range(180, 360, 30):
            n.run(t + dt)
        prev, t = iid, t + 360
    for dt in range(0, 3600, 60):
        n.run(t + dt)
    got = receiver.bodies("/hook")
    assert [b["stormeye"]["kind"] for b in got] == ["firing", "resolved"], [b["stormeye"] for b in got]
    assert got[0]["stormeye"]["incident"] == "inc-f0"
    final = got[1]["stormeye"]
    assert final["flaps"] == 10 and final["incident"] == "inc-f9"
    assert "flapped 10 times" in got[1]["alerts"][0]["annotations"]["description"]
    assert got[0]["alerts"][0]["fingerprint"] == got[1]["alerts"][0]["fingerprint"], "one thread, one key"


def test_routing_silence_and_inhibition(db, receiver) -> None:  # type: ignore[no-untyped-def]
    route = """  routes:
    - matchers: ['team="payments"']
      receiver: other
      continue: true
    - matchers: ['priority=~"[12]"']
      receiver: hook
"""
    inhibit = """inhibit_rules:
  - source_matchers: ['priority="1"', 'kpi="true"']
    target_matchers: ['priority!="1"']
    equal: [region]
"""
    n = notifier(db, config(receiver.url, inhibit + "teams: {checkout: payments}", route))
    save(
        db,
        incident("inc-kpi", T0, ['revenue{region="eu"}', 'orders{region="eu"}'], priority=1, kpi=True),
        incident("inc-low", T0, ['cpu{region="eu",service="checkout"}', 'mem{region="eu",service="checkout"}']),
        incident("inc-us", T0, ['cpu{region="us",service="checkout"}', 'mem{region="us",service="checkout"}']),
    )
    n.run(T0 + 1)
    n.run(T0 + 31)
    assert sorted(kinds(receiver, "/hook")) == [("inc-kpi", "firing")]
    assert kinds(receiver, "/other") == [("inc-us", "firing")], "inc-low is inhibited by the P1 KPI incident"
    st = notifications(db, "inc-low")["receivers"][0]
    assert st["suppressed_by"] == {"inhibited_by": ["inc-kpi"]}

    s = sil.add(db, ['region="us"'], T0 + 40, T0 + 7200, created_by="test", comment="maintenance", now=T0 + 40)
    us2 = ['disk{region="us",service="checkout"}', 'io{region="us",service="checkout"}']
    save(db, incident("inc-us2", T0 + 50, us2))
    n.run(T0 + 100)
    assert ("inc-us2", "firing") not in kinds(receiver, "/other")
    assert notifications(db, "inc-us2")["receivers"][0]["suppressed_by"] == {"silenced_by": [s["id"]]}
    sil.expire(db, s["id"], T0 + 200)
    n.run(T0 + 201)
    assert ("inc-us2", "firing") in kinds(receiver, "/other"), "after the silence the incident is notified"
    # the source resolves: the inhibited incident is notified now
    save(db, incident("inc-kpi", T0, ['revenue{region="eu"}', 'orders{region="eu"}'], priority=1, kpi=True,
                      status="resolved", resolved_at=T0 + 300))  # fmt: skip
    n.run(T0 + 301)
    assert ("inc-low", "firing") in kinds(receiver, "/other")


def test_receiver_fails_then_recovers_and_never_delays_others(db, receiver) -> None:  # type: ignore[no-untyped-def]
    down, fast = HttpReceiver(), HttpReceiver()
    down.delay_s = 3.0  # answers after the 2 s timeout: a receiver that hangs
    try:
        text = config(receiver.url).replace(
            "      - url: " + receiver.url + "/other",
            "      - url: " + down.url + "/slow\n      - url: " + fast.url + "/fast",
        )
        routes = "receiver: hook\n  routes:\n    - receiver: other\n      continue: true\n    - receiver: hook"
        text = text.replace("receiver: hook", routes, 1)
        n = notifier(db, text)
        save(db, incident("inc-r", T0, ['a{x="1"}', 'b{x="1"}']))
        receiver.fail(2, 503)
        n.run(T0 + 1)
        started = time.monotonic()
        n.run(T0 + 31)  # hook: 503; other: one integration hangs past the timeout, the other works
        assert time.monotonic() - started < 3.5, "receivers are sent to in parallel"
        assert [b["stormeye"]["incident"] for b in fast.bodies("/fast")] == ["inc-r"], "not delayed by the hang"
        log = notifications(db, "inc-r")["notifications"]
        assert {(x["receiver"], x["integration"]): x["status"] for x in log} == {
            ("hook", "webhook[0]"): "pending",
            ("other", "webhook[0]"): "pending",
            ("other", "webhook[1]"): "sent",
        }
        n.run(T0 + 35)  # not due yet (backoff 10 s): nothing sent
        assert receiver.bodies("/hook") == []
        n.run(T0 + 41)  # second try: 503 again
        n.run(T0 + 61)  # third try (backoff 20 s): it recovered
        assert kinds(receiver) == [("inc-r", "firing")]
        hook = next(x for x in notifications(db, "inc-r")["notifications"] if x["receiver"] == "hook")
        assert hook["status"] == "sent"
        assert [a["ok"] for a in hook["attempts"]] == [False, False, True]
        assert "503" in (hook["attempts"][0]["error"] or "")
    finally:
        down.stop()
        fast.stop()
