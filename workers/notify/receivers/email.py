"""Email over SMTP (the standard library's ``smtplib``): STARTTLS unless ``require_tls: false``, login when given."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from stormeye.workers.notify.message import TEXT, TITLE, render
from stormeye.workers.notify.receivers.base import ReceiverError, SendContext, timeout_of


def build(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = render(str(options.get("subject", TITLE)), message)
    mail["From"] = str(options.get("from") or ctx.global_.get("smtp_from") or "stormeye@localhost")
    mail["To"] = str(options["to"])
    for k, v in (options.get("headers") or {}).items():
        mail[str(k)] = str(v)
    mail.set_content(render(str(options.get("text", TEXT)), message) + "\n")
    return mail


def send(options: Mapping[str, Any], message: dict[str, Any], ctx: SendContext) -> None:
    smarthost = str(options.get("smarthost") or ctx.global_.get("smtp_smarthost") or "")
    host, _, port = smarthost.rpartition(":")
    if not host or not port.isdigit():
        raise ReceiverError(f"email smarthost {smarthost!r} must be host:port", permanent=True)
    mail = build(options, message, ctx)
    require_tls = options.get("require_tls", ctx.global_.get("smtp_require_tls", True))
    user = options.get("auth_username") or ctx.global_.get("smtp_auth_username")
    password = options.get("auth_password") or ctx.global_.get("smtp_auth_password")
    try:
        with smtplib.SMTP(host, int(port), timeout=timeout_of(options, ctx)) as smtp:
            if require_tls:
                smtp.starttls(context=ssl.create_default_context())
            if user:
                smtp.login(str(user), str(password or ""))
            smtp.send_message(mail)
    except smtplib.SMTPResponseException as exc:
        raise ReceiverError(
            f"SMTP {smarthost} answered {exc.smtp_code}: {exc.smtp_error!r}", permanent=500 <= exc.smtp_code < 600
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise ReceiverError(f"SMTP {smarthost} failed: {type(exc).__name__}: {exc}") from None
