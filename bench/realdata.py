"""Real-data bench: the full pipeline over ASD (real server metrics labelled by their operators).

    python bench/realdata.py [--quick] [--json] [--no-ablation] [--asd DIR] [--hosts omi-1,omi-5]

Builds the ASD CSV and truth with the shipped tool (``../shared/tools/asd.py build``), replays it
through the same path as ``stormeye ingest`` at default settings, and scores the incidents with
the shipped scorer (``asd.py score``): event recall, pairwise precision/recall/F1, incidents and
spurious incidents per day. Recall per anomaly type (``anomaly_type.txt``: metric, temporal,
metric-temporal) uses the scorer's matching rule. The ablation regroups the same detected
anomalies with names only, shapes only and both, and reruns detection with each detector
strategy alone.

``--hosts`` replays only those servers (and scores only their labelled events) for fast
iteration; quote figures from a run over all twelve.

When ``../shared/data/asd`` is absent it says so and exits 0: the data lives outside the project.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import detectors
from workers.ingest import PointBatch, read_points, replay
from workers.pipeline import Pipeline
from workers.settings import Settings

from common import MatrixWindows, Recorder, regroup

SHARED = ROOT.parent / "shared"
ASD_DIR = SHARED / "data" / "asd"
ASD_TOOL = SHARED / "tools" / "asd.py"
CACHE = ROOT / "bench" / "out" / "asd"


def load_tool() -> Any:
    spec = importlib.util.spec_from_file_location("asd_tool", ASD_TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(tool: Any, asd_dir: Path, days: int) -> Path:
    out = CACHE / f"d{days}"
    if not (out / "asd.csv").exists() or not (out / "truth.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            tool.build(str(asd_dir), str(out), days=days)
    return out


def only_hosts(out: Path, batch: PointBatch, hosts: list[str]) -> tuple[Path, PointBatch]:
    """The points and truth of ``hosts`` only, the truth written beside the full one."""
    known = {f"omi-{i}" for i in range(1, 13)}
    unknown = sorted(set(hosts) - known)
    if unknown:
        raise SystemExit(f"--hosts: unknown servers {unknown}; ASD has omi-1 ... omi-12")
    tags = tuple(f'host="{h}"' for h in hosts)
    keep = [i for i, n in enumerate(batch.names) if any(t in n for t in tags)]
    sub = PointBatch(
        names=[batch.names[i] for i in keep],
        timestamps=[batch.timestamps[i] for i in keep],
        values=[batch.values[i] for i in keep],
    )
    truth = json.loads((out / "truth.json").read_text())
    truth["events"] = [ev for ev in truth["events"] if ev["host"] in hosts]
    sub_dir = out / ("hosts-" + "-".join(sorted(h.split("-")[1] for h in hosts)))
    sub_dir.mkdir(exist_ok=True)
    (sub_dir / "truth.json").write_text(json.dumps(truth))
    return sub_dir, sub


def run(batch: PointBatch, settings: Settings) -> Recorder:
    """The `stormeye ingest` path: replay in time order, one step at a time, as if live."""
    pipe = Recorder(settings)
    replay(pipe, batch)
    return pipe


def as_prediction(incidents: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("id", "priority", "title", "start", "end", "root", "root_entity", "status")
    return {
        "incidents": [
            {**{k: inc.get(k) for k in keys}, "members": sorted({m["metric"] for m in inc["members"]})}
            for inc in incidents
        ]
    }


def score(tool: Any, truth_path: Path, prediction: dict[str, Any]) -> dict[str, Any]:
    """The shipped scorer's figures, plus recall per anomaly type by the same matching rule."""
    # a file of its own per call: two runs sharing the cache must not score each other's prediction
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="pred-", dir=truth_path.parent, delete=False) as f:
        f.write(json.dumps(prediction))
    pred_path = Path(f.name)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            tool.score(str(truth_path), str(pred_path))
    finally:
        pred_path.unlink(missing_ok=True)
    figures = json.loads(buf.getvalue())
    figures["recall_by_type"] = recall_by_type(tool, truth_path, prediction)
    return figures


def recall_by_type(tool: Any, truth_path: Path, prediction: dict[str, Any]) -> dict[str, float]:
    truth = json.loads(truth_path.read_text())
    types = incident_types(truth)
    spans = [(tool.to_epoch(p["start"]), tool.to_epoch(p["end"])) for p in prediction["incidents"]]
    members = [{tool.member_key(m) for m in p["members"]} for p in prediction["incidents"]]
    found: dict[str, list[bool]] = {}
    for ev in truth["events"]:
        key = (ev["host"], ev["metric"])
        hit = any(
            key in mem and min(e, ev["end"] + tool.SLACK) >= max(s, ev["start"] - tool.SLACK)
            for (s, e), mem in zip(spans, members)
        )
        found.setdefault(types.get(ev["incident"], "unknown"), []).append(hit)
    return {k: round(float(np.mean(v)), 3) for k, v in sorted(found.items())}


