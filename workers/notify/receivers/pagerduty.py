"""PagerDuty Events API v2: ``trigger`` (again on update and repeat), then ``resolve``, one ``dedup_key`` per thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stormeye.workers.notify.message import TITLE, render, severity
from stormeye.workers.notify.receivers.base import SendContext, post_json, timeout_of

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def event(options: Mapping[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    key = str(options["routing_key"])
    if message["status"] == "resolved":
        return {"routing_key": key, "event_action": "resolve", "dedup_key": message["dedup_key"]}
    summary = render(str(options.get("description", TITLE)), message)[:1024]
    payload: dict[str, Any] = {
        "summary": summary,
        "source": message["root_entity"] or message["root"] or "stormeye",
        "severity": str(options.get("severity", severity(int(message["priority"])))),
        "class": "incident",
        "custom_details": {
            "incident": message["incident"],
            "priority": f"P{message['priority']}",
            "members": message["members"],
            "why grouped": message["why"],
            "flaps": message["flaps"],
            "kind": message["kind"],
        },
    }
    if message["root"]:
        payload["component"] = message["root"]
    if message["labels"].get("team"):
        payload["group"] = message["labels"]["team"]
    out: dict[str, Any] = {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": message["dedup_key"],
        "payload": payload,
        "client": str(options.get("client", "stormeye")),
    }
    if message["link"]:
        out["client_url"] = message["link"]
        out["links"] = [{"href": message["link"], "text": "incident"}]
    return out


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    url = str(options.get("url") or ctx.global_.get("pagerduty_url") or EVENTS_URL)
    post_json(url, event(options, message), timeout_of(options, ctx))
