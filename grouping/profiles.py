"""Noise profiles: what the on-call marked "not a problem", and whether a new cluster is that again.

A person marks an incident ``noise`` (routine, expected, nothing to do). :func:`learn` makes a
:class:`Profile` of it: one :class:`MemberPattern` per kind of member — its labels, with the
generated part of a pod's or container's name replaced by ``*`` (:func:`generalize`), so a new pod
of the same service matches — and the direction and size of the moves there (:func:`move_size`: the
detector's robust z at the anomaly's peak). A profile may be scoped to a time of day (a nightly
batch: :class:`Scope` ``daily``) or to a window of time (a deploy).

:func:`why_not` tells whether a cluster of anomalies is that routine again: every anomaly of the
cluster is on a metric some member pattern matches, moves the same way and at most
:data:`SIZE_TOLERANCE` times as far as the largest move the profile saw there, and the cluster
starts inside the profile's scope. A cluster with a member beyond the profile, or one clearly
larger move, is not recognised (it pages). :func:`recognise` picks the first profile (by id) that
matches.

Pure: profiles come in as plain data (the runtime keeps them in its database), times are given.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol

#: a move more than this many times the profile's largest there is "clearly larger": it pages
SIZE_TOLERANCE = 1.5
#: a daily profile matches this long before and after the time of day it was learnt at
DAY_SLACK_S = 3600.0
DAY_S = 86400.0
#: labels whose values carry a generated suffix (a new pod of the same service gets a new one)
GENERATED_KEYS = ("pod", "pod_name", "container", "container_name", "container_id")
_GENERATED = re.compile(r"^(?=.*\d)[a-z0-9]{4,}$|^[0-9]+$")


class MoveLike(Protocol):
    metric: str
    start: float
    peak_score: float
    direction: int


def move_size(a: Any) -> float:
    """How far an anomaly moved: ``size`` when it carries one (an incident's member), else the
    absolute z at its peak on the yardstick its detector judged it by (the ensemble's evidence
    ``move_z``: the seasonal reference's z on metrics it scores as seasonal, the robust z elsewhere;
    a detector without it: its ``z``), else its peak score (an alert)."""
    size = getattr(a, "size", None)
    if isinstance(size, (int, float)) and size > 0:
        return float(size)
    ev = getattr(a, "evidence", None) or {}
    for key in ("move_z", "z"):
        z = ev.get(key)
        if isinstance(z, (int, float)) and math.isfinite(z):
            return abs(float(z))
    return float(getattr(a, "peak_score", 0.0))


def generalize(key: str, value: str) -> str:
    """A label value as a pattern: the generated tail of a pod or container name (``checkout-7d9f8b-x2k4q``
    → ``checkout-*``) becomes ``*``; every other value stays exact (glob characters escaped)."""
    exact = value.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
    if key not in GENERATED_KEYS:
        return exact
    parts = re.split(r"([-_.])", value)
    words = parts[0::2]
    keep = len(words)
    while keep > 1 and _GENERATED.match(words[keep - 1]):
        keep -= 1
    if keep == len(words):
        return exact
    head = "".join(parts[: 2 * keep])  # the words kept and the separator after the last one
    return head.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]") + "*"


@dataclass(frozen=True)
class MemberPattern:
    """One kind of member of a profile: label patterns, the direction of its moves (0: either) and
    the largest move seen there."""

    labels: tuple[tuple[str, str], ...]
    direction: int
    size: float

    def matches(self, props: Mapping[str, str]) -> bool:
        if len(props) != len(self.labels):
            return False
        return all(k in props and fnmatchcase(props[k], pat) for k, pat in self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": dict(self.labels), "direction": self.direction, "size": self.size}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemberPattern:
        return cls(tuple(sorted(dict(d["labels"]).items())), int(d["direction"]), float(d["size"]))


@dataclass(frozen=True)
class Scope:
    """When a profile applies: ``any`` time, ``daily`` between two seconds of the day (UTC; ``start``
    > ``end`` wraps past midnight), or in a ``window`` of epoch seconds (a deploy)."""

    kind: str = "any"  # any | daily | window
    start: float = 0.0
    end: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("any", "daily", "window"):
            raise ValueError(f"scope must be any, daily or window, got {self.kind!r}")
        if self.kind == "window" and not self.end > self.start:
            raise ValueError(f"a window must end after it starts (got {self.start} .. {self.end})")
        if self.kind == "daily" and not (0 <= self.start < DAY_S and 0 <= self.end < DAY_S):
            raise ValueError("a daily scope is two times of day, in seconds from midnight UTC (0 .. 86399)")

    def holds(self, t: float) -> bool:
        if self.kind == "window":
            return self.start <= t <= self.end
        if self.kind == "daily":
            tod = t % DAY_S
            if self.start <= self.end:
                return self.start <= tod <= self.end
            return tod >= self.start or tod <= self.end
        return True

    def describe(self) -> str:
        if self.kind == "daily":
            return f"daily {_hhmm(self.start)}-{_hhmm(self.end)} UTC"
        if self.kind == "window":
            return f"from {self.start:.0f} to {self.end:.0f}"
        return "any time"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Scope:
        d = d or {}
        return cls(str(d.get("kind", "any")), float(d.get("start", 0.0)), float(d.get("end", 0.0)))

    @classmethod
    def around(cls, start: float, end: float, slack: float = DAY_SLACK_S) -> Scope:
        """A daily scope covering ``start`` .. ``end``'s times of day, ``slack`` either side."""
        if end - start + 2 * slack >= DAY_S:
            return cls("any")
        return cls("daily", (start - slack) % DAY_S, (end + slack) % DAY_S)


def parse_time_of_day(text: str) -> Scope:
    """``"HH:MM-HH:MM"`` (UTC) as a daily scope; ValueError saying what to write otherwise."""
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text or "")
    if not m or int(m[1]) > 23 or int(m[3]) > 23 or int(m[2]) > 59 or int(m[4]) > 59:
        raise ValueError(f"time of day {text!r}: write it as HH:MM-HH:MM in UTC, e.g. 02:00-03:30")
    return Scope("daily", int(m[1]) * 3600 + int(m[2]) * 60, int(m[3]) * 3600 + int(m[4]) * 60)


