"""Alertmanager itself: the incident as one alert posted to its ``/api/v2/alerts``.

A team keeps its Alertmanager routing and receivers. While firing, the alert's ``endsAt`` is
``ttl`` (default 24 h) ahead: Alertmanager resolves it by itself if stormeye stops refreshing
it (repeats refresh it); the resolve posts ``endsAt`` = the incident's end (never later than now).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from stormeye.workers.notify.config import parse_duration
from stormeye.workers.notify.message import iso
from stormeye.workers.notify.receivers.base import SendContext, post_json, timeout_of
from stormeye.workers.notify.receivers.webhook import alert


def alerts(options: Mapping[str, Any], message: dict[str, Any]) -> list[dict[str, Any]]:
    a = alert(message)
    ttl = parse_duration(options.get("ttl", "24h"))
    if message["status"] == "resolved":
        # a resolve must end in the past, or Alertmanager keeps the later end it already had
        ends = min(float(message["resolved_at"] or time.time()), time.time())
    else:
        ends = float(message["at"]) + ttl
    return [
        {
            "labels": a["labels"],
            "annotations": a["annotations"],
            "startsAt": a["startsAt"],
            "endsAt": iso(ends),
            "generatorURL": a["generatorURL"] or None,
        }
    ]


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    url = str(options["url"]).rstrip("/") + "/api/v2/alerts"
    post_json(url, alerts(options, message), timeout_of(options, ctx))
