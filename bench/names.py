"""Bench: name similarity over a million metric names (IDF vectors + random-projection LSH).

    python bench/names.py                 # 1,000,000 names, readable table
    python bench/names.py --quick         # 100,000 names, under a minute
    python bench/names.py --json          # one JSON object
    python bench/names.py --metrics 300000 --workers 2

What it measures, all in one run:

- build: parsing and indexing the names (``add``) and hashing them into the LSH (``rebuild``),
  wall time and the process's peak RSS right after (names list included);
- one ``neighbours`` query per sampled metric: latency, how many candidates the LSH bands
  proposed and how many of those passed the Hamming filter to the exact cosine;
- a random sample (20,000 names): every pair with cosine >= 0.6 found by brute force (exact
  sparse products, the baseline, timed) against the pairs LSH finds: recall, and the share of
  all sample pairs that reach the exact cosine (``compared_fraction``, what the target
  "exactly compared pairs <= 0.1%" refers to) next to the share the bands proposed before the
  filter (``lsh_candidate_fraction``);
- the whole index: an upper bound on the share of all pairs the LSH buckets would propose
  (before the filter);
- ``similar_pairs`` over 10,000 names drawn from the index;
- IDF drift: recall when the second half of the names is hashed with the IDF frozen over the
  first half (a shuffled stream, and a stream whose second half is a family never seen before).

Names come from the storm simulator's vocabularies (``sim/simulator.py``): business
metrics ``purchase_count{country,device,os,product,store}`` and infrastructure metrics
``cpu_usage{host,region,service}``. The simulator makes at most 6,510 distinct business names,
so business names here add a store (a few thousand, Zipf-distributed inside each country), and
hosts per service follow a Zipf law as in the simulator. Both families are shuffled together.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import resource
import sys
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from stormeye.grouping.names import NameIndex
from stormeye.sim.simulator import (
    BUSINESS_WHAT,
    COUNTRIES,
    DEVICES,
    INFRA_METRICS,
    OSES,
    PRODUCTS,
    REGIONS,
    SERVICES,
)

TARGETS = {
    "build_s": ("<=", 60.0),
    "peak_rss_mb": ("<=", 4096.0),
    "recall": (">=", 0.95),
    "compared_fraction": ("<=", 0.001),
    "query_ms_p50": ("<=", 10.0),
}
THRESHOLD = 0.6
RECALL = 0.95


def _zipf_weights(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return w / w.sum()


def business_names(n: int, rng: np.random.Generator, stores: int = 2500) -> list[str]:
    """``n`` distinct business names: simulator measures, countries, devices, products, plus a store."""
    whats = list(BUSINESS_WHAT)
    devos = [(d, o) for d in DEVICES for o in OSES[d]]
    p_country = _zipf_weights(len(COUNTRIES), 1.1)
    p_product = _zipf_weights(len(PRODUCTS), 0.8)
    per_country = np.maximum(3, np.round(p_country * stores)).astype(int)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        m = 2 * (n - len(out)) + 16
        w = rng.integers(len(whats), size=m)
        c = rng.choice(len(COUNTRIES), size=m, p=p_country)
        d = rng.integers(len(devos), size=m)
        p = rng.choice(len(PRODUCTS), size=m, p=p_product)
        s = (rng.zipf(1.3, size=m) - 1) % per_country[c]
        for wi, ci, di, pi, si in zip(w.tolist(), c.tolist(), d.tolist(), p.tolist(), s.tolist()):
            what, country = whats[wi], COUNTRIES[ci]
            dev, os_ = devos[di]
            product = "" if what in ("signups", "page_views") else f',product="{PRODUCTS[pi]}"'
            name = (
                f'{what}{{country="{country}",device="{dev}",os="{os_}"{product},'
                f'store="{country[:2].lower()}-{si:04d}"}}'
            )
            if name not in seen:
                seen.add(name)
                out.append(name)
                if len(out) == n:
                    break
    return out


def infra_names(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` infrastructure names: every host of a service carries every simulator metric."""
    hosts = math.ceil(n / len(INFRA_METRICS))
    share = rng.zipf(1.6, size=len(SERVICES)).astype(float)
    per_service = np.maximum(1, np.round(share / share.sum() * hosts)).astype(int)
    out: list[str] = []
    for s_i, service in enumerate(SERVICES):
        region = REGIONS[s_i % len(REGIONS)]
        for h in range(int(per_service[s_i])):
            host = f"{service}-{region}-{h + 1}"
            out.extend(f'{m}{{host="{host}",region="{region}",service="{service}"}}' for m in INFRA_METRICS)
    return out[:n]


