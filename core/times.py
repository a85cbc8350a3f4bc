"""Time as people and senders write it: epoch seconds (or milliseconds) and ISO 8601 / RFC 3339 text.

One reader for every edge that takes a time (points, alerts, the CLI's ``--start``/``--end``):
:func:`parse_time` gives epoch seconds and :func:`seconds_from` reads an epoch number that may be
in milliseconds. What each edge accepts beyond that (a range, Go's zero time meaning "none") stays
with the edge. Pure: it reads no clock.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from stormeye.core.errors import BadInput

#: epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973)
MILLIS_ABOVE = 1e11
EXAMPLE = "2026-01-05T10:00:00Z"


class BadTime(BadInput):
    """A time that cannot be read; the message names the field and shows how to write it."""


def parse_time(raw: Any, what: str = "time", form: str = "ISO 8601") -> float:
    """Epoch seconds from a number, numeric text, or ISO 8601 / RFC 3339 text.

    Text may end in ``Z`` or an offset (none: UTC) and carry up to nanoseconds (Go writes them;
    microseconds are kept). Numbers are returned as given: see :func:`seconds_from` for
    milliseconds. ``what`` names the field in the error (:class:`BadTime`), ``form`` the text form the
    sender knows (Alertmanager's senders know RFC 3339, the same thing).
    """
    if isinstance(raw, bool) or raw is None:
        raise BadTime(f"{what} must be epoch seconds or {form} text, got {raw!r}")
    if isinstance(raw, (int, float)):
        try:
            t = float(raw)
        except OverflowError:  # an integer beyond any float, 10**400
            raise BadTime(f"{what} {raw} is too large to be a time: send epoch seconds") from None
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            t = float(text)
        except ValueError:
            t = iso_seconds(text, raw, what, form)
    else:
        raise BadTime(f"{what} must be a number or text, got {type(raw).__name__}")
    if not math.isfinite(t):
        raise BadTime(f"{what} {raw!r} is not finite")
    return t


def iso_seconds(text: str, raw: Any = None, what: str = "time", form: str = "ISO 8601") -> float:
    """Epoch seconds of ISO 8601 / RFC 3339 ``text`` (``Z`` or an offset, none: UTC; up to nanoseconds)."""
    head, dot, frac = text.partition(".")
    if dot:  # Go writes up to nanoseconds; Python reads microseconds
        digits = len(frac) - len(frac.lstrip("0123456789"))
        text = f"{head}.{frac[: min(digits, 6)]}{frac[digits:]}"
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        shown = text if raw is None else raw
        raise BadTime(f"{what} {shown!r} is neither epoch seconds nor {form} time (e.g. {EXAMPLE})") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def seconds_from(t: float) -> float:
    """Epoch seconds of an epoch number that may be milliseconds (above :data:`MILLIS_ABOVE`)."""
    return t / 1000.0 if t > MILLIS_ABOVE else t
