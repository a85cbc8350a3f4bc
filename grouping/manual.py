"""What a person does to the tracker's incidents: resolve, merge two, split members off.

The runtime records the action (who, when) and applies it here so the tracker's next ticks
build on it; each returns the :class:`IncidentChange` list to store, like a tick does. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from stormeye.core.errors import Conflict
from stormeye.grouping.incidents import Incident, IncidentChange, IncidentTracker


class ManualActionError(Conflict, ValueError):
    """An action the tracker's state does not allow (the message says why)."""


def _open(tracker: IncidentTracker, iid: str) -> Incident:
    inc = tracker.incidents.get(iid)
    if inc is None:
        raise ManualActionError(f"incident {iid!r} is not held by the tracker")
    if inc.status != "open":
        raise ManualActionError(f"incident {iid!r} is {inc.status}")
    return inc


def resolve(tracker: IncidentTracker, iid: str, now: float, actor: str = "") -> list[IncidentChange]:
    """Resolve an open incident now: its members stop linking new anomalies."""
    inc = _open(tracker, iid)
    inc.status, inc.resolved_at, inc.updated_at = "resolved", now, now
    inc.version += 1
    return [IncidentChange(iid, "resolved", now, {"members": len(inc.members), "by": actor, "manual": True})]


def merge(tracker: IncidentTracker, source: str, target: str, now: float, actor: str = "") -> list[IncidentChange]:
    """Move every member of ``source`` into ``target``; ``source`` ends as ``merged``."""
    if source == target:
        raise ManualActionError("an incident cannot be merged with itself")
    _open(tracker, source)
    dst = _open(tracker, target)
    changes = tracker._merge(now, source, target)
    changes = [IncidentChange(c.incident, c.kind, c.at, {**c.details, "by": actor, "manual": True}) for c in changes]
    dst.updated_at = now
    return changes + tracker._refresh(now, dst)


def split(
    tracker: IncidentTracker, iid: str, metrics: Iterable[str], new_id: str, now: float, actor: str = ""
) -> list[IncidentChange]:
    """Move the members on ``metrics`` into a new open incident ``new_id`` (some members must stay)."""
    src = _open(tracker, iid)
    wanted = set(metrics)
    moving = [k for k, mem in src.members.items() if mem.metric in wanted]
    if not moving:
        raise ManualActionError(f"none of those metrics is a member of {iid!r}")
    if len(moving) == len(src.members):
        raise ManualActionError("splitting off every member leaves nothing behind; resolve the incident instead")
    if new_id in tracker.incidents:
        raise ManualActionError(f"incident {new_id!r} exists already")
    new = Incident(id=new_id, opened_at=now, updated_at=now, evidence=src.evidence)
    for key in moving:
        new.members[key] = src.members.pop(key)
        tracker._of[key] = new_id
    tracker.incidents[new_id] = new
    src.updated_at = now
    moved = sorted({new.members[k].metric for k in moving})
    changes = [
        IncidentChange(iid, "split", now, {"into": new_id, "metrics": moved, "by": actor}),
        IncidentChange(new_id, "opened", now, {"split_from": iid, "added": moved, "by": actor}),
    ]
    return changes + tracker._refresh(now, src) + tracker._refresh(now, new)
