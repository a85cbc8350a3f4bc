"""Calibration bench: do the scores mean the tail probabilities they claim? Before and after, in one run.

    python bench/calibration.py [--quick] [--json] [--only smd,asd,nezha,sim] [--base DIR] [--no-base]
                                [--profile] [--ledger-halflife S]

A score is ``-log10(p) / 10``: a point scored at least ``k / 10`` claims a tail probability of at
most ``10^-k`` for its metric. On points nobody labelled, the share scored at least ``k / 10``
should then be about ``10^-k`` (a little more: unlabelled rows still hold some real, unlabelled
problems). For each data set this prints that share for k = 1..5 and 10 (score 1.0, saturation),
its ratio to ``10^-k`` (observed share / claimed p), and how the labelled events rank: the peak
score of each labelled event against the 99.99th percentile of the normal points' scores.

Data (built and cached as ``bench/realdata.py`` builds them, under ``bench/out/``), every series
scored whole with :func:`stormeye.detectors.score_series` and the default detector (strictly
causal, on its timestamps' step grid, as the issue measured it):

- **smd**: SMD machine-1 (``../shared/data/smd``, the hosts ``machine-1-*``), 60 s; normal: the
  rows (host, minute) outside every labelled event of that host, widened by 10 minutes;
- **asd**: ASD, 15 test days (``../shared/data/asd``), 300 s; normal as SMD (widened by 30 min);
- **nezha**: Nezha-OB (``../shared/data/nezha-ob``), 60 s; normal: the points of a service's
  metrics before each fault, outside ``[inject - 2 min, inject + 10 min]`` of every fault;
  the events are the faults (peak over the faulted service's metrics within 10 min);
- **sim**: the simulator (:func:`stormeye.sim.simulator.simulate_storm`, seed 0, three
  days of history so the seasonal members run); normal: the metrics no incident touched;
  events: each incident member's peak within its span.

The first 240 steps of every series (warm-up) and missing points are left out. ``calib_ratio_k1``
... ``calib_ratio_k5`` and ``saturated_share`` in ``--json`` are the worst of smd, asd and nezha.

**Before and after**: ``--base DIR`` (default ``/work/base``, an earlier build: a checkout with its
own ``.venv``, or one with the package's ``.typecheck/stormeye`` links, read first by this Python)
scores the same series in a subprocess; the table prints both. ``--no-base`` skips it.

**The tail ledger** (``ledger`` rows, ``ledger_calib_ratio_k*`` in ``--json``): the same levels
calibrated by :class:`~stormeye.detectors.calibration.TailLedger` as the service does with
``STORMEYE_CALIBRATION_HALFLIFE_S`` (``--ledger-halflife``, 3 days), over every series of the data
set at once, step by step. It is off by default; docs/detectors.md says why.
``--profile``: also each residual member alone (``robust_z``, ``seasonal``, ``holt_winters``),
for where a miscalibration comes from. ``--quick``: every 4th series of each data set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

KS = (1, 2, 3, 4, 5, 10)
WARM = 240
SETS = ("smd", "asd", "nezha", "sim")
MEMBERS = ("robust_z", "seasonal", "holt_winters")


# ---------------------------------------------------------------- the measurement (numpy only: the child runs it)


def measure(data: dict[str, np.ndarray], score: Any, detector: str = "default") -> dict[str, Any]:
    """The calibration figures of one data set (``data``: values, steps, normal, events) under ``score``."""
    values, steps = data["values"], data["steps"]
    scores = np.zeros(values.shape)
    for i in range(values.shape[0]):
        scores[i] = score(values[i], steps, detector)
    return figures(data, scores)


def figures(data: dict[str, np.ndarray], scores: np.ndarray) -> dict[str, Any]:
    """The calibration figures of one data set's ``scores`` (rows x steps)."""
    values, normal, events = data["values"], data["normal"], data["events"]
    keep = normal.copy()
    keep[:, :WARM] = False
    keep &= np.isfinite(values)
    s = scores[keep]
    out: dict[str, Any] = {"points": int(s.size)}
    for k in KS:
        share = float(np.mean(s >= k / 10 - 1e-12)) if s.size else float("nan")
        out[f"share_k{k}"] = share
        out[f"ratio_k{k}"] = share / 10.0**-k
    out["saturated_share"] = out.pop("share_k10")
    out.pop("ratio_k10")
    q = float(np.quantile(s, 0.9999)) if s.size else float("nan")
    out["normal_p9999"] = q
    best: dict[int, float] = {}
    for r, lo, hi, g in events:
        best[int(g)] = max(best.get(int(g), 0.0), float(np.max(scores[r, lo:hi])) if hi > lo else 0.0)
    peaks = np.array(list(best.values()))
    if len(peaks):
        out["events"] = len(peaks)
        out["event_peak_median"] = float(np.median(peaks))
        out["events_above_p9999"] = float(np.mean(peaks > q))
    return out


