"""PagerDuty Events API v2: ``trigger`` (again on update and repeat), then ``resolve``, one ``dedup_key`` per thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.notify.message import TITLE, render, severity
from workers.notify.receivers.base import SendContext, post_json, timeout_of

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def event(options: Mapping[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    key = str(options["routing_key"])
    if message["status"] == "resolved":
        return {"routing_key": key, "event_action": "resolve", "dedup_key": message["dedup_key"]}
    summary = render(str(options.get("description", TITLE)), message)[:1024]
    return {
        "routing_key": key,
        "event_action": "trigger",
        "dedup_key": message["dedup_key"],
        "payload": {
            "summary": summary,
            "source": message["root_entity"] or message["root"] or "stormeye",
            "severity": str(options.get("severity", severity(int(message["priority"])))),
            "component": message["root"] or None,
            "group": message["labels"].get("team") or None,
            "class": "incident",
            "custom_details": {
                "incident": message["incident"],
                "priority": f"P{message['priority']}",
                "members": message["members"],
                "why grouped": message["why"],
                "flaps": message["flaps"],
                "kind": message["kind"],
            },
        },
        "client": str(options.get("client", "stormeye")),
        **(
            {"client_url": message["link"], "links": [{"href": message["link"], "text": "incident"}]}
            if message["link"]
            else {}
        ),
    }


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    url = str(options.get("url") or ctx.global_.get("pagerduty_url") or EVENTS_URL)
    post_json(url, event(options, message), timeout_of(options, ctx))
