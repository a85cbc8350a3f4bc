"""Silences: matchers and a time range, stored in the database; a matching incident is not notified."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update

from stormeye.core.errors import BadInput, NotFound
from stormeye.workers import models as m
from stormeye.workers.db import Database
from stormeye.workers.notify.config import Matcher


class SilenceError(BadInput):
    """A silence cannot be created or changed as asked; the message says why."""

    http_status = 422


class NoSuchSilence(SilenceError, NotFound):
    """No silence has the id given."""

    http_status = 404


def _dict(s: m.Silence, now: float) -> dict[str, Any]:
    state = "active" if s.starts_at <= now < s.ends_at else ("pending" if now < s.starts_at else "expired")
    return {
        "id": s.id,
        "matchers": list(s.matchers),
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "created_by": s.created_by,
        "comment": s.comment,
        "created_at": s.created_at,
        "state": state,
    }


def parse_matchers(texts: Sequence[str]) -> list[Matcher]:
    if not texts:
        raise SilenceError('a silence needs at least one matcher, like service="checkout"')
    out = []
    for t in texts:
        try:
            out.append(Matcher.parse(t))
        except ValueError as exc:
            raise SilenceError(str(exc)) from None
    return out


def add(
    db: Database,
    matchers: Sequence[str],
    starts_at: float,
    ends_at: float,
    created_by: str = "",
    comment: str = "",
    now: float = 0.0,
) -> dict[str, Any]:
    """Create a silence; matchers are written as in the config (``service="checkout"``)."""
    parsed = parse_matchers(matchers)
    if ends_at <= starts_at:
        raise SilenceError(f"the silence ends ({ends_at:.0f}) before it starts ({starts_at:.0f})")
    row = m.Silence(
        id="s-" + uuid.uuid4().hex[:12],
        matchers=[str(p) for p in parsed],
        starts_at=float(starts_at),
        ends_at=float(ends_at),
        created_by=created_by,
        comment=comment,
        created_at=float(now or starts_at),
    )
    with db.sessions.begin() as s:
        s.add(row)
    return _dict(row, now or starts_at)


def list_silences(db: Database, now: float, include_expired: bool = False) -> list[dict[str, Any]]:
    with db.sessions() as s:
        q = select(m.Silence).order_by(m.Silence.starts_at, m.Silence.id)
        if not include_expired:
            q = q.where(m.Silence.ends_at > now)
        return [_dict(x, now) for x in s.scalars(q)]


def expire(db: Database, silence_id: str, now: float) -> dict[str, Any]:
    """End a silence now (an expired one stays listed with ``--all``)."""
    with db.sessions.begin() as s:
        row = s.get(m.Silence, silence_id)
        if row is None:
            raise NoSuchSilence(f"no silence {silence_id!r}")
        if row.ends_at > now:
            s.execute(update(m.Silence).where(m.Silence.id == silence_id).values(ends_at=now))
            row.ends_at = now
        return _dict(row, now)


def active(db: Database, now: float) -> list[tuple[str, list[Matcher]]]:
    """Silences in force at ``now`` with their parsed matchers."""
    with db.sessions() as s:
        rows = s.execute(
            select(m.Silence.id, m.Silence.matchers).where(m.Silence.starts_at <= now, m.Silence.ends_at > now)
        ).all()
    return [(sid, [Matcher.parse(t) for t in texts]) for sid, texts in rows]
