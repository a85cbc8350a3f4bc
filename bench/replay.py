"""Replay bench (issue 33): `stormeye ingest`'s replay, many steps at once against one at a time.

    python bench/replay.py [--quick] [--json]

Three histories are replayed through the embedded pipeline (default settings at their step, as
`stormeye ingest` runs them), once by blocks of steps (``replay(..., block=True)``, the default)
and once step by step (``block=False``, the reference):

- **one metric for a year at 1-minute steps** (``one_metric_``): synthesised, a daily and a weekly
  cycle, noise, and a few anomalies (spikes, a level shift, a drop, a ramp). The step-by-step
  replay of a year would take over an hour, so it is measured on the first days (a *slice*,
  ``one_metric_slice_steps``; two earlier days are needed before the seasonal history is read,
  so the slice covers both regimes), its points per second extrapolated as the step-by-step
  figure; ``identical`` compares the incidents and anomalies of both replays *of that slice*.
  ``--quick``: 30 days, a 3-day slice.
- **SMD machine-1** (``smd_``; every ``machine-1-*`` server in /work/shared/data/smd, seven of
  them, built with the shipped tool as bench/realdata.py does: a day of history and seven test
  days, 1-minute step, about 230 metrics), when present;
  both replays over the whole of it (``--quick``: its first three days).
- **the simulator's storm** (``storm_``; seed 0, two days of history so the seasonal history is
  read): both replays whole (``--quick``: fewer metrics).

The block replay scores ahead in two forked processes when it can (``workers.ingest.BlockPrefetch``;
``{case}_prefetched_blocks`` says how many blocks came from them; the step-by-step reference runs
in one process). Each case: points, seconds and points per second of both replays, the speed-up, and whether the
incidents (every field, merged ones included) and the anomalies are identical (``_compared_``:
how many of each the comparison covered). Then
``score_series_points_per_s``: :func:`detectors.score_series` over one series (a week at
1-minute steps) with the default detector.
``peak_rss_mb`` / ``scorer_peak_rss_mb``: the peak resident memory of this process and of the
largest scoring process (a forked copy: the pages it shares with this one count in both).
Targets (issue 33): one_metric >= 20,000 points/s, smd >= 100,000, score_series >= 100,000,
identical everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from stormeye.detectors import score_series
from stormeye.sim.simulator import simulate_storm
from stormeye.workers.ingest import PointBatch, infer_step, read_points, replay
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

T0 = 1767225600  # 2026-01-01 00:00 UTC
DAY = 1440  # one-minute steps a day


def one_metric(days: int, seed: int = 0) -> PointBatch:
    """One KPI at 1-minute steps: daily and weekly cycles, noise, and a few anomalies."""
    rng = np.random.default_rng(seed)
    n = days * DAY
    t = np.arange(n)
    x = 200 + 60 * np.sin(2 * np.pi * t / DAY) + 15 * np.sin(2 * np.pi * t / (7 * DAY)) + rng.normal(0, 4, n)
    # two inside the first three days (the step-by-step slice compares them), the rest anywhere
    ats = [2 * DAY + 400, 2 * DAY + 1000, *rng.choice(np.arange(2 * DAY + 300, n - 200), size=max(4, days // 10))]
    for k, at in enumerate(ats):
        kind = k % 4
        if kind == 0:
            x[at] += 80  # a spike
        elif kind == 1:
            x[at : at + 120] += 50  # a level shift for two hours
        elif kind == 2:
            x[at : at + 30] -= 120  # a drop for half an hour
        else:
            x[at : at + 90] += np.linspace(0, 90, 90)  # a ramp
    b = PointBatch()
    b.names = ['requests_per_s{service="checkout"}'] * n
    b.timestamps = (T0 + 60.0 * t).tolist()
    b.values = np.round(x, 3).tolist()
    return b


def storm_batch(n_metrics: int) -> PointBatch:
    storm = simulate_storm(seed=0, n_metrics=n_metrics, n_incidents=6, step=60, history_steps=2 * DAY + 120)
    r, c = np.nonzero(np.isfinite(storm.values.T))
    b = PointBatch()
    b.names = [storm.names[i] for i in c]
    b.timestamps = storm.timestamps[r].astype(float).tolist()
    b.values = storm.values[c, r].tolist()
    return b


def smd_batch(days: int | None) -> PointBatch | None:
    import realdata

    if not realdata.SMD_DIR.exists():
        return None
    out = realdata.build_smd(realdata.load_tool("smd"), realdata.SMD_DIR, "")  # every machine-1-* shared
    b = read_points(out / "smd.csv")
    if days is None:
        return b
    names, ts, vals = b.arrays()
    keep = ts < ts.min() + days * 86400
    return PointBatch(
        names=[n for n, k in zip(names, keep) if k], timestamps=ts[keep].tolist(), values=vals[keep].tolist()
    )


def head(batch: PointBatch, steps: int) -> PointBatch:
    names, ts, vals = batch.arrays()
    keep = ts < ts.min() + steps * 60
    return PointBatch(
        names=[n for n, k in zip(names, keep) if k], timestamps=ts[keep].tolist(), values=vals[keep].tolist()
    )


def run(batch: PointBatch, block: bool) -> tuple[float, list[Any], list[Any], int]:
    """Seconds, incidents, anomalies, and blocks the processes scoring ahead gave (``ReplayResult.prefetched``)."""
    names, ts, _ = batch.arrays()
    pipe = Pipeline(Settings(database_url="sqlite://", step_s=infer_step(names, ts)), keep_archive=True)
    t = time.perf_counter()
    res = replay(pipe, batch, block=block)
    took = time.perf_counter() - t
    return took, pipe.incident_list(include_merged=True), pipe.anomaly_list(), res.prefetched


def case(key: str, batch: PointBatch, slice_steps: int | None = None) -> dict[str, Any]:
    """Block replay of ``batch``; step-by-step replay of it (or of its first ``slice_steps``), and the check."""
    took, incidents, anomalies, prefetched = run(batch, block=True)
    out: dict[str, Any] = {
        f"{key}_points": len(batch),
        f"{key}_seconds": round(took, 2),
        f"{key}_points_per_s": round(len(batch) / took),
        f"{key}_prefetched_blocks": prefetched,
        f"{key}_incidents": len(incidents),
        f"{key}_anomalies": len(anomalies),
    }
    ref = batch if slice_steps is None else head(batch, slice_steps)
    if slice_steps is not None:
        b_took, incidents, anomalies, _ = run(ref, block=True)
        out[f"{key}_slice_steps"] = slice_steps
        out[f"{key}_slice_block_points_per_s"] = round(len(ref) / b_took)
    s_took, s_incidents, s_anomalies, _ = run(ref, block=False)
    out[f"{key}_step_by_step_points_per_s"] = round(len(ref) / s_took)
    out[f"{key}_step_by_step_measured_on"] = (
        "the whole history" if slice_steps is None else f"the first {slice_steps} steps"
    )
    out[f"{key}_speedup"] = round(out[f"{key}_points_per_s"] / out[f"{key}_step_by_step_points_per_s"], 1)
    out[f"{key}_identical"] = incidents == s_incidents and anomalies == s_anomalies
    out[f"{key}_compared_incidents"] = len(s_incidents)
    out[f"{key}_compared_anomalies"] = len(s_anomalies)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="30 days of one metric, 3 days of SMD, a smaller storm")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args()
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    # other work on the machine slows every figure (both replays alike): say how busy it was
    res: dict[str, Any] = {"quick": args.quick, "load_average_at_start": round(os.getloadavg()[0], 2)}
    say("one metric ...")
    res.update(
        case("one_metric", one_metric(30 if args.quick else 365), slice_steps=3 * DAY if args.quick else 4 * DAY)
    )
    say(res)
    smd = smd_batch(3 if args.quick else None)
    if smd is None:
        res["smd_skipped"] = "no /work/shared/data/smd"
    else:
        say("SMD machine-1 ...")
        res.update(case("smd", smd))
        say(res)
    say("storm ...")
    res.update(case("storm", storm_batch(60 if args.quick else 300)))
    n = 7 * DAY
    x = one_metric(7, seed=1).arrays()[2]
    t = time.perf_counter()
    score_series(x)
    res["score_series_points"] = n
    res["score_series_points_per_s"] = round(n / (time.perf_counter() - t))
    res["load_average_at_end"] = round(os.getloadavg()[0], 2)
    # peak resident memory (Linux reports kB): this process over the whole run, and the largest of
    # the processes that scored blocks ahead (forked copies of it, sharing its pages until written)
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    res["scorer_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    res["identical"] = all(v for k, v in res.items() if k.endswith("_identical"))
    res["targets"] = {
        "one_metric_points_per_s>=20000": res["one_metric_points_per_s"] >= 20_000,
        "smd_points_per_s>=100000": res.get("smd_points_per_s", 0) >= 100_000,
        "score_series_points_per_s>=100000": res["score_series_points_per_s"] >= 100_000,
        "identical": res["identical"],
    }
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:48s} {v}")


if __name__ == "__main__":
    main()