def generate(n: int, seed: int, business_share: float = 0.55) -> tuple[list[str], np.ndarray]:
    """Both families shuffled together; also returns which names are business ones."""
    rng = np.random.default_rng(seed)
    n_bus = round(n * business_share)
    names = business_names(n_bus, rng) + infra_names(n - n_bus, rng)
    is_business = np.arange(len(names)) < n_bus
    order = rng.permutation(len(names))
    return [names[i] for i in order], is_business[order]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pair_set(pairs: list[tuple[int, int, float]]) -> dict[tuple[int, int], float]:
    return {(i, j): s for i, j, s in pairs}


def prefix_filter_fraction(idx: NameIndex, sample: list[str]) -> float:
    """The alternative second stage, measured: the share of the sample's pairs an All-Pairs style
    prefix-filtering join at cosine 0.6 would verify exactly.

    Each unit vector's pairs are ordered rarest first; its prefix is the leading pairs until the
    norm of what is left drops below the threshold, so two names at cosine >= 0.6 share a pair of
    one's prefix. A join indexes prefixes and probes with whole vectors in the sample's order:
    pair ``(x, y)``, ``x`` before ``y``, is verified when ``y`` holds a pair of ``x``'s prefix.
    No further bounds (length, remaining score), so an upper bound on what a tuned join verifies.
    """
    vec = idx.vectors(sample)
    df = idx.doc_freq()
    rank = np.empty(len(df), dtype=np.int64)
    rank[np.argsort(df, kind="stable")] = np.arange(len(df))
    n = vec.shape[0]
    row = np.repeat(np.arange(n), np.diff(vec.indptr))
    order = np.lexsort((rank[vec.indices], row))
    cols, data = vec.indices[order], vec.data[order]
    sq = data * data
    csum = np.cumsum(sq)
    suffix = csum[vec.indptr[1:] - 1][row] - csum + sq  # squared norm from each pair to the row's end
    pref = np.sqrt(np.maximum(suffix, 0.0)) >= THRESHOLD - 1e-9
    prefix = sp.csr_matrix((np.ones(int(pref.sum())), (row[pref], cols[pref])), shape=vec.shape)
    full = sp.csr_matrix((np.ones(len(cols)), (row, cols)), shape=vec.shape)
    hits = sp.coo_matrix(prefix @ full.T)
    return int((hits.row < hits.col).sum()) / (n * (n - 1) / 2)


