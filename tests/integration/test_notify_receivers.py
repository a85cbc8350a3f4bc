"""Every receiver against a real local server: Debian's prometheus-alertmanager (which passes our
incident on to its own webhook receiver), an SMTP server (aiosmtpd), and HTTP servers standing in
for Slack's and PagerDuty's endpoints and apprise's JSON target."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from email import message_from_bytes
from pathlib import Path

import httpx
import notify_helpers
import pytest
from notify_helpers import HttpReceiver, free_port, incident, save

from stormeye.workers.db import Database
from stormeye.workers.notify.config import parse_config
from stormeye.workers.notify.notifier import DeliverySettings, Notifier, notifications

IN_CI = bool(os.environ.get("CI"))

db, receiver = notify_helpers.db, notify_helpers.receiver  # the fixtures


def wait_for(what: str, cond, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def run_incident(db: Database, text: str, iid: str = "inc-peer") -> tuple[Notifier, float]:
    """Open an incident, notify it (group_wait 0), return the notifier and the time."""
    n = Notifier(parse_config(text), db, public_url="http://stormeye.test", delivery=DeliverySettings(timeout_s=5))
    now = time.time()
    metrics = ['checkout_errors{service="checkout",region="eu"}', 'checkout_latency{service="checkout",region="eu"}']
    save(db, incident(iid, now - 60, metrics, priority=2, title="checkout_errors rose for service=checkout"))
    n.run(now)
    return n, now


def resolve(db: Database, n: Notifier, now: float, iid: str = "inc-peer") -> None:
    metrics = ['checkout_errors{service="checkout",region="eu"}', 'checkout_latency{service="checkout",region="eu"}']
    save(db, incident(iid, now - 60, metrics, priority=2, status="resolved", resolved_at=now + 1))
    n.run(now + 400)


def route(receiver_block: str) -> str:
    return f"""
route:
  receiver: r
  group_wait: 0s
  group_interval: 5m
receivers:
  - name: r
{receiver_block}
"""


def test_slack_pagerduty_apprise(db, receiver) -> None:  # type: ignore[no-untyped-def]
    text = route(f"""    slack_configs:
      - api_url: {receiver.url}/slack
        channel: "#oncall"
        send_resolved: true
    pagerduty_configs:
      - routing_key: key123
        url: {receiver.url}/pd
    apprise_configs:
      - urls: ["json://127.0.0.1:{receiver.port}/apprise"]""")
    n, now = run_incident(db, text)
    slack = receiver.bodies("/slack")
    assert len(slack) == 1 and slack[0]["channel"] == "#oncall"
    assert slack[0]["text"].startswith("[FIRING] P2 checkout_errors rose")
    assert "http://stormeye.test/#/incident/inc-peer" in slack[0]["attachments"][0]["text"]
    pd = receiver.bodies("/pd")
    assert pd[0]["event_action"] == "trigger" and pd[0]["routing_key"] == "key123"
    assert pd[0]["payload"]["severity"] == "error" and pd[0]["payload"]["summary"].startswith("[FIRING] P2")
    key = pd[0]["dedup_key"]
    ap = receiver.bodies("/apprise")
    assert ap and ap[0]["title"].startswith("[FIRING] P2") and "why grouped" in ap[0]["message"]
    resolve(db, n, now)
    pd = receiver.bodies("/pd")
    assert [p["event_action"] for p in pd] == ["trigger", "resolve"] and pd[1]["dedup_key"] == key
    assert receiver.bodies("/slack")[-1]["text"].startswith("[RESOLVED]")


def test_email_over_smtp(db) -> None:  # type: ignore[no-untyped-def]
    from aiosmtpd.controller import Controller

    got: list[tuple[str, list[str], bytes]] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            got.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            return "250 OK"

    port = free_port()
    smtp = Controller(Handler(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        text = route(f"""    email_configs:
      - to: oncall@example.com, lead@example.com
        from: stormeye@example.com
        smarthost: 127.0.0.1:{port}
        require_tls: false
        send_resolved: true""")
        n, now = run_incident(db, text)
        assert len(got) == 1
        sender, rcpts, raw = got[0]
        assert sender == "stormeye@example.com" and rcpts == ["oncall@example.com", "lead@example.com"]
        mail = message_from_bytes(raw)
        assert mail["Subject"].startswith("[FIRING] P2 checkout_errors rose")
        body = mail.get_payload(decode=True).decode()
        assert "root: checkout_errors" in body and "http://stormeye.test/#/incident/inc-peer" in body
        resolve(db, n, now)
        assert len(got) == 2 and message_from_bytes(got[1][2])["Subject"].startswith("[RESOLVED]")
    finally:
        smtp.stop()
    # the server is gone: the attempt is recorded as failed, to be retried
    save(db, incident("inc-peer2", now - 60, ['x{service="y"}', 'z{service="y"}']))
    n.run(now + 500)
    log = notifications(db, "inc-peer2")["notifications"]
    assert log[0]["status"] == "pending" and log[0]["attempts"][0]["ok"] is False


@pytest.fixture()
def alertmanager(tmp_path: Path, receiver: HttpReceiver):  # type: ignore[no-untyped-def]
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        msg = "prometheus-alertmanager is not installed (apt-get install -y prometheus-alertmanager)"
        if IN_CI:
            pytest.fail(msg + ": CI must provide it")
        pytest.skip(msg)
    (tmp_path / "am.yml").write_text(f"""
route:
  receiver: hook
  group_by: [incident]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {receiver.url}/am
        send_resolved: true
""")
    port = free_port()
    log = open(tmp_path / "am.log", "wb")  # noqa: SIM115 - written by the process until it ends
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"alertmanager exited: {(tmp_path / 'am.log').read_text()[-2000:]}")
        try:
            return httpx.get(url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("alertmanager to be ready", ready, timeout=30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_alertmanager_receives_incidents_and_passes_them_on(db, receiver, alertmanager) -> None:  # type: ignore[no-untyped-def]
    text = route(f"""    alertmanager_configs:
      - url: {alertmanager}""")
    n, now = run_incident(db, text)
    assert notifications(db, "inc-peer")["notifications"][0]["status"] == "sent"
    firing = wait_for("Alertmanager's webhook to fire", lambda: receiver.bodies("/am"))
    body = firing[0]
    assert body["version"] == "4" and body["status"] == "firing"
    alert = body["alerts"][0]
    assert alert["labels"]["alertname"] == "StormeyeIncident" and alert["labels"]["incident"] == "inc-peer"
    assert alert["labels"]["service"] == "checkout" and alert["labels"]["priority"] == "P2"
    assert alert["annotations"]["summary"].startswith("[FIRING] P2 checkout_errors rose")
    assert alert["generatorURL"] == "http://stormeye.test/#/incident/inc-peer"
    # Alertmanager's own API lists it
    listed = httpx.get(alertmanager + "/api/v2/alerts", timeout=5).json()
    assert [a["labels"]["incident"] for a in listed] == ["inc-peer"]
    resolve(db, n, now)
    log = notifications(db, "inc-peer")["notifications"]
    assert [(x["kind"], x["status"]) for x in log] == [("firing", "sent"), ("resolved", "sent")], log
    wait_for(
        "Alertmanager's webhook to resolve",
        lambda: any(b["status"] == "resolved" for b in receiver.bodies("/am")),
    )
