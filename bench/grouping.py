"""Grouping bench: quality on simulated storms, incidents across ticks, and grouping at scale.

    python bench/grouping.py [--quick] [--json] [--seeds N] [--no-scale]

1. **Quality** on simulator storms (3,000 metrics, 8 incidents of up to 150 members, few
   singletons) at default settings: the full pipeline (detection + grouping), with an ablation
   that regroups the same detected anomalies with names only, shapes only, and neither
   (time only: every concurrent anomaly in one incident: the baseline). Each storm also holds a
   microservice estate with 4 cascades (sim/simulator.py); their figures are reported on
   their own (``cascade_f1``: pairwise F1 over the estate's anomalies, docs/quality.md). The figures are
   incident-level: pairwise scores and compression count the anomalies that are in an incident
   (anomalies whose cluster never gathered the evidence to open one stay anomalies and page
   nobody); the detected anomalies and the true incidents paged are shown
   beside them, so what the evidence rule leaves out (docs/grouping.md) is visible.
2. **Across ticks**: the live, tick-by-tick grouping against the whole storm grouped at once
   (:func:`grouping.offline.group_all`) on the same anomalies; and incident-id churn: members
   whose incident changed other than by a recorded merge.
3. **Scale**: 10,000 concurrent anomalies drawn from 1,000,000 metric names grouped in one
   tick (detection excluded), against the exact all-pairs candidate search in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stormeye.detectors.events import Anomaly
from stormeye.grouping.evaluation import pairwise_scores
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import IncidentTracker
from stormeye.grouping.names import NameIndex
from stormeye.grouping.offline import group_all
from stormeye.sim.quality import evaluate_storm
from stormeye.sim.simulator import Storm, simulate_storm
from stormeye.workers.demo import run_storm
from stormeye.workers.settings import Settings

from common import MatrixWindows, Recorder, regroup

STORM = {"n_metrics": 3000, "n_incidents": 8, "max_members": 150, "singleton_rate": 0.5, "cascades": 4}
ABLATION = {
    "names + shapes (default)": {},
    "names only": {"use_shapes": False},
    "shapes only": {"use_names": False},
    "time only (baseline)": {"use_names": False, "use_shapes": False},
}


def truth_compression(storm: Storm) -> float:
    return sum(len(i.members) for i in storm.incidents) / len(storm.incidents)


def quality(seeds: list[int], settings: Settings) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ABLATION}
    ticks: list[dict[str, Any]] = []
    ceilings = []
    for seed in seeds:
        storm = simulate_storm(seed=seed, step=settings.step_s, **STORM)  # type: ignore[arg-type]
        ceilings.append(truth_compression(storm))
        pipe = Recorder(settings)
        run_storm(storm, settings, pipeline=pipe)
        live = pipe.incident_list()
        win = MatrixWindows(storm.names, storm.timestamps, storm.values)
        detected = len({a.key for _, snaps in pipe.stream for a in snaps})
        every = pipe.anomaly_list()
        rows["names + shapes (default)"].append(evaluate_storm(storm, live, anomalies=every) | {"detected": detected})
        for label, change in ABLATION.items():
            if change:
                cfg = replace(settings.grouping_config(), **change)
                regrouped = regroup(storm.names, win, pipe.stream, cfg, settings, storm.step)
                rows[label].append(evaluate_storm(storm, regrouped, anomalies=every) | {"detected": detected})
        ticks.append(across_ticks(storm, pipe, settings))
    keys = (
        "pairwise_f1",
        "pairwise_precision",
        "pairwise_recall",
        "ari",
        "compression",
        "incidents",
        "anomalies",
        "detected",
        "incidents_found",
        "true_incidents",
        "multi_metric_incidents_found",
        "true_multi_metric_incidents",
        "single_metric_incidents_found",
        "detection_precision",
        "detection_recall",
        "detector_precision",
        "detector_recall",
        "other_pairwise_f1",
        "other_ari",
        "cascade_pairwise_f1",
        "cascade_pairwise_precision",
        "cascade_pairwise_recall",
        "cascade_ari",
        "cascade_incidents_true",
        "cascade_incidents_pred",
        "cascade_one_incident",
        "cascade_root_hit",
        "cascade_detection_recall",
    )
    table = {
        label: {k: round(float(np.mean([r[k] for r in rs])), 4) for k in keys}
        | {"pairwise_f1_min": round(float(min(r["pairwise_f1"] for r in rs)), 4)}
        | {"pairwise_f1_per_seed": [r["pairwise_f1"] for r in rs], "ari_per_seed": [r["ari"] for r in rs]}
        | {"cascade_f1_per_seed": [r["cascade_pairwise_f1"] for r in rs]}
        for label, rs in rows.items()
    }
    return {"table": table, "truth_compression": round(float(np.mean(ceilings)), 2), "ticks": ticks}


def across_ticks(storm: Storm, pipe: Recorder, settings: Settings) -> dict[str, Any]:
    live = pipe.incident_list()
    members = [(m, inc["id"]) for inc in live for m in inc["members"]]
    spans = [type("S", (), {"metric": m["metric"], "start": m["start"], "end": m["end"]})() for m, _ in members]
    win = MatrixWindows(storm.names, storm.timestamps, storm.values)
    index = NameIndex()
    index.add(storm.names)
    groups = group_all(
        spans, index, lambda ms, end: win.at(end, settings.shape_points)(ms), settings.grouping_config(), storm.step
    )
    at_once = np.empty(len(spans), dtype=np.int64)
    for k, g in enumerate(groups):
        at_once[g] = k
    agree = pairwise_scores([iid for _, iid in members], list(at_once))
    truth = evaluate_storm(
        storm,
        [
            {
                "id": f"g{k}",
                "members": [{"metric": spans[i].metric, "start": spans[i].start, "end": spans[i].end} for i in g],
            }
            for k, g in enumerate(groups)
        ],
    )
    final = {(m["metric"], m["start"]): iid for m, iid in members}
    churn = sum(
        1 for key, first in pipe.first_incident.items() if key in final and pipe.incidents._current(first) != final[key]
    )
    merges = sum(1 for inc in pipe.incidents.incidents.values() if inc.status == "merged")
    return {
        "ari_live_vs_at_once": round(agree.ari, 4),
        "f1_live_vs_at_once": round(agree.f1, 4),
        "at_once_pairwise_f1": truth["pairwise_f1"],
        "live_incidents": len(live),
        "at_once_incidents": len(groups),
        "id_churn": churn,
        "merges": merges,
    }


def synthetic_names(n: int, rng: np.random.Generator) -> list[str]:
    """A million realistic names: infra (service/region/host/metric) and business (what/country/...)."""
    from stormeye.sim.simulator import BUSINESS_WHAT, COUNTRIES, DEVICES, INFRA_METRICS, PRODUCTS, REGIONS

    n_infra = n * 6 // 10
    metrics, whats = list(INFRA_METRICS), list(BUSINESS_WHAT)
    names = []
    hosts_per_service = 60
    for i in range(n_infra):
        m = metrics[i % len(metrics)]
        h = i // len(metrics)
        svc = h // hosts_per_service
        names.append(f'{m}{{host="s{svc}-h{h % hosts_per_service}",region="{REGIONS[svc % 4]}",service="s{svc}"}}')
    stores = max(1, (n - n_infra) // (len(whats) * len(COUNTRIES) * len(DEVICES) * len(PRODUCTS)) + 1)
    k = 0
    while len(names) < n:
        w, c, d = whats[k % len(whats)], COUNTRIES[(k // 8) % 15], DEVICES[(k // 120) % 3]
        p, st = PRODUCTS[(k // 360) % 10], (k // 3600) % stores
        names.append(f'{w}{{country="{c}",device="{d}",product="{p}",store="st{st}"}}')
        k += 1
    return names


@dataclass
class Scenario:
    """A storm at scale: a name index, one tick's anomalies, their windows and the true grouping."""

    names: list[str]
    index: NameIndex
    anomalies: list[Anomaly]
    shapes: dict[str, np.ndarray]
    truth: dict[str, str]
    build_s: float

    def windows(self, metrics: Sequence[str]) -> np.ndarray:
        return np.vstack([self.shapes[m] for m in metrics])