def sample_recall(idx: NameIndex, sample: list[str]) -> dict[str, Any]:
    """Brute force (the baseline) against LSH on one sample of names."""
    m = len(sample)
    t = time.perf_counter()
    exact = pair_set(idx.similar_pairs(sample, THRESHOLD, method="exact"))
    baseline_s = time.perf_counter() - t
    t = time.perf_counter()
    found = pair_set(idx.similar_pairs(sample, THRESHOLD, method="lsh"))
    lsh_s = time.perf_counter() - t
    ci, _ = idx.candidate_pairs(sample)
    li, _ = idx.candidate_pairs(sample, filtered=False)
    hit = [k for k in exact if k in found]
    sims = np.array(list(exact.values()))
    near = {k for k, s in exact.items() if s < THRESHOLD + 0.05}
    edges = [THRESHOLD, 0.7, 0.8, 0.9, 1.0 + 1e-9]
    by_band = []
    for lo, hi in itertools.pairwise(edges):
        band = [k for k, s in exact.items() if lo - 1e-12 <= s < hi]
        if band:
            by_band.append([round(lo, 2), len(band), sum(1 for k in band if k in found) / len(band)])
    return {
        "pairs_true": len(exact),
        "pairs_found": len(found),
        "recall": len(hit) / len(exact) if exact else 1.0,
        "recall_near_threshold": (sum(1 for k in near if k in found) / len(near)) if near else None,
        "pairs_near_threshold": len(near),
        "false_found": sum(1 for k in found if k not in exact),
        "compared_pairs": len(ci),
        "compared_fraction": len(ci) / (m * (m - 1) / 2),
        "lsh_candidate_pairs": len(li),
        "lsh_candidate_fraction": len(li) / (m * (m - 1) / 2),
        "true_fraction": len(exact) / (m * (m - 1) / 2),
        "baseline_s": baseline_s,
        "sample_lsh_s": lsh_s,
        "recall_by_cosine": by_band,
        "cosine_quartiles": [round(float(q), 3) for q in np.quantile(sims, [0.25, 0.5, 0.75])] if len(sims) else [],
    }