def run_child(base: Path, data_path: Path, profile: bool) -> None:
    """In the base build's Python: score every data set with its detectors and print the figures."""
    if (base / ".typecheck" / "stormeye").is_dir():  # one package (issue 32 on): its own source first
        sys.path.insert(0, str(base / ".typecheck"))
        from stormeye.detectors import score_series
    else:
        sys.path.insert(0, str(base))
        from detectors import score_series  # type: ignore[import-not-found,no-redef]  # the old top-level name

    print(json.dumps(measure_all(load_npz(data_path), score_series, profile)))


def measure_ledger(
    sets: dict[str, dict[str, np.ndarray]], halflife_s: float, profile: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """This build: (its default scores' figures, the figures with the tail ledger), from one scoring.

    The ledger runs as the service runs it (``STORMEYE_CALIBRATION_HALFLIFE_S``): over every series
    of the data set at once, step by step, each metric against its own record and, while young,
    the pooled record of all of them.
    """
    from stormeye.detectors import score_series, score_series_info
    from stormeye.detectors.calibration import TailLedger, ledger_config

    plain: dict[str, Any] = {}
    ledger: dict[str, Any] = {}
    for name, data in sets.items():
        t = time.perf_counter()
        values, steps = data["values"], data["steps"]
        scores, levels = np.zeros(values.shape), np.zeros(values.shape)
        counted = np.zeros(values.shape, dtype=bool)
        step = 60
        for i in range(values.shape[0]):
            info = score_series_info(values[i], steps)
            scores[i], levels[i], counted[i], step = info.scores, info.levels, info.counted, info.step
        plain[name] = figures(data, scores)
        if profile:
            for member in MEMBERS:
                plain[f"{name}:{member}"] = measure(data, lambda v, ts, d: score_series(v, ts, d), member)
        plain[name]["seconds"] = round(time.perf_counter() - t, 1)
        led = TailLedger(ledger_config(step, halflife_s))
        rows = np.arange(values.shape[0])
        cal = scores.copy()
        for j in range(values.shape[1]):
            c = counted[:, j]
            cal[c, j] = np.minimum(led.calibrate(rows[c], levels[c, j]), 1.0)
            led.update(rows, levels[:, j], c)
        ledger[name] = figures(data, cal)
    return plain, ledger


def measure_all(sets: dict[str, dict[str, np.ndarray]], score_series: Any, profile: bool) -> dict[str, Any]:
    def score(v: np.ndarray, ts: np.ndarray, det: str) -> np.ndarray:
        return np.asarray(score_series(v, ts, det))

    out: dict[str, Any] = {}
    for name, data in sets.items():
        t = time.perf_counter()
        out[name] = measure(data, score)
        if profile:
            for member in MEMBERS:
                out[f"{name}:{member}"] = measure(data, score, member)
        out[name]["seconds"] = round(time.perf_counter() - t, 1)
    return out


def load_npz(path: Path) -> dict[str, dict[str, np.ndarray]]:
    raw = np.load(path)
    sets: dict[str, dict[str, np.ndarray]] = {}
    for key in raw.files:
        name, part = key.split("/")
        sets.setdefault(name, {})[part] = raw[key]
    return sets


# ---------------------------------------------------------------- the data sets


def rows_outside(host_of: list[str], steps: np.ndarray, spans: dict[str, list[tuple[float, float]]]) -> np.ndarray:
    """Mask (rows x steps): True where the row's host has no labelled span around that step."""
    mask = np.ones((len(host_of), len(steps)), dtype=bool)
    for i, h in enumerate(host_of):
        for lo, hi in spans.get(h, []):
            mask[i, (steps >= lo) & (steps <= hi)] = False
    return mask


def event_index(names: list[str], steps: np.ndarray, events: list[tuple[str, float, float, int]]) -> np.ndarray:
    """(row, first step, end step, event) per labelled (metric, span); an event's peak is over its rows."""
    row = {n: i for i, n in enumerate(names)}
    out = [
        (row[n], int(np.searchsorted(steps, lo)), int(np.searchsorted(steps, hi, side="right")), g)
        for n, lo, hi, g in events
        if n in row
    ]
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def host(name: str) -> str:
    return name.split('host="')[1].split('"')[0]


def labelled_set(path: Path, truth_path: Path, widen: float, only: str = "") -> dict[str, np.ndarray]:
    from realdata import matrix

    from stormeye.workers.ingest import read_points

    names, steps, values = matrix(read_points(path))
    keep = [i for i, n in enumerate(names) if host(n).startswith(only)]
    names, values = [names[i] for i in keep], values[keep]
    truth = json.loads(truth_path.read_text())
    spans: dict[str, list[tuple[float, float]]] = {}
    evs = []
    for ev in truth["events"]:
        spans.setdefault(ev["host"], []).append((ev["start"] - widen, ev["end"] + widen))
        metric = next((n for n in names if host(n) == ev["host"] and n.startswith(ev["metric"] + "{")), None)
        if metric is not None:
            evs.append((metric, ev["start"], ev["end"], len(evs)))
    normal = rows_outside([host(n) for n in names], steps, spans)
    return {"values": values, "steps": steps, "normal": normal, "events": event_index(names, steps, evs)}


def nezha_set(out: Path) -> dict[str, np.ndarray]:
    from realdata import matrix

    from stormeye.workers.ingest import read_points

    names, steps, values = matrix(read_points(out / "ob.csv"))
    truth = json.loads((out / "ob.truth.json").read_text())
    service = [n.split('service="')[1].split('"')[0] if 'service="' in n else "" for n in names]
    spans: dict[str, list[tuple[float, float]]] = {}
    evs = []
    for g, f in enumerate(truth["faults"]):
        spans.setdefault(f["service"], []).append((f["time"] - 120, f["time"] + 600))
        evs += [(n, f["time"], f["time"] + 600, g) for n, s in zip(names, service) if s == f["service"]]
    # a service's metrics in the hours between its own faults (other services' faults may still
    # reach it: unlabelled is not clean)
    return {
        "values": values,
        "steps": steps,
        "normal": rows_outside(service, steps, spans),
        "events": event_index(names, steps, evs),
    }


def sim_set(quick: bool) -> dict[str, np.ndarray]:
    from stormeye.sim.simulator import simulate_storm

    storm = simulate_storm(seed=0, n_metrics=60 if quick else 200, history_steps=3 * 1440)
    touched = {m for inc in storm.incidents for m in inc.members}
    normal = np.array([[n not in touched] * storm.values.shape[1] for n in storm.names])
    evs = [(m, inc.start, inc.end, j) for j, (inc, m) in enumerate((i, m) for i in storm.incidents for m in i.members)]
    return {
        "values": storm.values,
        "steps": storm.timestamps.astype(np.float64),
        "normal": normal,
        "events": event_index(storm.names, storm.timestamps, evs),
    }


def build_sets(only: list[str], quick: bool) -> dict[str, dict[str, np.ndarray]]:
    import realdata

    sets: dict[str, dict[str, np.ndarray]] = {}
    if "smd" in only and (realdata.SMD_DIR / "processed").is_dir():
        out = realdata.build_smd(realdata.load_tool("smd"), realdata.SMD_DIR, "")
        sets["smd"] = labelled_set(out / "smd.csv", out / "truth.json", 600, only="machine-1-")
    if "asd" in only and (realdata.ASD_DIR / "processed").is_dir():
        out = realdata.build(realdata.load_tool("asd"), realdata.ASD_DIR, 15)
        sets["asd"] = labelled_set(out / "asd.csv", out / "truth.json", 1800)
    if "nezha" in only and realdata.NEZHA_DIR.is_dir():
        sets["nezha"] = nezha_set(realdata.build_nezha(realdata.load_tool("nezha"), realdata.NEZHA_DIR))
    if "sim" in only:
        sets["sim"] = sim_set(quick)
    if quick:
        for name, d in sets.items():
            rows = np.arange(0, d["values"].shape[0], 4)
            remap = -np.ones(d["values"].shape[0], dtype=np.int64)
            remap[rows] = np.arange(len(rows))
            ev = d["events"]
            ev = ev[np.isin(ev[:, 0], rows)]
            ev[:, 0] = remap[ev[:, 0]]
            sets[name] = {**d, "values": d["values"][rows], "normal": d["normal"][rows], "events": ev}
    return sets


# ---------------------------------------------------------------- the report


def headline(res: dict[str, Any]) -> dict[str, Any]:
    """The worst of the real data sets: ``calib_ratio_k1``..``k5`` and ``saturated_share``."""
    real = [res[n] for n in ("smd", "asd", "nezha") if n in res]
    if not real:
        return {}
    out: dict[str, Any] = {f"calib_ratio_k{k}": round(max(r[f"ratio_k{k}"] for r in real), 3) for k in KS[:-1]}
    out["saturated_share"] = max(r["saturated_share"] for r in real)
    out["events_above_p9999"] = round(min(r.get("events_above_p9999", 1.0) for r in real), 3)
    return out


def table(before: dict[str, Any] | None, after: dict[str, Any], ledger: dict[str, Any] | None = None) -> str:
    lines = []
    head = ["k1", "k2", "k3", "k4", "k5", "sat", "p99.99", "ev>p99.99", "ev med"]
    lines.append(f"{'set':<22} {'build':<7} " + " ".join(f"{h:>9}" for h in head))
    for name in after:
        for label, res in (("before", before), ("after", after), ("ledger", ledger)):
            if res is None or name not in res:
                continue
            r = res[name]
            cells = [f"{r[f'ratio_k{k}']:.3g}x" for k in KS[:-1]]
            cells += [f"{r['saturated_share']:.2g}", f"{r['normal_p9999']:.3f}"]
            nan = float("nan")
            cells += [f"{r.get('events_above_p9999', nan):.3f}", f"{r.get('event_peak_median', nan):.3f}"]
            lines.append(f"{name:<22} {label:<7} " + " ".join(f"{c:>9}" for c in cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="every 4th series of each data set")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--only", default=",".join(SETS), help="data sets, comma-separated: " + ",".join(SETS))
    ap.add_argument("--base", type=Path, default=Path("/work/base"), help="the build to compare with (its .venv)")
    ap.add_argument("--no-base", action="store_true", help="measure this build only")
    ap.add_argument("--profile", action="store_true", help="also each residual member alone")
    ap.add_argument(
        "--ledger-halflife",
        type=float,
        default=259200.0,
        help="the tail ledger's memory in seconds for the 'ledger' rows (STORMEYE_CALIBRATION_HALFLIFE_S)",
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        run_child(args.base, args.child, args.profile)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SETS))
    if unknown:
        raise SystemExit(f"--only: unknown data sets {unknown}; choose from {', '.join(SETS)}")
    t0 = time.perf_counter()
    sets = build_sets(only, args.quick)
    before = None
    child = None
    with tempfile.TemporaryDirectory(prefix="calib-") as tmp:
        data_path = Path(tmp) / "sets.npz"
        np.savez(data_path, **{f"{n}/{k}": v for n, d in sets.items() for k, v in d.items()})
        python = args.base / ".venv" / "bin" / "python"
        if not python.exists() and (args.base / ".typecheck" / "stormeye").is_dir():
            python = Path(sys.executable)  # this Python, reading the base build's source first
        if not args.no_base and python.exists():
            cmd = [str(python), __file__, "--child", str(data_path), "--base", str(args.base)]
            if args.profile:
                cmd.append("--profile")
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            if (args.base / ".typecheck" / "stormeye").is_dir():
                env["PYTHONPATH"] = str(args.base / ".typecheck")
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=str(args.base), env=env, text=True)
        elif not args.no_base:
            print(f"no build to compare with at {args.base} (no {python}): after only", file=sys.stderr)
        after, ledger = measure_ledger(sets, args.ledger_halflife, args.profile)
        if child is not None:
            stdout, _ = child.communicate()
            if child.returncode != 0:
                raise SystemExit(f"the base build's measurement failed (exit {child.returncode})")
            before = json.loads(stdout)
    result: dict[str, Any] = {**headline(after), "quick": args.quick, "seconds": round(time.perf_counter() - t0, 1)}
    result.update({f"ledger_{k}": v for k, v in headline(ledger).items()})
    if before is not None:
        result.update({f"before_{k}": v for k, v in headline(before).items()})
        result["before"] = before
    result["after"] = after
    result["ledger"] = ledger
    if args.json:
        print(json.dumps(result))
    else:
        print(table(before, after, ledger))
        print(json.dumps({k: v for k, v in result.items() if k not in ("before", "after")}))


if __name__ == "__main__":
    main()
