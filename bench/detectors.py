"""Detector bench: quality on labelled simulated storms, batch throughput, peak memory, KS timing.

    python bench/detectors.py [--quick] [--json]

1. **Quality** on the simulator's labelled storms (seeds 0-2, or 0-1 with ``--quick``; every
   anomaly kind), at a 5-minute step with two days of history so the seasonal members can
   run at full resolution (see docs/detectors.md). Every strategy of
   :func:`detectors.available` scores every metric at every storm step, in batch (the same
   ``score`` the pipeline calls); a point at or above 0.5 is a detection, and a run of them is one
   *onset*. Per truth member (incident x metric) window ``[start, end + slack]``:
   - recall by kind: members with a detection inside their window / members;
   - precision: onsets inside some member window of their metric / all onsets;
   - event-window score (NAB-like): a member found at delay ``d`` into its window of length
     ``L`` earns ``1 - 0.5 d / L`` (early detection earns most), a miss earns 0, and each onset
     outside every window costs ``fp_cost`` (0.2); the sum is divided by the number of members
     (1.0 is perfect, negative means the false positives outweigh the finds).
2. **Throughput** of the default detector on 100,000 metrics x 241-point windows (the default
   at a 60-second step) with two earlier days of 5-minute means (``metric_windows_per_s``: the
   steady state) and without (``no_season_history_metric_windows_per_s``: new metrics), against
   the robust z-score alone; of the seasonal ensemble (5-minute step, 723-point windows) on
   20,000 metrics; peak RSS of the process.
3. **KS section** from ``bench/ks_section.py`` when present (the det-stats strategies' timing).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from stormeye import detectors
from stormeye.detectors import Detector
from stormeye.detectors.ensemble import Ensemble
from stormeye.sim.simulator import KINDS, simulate_storm

STEP = 300
PERIOD = 86_400 // STEP
THRESHOLD = 0.5
SLACK = 6
FP_COST = 0.2


def make(cls: type[Detector]) -> Detector:
    if "period" in inspect.signature(cls).parameters:
        return cls(period=PERIOD)
    return cls()


def strategies() -> dict[str, Detector]:
    out = {name: make(cls) for name, cls in sorted(detectors.available().items()) if name != "ensemble"}
    out["default ensemble"] = detectors.default_detector(STEP)
    return out


def score_matrix(det: Detector, values: np.ndarray, cols: np.ndarray, chunk_rows: int = 40_000) -> np.ndarray:
    """Scores of every metric at every column in ``cols`` (batch calls over stacked windows)."""
    h = det.history + 1
    m = values.shape[0]
    padded = np.concatenate([np.full((m, h), np.nan), values], axis=1)
    out = np.zeros((m, len(cols)))
    per = max(1, chunk_rows // (m * max(1, h // 240)))
    for k in range(0, len(cols), per):
        cc = cols[k : k + per]
        w = np.stack([padded[:, c + 1 : c + h + 1] for c in cc], axis=1).reshape(-1, h)
        out[:, k : k + len(cc)] = det.score(w).score.reshape(m, len(cc))
    return out


def quality(seeds: list[int], n_metrics: int) -> dict[str, Any]:
    table: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        storm = simulate_storm(
            seed=seed, n_metrics=n_metrics, n_incidents=10, step=STEP, history_steps=3 * PERIOD, storm_steps=288
        )
        cols = np.arange(storm.history_steps, storm.values.shape[1])
        row = {n: i for i, n in enumerate(storm.names)}
        windows = []  # (metric row, first col, last col incl. slack, kind)
        for inc in storm.incidents:
            a = round((inc.start - storm.timestamps[0]) / STEP) - storm.history_steps
            b = round((inc.end - storm.timestamps[0]) / STEP) - storm.history_steps
            for mname in inc.members:
                windows.append((row[mname], max(a, 0), min(b + SLACK, len(cols) - 1), inc.kind))
        for name, det in strategies().items():
            t = time.perf_counter()
            s = score_matrix(det, storm.values, cols)
            took = time.perf_counter() - t
            hot = s >= THRESHOLD
            onset = hot & ~np.concatenate([np.zeros((hot.shape[0], 1), bool), hot[:, :-1]], axis=1)
            inside = np.zeros_like(hot)
            for r, a, b, _ in windows:
                inside[r, max(a - SLACK, 0) : b + 1] = True
            rec = table.setdefault(
                name,
                {
                    "found": {k: 0 for k in KINDS},
                    "members": {k: 0 for k in KINDS},
                    "tp_onsets": 0,
                    "onsets": 0,
                    "reward": 0.0,
                    "fp": 0,
                    "n": 0,
                    "seconds": 0.0,
                },
            )
            for r, a, b, kind in windows:
                rec["members"][kind] += 1
                rec["n"] += 1
                hits = np.flatnonzero(hot[r, a : b + 1])
                if len(hits):
                    rec["found"][kind] += 1
                    rec["reward"] += 1.0 - 0.5 * hits[0] / max(b - a + 1, 1)
            rec["onsets"] += int(onset.sum())
            rec["tp_onsets"] += int((onset & inside).sum())
            rec["fp"] += int((onset & ~inside).sum())
            rec["seconds"] += took
    out = {}
    for name, rec in table.items():
        members = sum(rec["members"].values())
        out[name] = {
            "recall": round(sum(rec["found"].values()) / max(members, 1), 3),
            "precision": round(rec["tp_onsets"] / max(rec["onsets"], 1), 3),
            "event_score": round((rec["reward"] - FP_COST * rec["fp"]) / max(rec["n"], 1), 3),
            "false_onsets": rec["fp"],
            "recall_by_kind": {k: round(rec["found"][k] / rec["members"][k], 3) for k in KINDS if rec["members"][k]},
            "seconds": round(rec["seconds"], 1),
        }
    return out


def throughput(n_metrics: int, points: int, det: Detector, repeats: int = 2) -> float:
    rng = np.random.default_rng(0)
    w = 100.0 + rng.normal(0, 1, (n_metrics, points))
    w[rng.random(w.shape) < 0.003] = np.nan
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for lo in range(0, n_metrics, 20_000):
            det.score(w[lo : lo + 20_000])
        best = min(best, time.perf_counter() - t)
    return n_metrics / best


def season_throughput(n_metrics: int, det: Ensemble, repeats: int = 2) -> float:
    """Metric-windows a second of the 60-second default with two earlier days of 5-minute means
    (the coarse seasonal history every metric has after two days: the steady state)."""
    season = det.season
    assert season is not None
    rng = np.random.default_rng(1)
    end_slot = 10_000 * season.factor - 1
    w = 100.0 + rng.normal(0, 1, (n_metrics, det.history + 1))
    segs = [100.0 + rng.normal(0, 0.5, (n_metrics, count)) for _, count in season.spans(end_slot)]
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for lo in range(0, n_metrics, 20_000):
            det.score_season(w[lo : lo + 20_000], [g[lo : lo + 20_000] for g in segs], end_slot)
        best = min(best, time.perf_counter() - t)
    return n_metrics / best


def ks_section(quick: bool) -> dict[str, Any] | None:
    path = ROOT / "bench" / "ks_section.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("ks_section", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    result: dict[str, Any] = mod.run(quick)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="two seeds, 400 metrics, 20,000-metric throughput")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    seeds = [0, 1] if args.quick else [0, 1, 2]
    q = quality(seeds, 400 if args.quick else 1000)
    n_tp = 20_000 if args.quick else 100_000
    default60 = detectors.default_detector(60, max_points=480)
    assert isinstance(default60, Ensemble)
    mw = season_throughput(n_tp, default60)
    new_metrics = throughput(n_tp, default60.history + 1, default60)
    baseline = throughput(n_tp, 240, detectors.RobustZScore())
    seasonal = throughput(4_000 if args.quick else 20_000, 723, detectors.default_detector(STEP), repeats=1)
    result: dict[str, Any] = {
        "seeds": seeds,
        "quality": q,
        "metric_windows_per_s": round(mw),
        "no_season_history_metric_windows_per_s": round(new_metrics),
        "robust_z_metric_windows_per_s": round(baseline),
        "seasonal_ensemble_metric_windows_per_s": round(seasonal),
        "throughput_metrics": n_tp,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    ks = ks_section(args.quick)
    if ks is not None:
        result["ks"] = ks
        for key in ("ks_speedup", "ks_vs_sort_floor", "ks_max_pvalue_diff"):
            if key in ks:
                result[key] = ks[key]
    else:
        result.update({"ks_speedup": None, "ks_vs_sort_floor": None, "ks_max_pvalue_diff": None})
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(width=170)
    tab = Table(title=f"Detection on simulated storms (seeds {seeds}, 5-minute step, threshold {THRESHOLD})")
    for col in ("strategy", "recall", "precision", "event score", "false onsets", *KINDS, "s"):
        tab.add_column(col, justify="left" if col == "strategy" else "right")
    for name, r in sorted(q.items(), key=lambda kv: -kv[1]["event_score"]):
        tab.add_row(
            name,
            f"{r['recall']:.3f}",
            f"{r['precision']:.3f}",
            f"{r['event_score']:.3f}",
            str(r["false_onsets"]),
            *(f"{r['recall_by_kind'].get(k, float('nan')):.2f}" for k in KINDS),
            f"{r['seconds']:.1f}",
        )
    con.print(tab)
    con.print(
        f"throughput, default detector at 60 s (241-point windows, two days of 5-minute means), {n_tp:,} metrics: "
        f"{mw:,.0f} metric-windows/s (target 20,000; before two days are kept {new_metrics:,.0f}/s; robust z "
        f"alone {baseline:,.0f}/s); seasonal ensemble at 5 minutes (723 points): {seasonal:,.0f}/s; "
        f"peak RSS {result['peak_rss_mb']} MB"
    )
    if ks is not None:
        con.print(f"KS section: {json.dumps(ks)}")


if __name__ == "__main__":
    main()