def drift(
    names: list[str], is_business: np.ndarray, size: int, sample: int, seed: int, workers: int, **filter_kw: Any
) -> dict:
    """Recall when half the names are hashed with an IDF frozen over the other half."""
    rng = np.random.default_rng(seed + 1)
    pick = np.sort(rng.choice(len(names), size=min(size, len(names)), replace=False))
    sub = [names[i] for i in pick]
    fam = is_business[pick]
    out: dict[str, Any] = {"metrics": len(sub)}
    scenarios = {
        "shuffled": np.arange(len(sub)),
        "new_family": np.concatenate([np.flatnonzero(fam), np.flatnonzero(~fam)]),  # business first
    }
    probe = [sub[i] for i in rng.choice(len(sub), size=min(sample, len(sub)), replace=False)]
    for label, order in scenarios.items():
        stream = [sub[i] for i in order]
        half = len(stream) // 2
        idx = NameIndex(THRESHOLD, RECALL, rebuild_growth=0, workers=workers, **filter_kw)
        idx.add(stream[:half])
        idx.rebuild()
        idx.add(stream[half:])
        idx.signatures()  # the second half hashed with the frozen IDF
        frozen = sample_recall(idx, probe)
        idf_drift, due = idx.idf_drift(), idx.rebuild_due  # rebuild_growth=0: due by drift alone
        idx.rebuild()  # re-freeze over everything
        fresh = sample_recall(idx, probe)
        out[label] = {
            "recall_frozen": frozen["recall"],
            "recall_rebuilt": fresh["recall"],
            "compared_fraction_frozen": frozen["compared_fraction"],
            "compared_fraction_rebuilt": fresh["compared_fraction"],
            "lsh_candidate_fraction_frozen": frozen["lsh_candidate_fraction"],
            "lsh_candidate_fraction_rebuilt": fresh["lsh_candidate_fraction"],
            "idf_drift": idf_drift,
            "rebuild_due_by_drift": due,
        }
        del idx
        gc.collect()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    names, is_business = generate(args.metrics, args.seed)
    gen_s = time.perf_counter() - t

    filter_kw = {"filter_bits": args.filter_bits, "filter_miss": args.filter_miss}
    idx = NameIndex(
        THRESHOLD, RECALL, max_bands=args.max_bands, max_probes=args.max_probes, workers=args.workers, **filter_kw
    )
    t, c = time.perf_counter(), time.process_time()
    idx.add(names)
    add_s, add_cpu = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    idx.rebuild()
    lsh_s, lsh_cpu = time.perf_counter() - t, time.process_time() - c
    build_peak = peak_rss_mb()

    queries = [idx.names[i] for i in rng.choice(len(idx), size=min(args.queries, len(idx)), replace=False)]
    idx.neighbours(queries[0], THRESHOLD)  # the first query computes the row norms once
    lat, cpu, cands, lsh_cands, hits = [], [], [], [], []
    for q in queries:
        t, c = time.perf_counter(), time.thread_time()
        res = idx.neighbours(q, THRESHOLD)
        lat.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
        hits.append(len(res))
    for q in queries[:200]:
        cands.append(len(idx.candidates(q)))
        lsh_cands.append(len(idx.candidates(q, filtered=False)))
    lat_ms = np.array(lat) * 1e3

    bucket_pairs = idx.bucket_pairs()
    n = len(idx)
    sample = [idx.names[i] for i in rng.choice(n, size=min(args.sample, n), replace=False)]
    rec = sample_recall(idx, sample)
    rec["prefix_filter_fraction"] = prefix_filter_fraction(idx, sample)

    draw = [idx.names[i] for i in rng.choice(n, size=min(args.pairs, n), replace=False)]
    t = time.perf_counter()
    got = idx.similar_pairs(draw, THRESHOLD, method="lsh")
    draw_s = time.perf_counter() - t
    t = time.perf_counter()
    got_exact = idx.similar_pairs(draw, THRESHOLD, method="exact")
    draw_exact_s = time.perf_counter() - t
    draw_compared = len(idx.candidate_pairs(draw)[0])
    draw_lsh = len(idx.candidate_pairs(draw, filtered=False)[0])
    final = {
        "metrics": n,
        "vocabulary": idx.vocabulary_size,
        "bands": idx.params.bands,
        "rows": idx.params.rows,
        "probe_radius": idx.params.radius,
        "probes_per_query": idx.params.probes,
        "threshold": THRESHOLD,
        "target_recall": RECALL,
        "lsh_recall": idx.params.recall,
        "filter_bits": idx.filter_bits,
        "filter_miss": idx.filter_miss,
        "filter_cutoff": idx.filter_cutoff(THRESHOLD),
        "theory_false_positive_at_cosine_0": idx.params.false_positive_rate(0.0),
        "workers": args.workers,
        "generate_s": gen_s,
        "add_s": add_s,
        "lsh_s": lsh_s,
        "build_s": add_s + lsh_s,
        "build_cpu_s": add_cpu + lsh_cpu,
        "lsh_cpu_s": lsh_cpu,
        "peak_rss_mb": build_peak,
        "index_arrays_mb": idx.memory_bytes() / 2**20,
        "query_ms_p50": float(np.percentile(lat_ms, 50)),
        "query_ms_p90": float(np.percentile(lat_ms, 90)),
        "query_ms_p99": float(np.percentile(lat_ms, 99)),
        "query_cpu_ms_p50": float(np.percentile(np.array(cpu) * 1e3, 50)),
        "query_candidates_fraction": float(np.mean(cands) / n),
        "query_lsh_candidates_fraction": float(np.mean(lsh_cands) / n),
        "query_neighbours_mean": float(np.mean(hits)),
        "sample": len(sample),
        "index_lsh_candidate_fraction_bound": bucket_pairs / (n * (n - 1) / 2),
        "draw_names": len(draw),
        "draw_lsh_s": draw_s,
        "draw_exact_s": draw_exact_s,
        "draw_pairs_found": len(got),
        "draw_pairs_true": len(got_exact),
        "draw_compared_fraction": draw_compared / (len(draw) * (len(draw) - 1) / 2),
        "draw_lsh_candidate_fraction": draw_lsh / (len(draw) * (len(draw) - 1) / 2),
    }
    t = time.perf_counter()
    data = idx.to_bytes()
    final["persist_mb"] = len(data) / 2**20
    final["to_bytes_s"] = time.perf_counter() - t
    t = time.perf_counter()
    back = NameIndex.from_bytes(data, workers=args.workers)
    final["from_bytes_s"] = time.perf_counter() - t
    final["restored_answers_alike"] = all(
        back.neighbours(q, THRESHOLD) == idx.neighbours(q, THRESHOLD) for q in queries[:20]
    )
    del data, back
    final["peak_rss_mb_after_persistence"] = peak_rss_mb()
    clash = set(rec) & set(final)
    if clash:
        raise AssertionError(f"bench keys collide: {sorted(clash)}")
    final.update(rec)
    del idx
    gc.collect()
    if args.drift_metrics:
        final["drift"] = drift(
            names, is_business, args.drift_metrics, args.drift_sample, args.seed, args.workers, **filter_kw
        )
    final["peak_rss_mb_end"] = peak_rss_mb()
    final["load_average_1m"] = os.getloadavg()[0]
    final["cpus"] = os.cpu_count()
    final["targets"] = {
        k: {"target": f"{op} {v:g}", "met": (final[k] <= v) if op == "<=" else (final[k] >= v)}
        for k, (op, v) in TARGETS.items()
    }
    return final


