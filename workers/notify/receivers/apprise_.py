"""The long tail through apprise (Teams, Discord, Telegram, Opsgenie, ntfy, JSON/form posts, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stormeye.workers.notify.message import TEXT, TITLE, render
from stormeye.workers.notify.receivers.base import ReceiverError, SendContext


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    import apprise  # imported when used: it loads a plugin per service

    urls = options["urls"]
    urls = [urls] if isinstance(urls, str) else list(urls)
    app = apprise.Apprise()
    for u in urls:
        if not app.add(u):
            raise ReceiverError(f"apprise does not understand the URL {u.split('://')[0]}://…", permanent=True)
    kind = apprise.NotifyType.SUCCESS if message["status"] == "resolved" else apprise.NotifyType.FAILURE
    ok = app.notify(
        body=render(str(options.get("body", TEXT)), message),
        title=render(str(options.get("title", TITLE)), message),
        notify_type=kind,
    )
    if not ok:
        raise ReceiverError(f"apprise could not notify {len(urls)} URL(s) of receiver {ctx.receiver!r}")
