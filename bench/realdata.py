"""Real-data bench: the full pipeline over three real data sets, in one run, scored by their own tools.

    python bench/realdata.py [--quick] [--json] [--only asd,smd,nezha] [--no-ablation] [--no-topology]
                             [--asd DIR] [--smd DIR] [--nezha DIR] [--hosts omi-1,omi-5] [--smd-hosts machine-1-2]
                             [--save-predictions DIR]

Each data set is built with its shipped tool (``../shared/tools/{asd,smd,nezha}.py build``, cached
under ``bench/out/``), replayed through the same path as ``stormeye ingest`` at default settings
(the step inferred as ``stormeye ingest`` infers it: 300 s for ASD, 60 s for SMD and Nezha), and
scored with the same tool's ``score``; every figure the scorer prints is kept, prefixed
``asd_``, ``smd_`` or ``nezha_``, with the replay's seconds, points, step and the points merged
or reordered on the way (``--json`` prints one object; ``reference`` holds the rows of each
data set's README: the simple baselines and stormeye at c53dd56).

- **ASD** (12 servers, 5-minute step): event recall, pairwise precision/recall/F1, incidents and
  spurious incidents per day; recall per anomaly type (``anomaly_type.txt``: metric, temporal,
  metric-temporal) by the scorer's matching rule. The ablation (ASD only; off with
  ``--no-ablation`` and in ``--quick``) regroups the same detected anomalies with names only,
  shapes only and both, and reruns detection with each detector strategy alone.
- **SMD** (7 servers, 1-minute step): the same figures as ASD.
- **Nezha-OB** (Online Boutique, fault injections, 1-minute step): fault recall (and per type),
  faults absorbed by an incident already open, root hit rate and spurious incidents per hour. The
  operator-given service graph (``2022-08-22/metric/dependency.csv``) is passed as
  ``STORMEYE_DEPENDENCIES_FILE`` for this run only; ``--no-topology`` leaves it out.

``--quick`` (a few minutes): ASD's first 5 test days, SMD's ``machine-1-2`` and ``machine-1-3``
only (their labelled incidents only), Nezha whole. ``--hosts`` / ``--smd-hosts`` replay only those
servers for fast iteration; quote figures from a run over all of them.

A data set whose directory is absent is skipped with a message (the data lives outside the
project); the run exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from stormeye import detectors
from stormeye.workers.ingest import PointBatch, ReplayResult, infer_step, read_points, replay
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

from common import MatrixWindows, Recorder, regroup

SHARED = ROOT.parent / "shared"
TOOLS = SHARED / "tools"
ASD_DIR = SHARED / "data" / "asd"
SMD_DIR = SHARED / "data" / "smd"
NEZHA_DIR = SHARED / "data" / "nezha-ob"
ASD_TOOL = TOOLS / "asd.py"
OUT = ROOT / "bench" / "out"
CACHE = OUT / "asd"
DATASETS = ("asd", "smd", "nezha")
QUICK_SMD_HOSTS = "machine-1-2,machine-1-3"
NEZHA_DEPENDENCIES = Path("2022-08-22") / "metric" / "dependency.csv"

# the rows of each data set's README (../shared/data/*/README.md), for the table and the JSON
REFERENCE: dict[str, dict[str, dict[str, Any]]] = {
    "asd": {
        "robust z > 6, merged per host within 15 min": {
            "event_recall": 0.146,
            "pairwise_f1": 0.073,
            "incidents": 365,
            "spurious_per_day": 22.1,
        },
        "robust z > 6, merged by time only": {
            "event_recall": 0.193,
            "pairwise_f1": 0.044,
            "incidents": 2,
            "spurious_per_day": 0.0,
        },
        "stormeye at c53dd56 (docs/quality.md, 15 days)": {
            "event_recall": 0.565,
            "pairwise_precision": 0.897,
            "pairwise_f1": 0.655,
            "incidents": 113,
            "spurious_per_day": 4.5,
        },
    },
    "smd": {
        "robust z > 6 for 3 of 5 steps, merged per host within 10 min": {
            "event_recall": 0.447,
            "pairwise_f1": 0.292,
            "incidents": 348,
            "spurious_per_day": 45.4,
        },
        "stormeye at c53dd56": {
            "event_recall": 0.603,
            "pairwise_precision": 1.0,
            "pairwise_recall": 0.343,
            "pairwise_f1": 0.511,
            "incidents": 294,
            "incidents_found": 32,
            "spurious_per_day": 36.9,
        },
    },
    "nezha": {
        "robust z > 6 over 6 h, merged per service within 10 min": {
            "fault_recall": 0.375,
            "absorbed": 0.594,
            "root_hit": 1.0,
            "spurious_per_hour": 0.6,
        },
        "robust z > 6 over 6 h, merged per app": {
            "fault_recall": 0.0,
            "absorbed": None,
            "root_hit": None,
            "spurious_per_hour": None,
        },
        "stormeye at c53dd56": {
            "fault_recall": 0.438,
            "absorbed": 0.406,
            "root_hit": 1.0,
            "spurious_per_hour": 0.15,
            "recall_by_type": {
                "cpu_consumed": 0.14,
                "cpu_contention": 0.5,
                "exception": 0.0,
                "network_delay": 0.78,
                "return": 0.5,
            },
        },
    },
}


def load_tool(name: str = "asd") -> Any:
    spec = importlib.util.spec_from_file_location(f"{name}_tool", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def quietly(fn: Any, *args: Any, **kwargs: Any) -> str:
    """Call a tool function that prints; return what it printed."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        fn(*args, **kwargs)
    return buf.getvalue()