def table(r: dict[str, Any]) -> str:
    def ok(key: str) -> str:
        t = r["targets"][key]
        return f"  target {t['target']:<9} {'met' if t['met'] else 'NOT MET'}"

    lines = [
        f"name similarity bench: {r['metrics']:,} names, vocabulary {r['vocabulary']:,} pairs, "
        f"{r['workers']} worker thread(s), load average {r['load_average_1m']:.1f} on {r['cpus']} CPUs",
        f"LSH: cosine >= {r['threshold']} with recall >= {r['target_recall']}: "
        f"{r['bands']} bands x {r['rows']} bits, probe radius {r['probe_radius']} "
        f"({r['probes_per_query']} buckets a query; theory: unrelated pairs collide "
        f"{r['theory_false_positive_at_cosine_0']:.2%}); bands derived for recall {r['lsh_recall']:.4f}",
        (
            f"Hamming filter: first {r['filter_bits']} signature bits, a pair at cosine 0.6 dropped with "
            f"probability <= {r['filter_miss']:g} (kept when at most {r['filter_cutoff']} bits differ)"
            if r["filter_bits"]
            else "Hamming filter: off"
        ),
        "",
        "build",
        f"  parse + index (add)         {r['add_s']:8.1f} s",
        f"  LSH hash + tables           {r['lsh_s']:8.1f} s",
        f"  total                       {r['build_s']:8.1f} s" + ok("build_s"),
        f"  CPU time (both threads)     {r['build_cpu_s']:8.1f} s",
        f"  peak RSS after build        {r['peak_rss_mb']:8.0f} MB" + ok("peak_rss_mb"),
        f"  index arrays                {r['index_arrays_mb']:8.0f} MB",
        "",
        "neighbours(name, 0.6), one metric at a time",
        f"  latency p50 / p90 / p99     {r['query_ms_p50']:6.1f} / {r['query_ms_p90']:.1f} / {r['query_ms_p99']:.1f} ms"
        + ok("query_ms_p50"),
        f"  CPU time p50                {r['query_cpu_ms_p50']:8.1f} ms",
        f"  LSH candidates              {r['query_lsh_candidates_fraction']:8.3%} of the index",
        f"  compared exactly (filtered) {r['query_candidates_fraction']:8.3%} of the index",
        f"  neighbours found (mean)     {r['query_neighbours_mean']:8.1f}",
        "",
        f"all pairs with cosine >= 0.6 in a sample of {r['sample']:,} names",
        f"  brute force (baseline)      {r['baseline_s']:8.1f} s, {r['pairs_true']:,} pairs "
        f"({r['true_fraction']:.4%} of all pairs; cosine quartiles {r['cosine_quartiles']})",
        f"  LSH + exact check           {r['sample_lsh_s']:8.1f} s, {r['pairs_found']:,} pairs, "
        f"{r['false_found']} wrong",
        f"  recall                      {r['recall']:8.4f}" + ok("recall"),
        "  recall, cosine 0.60-0.65    "
        + (
            f"{r['recall_near_threshold']:8.4f} ({r['pairs_near_threshold']:,} pairs)"
            if r["recall_near_threshold"] is not None
            else "     n/a (no such pairs)"
        ),
        "  recall by cosine            "
        + ", ".join(f">={lo:.2f}: {rec:.4f} ({n:,})" for lo, n, rec in r["recall_by_cosine"]),
        f"  LSH candidates (bands)      {r['lsh_candidate_fraction']:8.3%} of all pairs",
        f"  pairs compared exactly      {r['compared_fraction']:8.4%} of all pairs (after the filter)"
        + ok("compared_fraction"),
        f"  alternative: prefix filter  {r['prefix_filter_fraction']:8.3%} of all pairs (All-Pairs prefixes, no LSH)",
        f"  whole index, LSH candidates {r['index_lsh_candidate_fraction_bound']:8.3%} of all pairs (bucket bound)",
        "",
        f"similar_pairs(names, 0.6) over {r['draw_names']:,} names drawn from the index",
        f"  LSH + exact check           {r['draw_lsh_s']:8.2f} s, {r['draw_pairs_found']:,} pairs, "
        f"{r['draw_lsh_candidate_fraction']:.2%} of pairs LSH candidates, {r['draw_compared_fraction']:.4%} "
        "compared exactly",
        f"  exact (sparse products)     {r['draw_exact_s']:8.2f} s, {r['draw_pairs_true']:,} pairs",
    ]
    lines += [
        "",
        f"persistence: to_bytes {r['to_bytes_s']:.1f} s ({r['persist_mb']:.0f} MB), "
        f"from_bytes {r['from_bytes_s']:.1f} s, restored index answers alike: {r['restored_answers_alike']}; "
        f"peak RSS {r['peak_rss_mb_after_persistence']:.0f} MB (both indexes and the bytes held)",
    ]
    if "drift" in r:
        d = r["drift"]
        lines += ["", f"IDF drift ({d['metrics']:,} names; second half hashed with the IDF frozen over the first half)"]
        for label, text in (("shuffled", "shuffled stream"), ("new_family", "new family arrives second")):
            x = d[label]
            lines.append(
                f"  {text:<27} recall {x['recall_frozen']:.4f} frozen, {x['recall_rebuilt']:.4f} rebuilt; "
                f"LSH candidates {x['lsh_candidate_fraction_frozen']:.2%} / {x['lsh_candidate_fraction_rebuilt']:.2%}, "
                f"compared exactly {x['compared_fraction_frozen']:.4%} / {x['compared_fraction_rebuilt']:.4%}; "
                f"IDF drift {x['idf_drift']:.3f}, rebuild due: {x['rebuild_due_by_drift']}"
            )
    lines += [
        "",
        f"peak RSS at the end of the run: {r['peak_rss_mb_end']:.0f} MB "
        "(persistence round trip and drift indexes included)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", type=int, default=None, help="names in the index (default 1,000,000; quick 100,000)")
    ap.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="threads for hashing and tables (default 2: the 2 cores)")
    ap.add_argument("--max-bands", type=int, default=160, help="LSH band budget (memory per name: 6-8 bytes a band)")
    ap.add_argument("--max-probes", type=int, default=4096, help="LSH budget of buckets one query looks in")
    ap.add_argument("--filter-bits", type=int, default=512, help="Hamming filter bits (0: no filter, the baseline)")
    ap.add_argument("--filter-miss", type=float, default=0.002, help="filter's drop probability at the threshold")
    ap.add_argument("--queries", type=int, default=None, help="neighbours queries timed (default 1000; quick 200)")
    ap.add_argument("--sample", type=int, default=None, help="names in the brute-force sample (default 20,000)")
    ap.add_argument("--pairs", type=int, default=10_000, help="names in the similar_pairs query (default 10,000)")
    ap.add_argument("--drift-metrics", type=int, default=None, help="names in each drift index (0: skip)")
    args = ap.parse_args(argv)
    quick = args.quick
    args.metrics = args.metrics or (100_000 if quick else 1_000_000)
    args.queries = args.queries or (200 if quick else 1000)
    args.sample = args.sample or (10_000 if quick else 20_000)
    if args.drift_metrics is None:
        args.drift_metrics = 40_000 if quick else 200_000
    args.drift_sample = 5_000 if quick else 10_000
    if args.metrics < 1000:
        ap.error("--metrics must be at least 1000")
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=None))
    else:
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
