"""The message of a notification: built once when it is claimed, rendered by each receiver.

The message is a plain JSON object stored with the notification (the log shows exactly what was
sent, and a retry sends the same). Titles and bodies come from Jinja2 templates; a receiver may
override them (``title``/``text`` of Slack, ``subject``/``text`` of email, ``title``/``body`` of
apprise) with templates over the same fields.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from stormeye.core.errors import BadInput
from stormeye.workers.alerts import OWN_ALERTNAME

if TYPE_CHECKING:
    from stormeye.workers.notify.view import IncidentView

TITLE = (
    "{% if status == 'resolved' %}[RESOLVED]{% elif kind == 'firing' %}[FIRING]{% else %}[{{ kind | upper }}]"
    "{% endif %} P{{ priority }} {{ title }}"
)
TEXT = (
    "{{ title }}\n"
    "priority P{{ priority }} · {{ members }} anomalies · {{ status }}"
    "{% if flaps > 1 %} · flapped {{ flaps }} times{% endif %}\n"
    "{% if root %}root: {{ root }}{% if root_entity %} ({{ root_entity }}){% endif %}\n{% endif %}"
    "why grouped: {{ why }}\n"
    "{% if reason %}why now: {{ reason }}\n{% endif %}"
    "{% for m in top_members %}  {{ '↑' if m.direction > 0 else ('↓' if m.direction < 0 else '·') }} "
    "{{ m.metric }}  peak {{ '%.2f' % m.peak_score }}\n{% endfor %}"
    "{% if members > top_members | length %}  … and {{ members - top_members | length }} more\n{% endif %}"
    "{% if merged_into %}merged into {{ merged_into }}\n{% endif %}"
    "{% if link %}{{ link }}\n{% endif %}"
)

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


class TemplateProblem(BadInput):
    """A message template does not render; the message says which and why."""


@functools.lru_cache(maxsize=256)
def _compiled(template: str) -> Template:
    return _env.from_string(template)


def render(template: str, message: dict[str, Any]) -> str:
    try:
        return _compiled(template).render(**message).strip()
    except TemplateError as exc:
        raise TemplateProblem(f"template {template[:60]!r} does not render: {exc}") from None


def check_template(template: str) -> None:
    """Raise :class:`TemplateProblem` when ``template`` does not parse."""
    try:
        _env.parse(template)
    except TemplateError as exc:
        raise TemplateProblem(str(exc)) from None


def iso(t: float | None) -> str:
    """RFC 3339 in UTC; Alertmanager's zero time for ``None`` (an alert still firing)."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def severity(priority: int) -> str:
    return {1: "critical", 2: "error", 3: "warning"}.get(priority, "info")


def alert_labels(inc: IncidentView, thread: str) -> dict[str, str]:
    """The incident as one Alertmanager alert's labels: names Alertmanager accepts, no empty values, and
    nothing that changes while the incident lives (status, title) — labels are an alert's identity."""
    skip = {"status", "title", "incident"}
    labels = {k: v for k, v in inc.props.items() if not k.startswith("__") and k not in skip and v != ""}
    labels.update(alertname=OWN_ALERTNAME, incident=thread, priority=f"P{inc.priority}")
    labels["severity"] = severity(inc.priority)
    return labels


def build(
    inc: IncidentView,
    kind: str,
    reason: str,
    thread: str,
    receiver: str,
    seq: int,
    flaps: int,
    public_url: str,
    now: float,
) -> dict[str, Any]:
    """The message of one notification about ``inc`` (the newest incident of ``thread``)."""
    base = public_url.rstrip("/")
    link = f"{base}/#/incident/{inc.id}" if base else ""  # the page's route (app.js: route)
    return {
        "kind": kind,
        "status": "resolved" if kind == "resolved" else "firing",
        "reason": reason,
        "incident": inc.id,
        "thread": thread,
        "dedup_key": f"stormeye-{thread}",
        "fingerprint": hashlib.sha1(thread.encode()).hexdigest()[:16],
        "receiver": receiver,
        "seq": seq,
        "priority": inc.priority,
        "title": inc.title,
        "members": inc.member_count,
        "top_members": inc.top_members,
        "root": inc.root or "",
        "root_entity": inc.root_entity or "",
        "why": inc.why,
        "link": link,
        "external_url": base,
        "labels": dict(inc.props),
        "alert_labels": alert_labels(inc, thread),  # the episode's first ones are kept (see Notifier)
        "opened_at": inc.opened_at,
        "resolved_at": inc.resolved_at if kind == "resolved" else None,
        "merged_into": inc.merged_into or "",
        "flaps": flaps,
        "flapping": False,
        "at": now,
    }