def build(tool: Any, asd_dir: Path, days: int) -> Path:
    out = CACHE / f"d{days}"
    if not (out / "asd.csv").exists() or not (out / "truth.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        quietly(tool.build, str(asd_dir), str(out), days=days)
    return out


def build_smd(tool: Any, smd_dir: Path, hosts: str) -> Path:
    out = OUT / "smd" / ("hosts-" + "-".join(sorted(h.split("-")[-1] for h in hosts.split(","))) if hosts else "all")
    if not (out / "smd.csv").exists() or not (out / "truth.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        quietly(tool.build, str(smd_dir), str(out), hosts=hosts)
    return out


def build_nezha(tool: Any, nezha_dir: Path) -> Path:
    out = OUT / "nezha"
    if not (out / "ob.csv").exists() or not (out / "ob.truth.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        quietly(tool.build, str(nezha_dir), str(out))
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


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (the settings of one run only)."""
    before = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ingest_settings(batch: PointBatch, env: dict[str, str] | None = None) -> Settings:
    """Default settings at the step `stormeye ingest` would infer for this history."""
    names, ts, _ = batch.arrays()
    with environment(env or {}):
        return Settings(database_url="sqlite://", step_s=infer_step(names, ts))


def run(batch: PointBatch, settings: Settings, record: bool = True) -> tuple[Pipeline, ReplayResult, float]:
    """The `stormeye ingest` path: replay in time order, one step at a time, as if live.

    ``record``: keep the anomaly stream each tick handed to grouping (for the ablation)."""
    pipe = Recorder(settings) if record else Pipeline(settings, keep_archive=True)
    t = time.perf_counter()
    res = replay(pipe, batch)
    return pipe, res, round(time.perf_counter() - t, 1)


def replay_figures(key: str, batch: PointBatch, settings: Settings, res: ReplayResult, took: float) -> dict[str, Any]:
    return {
        f"{key}_points": res.points,
        f"{key}_step": settings.step_s,
        f"{key}_replay_s": took,
        f"{key}_rejected": batch.rejected,
        f"{key}_merged": res.merged,
        f"{key}_reordered": res.reordered,
    }


def prefixed(key: str, figures: dict[str, Any]) -> dict[str, Any]:
    """The scorer's figures as ``key_figure`` (its ``incidents_pred`` as ``key_incidents``)."""
    rename = {"incidents_pred": "incidents"}
    return {f"{key}_{rename.get(k, k)}": v for k, v in figures.items() if k != "app"}


def as_prediction(incidents: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("id", "priority", "title", "start", "end", "root", "root_entity", "status")
    return {
        "incidents": [
            {**{k: inc.get(k) for k in keys}, "members": sorted({m["metric"] for m in inc["members"]})}
            for inc in incidents
        ]
    }


def keep(args: argparse.Namespace, key: str, prediction: dict[str, Any]) -> dict[str, Any]:
    """With ``--save-predictions DIR``, write the default run's prediction to ``DIR/KEY.json`` (the
    file the data set's scorer reads, for looking into what was missed or spurious)."""
    if args.save_predictions is not None:
        args.save_predictions.mkdir(parents=True, exist_ok=True)
        (args.save_predictions / f"{key}.json").write_text(json.dumps(prediction))
    return prediction


def score_with(tool: Any, truth_path: Path, prediction: dict[str, Any]) -> dict[str, Any]:
    """What the shipped scorer prints for this prediction."""
    # a file of its own per call: two runs sharing the cache must not score each other's prediction
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="pred-", dir=truth_path.parent, delete=False) as f:
        f.write(json.dumps(prediction))
    pred_path = Path(f.name)
    try:
        printed = quietly(tool.score, str(truth_path), str(pred_path))
    finally:
        pred_path.unlink(missing_ok=True)
    return dict(json.loads(printed))


def score(tool: Any, truth_path: Path, prediction: dict[str, Any]) -> dict[str, Any]:
    """ASD: the shipped scorer's figures, plus recall per anomaly type by the same matching rule."""
    figures = score_with(tool, truth_path, prediction)
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


def say(args: argparse.Namespace, message: str) -> None:
    """Progress and skips: on stderr when stdout is the JSON, else on stdout."""
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


def run_asd(args: argparse.Namespace, result: dict[str, Any]) -> Any:
    """ASD at defaults; returns the ablation to run last (None when there is none)."""
    if not (args.asd / "processed").is_dir() or not ASD_TOOL.exists():
        say(args, f"ASD data not found at {args.asd} (or the scorer at {ASD_TOOL}): skipped.")
        result["skipped"]["asd"] = f"no data at {args.asd}"
        return None
    tool = load_tool("asd")
    days = 5 if args.quick else 15
    out = build(tool, args.asd, days)
    batch = read_points(out / "asd.csv")
    if args.hosts:
        out, batch = only_hosts(out, batch, [h.strip() for h in args.hosts.split(",") if h.strip()])
    settings = ingest_settings(batch)
    pipe, res, took = run(batch, settings, record=True)
    default = score(tool, out / "truth.json", keep(args, "asd", as_prediction(pipe.incident_list())))
    figures = {
        "asd_days": days,
        **({"asd_hosts": args.hosts} if args.hosts else {}),
        **replay_figures("asd", batch, settings, res, took),
        **prefixed("asd", default),
    }
    result.update(figures)
    say(args, f"asd: {res.points:,} points in {took:.0f} s: {json.dumps(figures)}")
    result["_tables"]["asd"] = {"default (names + shapes, default detector)": default}
    if args.quick or args.no_ablation:
        return None

    def ablation() -> None:
        assert isinstance(pipe, Recorder)
        rows = result["_tables"]["asd"]
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
            say(args, f"asd ablation: detector {name} alone: {json.dumps(rows[f'detector {name} alone'])}")
        result["asd_ablation"] = rows

    return ablation


def run_smd(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if not (args.smd / "processed").is_dir() or not (TOOLS / "smd.py").exists():
        say(args, f"SMD data not found at {args.smd} (or the scorer at {TOOLS / 'smd.py'}): skipped.")
        result["skipped"]["smd"] = f"no data at {args.smd}"
        return
    tool = load_tool("smd")
    hosts = args.smd_hosts or (QUICK_SMD_HOSTS if args.quick else "")
    known = tool.machines(str(args.smd))
    unknown = sorted(set(h for h in hosts.split(",") if h) - set(known))
    if unknown:
        raise SystemExit(f"--smd-hosts: unknown servers {unknown}; SMD has {', '.join(known)}")
    out = build_smd(tool, args.smd, hosts)
    batch = read_points(out / "smd.csv")
    settings = ingest_settings(batch)
    pipe, res, took = run(batch, settings, record=False)
    figures = score_with(tool, out / "truth.json", keep(args, "smd", as_prediction(pipe.incident_list())))
    got = {
        "smd_hosts": hosts or "all",
        "smd_days": json.loads((out / "truth.json").read_text())["days"],
        **replay_figures("smd", batch, settings, res, took),
        **prefixed("smd", figures),
    }
    result.update(got)
    result["_tables"]["smd"] = {"stormeye, defaults": figures}
    say(args, f"smd: {res.points:,} points in {took:.0f} s: {json.dumps(got)}")


def run_nezha(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if not (args.nezha / "2022-08-22").is_dir() or not (TOOLS / "nezha.py").exists():
        say(args, f"Nezha-OB data not found at {args.nezha} (or the scorer at {TOOLS / 'nezha.py'}): skipped.")
        result["skipped"]["nezha"] = f"no data at {args.nezha}"
        return
    tool = load_tool("nezha")
    out = build_nezha(tool, args.nezha)
    batch = read_points(out / "ob.csv")
    deps = args.nezha / NEZHA_DEPENDENCIES
    env = {} if args.no_topology or not deps.exists() else {"STORMEYE_DEPENDENCIES_FILE": str(deps)}
    settings = ingest_settings(batch, env)
    read = "dependencies_file" in Settings.model_fields
    if env:
        say(
            args,
            f"nezha: the operator's service graph: STORMEYE_DEPENDENCIES_FILE={deps}"
            + ("" if read else " (this build's settings have no such field yet: ignored)"),
        )
    else:
        say(args, "nezha: no service graph (" + ("--no-topology" if args.no_topology else f"{deps} absent") + ")")
    pipe, res, took = run(batch, settings, record=False)
    figures = score_with(tool, out / "ob.truth.json", keep(args, "nezha", as_prediction(pipe.incident_list())))
    got = {
        "nezha_dependencies_file": env.get("STORMEYE_DEPENDENCIES_FILE"),
        "nezha_dependencies_read": bool(env) and read,
        **replay_figures("nezha", batch, settings, res, took),
        **prefixed("nezha", figures),
    }
    result.update(got)
    result["_tables"]["nezha"] = {"stormeye, defaults" + (", service graph" if env else ""): figures}
    say(args, f"nezha: {res.points:,} points in {took:.0f} s: {json.dumps(got)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ASD 5 days, SMD 2 servers, no ablation: a few minutes")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--only", default=",".join(DATASETS), help="comma-separated data sets: asd,smd,nezha")
    ap.add_argument("--no-ablation", action="store_true", help="ASD: only the default configuration")
    ap.add_argument("--no-topology", action="store_true", help="Nezha: leave the service graph out")
    ap.add_argument("--hosts", default="", help="ASD: comma-separated servers (omi-1 ... omi-12) to replay alone")
    ap.add_argument("--smd-hosts", default="", help="SMD: comma-separated servers (machine-1-2 ...) to replay alone")
    ap.add_argument(
        "--save-predictions", type=Path, default=None, help="write each default prediction to DIR/{asd,smd,nezha}.json"
    )
    ap.add_argument("--asd", type=Path, default=ASD_DIR, help="ASD directory (processed/, interpretation_label/)")
    ap.add_argument("--smd", type=Path, default=SMD_DIR, help="SMD directory (processed/, interpretation_label/)")
    ap.add_argument("--nezha", type=Path, default=NEZHA_DIR, help="Nezha-OB directory (2022-08-22/, 2022-08-23/)")
    args = ap.parse_args()
    only = [d.strip() for d in args.only.split(",") if d.strip()]
    if not only or set(only) - set(DATASETS):
        raise SystemExit(f"--only: pick from {','.join(DATASETS)}, got {args.only!r}")
    result: dict[str, Any] = {"quick": args.quick, "skipped": {}, "_tables": {}}
    t0 = time.perf_counter()
    ablation = run_asd(args, result) if "asd" in only else None
    gc.collect()
    if "smd" in only:
        run_smd(args, result)
        gc.collect()
    if "nezha" in only:
        run_nezha(args, result)
    if ablation is not None:
        ablation()
    result["reference"] = {k: v for k, v in REFERENCE.items() if k in only}
    result["total_s"] = round(time.perf_counter() - t0, 1)
    tables = result.pop("_tables")
    if args.json:
        print(json.dumps(result))
        return
    print_tables(result, tables)


def _f(v: Any, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


def print_tables(result: dict[str, Any], tables: dict[str, dict[str, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=170)
    for key, title in (("asd", "ASD"), ("smd", "SMD")):
        if key not in tables:
            continue
        extra = f"{result['asd_days']} test days" if key == "asd" else f"hosts {result['smd_hosts']}"
        tab = Table(
            title=f"{title}, {extra}, {result[f'{key}_points']:,} points at {result[f'{key}_step']} s replayed in "
            f"{result[f'{key}_replay_s']:.0f} s ({result[f'{key}_merged']} merged, "
            f"{result[f'{key}_rejected']} rejected)"
        )
        cols = ["configuration", "event recall", "pairwise P", "pairwise R", "pairwise F1", "incidents", "found"]
        cols += ["spurious/day"] + (["recall by type"] if key == "asd" else [])
        for col in cols:
            tab.add_column(col, justify="left" if col in ("configuration", "recall by type") else "right")
        rows = [(label, r, False) for label, r in tables[key].items()]
        rows += [(f"reference: {label}", r, True) for label, r in REFERENCE[key].items()]
        for label, r, ref in rows:
            found = r.get("incidents_found")
            cells = [
                label,
                _f(r.get("event_recall")),
                _f(r.get("pairwise_precision")),
                _f(r.get("pairwise_recall")),
                _f(r.get("pairwise_f1")),
                str(r.get("incidents", r.get("incidents_pred", "—"))),
                "—" if found is None else f"{found} / {r.get('incidents_true', '?')}" if not ref else str(found),
                _f(r.get("spurious_per_day"), ".1f"),
            ]
            if key == "asd":
                cells.append(", ".join(f"{k} {v}" for k, v in r.get("recall_by_type", {}).items()))
            tab.add_row(*cells, style="dim" if ref else None)
        con.print(tab)
    if "nezha" in tables:
        graph = result["nezha_dependencies_file"] or "none"
        tab = Table(
            title=f"Nezha-OB, {result['nezha_points']:,} points at {result['nezha_step']} s replayed in "
            f"{result['nezha_replay_s']:.0f} s, {result['nezha_faults_scored']} faults scored; service graph: {graph}"
        )
        for col in ("configuration", "fault recall", "absorbed", "root hit", "spurious/hour", "recall by type"):
            tab.add_column(col, justify="left" if col in ("configuration", "recall by type") else "right")
        rows = [(label, r, False) for label, r in tables["nezha"].items()]
        rows += [(f"reference: {label}", r, True) for label, r in REFERENCE["nezha"].items()]
        for label, r, ref in rows:
            tab.add_row(
                label,
                _f(r.get("fault_recall")),
                _f(r.get("absorbed")),
                _f(r.get("root_hit")),
                _f(r.get("spurious_per_hour"), ".2f"),
                ", ".join(f"{k} {v}" for k, v in (r.get("recall_by_type") or {}).items()),
                style="dim" if ref else None,
            )
        con.print(tab)


if __name__ == "__main__":
    main()