def incident_types(truth: dict[str, Any]) -> dict[int, str]:
    """The anomaly type of each truth incident, by (host, start) from anomaly_type.txt."""
    path = ASD_DIR / "interpretation_label" / "anomaly_type.txt"
    if not path.exists():
        return {}
    kinds = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            s = int(row["anomaly_segment"].split("-")[0])
            kinds[(row["dataset"], s)] = row["anomaly_type"]
    step = 300
    hist = (truth["start"] - 1767571200) // step  # the build's history rows before the test part
    out = {}
    for ev in truth["events"]:
        row = (ev["start"] - 1767571200) // step - hist
        out[ev["incident"]] = kinds.get((ev["host"], int(row)), "unknown")
    return out


def matrix(batch: PointBatch) -> tuple[list[str], np.ndarray, np.ndarray]:
    names, ts, vals = batch.arrays()
    uniq = sorted(set(names))
    row = {n: i for i, n in enumerate(uniq)}
    steps = np.unique(ts)
    col = np.searchsorted(steps, ts)
    values = np.full((len(uniq), len(steps)), np.nan)
    values[[row[n] for n in names], col] = vals
    return uniq, steps, values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 test days and no ablation: about a minute")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--no-ablation", action="store_true", help="only the default configuration")
    ap.add_argument("--hosts", default="", help="comma-separated servers (omi-1 ... omi-12) to replay alone")
    ap.add_argument("--asd", type=Path, default=ASD_DIR, help="ASD directory (processed/, interpretation_label/)")
    args = ap.parse_args()
    if not (args.asd / "processed").is_dir() or not ASD_TOOL.exists():
        print(f"ASD data not found at {args.asd} (or the scorer at {ASD_TOOL}): nothing to measure.")
        return
    tool = load_tool()
    days = 5 if args.quick else 15
    out = build(tool, args.asd, days)
    batch = read_points(out / "asd.csv")
    if args.hosts:
        out, batch = only_hosts(out, batch, [h.strip() for h in args.hosts.split(",") if h.strip()])
    settings = Settings(database_url="sqlite://", step_s=300)
    t = time.perf_counter()
    pipe = run(batch, settings)
    took = time.perf_counter() - t
    default = score(tool, out / "truth.json", as_prediction(pipe.incident_list()))
    rows = {"default (names + shapes, default detector)": default}
    if not (args.quick or args.no_ablation):
        names, steps, values = matrix(batch)
        win = MatrixWindows(names, steps, values)
        for label, change in (("names only", {"use_shapes": False}), ("shapes only", {"use_names": False})):
            cfg = replace(settings.grouping_config(), **change)
            incs = regroup(names, win, pipe.stream, cfg, settings, float(settings.step_s))
            rows[label] = score(tool, out / "truth.json", as_prediction(incs))
        for name, cls in sorted(detectors.available().items()):
            solo = Pipeline(settings, detector=cls(), keep_archive=True)
            replay(solo, batch)
            rows[f"detector {name} alone"] = score(tool, out / "truth.json", as_prediction(solo.incident_list()))
    result = {
        "days": days,
        "points": len(batch),
        "replay_s": round(took, 1),
        "asd_event_recall": default["event_recall"],
        "asd_pairwise_f1": default["pairwise_f1"],
        "asd_pairwise_precision": default["pairwise_precision"],
        "asd_pairwise_recall": default["pairwise_recall"],
        "asd_spurious_per_day": default["spurious_per_day"],
        "asd_incidents": default["incidents_pred"],
        "asd_recall_by_type": default["recall_by_type"],
        "ablation": rows,
        "reference": {"asd_event_recall": 0.146, "asd_pairwise_f1": 0.073, "asd_spurious_per_day": 22.1},
    }
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(width=170)
    tab = Table(
        title=f"ASD, {days} test days, {len(batch):,} points replayed in {took:.0f} s "
        "(reference: simple robust z: recall 0.146, F1 0.073, 22.1 spurious/day)"
    )
    for col in (
        "configuration",
        "event recall",
        "pairwise P",
        "pairwise R",
        "pairwise F1",
        "incidents",
        "spurious/day",
        "recall by type",
    ):
        tab.add_column(col, justify="left" if col in ("configuration", "recall by type") else "right")
    for label, r in rows.items():
        tab.add_row(
            label,
            f"{r['event_recall']:.3f}",
            f"{r['pairwise_precision']:.3f}",
            f"{r['pairwise_recall']:.3f}",
            f"{r['pairwise_f1']:.3f}",
            str(r["incidents_pred"]),
            f"{r['spurious_per_day']:.1f}",
            ", ".join(f"{k} {v}" for k, v in r["recall_by_type"].items()),
        )
    con.print(tab)


if __name__ == "__main__":
    main()