def _hhmm(s: float) -> str:
    s = int(s) % int(DAY_S)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}"


@dataclass
class Profile:
    """What one ``noise`` incident was made of: later clusters that match it page nobody."""

    id: str
    incident: str
    members: list[MemberPattern]
    scope: Scope = field(default_factory=Scope)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "incident": self.incident,
            "members": [p.to_dict() for p in self.members],
            "scope": self.scope.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Profile:
        return cls(
            str(d["id"]),
            str(d.get("incident", "")),
            [MemberPattern.from_dict(p) for p in d["members"]],
            Scope.from_dict(d.get("scope")),
        )

    def describe(self) -> str:
        kinds = ", ".join(",".join(f"{k}={v}" for k, v in p.labels) for p in self.members[:3])
        more = f" and {len(self.members) - 3} more" if len(self.members) > 3 else ""
        return f"{len(self.members)} kind(s) of member ({kinds}{more}), {self.scope.describe()}"


def pattern_labels(props: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, generalize(k, v)) for k, v in props.items()))


def learn(
    incident: str, members: Sequence[Any], props: Mapping[str, Mapping[str, str]], scope: Scope | None = None
) -> Profile:
    """The profile of an incident marked ``noise``: its members (``props[metric]``: their labels) by
    pattern, each with the direction of its moves (0 when they went both ways) and the largest move."""
    if not members:
        raise ValueError(f"incident {incident} has no members to learn from")
    by: dict[tuple[tuple[str, str], ...], tuple[set[int], float]] = {}
    for mem in members:
        key = pattern_labels(props[mem.metric])
        dirs, size = by.get(key, (set(), 0.0))
        dirs.add(int(mem.direction))
        by[key] = (dirs, max(size, move_size(mem)))
    patterns = [
        MemberPattern(key, next(iter(dirs)) if len(dirs) == 1 else 0, round(size, 4))
        for key, (dirs, size) in sorted(by.items())
    ]
    scope = scope or Scope()
    digest = hashlib.sha1(
        (incident + "|" + repr([p.to_dict() for p in patterns]) + "|" + repr(scope.to_dict())).encode()
    ).hexdigest()[:12]
    return Profile(f"prof-{digest}", incident, patterns, scope)


