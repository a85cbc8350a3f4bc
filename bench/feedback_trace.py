"""Trace what the feedback changed, event by event, from the databases ``bench/feedback.py --keep DIR`` kept.

    python bench/feedback_trace.py DIR [--only smd,asd]

For each data set: the labelled events after the cut that the run without feedback found and the run
with feedback lost (and the other way round), each with the incidents of the run with feedback that
hold the event's metric near its span: their status, the noise profile they matched, why they did or
did not escalate, and how the member's move compares with what the profile learnt there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import realdata as rd
from feedback import incidents
from sqlalchemy import select

from stormeye.grouping.names import parse
from stormeye.grouping.profiles import Profile
from stormeye.workers import models as m
from stormeye.workers.db import Database


def found_by(tool: Any, events: list[dict[str, Any]], incs: list[dict[str, Any]], cut: float) -> list[str | None]:
    """The scorer's matching rule: per event, the paged incident opened after the cut that holds its
    metric and overlaps its span (with the scorer's slack), the best by intersection over union."""
    paged = [i for i in incs if i["paged"] and i["start"] >= cut]
    keys = [{tool.member_key(x) for x in i["members"]} - {None} for i in paged]
    out: list[str | None] = []
    for ev in events:
        key, best, best_ov = (ev["host"], ev["metric"]), None, -1.0
        for i, mem in zip(paged, keys):
            s, e = i["start"], i["end"]
            if key in mem and min(e, ev["end"] + tool.SLACK) >= max(s, ev["start"] - tool.SLACK):
                inter = max(0.0, min(e, ev["end"]) - max(s, ev["start"]))
                iou = (inter + 1) / (max(e, ev["end"]) - min(s, ev["start"]) + 1)
                if iou > best_ov:
                    best, best_ov = i["id"], iou
        out.append(best)
    return out


def detail(db: Database, ids: list[str]) -> dict[str, Any]:
    """Incidents with their members' moves, events (escalations) and the profile they matched."""
    with db.sessions() as s:
        held = {inc.id: inc for inc in db.load_incidents(s, ids)}
        evs: dict[str, list[dict[str, Any]]] = {}
        for row in s.scalars(select(m.IncidentEvent).where(m.IncidentEvent.incident_id.in_(ids))):
            if row.kind in ("escalated", "opened", "resolved", "merged"):
                evs.setdefault(row.incident_id, []).append({"kind": row.kind, "at": row.at, **(row.details or {})})
        profs = {r.id: Profile.from_dict(r.profile) for r in s.scalars(select(m.NoiseProfile))}
        rows = {r.id: r for r in s.scalars(select(m.Incident).where(m.Incident.id.in_(ids)))}
    out = {}
    for iid in ids:
        inc = held.get(iid)
        row = rows.get(iid)
        if inc is None or row is None:
            continue
        out[iid] = {
            "status": row.status,
            "profile": row.profile_id,
            "start": row.start,
            "end": row.end,
            "members": sorted(
                (mm.metric, round(mm.size, 2), mm.direction, mm.start, mm.end) for mm in inc.members.values()
            ),
            "events": evs.get(iid, []),
            "profile_detail": profs[row.profile_id].to_dict() if row.profile_id in profs else None,
        }
    return out


def pattern_for(profile: dict[str, Any] | None, metric: str) -> list[dict[str, Any]]:
    if profile is None:
        return []
    prof = Profile.from_dict(profile)
    props = parse(metric)
    return [p.to_dict() for p in prof.members if p.matches(props)]


def trace(key: str, kept: Path) -> dict[str, Any]:
    tool = rd.load_tool(key)
    truth = json.loads((kept / f"{key}.after.truth.json").read_text())
    cut = float(truth["start"])
    events = truth["events"]
    dbs = {w: Database(f"sqlite:///{kept / f'{key}-{w}.db'}", migrate=False) for w in ("without", "with")}
    incs = {w: incidents(db) for w, db in dbs.items()}
    found = {w: found_by(tool, events, incs[w], cut) for w in dbs}
    lost = [i for i, ev in enumerate(events) if found["without"][i] and not found["with"][i]]
    gained = [i for i, ev in enumerate(events) if found["with"][i] and not found["without"][i]]
    rows = []
    for i in lost + gained:
        ev = events[i]
        ekey = (ev["host"], ev["metric"])
        near = [
            inc["id"]
            for inc in incs["with"]
            if ekey in {tool.member_key(x) for x in inc["members"]}
            and min(inc["end"], ev["end"] + tool.SLACK) >= max(inc["start"], ev["start"] - tool.SLACK)
        ]
        got = detail(dbs["with"], near)
        for iid, d in got.items():
            d["pattern"] = [
                p
                for mm in d["members"]
                if tool.member_key(mm[0]) == ekey
                for p in pattern_for(d["profile_detail"], mm[0])
            ]
            d["event_member"] = [mm for mm in d["members"] if tool.member_key(mm[0]) == ekey]
            d["n_members"] = len(d["members"])
            d["paged"] = next(x["paged"] for x in incs["with"] if x["id"] == iid)
            if d["profile_detail"] is not None:
                d["profile_members"] = len(d["profile_detail"]["members"])
                d["profile_scope"] = d["profile_detail"]["scope"]
                d["profile_from"] = d["profile_detail"]["incident"]
                del d["profile_detail"]["members"]
            del d["members"]
        before_id = found["without"][i] or found["with"][i]
        before = detail(dbs["without"], [before_id])[before_id] if found["without"][i] else None
        rows.append(
            {
                "event": {**ev, "lost": i in lost},
                "without": {
                    "id": found["without"][i],
                    "n_members": len(before["members"]) if before else None,
                    "event_member": [mm for mm in before["members"] if tool.member_key(mm[0]) == ekey]
                    if before
                    else None,
                    "start": before["start"] if before else None,
                },
                "with_found": found["with"][i],
                "with_near": got,
            }
        )
    for db in dbs.values():
        db.dispose()
    return {"key": key, "cut": cut, "events": len(events), "lost": len(lost), "gained": len(gained), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kept", type=Path)
    ap.add_argument("--only", default="smd,asd")
    args = ap.parse_args()
    out = [trace(k.strip(), args.kept) for k in args.only.split(",") if (args.kept / f"{k.strip()}-with.db").exists()]
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
