"""Offline bench: would a rule that calls repeats routine quiet SMD without costing ASD and Nezha?

    python bench/realdata.py --no-ablation --save-predictions bench/out/predictions
    python bench/routine.py [--predictions bench/out/predictions] [--quick] [--json]

SMD's spurious incidents are big moves its machines have made before (docs/quality.md). This
bench tries incident-level rules for "this is routine, do not page" on each data set's saved
prediction and rescores what is left with the data set's own tool, next to the prediction
unfiltered (the baseline row) in the same run. The rules are measured here; none is built into the
pipeline, because none keeps ASD's and Nezha's recall while quieting SMD (the bench says which
targets each row misses).

For every incident and member, from the raw points in the look-back (a day, up to 10 minutes
before the incident's start):

- **size**: the member's largest distance from the look-back's median during the incident,
  over the largest distance in the look-back (above 1: news; no look-back: news);
- **held**: the same for the mean distance over the incident's length (up to 30 points) against
  the look-back's most-held stretch of that length;
- **repeat**: the largest share of the incident's members held by one incident that started in
  the look-back.

Rules: ``news k``: keep an incident when at least k members have size above 1;
``repeat r & news k q``: drop an incident only when it repeats a share r and fewer than k members
have size above q; ``held k``: keep when k members have held above 1.

It reads the data sets as ``bench/realdata.py`` built them (``bench/out/``) and the predictions
that ``--save-predictions`` wrote; a data set with either missing is skipped with a message.
``--quick``: the rules from the last measurement's table only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parent))

from realdata import OUT, TOOLS, load_tool, matrix, score_with

from stormeye.workers.ingest import read_points

DAY = 86400.0
GAP = 600.0
HELD_POINTS = 30
#: data set → (tool, points file, truth file) as bench/realdata.py builds them
DATA = {
    "asd": ("asd", OUT / "asd" / "d15" / "asd.csv", OUT / "asd" / "d15" / "truth.json"),
    "smd": ("smd", OUT / "smd" / "all" / "smd.csv", OUT / "smd" / "all" / "truth.json"),
    "nezha": ("nezha", OUT / "nezha" / "ob.csv", OUT / "nezha" / "ob.truth.json"),
}
TARGETS = {
    "asd": {"event_recall": (">=", 0.5), "pairwise_f1": (">=", 0.5), "spurious_per_day": ("<=", 5.0)},
    "smd": {"event_recall": (">=", 0.6), "pairwise_f1": (">=", 0.6), "spurious_per_day": ("<=", 8.0)},
    "nezha": {"fault_recall": (">=", 0.7), "absorbed": ("<=", 0.15), "root_hit": (">=", 0.8)},
}


def read_series(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric → (timestamps, values) as ``stormeye ingest`` reads the file (canonical names, bad rows
    refused), on the file's time grid with NaN where a metric has no point."""
    names, steps, values = matrix(read_points(path))
    return {name: (steps, values[i]) for i, name in enumerate(names)}


def held(dev: np.ndarray, n: int) -> float:
    """The largest mean of ``dev`` over ``n`` points in a row (all of it when shorter)."""
    if len(dev) < n:
        return float(dev.mean())
    return float(sliding_window_view(dev, n).mean(axis=1).max())