def _why_not_move(profile: Profile, a: Any, p: Mapping[str, str]) -> str | None:
    """None when one move is the profile's routine there (a pattern of its labels, moving the same way,
    at most :data:`SIZE_TOLERANCE` times as far as the profile's largest); else why not."""
    fits = [pat for pat in profile.members if pat.matches(p)]
    if not fits:
        return f"{a.metric} is beyond the profile"
    d = int(a.direction)
    fits = [pat for pat in fits if pat.direction == 0 or d == 0 or pat.direction == d]
    if not fits:
        return f"{a.metric} moved the other way"
    size = move_size(a)
    limit = max(pat.size for pat in fits) * SIZE_TOLERANCE
    if size > limit:
        seen = limit / SIZE_TOLERANCE
        return f"{a.metric} moved {size:.3g}, more than {SIZE_TOLERANCE:g} x the profile's {seen:.3g}"
    return None


def why_not(profile: Profile, moves: Iterable[Any], props: Mapping[str, Mapping[str, str]], onset: float) -> str | None:
    """None when the cluster (``moves``, their labels in ``props``, starting at ``onset``) is the
    profile's routine again; else why not (a member beyond it, a larger move, outside its scope)."""
    if not profile.scope.holds(onset):
        return f"outside {profile.scope.describe()}"
    for a in moves:
        why = _why_not_move(profile, a, props[a.metric])
        if why is not None:
            return why
    return None


def why_not_each(
    profiles: Sequence[Profile], moves: Sequence[Any], props: Mapping[str, Mapping[str, str]], onset: float
) -> tuple[Profile | None, str | None]:
    """Member by member (Skyline Ionosphere matches each metric against every profile of that metric):
    whether every move of the cluster is the routine of *some* profile in scope at ``onset`` (its
    labels, its direction, at most :data:`SIZE_TOLERANCE` times its size). Returns the profile that
    knows the most of the moves (the first by id on a tie) and None when every move is known; else
    (None, why not: the first move no profile knows, and why the nearest did not)."""
    live = [p for p in sorted(profiles, key=lambda p: p.id) if p.scope.holds(onset)]
    if not moves:
        return None, "no moves"
    if not live:
        return None, "no profile applies at this time"
    known = [0] * len(live)
    for a in moves:
        p = props[a.metric]
        whys = [_why_not_move(prof, a, p) for prof in live]
        if all(w is not None for w in whys):
            near = next((w for w in whys if not str(w).endswith("beyond the profile")), None)
            return None, near or f"{a.metric} is beyond every profile"
        for k, w in enumerate(whys):
            known[k] += w is None
    best = max(range(len(live)), key=lambda k: (known[k], -k))
    return live[best], None


def recognise(
    profiles: Sequence[Profile], moves: Sequence[Any], props: Mapping[str, Mapping[str, str]], onset: float
) -> Profile | None:
    """The first profile (by id) the whole cluster matches; else, when every move of the cluster is
    the routine of some profile (:func:`why_not_each`), the profile that knows the most of them; else None."""
    # a profile that knows every move knows the most of them, and the first by id wins ties: the
    # member-by-member answer is the whole-cluster one whenever some profile holds the whole cluster
    return why_not_each(profiles, moves, props, onset)[0] if moves else None
