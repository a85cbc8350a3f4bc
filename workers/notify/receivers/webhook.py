"""The generic webhook: a JSON body shaped like Alertmanager's webhook v4, plus a ``stormeye`` object.

Tools that read Alertmanager's webhook read ours: one alert per notification (the incident), with
``labels`` (the incident's properties), ``annotations`` (summary, description, link),
``startsAt``/``endsAt`` (Alertmanager's zero time while firing) and ``fingerprint``
(stable per incident thread). ``stormeye`` carries what Alertmanager has no field for: the kind
(firing, update, repeat, resolved), members, root, why grouped, flap count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stormeye.workers.notify.message import TEXT, TITLE, iso, render, severity
from stormeye.workers.notify.receivers.base import SendContext, post_json, timeout_of

__all__ = ["body", "send", "severity"]

STORMEYE_FIELDS = (
    "kind", "incident", "thread", "seq", "priority", "title", "members", "top_members", "root", "root_entity",
    "why", "link", "flaps", "flapping", "reason", "merged_into", "opened_at", "resolved_at", "at",
)  # fmt: skip


def alert(message: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": message["status"],
        "labels": dict(message["alert_labels"]),
        "annotations": {
            "summary": render(TITLE, dict(message)),
            "description": render(TEXT, dict(message)),
            "link": message["link"],
        },
        "startsAt": iso(message["opened_at"]),
        "endsAt": iso(message["resolved_at"] if message["status"] == "resolved" else None),
        "generatorURL": message["link"],
        "fingerprint": message["fingerprint"],
    }


def body(message: Mapping[str, Any]) -> dict[str, Any]:
    a = alert(message)
    return {
        "version": "4",
        "groupKey": f"stormeye/{message['receiver']}/{message['thread']}",
        "truncatedAlerts": 0,
        "status": message["status"],
        "receiver": message["receiver"],
        "groupLabels": {"incident": message["incident"]},
        "commonLabels": a["labels"],
        "commonAnnotations": a["annotations"],
        "externalURL": message["external_url"],
        "alerts": [a],
        "stormeye": {k: message[k] for k in STORMEYE_FIELDS},
    }


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    post_json(str(options["url"]), body(message), timeout_of(options, ctx))