def scenario(n_names: int, n_anomalies: int) -> Scenario:
    """20 incidents (a service, or a country+product) of ~4% of the anomalies each, plus noise."""
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    names = synthetic_names(n_names, rng)
    index = NameIndex()
    index.add(names)
    build_s = time.perf_counter() - t0
    picked: list[tuple[int, int]] = []
    per = n_anomalies * 4 // 100
    n_infra = n_names * 6 // 10
    business = np.arange(n_infra, n_names)
    b_code = business - n_infra
    for k in range(20):
        if k % 2 == 0:  # a service: anomalies on its hosts
            svc_hosts = np.arange(k * 60 * 8, (k * 60 + 60) * 8)
            members = rng.choice(svc_hosts[svc_hosts < n_infra], size=per, replace=False)
        else:  # a country and a product: anomalies across measures, devices and stores
            country, product = (k // 2 + 3) % 15, (k // 2) % 10  # each incident its own country and product
            scope = business[((b_code // 8) % 15 == country) & ((b_code // 360) % 10 == product)]
            members = rng.choice(scope, size=min(per, len(scope)), replace=False)
        picked += [(int(i), k) for i in members]
    used = {i for i, _ in picked}
    noise = [int(i) for i in rng.choice(n_names, n_anomalies - len(picked) + 100, replace=False) if int(i) not in used]
    picked += [(i, -1) for i in noise[: n_anomalies - len(picked)]]
    points = 60
    shapes = {}
    starts = {}
    for i, k in picked:
        x = rng.normal(0, 1, points)
        onset = 45 + (k % 5) + int(rng.integers(0, 3)) if k >= 0 else int(rng.integers(5, 58))
        x[onset:] += 8.0 * (1 if k % 3 else -1)
        shapes[names[i]] = x
        starts[names[i]] = 1_000_000.0 + 60.0 * (onset - points + 1)
    anomalies = [Anomaly(names[i], starts[names[i]], starts[names[i]], 0.8, starts[names[i]], 1) for i, _ in picked]
    truth = {names[i]: (f"t{k}" if k >= 0 else f"noise{i}") for i, k in picked}
    return Scenario(names, index, anomalies, shapes, truth, build_s)


def group_once(sc: Scenario, cfg: GroupingConfig) -> tuple[float, float, IncidentTracker]:
    """One tick of the scenario through a fresh tracker: (wall seconds, CPU seconds, tracker)."""
    tracker = IncidentTracker(sc.index, cfg)
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    tracker.update(1_000_000.0, sc.anomalies, sc.windows)
    return time.perf_counter() - t, time.process_time() - c, tracker


def scale(n_names: int, n_anomalies: int, with_baseline: bool, repeats: int = 3) -> dict[str, Any]:
    """The scenario grouped ``repeats`` times (the machine is shared: the median is reported, and
    the minimum and CPU time beside it), against the exact all-pairs search once."""
    sc = scenario(n_names, n_anomalies)
    rss_index = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict[str, Any] = {
        "names": n_names,
        "anomalies": len(sc.anomalies),
        "index_build_s": round(sc.build_s, 2),
        "rss_after_index_mb": round(rss_index, 1),
    }
    runs = [("blocked", GroupingConfig(), repeats)]
    if with_baseline:
        runs.append(("exact all-pairs (baseline)", GroupingConfig(exact_limit=10**9), 1))
    for label, cfg, times in runs:
        walls, cpus = [], []
        for _ in range(times):
            took, cpu, tracker = group_once(sc, cfg)
            walls.append(took)
            cpus.append(cpu)
        pred = {m.metric: inc.id for inc in tracker.open_incidents() for m in inc.members.values()}
        # an anomaly still waiting for evidence (the evidence rule) is a group of its own
        labels = [pred.get(a.metric, f"waiting:{a.metric}") for a in sc.anomalies]
        pw = pairwise_scores(labels, [sc.truth[a.metric] for a in sc.anomalies])
        out[label] = {
            "seconds": round(float(np.median(walls)), 3),
            "seconds_min": round(min(walls), 3),
            "cpu_seconds": round(float(np.median(cpus)), 3),
            "runs": len(walls),
            "incidents": len(tracker.open_incidents()),
            "waiting": len(tracker.pending()),
            "edges": len(tracker.last_edges) if tracker.last_edges is not None else 0,
            "pairwise_f1": round(pw.f1, 4),
            "pairwise_precision": round(pw.precision, 4),
            "pairwise_recall": round(pw.recall, 4),
        }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes: runs in about a minute")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--seeds", type=int, default=None, help="number of storm seeds (default 5, quick 1)")
    ap.add_argument("--no-scale", action="store_true", help="quality and ticks only: skip the scale part")
    args = ap.parse_args()
    seeds = list(range(args.seeds or (1 if args.quick else 5)))
    settings = Settings(database_url="sqlite://")
    t = time.perf_counter()
    q = quality(seeds, settings)
    sc = (
        None
        if args.no_scale
        else scale(200_000 if args.quick else 1_000_000, 4_000 if args.quick else 10_000, with_baseline=not args.quick)
    )
    d = q["table"]["names + shapes (default)"]
    result = {
        "seeds": seeds,
        "storm": STORM,
        "pairwise_f1": d["pairwise_f1"],
        "pairwise_f1_min": d["pairwise_f1_min"],
        "pairwise_f1_per_seed": d["pairwise_f1_per_seed"],
        "compression": d["compression"],
        "paged_anomalies": d["anomalies"],
        "detected_anomalies": d["detected"],
        "detected_anomalies_per_incident": round(d["detected"] / d["incidents"], 3) if d["incidents"] else 0.0,
        "ari": d["ari"],
        "true_incidents_paged": d["incidents_found"],
        "true_multi_metric_incidents_paged": d["multi_metric_incidents_found"],
        "true_single_metric_incidents_paged": d["single_metric_incidents_found"],
        "true_incidents": d["true_incidents"],
        "detection_precision": d["detection_precision"],
        "detection_recall": d["detection_recall"],
        "detector_precision": d["detector_precision"],
        "detector_recall": d["detector_recall"],
        "truth_compression": q["truth_compression"],
        "other_pairwise_f1": d["other_pairwise_f1"],
        "cascade_f1": d["cascade_pairwise_f1"],
        "cascade_f1_per_seed": d["cascade_f1_per_seed"],
        "cascade_ari": d["cascade_ari"],
        "cascade_incidents_true": d["cascade_incidents_true"],
        "cascade_incidents_pred": d["cascade_incidents_pred"],
        "cascade_one_incident": d["cascade_one_incident"],
        "cascade_root_hit": d["cascade_root_hit"],
        "cascade_detection_recall": d["cascade_detection_recall"],
        "ablation": q["table"],
        "ticks": q["ticks"],
        "scale": sc,
        "storm_10k_s": sc["blocked"]["seconds"] if sc else None,
        "peak_rss_mb": sc["peak_rss_mb"] if sc else None,
        "bench_seconds": round(time.perf_counter() - t, 1),
    }
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    tab = Table(
        title=f"grouping quality, {len(seeds)} seed(s), storm {STORM} "
        f"(true anomalies per incident: {q['truth_compression']})"
    )
    for col in (
        "configuration",
        "pairwise F1 (min)",
        "P",
        "R",
        "ARI",
        "compression",
        "incidents",
        "paged / detected anomalies",
        "true incidents paged (multi, single)",
        "detect P",
        "detect R",
        "detector P / R",
    ):
        tab.add_column(col, justify="right" if col != "configuration" else "left")
    for label, r in q["table"].items():
        tab.add_row(
            label,
            f"{r['pairwise_f1']:.3f} ({r['pairwise_f1_min']:.3f})",
            f"{r['pairwise_precision']:.3f}",
            f"{r['pairwise_recall']:.3f}",
            f"{r['ari']:.3f}",
            f"{r['compression']:.1f}",
            f"{r['incidents']:.0f}",
            f"{r['anomalies']:.0f} / {r['detected']:.0f}",
            f"{r['incidents_found']:.1f} / {r['true_incidents']:.1f} ({r['multi_metric_incidents_found']:.1f} / "
            f"{r['true_multi_metric_incidents']:.1f}, {r['single_metric_incidents_found']:.1f} / "
            f"{r['true_incidents'] - r['true_multi_metric_incidents']:.1f})",
            f"{r['detection_precision']:.3f}",
            f"{r['detection_recall']:.3f}",
            f"{r['detector_precision']:.3f} / {r['detector_recall']:.3f}",
        )
    con.print(tab)
    ct = Table(title="cascades alone (the estate's anomalies; means over seeds)")
    for col in (
        "configuration",
        "cascade F1 (per seed)",
        "P",
        "R",
        "ARI",
        "cascades / incidents holding them",
        "found as one",
        "root hit",
        "detect R",
        "F1 of the rest",
    ):
        ct.add_column(col, justify="right" if col != "configuration" else "left")
    for label, r in q["table"].items():
        ct.add_row(
            label,
            f"{r['cascade_pairwise_f1']:.3f} ({', '.join(f'{v:.2f}' for v in r['cascade_f1_per_seed'])})",
            f"{r['cascade_pairwise_precision']:.3f}",
            f"{r['cascade_pairwise_recall']:.3f}",
            f"{r['cascade_ari']:.3f}",
            f"{r['cascade_incidents_true']:.1f} / {r['cascade_incidents_pred']:.1f}",
            f"{r['cascade_one_incident']:.1f}",
            f"{r['cascade_root_hit']:.1f}",
            f"{r['cascade_detection_recall']:.3f}",
            f"{r['other_pairwise_f1']:.3f}",
        )
    con.print(ct)
    tt = Table(title="live (tick by tick) vs the whole storm at once, same anomalies")
    per_seed = q["table"]["names + shapes (default)"]
    for col in (
        "seed",
        "live F1 vs truth",
        "live ARI vs truth",
        "ARI live~at once",
        "live incidents",
        "at-once incidents",
        "at-once F1 vs truth",
        "id churn",
        "merges",
    ):
        tt.add_column(col, justify="right")
    for k, (seed, r) in enumerate(zip(seeds, q["ticks"])):
        tt.add_row(
            str(seed),
            f"{per_seed['pairwise_f1_per_seed'][k]:.3f}",
            f"{per_seed['ari_per_seed'][k]:.3f}",
            f"{r['ari_live_vs_at_once']:.3f}",
            str(r["live_incidents"]),
            str(r["at_once_incidents"]),
            f"{r['at_once_pairwise_f1']:.3f}",
            str(r["id_churn"]),
            str(r["merges"]),
        )
    con.print(tt)
    if sc is None:
        con.print(f"bench took {result['bench_seconds']} s (scale part skipped)")
        return
    st = Table(title=f"scale: {sc['anomalies']:,} concurrent anomalies among {sc['names']:,} metrics, one tick")
    cols = ("candidate search", "s (median)", "min", "CPU s", "runs", "incidents", "edges", "pairwise F1", "P", "R")
    for col in cols:
        st.add_column(col, justify="right")
    for label in ("blocked", "exact all-pairs (baseline)"):
        if label in sc:
            r = sc[label]
            st.add_row(
                label,
                f"{r['seconds']:.2f}",
                f"{r['seconds_min']:.2f}",
                f"{r['cpu_seconds']:.2f}",
                str(r["runs"]),
                str(r["incidents"]),
                str(r["edges"]),
                f"{r['pairwise_f1']:.3f}",
                f"{r['pairwise_precision']:.3f}",
                f"{r['pairwise_recall']:.3f}",
            )
    con.print(st)
    con.print(
        f"index of {sc['names']:,} names built in {sc['index_build_s']} s; peak RSS {sc['peak_rss_mb']} MB "
        f"(after the index: {sc['rss_after_index_mb']} MB); bench took {result['bench_seconds']} s"
    )


if __name__ == "__main__":
    main()
