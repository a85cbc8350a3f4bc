"""Feedback bench: the on-call teaches stormeye what is noise, and its repeats stay quiet (issue 29).

    python bench/feedback.py [--quick] [--json] [--only asd,smd,nezha]

On each shared real data set (loaded and scored as ``bench/realdata.py`` does, with its loaders and
the data set's own scorer), the on-call is simulated from the data's own labels: replay the first
two days (the first half when the data holds fewer than four days: Nezha), mark every incident
that the labels cover and that holds no labelled event ``noise`` (one action each, through the public action API,
:class:`stormeye.workers.actions.Actions`, with its scope left to stormeye: daily when it repeated
daily), then replay the rest. The same first part, copied, is replayed on without any action: both
runs share everything up to the cut, in one run of this bench, so the comparison holds whatever the
detector's calibration does to the absolute figures.

The labels of SMD and ASD cover their test part only: the history replayed before it (ASD 7 days,
SMD 1 day: the data sets' training part) is unlabelled, so an incident there "holds no labelled
event" whatever it is, and the simulated on-call leaves it alone (``{key}_unjudged`` counts them).
Marking them too (``--judge-unlabelled``, what this bench did until i29-recall) taught repeats of
labelled problems as noise: every event the feedback lost on SMD and ASD was hidden by a profile
learnt from an unlabelled history incident (docs/feedback.md, Measured).

On the rest (incidents opened after the cut, labelled events after it), with (``_after``) and
without (``_before``) the feedback: false incidents a day and event recall (SMD, ASD), fault recall
and spurious incidents an hour (Nezha); and how many actions were needed. An incident that matched
a noise profile and never escalated paged nobody: it is not counted as an incident.

``--keep DIR``: copy both runs' databases (``KEY-without.db``, ``KEY-with.db``) and the truth of
the rest into DIR, to look into what was lost or recognised (``bench/feedback_trace.py``).

``--quick``: realdata's quick subsets (ASD 5 days, SMD machine-1-2 and machine-1-3, Nezha whole).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import realdata as rd
from sqlalchemy import select

from stormeye.workers import models as m
from stormeye.workers.actions import Actions
from stormeye.workers.db import Database
from stormeye.workers.ingest import PointBatch, read_points, replay, resume, save_replay_state
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

DAY = 86400.0
ONCALL = "on-call (bench)"


def split(batch: PointBatch, at: float) -> tuple[PointBatch, PointBatch]:
    """The points before ``at`` and from it on."""
    names, ts, vals = batch.names, batch.timestamps, batch.values
    a = [i for i, t in enumerate(ts) if t < at]
    b = [i for i, t in enumerate(ts) if t >= at]

    def part(ix: list[int]) -> PointBatch:
        return PointBatch(names=[names[i] for i in ix], timestamps=[ts[i] for i in ix], values=[vals[i] for i in ix])

    return part(a), part(b)


def incidents(db: Database) -> list[dict[str, Any]]:
    """Every incident the database holds (merged ones left out), with its member metrics and whether it
    paged: opened not recognised, or escalated since."""
    members = db.incident_members()
    with db.sessions() as s:
        rows = list(s.scalars(select(m.Incident).where(m.Incident.status != "merged")))
        escalated = set(s.scalars(select(m.IncidentEvent.incident_id).where(m.IncidentEvent.kind == "escalated")))
    return [
        {
            "id": r.id,
            "start": r.start,
            "end": r.end,
            "root": r.root,
            "status": r.status,
            "members": sorted(set(members.get(r.id, []))),
            "paged": r.profile_id is None or r.id in escalated,
            "profile": r.profile_id,
        }
        for r in rows
    ]


class Labels:
    """A data set's labelled events: which incidents hold one, and its truth restricted to after the cut."""

    def __init__(self, key: str, tool: Any, truth_path: Path) -> None:
        self.key, self.tool, self.truth_path = key, tool, truth_path
        self.truth = json.loads(truth_path.read_text())

    def holds_event(self, inc: dict[str, Any]) -> bool:
        t = self.tool
        if self.key == "nezha":  # the scorer's rule: an incident starting in a fault's window is not spurious
            return any(x["time"] - t.BEFORE <= inc["start"] <= x["time"] + t.AFTER for x in self.truth["faults"])
        keys = {t.member_key(mm) for mm in inc["members"]} - {None}
        return any(
            (ev["host"], ev["metric"]) in keys
            and min(inc["end"], ev["end"] + t.SLACK) >= max(inc["start"], ev["start"] - t.SLACK)
            for ev in self.truth["events"]
        )

    def judged(self, inc: dict[str, Any]) -> bool:
        """Whether the labels speak for this incident: SMD and ASD label their test part only (the
        history replayed before it is their unlabelled training part, where "holds no labelled
        event" says nothing); Nezha's fault list is the log of every injection from its first point."""
        return self.key == "nezha" or inc["start"] >= self.truth["start"]

    def cut(self) -> float:
        """Two days into the scored period; half way when it holds fewer than four."""
        if self.key == "nezha":
            lo, hi = self.truth["first"], self.truth["faults"][-1]["time"]
        else:
            lo, hi = self.truth["start"], self.truth["end"]
        return float(lo + 2 * DAY if hi - lo >= 4 * DAY else lo + (hi - lo) / 2)

    def after(self, cut: float, out: Path) -> Path:
        """The truth of the rest (events after the cut), written beside the data set's own."""
        truth = dict(self.truth)
        if self.key == "nezha":
            truth["faults"] = [x for x in truth["faults"] if x["time"] >= cut]
        else:
            truth["events"] = [ev for ev in truth["events"] if ev["start"] >= cut]
            truth["start"] = cut
            truth["days"] = (truth["end"] - cut) / DAY
        path = out / f"{self.key}.after.truth.json"
        path.write_text(json.dumps(truth))
        return path


