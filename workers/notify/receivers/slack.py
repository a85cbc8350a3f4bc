"""Slack incoming webhooks: the title as text, the body in an attachment coloured by status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stormeye.workers.notify.message import TEXT, TITLE, render
from stormeye.workers.notify.receivers.base import SendContext, post_json, timeout_of

COLOURS = {1: "#d00000", 2: "#e36209", 3: "#dbab09"}


def payload(options: Mapping[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    title = render(str(options.get("title", TITLE)), message)
    colour = "#2eb886" if message["status"] == "resolved" else COLOURS.get(int(message["priority"]), "#888888")
    out: dict[str, Any] = {
        "text": title,
        "attachments": [
            {
                "color": colour,
                "title": title,
                "text": render(str(options.get("text", TEXT)), message),
                "fallback": title,
            }
        ],
    }
    if message["link"]:
        out["attachments"][0]["title_link"] = message["link"]
    for k in ("channel", "username", "icon_emoji"):
        if k in options:
            out[k] = options[k]
    return out


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    post_json(str(options["api_url"]), payload(options, message), timeout_of(options, ctx))
