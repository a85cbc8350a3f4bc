"""Receivers: one module per way of sending, each a ``send(options, message, context)`` function.

A send either returns (delivered) or raises :class:`ReceiverError` (``permanent`` when trying
again cannot help, such as an HTTP 400). The message is the stored JSON of
:func:`workers.notify.message.build`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from stormeye.workers.notify.receivers import alertmanager, apprise_, email, pagerduty, slack, webhook
from stormeye.workers.notify.receivers.base import ReceiverError, SendContext

SENDERS: dict[str, Callable[[Mapping[str, Any], dict[str, Any], SendContext], None]] = {
    "webhook": webhook.send,
    "slack": slack.send,
    "pagerduty": pagerduty.send,
    "email": email.send,
    "alertmanager": alertmanager.send,
    "apprise": apprise_.send,
}

__all__ = ["SENDERS", "ReceiverError", "SendContext"]