def figures(labels: Labels, truth_after: Path, incs: list[dict[str, Any]], cut: float) -> dict[str, Any]:
    """The scorer's figures on the rest: incidents that paged, opened after the cut."""
    paged = [{**i, "members": [{"metric": x} for x in i["members"]]} for i in incs if i["paged"] and i["start"] >= cut]
    return rd.score_with(labels.tool, truth_after, rd.as_prediction(paged))


def copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database (its WAL included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


def run(
    key: str, labels: Labels, batch: PointBatch, settings: Settings, work: Path, judge_unlabelled: bool = False
) -> dict[str, Any]:
    cut = labels.cut()
    first, rest = split(batch, cut)
    t0 = time.perf_counter()
    without_db = work / f"{key}-without.db"
    url = f"sqlite:///{without_db}"
    s_without = settings.model_copy(update={"database_url": url})
    without = Pipeline(s_without, database=Database(url))
    replay(without, first, finish=False)
    save_replay_state(without)
    with_db = work / f"{key}-with.db"
    copy_sqlite(without_db, with_db)
    url_with = f"sqlite:///{with_db}"
    s_with = settings.model_copy(update={"database_url": url_with})
    learning = Pipeline(s_with, database=Database(url_with))
    assert resume(learning), "the copied database holds where the first part stopped"
    assert learning.database is not None and without.database is not None
    # the on-call, from the labels: every incident of the first part holding no labelled event is noise
    acts = Actions(learning.database, s_with, learning.index, learning.topology)
    marked = unjudged = 0
    for inc in sorted(incidents(learning.database), key=lambda i: i["start"]):
        if not (judge_unlabelled or labels.judged(inc)):
            unjudged += 1
        elif not labels.holds_event(inc):
            acts.noise(inc["id"], ONCALL, at=cut)
            marked += 1
    replay(without, rest)
    replay(learning, rest)
    took = round(time.perf_counter() - t0, 1)
    truth_after = labels.after(cut, work)
    got_without, got_with = incidents(without.database), incidents(learning.database)
    before = figures(labels, truth_after, got_without, cut)
    after = figures(labels, truth_after, got_with, cut)
    out: dict[str, Any] = {
        f"{key}_cut": cut,
        f"{key}_actions": marked,
        f"{key}_unjudged": unjudged,
        f"{key}_profiles": len(acts.profiles()),
        f"{key}_recognised_after": sum(1 for i in got_with if i["start"] >= cut and i["profile"] and not i["paged"]),
        f"{key}_escalated_after": sum(1 for i in got_with if i["start"] >= cut and i["profile"] and i["paged"]),
        f"{key}_seconds": took,
    }
    names = (
        ("fault_recall", "spurious_per_hour", "incidents_in_period")
        if key == "nezha"
        else ("event_recall", "spurious_per_day", "incidents_pred", "pairwise_f1")
    )
    for n in names:
        out[f"{key}_{n}_before"] = before.get(n)
        out[f"{key}_{n}_after"] = after.get(n)
    for d in (without, learning):
        assert d.database is not None
        d.database.dispose()
    return out


def load(key: str, args: argparse.Namespace) -> tuple[Labels, PointBatch, Settings] | None:
    """The data set as bench/realdata.py builds it (None when its data is absent)."""
    if key == "asd":
        if not (rd.ASD_DIR / "processed").is_dir() or not rd.ASD_TOOL.exists():
            return None
        tool = rd.load_tool("asd")
        out = rd.build(tool, rd.ASD_DIR, 5 if args.quick else 15)
        batch = read_points(out / "asd.csv")
        return Labels(key, tool, out / "truth.json"), batch, rd.ingest_settings(batch)
    if key == "smd":
        if not (rd.SMD_DIR / "processed").is_dir():
            return None
        tool = rd.load_tool("smd")
        out = rd.build_smd(tool, rd.SMD_DIR, rd.QUICK_SMD_HOSTS if args.quick else "")
        batch = read_points(out / "smd.csv")
        return Labels(key, tool, out / "truth.json"), batch, rd.ingest_settings(batch)
    if not (rd.NEZHA_DIR / "2022-08-22").is_dir():
        return None
    tool = rd.load_tool("nezha")
    out = rd.build_nezha(tool, rd.NEZHA_DIR)
    batch = read_points(out / "ob.csv")
    deps = rd.NEZHA_DIR / rd.NEZHA_DEPENDENCIES
    env = {"STORMEYE_DEPENDENCIES_FILE": str(deps)} if deps.exists() else {}
    return Labels(key, tool, out / "ob.truth.json"), batch, rd.ingest_settings(batch, env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="realdata's quick subsets: a few minutes")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--only", default="smd,asd,nezha", help="comma-separated data sets: asd,smd,nezha")
    ap.add_argument(
        "--judge-unlabelled",
        action="store_true",
        help="mark noise the incidents of the unlabelled history too (as this bench did before: see its doc)",
    )
    ap.add_argument(
        "--keep", type=Path, default=None, help="copy both runs' databases and truths into DIR (to trace them)"
    )
    args = ap.parse_args()
    result: dict[str, Any] = {"quick": args.quick, "skipped": {}}
    work = Path(tempfile.mkdtemp(prefix="stormeye-feedback-"))
    try:
        for key in [k.strip() for k in args.only.split(",") if k.strip()]:
            if key not in rd.DATASETS:
                raise SystemExit(f"--only: unknown data set {key!r}; use asd, smd or nezha")
            got = load(key, args)
            if got is None:
                result["skipped"][key] = "data absent"
                print(f"{key}: data absent, skipped", file=sys.stderr)
                continue
            labels, batch, settings = got
            figs = run(key, labels, batch, settings, work, args.judge_unlabelled)
            result.update(figs)
            print(f"{key}: {json.dumps(figs)}", file=sys.stderr if args.json else sys.stdout, flush=True)
    finally:
        if args.keep is not None:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print("\nwithout feedback -> with feedback, on the rest of each data set:")
    for k, v in result.items():
        if k.endswith("_before"):
            base = k[: -len("_before")]
            print(f"  {base:32s} {v} -> {result.get(base + '_after')}")


if __name__ == "__main__":
    main()