def features(series: dict[str, tuple[np.ndarray, np.ndarray]], incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per incident: its members' size and held ratios against the look-back, and its repeat share."""
    starts = np.array([float(i["start"]) for i in incidents])
    member_sets = [set(i["members"]) for i in incidents]
    out = []
    for k, inc in enumerate(incidents):
        s, e = float(inc["start"]), float(inc["end"])
        size, hold = [], []
        for m in inc["members"]:
            if m not in series:
                continue
            t, v = series[m]
            lo, hi = np.searchsorted(t, [s - DAY, s - GAP])
            a, b = np.searchsorted(t, [s, e + 1])
            past, now = v[lo:hi], v[a:b]
            past, now = past[np.isfinite(past)], now[np.isfinite(now)]
            if len(past) < 10 or not len(now):
                size.append(np.inf)
                hold.append(np.inf)
                continue
            med = np.median(past)
            dp, dn = np.abs(past - med), np.abs(now - med)
            base = dp.max()
            size.append(dn.max() / base if base > 0 else np.inf)
            n = min(len(dn), HELD_POINTS)
            hp = held(dp, n)
            hold.append(held(dn, n) / hp if hp > 0 else np.inf)
        earlier = np.flatnonzero((starts >= s - DAY) & (starts <= s - GAP))
        mine = member_sets[k]
        repeat = max((len(mine & member_sets[j]) / max(1, len(mine)) for j in earlier), default=0.0)
        out.append({"size": np.asarray(size), "held": np.asarray(hold), "repeat": repeat})
    return out


def rules(quick: bool) -> dict[str, Any]:
    def news(k: int, q: float = 1.0) -> Any:
        return lambda f: int((f["size"] > q).sum()) >= k

    def routine(r: float, k: int, q: float) -> Any:
        return lambda f: f["repeat"] < r or int((f["size"] > q).sum()) >= k

    def kept_held(k: int) -> Any:
        return lambda f: int((f["held"] > 1.0).sum()) >= k

    out: dict[str, Any] = {"none (baseline)": lambda f: True}
    if quick:
        out["news 3"] = news(3)
        out["repeat 0.5 & news 1 q 1"] = routine(0.5, 1, 1.0)
        out["repeat 0.3 & news 1 q 1.25"] = routine(0.3, 1, 1.25)
        out["held 1"] = kept_held(1)
        return out
    for k in (1, 2, 3):
        out[f"news {k}"] = news(k)
    for r in (0.3, 0.5, 0.7):
        for q in (1.0, 1.25, 1.5, 2.0):
            for k in (1, 2):
                out[f"repeat {r} & news {k} q {q}"] = routine(r, k, q)
    for k in (1, 2, 3):
        out[f"held {k}"] = kept_held(k)
    return out


def missed(key: str, figures: dict[str, Any]) -> list[str]:
    out = []
    for name, (op, target) in TARGETS[key].items():
        v = figures.get(name)
        if v is None or (v < target if op == ">=" else v > target):
            out.append(f"{key}_{name}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--predictions", type=Path, default=OUT / "predictions", help="the directory realdata --save-predictions wrote"
    )
    ap.add_argument("--quick", action="store_true", help="a few rules only")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    args = ap.parse_args()
    began = time.perf_counter()
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print
    loaded: dict[str, tuple[Any, Path, list[dict[str, Any]], list[dict[str, Any]]]] = {}
    skipped = {}
    for key, (tool_name, points, truth) in DATA.items():
        pred_path = args.predictions / f"{key}.json"
        needs = (points, truth, pred_path, TOOLS / f"{tool_name}.py")
        if not all(p.exists() for p in needs):
            missing = ", ".join(str(p) for p in needs if not p.exists())
            skipped[key] = f"missing {missing}: run bench/realdata.py --save-predictions DIR first"
            say(f"{key}: skipped ({skipped[key]})")
            continue
        incidents = json.loads(pred_path.read_text())["incidents"]
        feats = features(read_series(points), incidents)
        loaded[key] = (load_tool(tool_name), truth, incidents, feats)
    rows = []
    for name, keep in rules(args.quick).items() if loaded else ():
        row: dict[str, Any] = {"rule": name}
        misses: list[str] = []
        for key, (tool, truth, incidents, feats) in loaded.items():
            kept = [inc for inc, f in zip(incidents, feats, strict=True) if keep(f)]
            figures = score_with(tool, truth, {"incidents": kept})
            row.update({f"{key}_{k}": v for k, v in figures.items() if k in TARGETS[key] or k == "pairwise_f1"})
            misses += missed(key, figures)
        rows.append({**row, "missed": misses})
    result = {"rows": rows, "skipped": skipped, "total_s": round(time.perf_counter() - began, 1)}
    if args.json:
        print(json.dumps(result))
        return
    for row in rows:
        figs = []
        for key in loaded:
            cols = list(TARGETS[key])
            figs.append(key + " " + " / ".join(str(row.get(f"{key}_{c}")) for c in cols))
        verdict = "   missed: " + ", ".join(row["missed"]) if row["missed"] else "   all met"
        print(f"{row['rule']:30s} " + " | ".join(figs) + verdict)
    print(f"{result['total_s']} s")


if __name__ == "__main__":
    main()
