"""Quality of a run against the simulator's ground truth: detection and grouping figures.

Each detected anomaly is matched to the true incident that holds its metric and whose span
overlaps the anomaly's (with ``slack_steps`` of slack on both sides); an anomaly with no
match is a false positive and gets a truth label of its own, so grouping it with true ones
costs pairwise precision.

- detection precision: matched anomalies / all anomalies in incidents;
- detection recall: true (incident, metric) members found by at least one anomaly in an incident
  / all members (the same two over every detected anomaly, paged or not, are the detector's own:
  ``detector_precision``, ``detector_recall``);
- pairwise precision/recall/F1 and ARI of predicted incidents against true incidents, over
  the anomalies (:func:`grouping.evaluation.pairwise_scores`);
- compression: anomalies per predicted incident;
- true incidents paged (``incidents_found``, and split into multi-metric and single-metric ones):
  those with at least one member in a predicted incident;
- detection delay: median seconds from a true incident's start to its first matched anomaly.

Cascades (the simulator's microservice estate, truth family ``cascade``) are scored on their own,
over the anomalies in incidents on the estate's metrics (a false anomaly there counts against
precision): ``cascade_pairwise_precision/recall/f1`` and ``cascade_ari``; ``cascade_incidents_true``
(cascades), ``cascade_incidents_pred`` (predicted incidents holding a member of some cascade: one
per cascade is the goal), ``cascade_one_incident`` (cascades whose members found all lie in one
incident that holds at least half of its members), ``cascade_root_hit`` (cascades whose main
incident, the one holding most of its members, names its root service: the root metric's
``service`` label or ``root_entity`` ``service=…``) and ``cascade_detection_recall``. The same
pairwise figures over every other metric are ``other_pairwise_f1`` and ``other_ari``: with
cascades in the storm, they are the ones to compare with storms without.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from stormeye.grouping.evaluation import pairwise_scores
from stormeye.grouping.names import parse
from stormeye.sim.simulator import Storm


def evaluate_storm(
    storm: Storm,
    incidents: Iterable[Mapping[str, Any]],
    slack_steps: int = 10,
    anomalies: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Figures for predicted ``incidents`` (dicts with ``id`` and ``members`` of metric/start/end).

    ``anomalies`` (every anomaly the run detected, paged or not) adds the detector's own precision
    and recall (``detector_precision``, ``detector_recall``): the ``detection_*`` figures count the
    anomalies in incidents, so an anomaly that never gathered the evidence to page is missing there.
    """
    slack = slack_steps * storm.step
    by_metric = storm.membership()

    def label_of(m: Mapping[str, Any]) -> int | None:
        for t in by_metric.get(m["metric"], ()):
            if m["start"] <= t.end + slack and m["end"] >= t.start - slack:
                return t.id
        return None

    predicted, truth, item_metric = [], [], []
    roots: dict[Any, tuple[str | None, str | None]] = {}
    found_members: set[tuple[int, str]] = set()
    first_seen: dict[int, float] = {}
    n_incidents = 0
    for inc in incidents:
        members = inc.get("members") or []
        if not members:
            continue
        n_incidents += 1
        roots[inc["id"]] = (inc.get("root"), inc.get("root_entity"))
        for m in members:
            label = label_of(m)
            predicted.append(inc["id"])
            item_metric.append(m["metric"])
            if label is None:
                truth.append(f"fp:{m['metric']}:{m['start']}")
            else:
                truth.append(f"t:{label}")
                found_members.add((label, m["metric"]))
                first_seen[label] = min(first_seen.get(label, np.inf), m["start"])
    n_true_members = sum(len(t.members) for t in storm.incidents)
    matched = sum(1 for t in truth if t.startswith("t:"))
    pw = pairwise_scores(predicted, truth)
    delays = [max(0.0, first_seen[t.id] - t.start) for t in storm.incidents if t.id in first_seen]
    multi = [t for t in storm.incidents if not t.singleton]
    detector: dict[str, Any] = {}
    if anomalies is not None:
        labels = [label_of(a) for a in anomalies]
        hit = {(lab, a["metric"]) for lab, a in zip(labels, anomalies) if lab is not None}
        detector = {
            "detected_anomalies": len(labels),
            "detector_precision": round(sum(lab is not None for lab in labels) / len(labels), 4) if labels else 0.0,
            "detector_recall": round(len(hit) / n_true_members, 4) if n_true_members else 0.0,
        }
    figures = detector | {
        "metrics": len(storm.names),
        "true_incidents": len(storm.incidents),
        "true_multi_metric_incidents": len(multi),
        "true_members": n_true_members,
        "anomalies": len(predicted),
        "incidents": n_incidents,
        "detection_precision": round(matched / len(predicted), 4) if predicted else 0.0,
        "detection_recall": round(len(found_members) / n_true_members, 4) if n_true_members else 0.0,
        "compression": round(len(predicted) / n_incidents, 2) if n_incidents else 0.0,
        "pairwise_precision": round(pw.precision, 4),
        "pairwise_recall": round(pw.recall, 4),
        "pairwise_f1": round(pw.f1, 4),
        "ari": round(pw.ari, 4),
        "incidents_found": len(first_seen),
        # a true incident is paged when one of its members is in a predicted incident
        "multi_metric_incidents_found": sum(1 for t in multi if t.id in first_seen),
        "single_metric_incidents_found": sum(1 for t in storm.incidents if t.singleton and t.id in first_seen),
        "detection_delay_s_p50": float(np.median(delays)) if delays else None,
    }
    return figures | _cascade_figures(storm, predicted, truth, item_metric, found_members, roots)


def _cascade_figures(
    storm: Storm,
    predicted: list[Any],
    truth: list[str],
    item_metric: list[str],
    found_members: set[tuple[int, str]],
    roots: Mapping[Any, tuple[str | None, str | None]],
) -> dict[str, Any]:
    """Figures of the cascades alone, and of everything else (see the module docstring)."""
    estate = {n for n, f in zip(storm.names, storm.families) if f == "cascade"}
    inside = [m in estate for m in item_metric]
    other = pairwise_scores(
        [p for p, i in zip(predicted, inside) if not i], [t for t, i in zip(truth, inside) if not i]
    )
    out: dict[str, Any] = {"other_pairwise_f1": round(other.f1, 4), "other_ari": round(other.ari, 4)}
    true = [t for t in storm.incidents if t.family == "cascade"]
    out["cascade_incidents_true"] = len(true)
    if not true:
        return out | dict.fromkeys(
            (
                "cascade_pairwise_precision",
                "cascade_pairwise_recall",
                "cascade_pairwise_f1",
                "cascade_ari",
                "cascade_incidents_pred",
                "cascade_one_incident",
                "cascade_root_hit",
                "cascade_detection_recall",
            )
        )
    pw = pairwise_scores([p for p, i in zip(predicted, inside) if i], [t for t, i in zip(truth, inside) if i])
    holders: dict[int, Counter[Any]] = {t.id: Counter() for t in true}
    for p, label in zip(predicted, truth):
        if label.startswith("t:") and int(label[2:]) in holders:
            holders[int(label[2:])][p] += 1
    one = hit = 0
    for t in true:
        if not holders[t.id]:
            continue
        main, _ = holders[t.id].most_common(1)[0]
        found = {m for lab, m in found_members if lab == t.id}
        if len(holders[t.id]) == 1 and 2 * len(found) >= len(t.members):
            one += 1
        root, entity = roots.get(main, (None, None))
        if entity == f"service={t.root}" or (root is not None and parse(root).get("service") == t.root):
            hit += 1
    n_members = sum(len(t.members) for t in true)
    return out | {
        "cascade_pairwise_precision": round(pw.precision, 4),
        "cascade_pairwise_recall": round(pw.recall, 4),
        "cascade_pairwise_f1": round(pw.f1, 4),
        "cascade_ari": round(pw.ari, 4),
        "cascade_incidents_pred": len({p for c in holders.values() for p in c}),
        "cascade_one_incident": one,
        "cascade_root_hit": hit,
        "cascade_detection_recall": round(sum(1 for lab, _ in found_members if lab in holders) / n_members, 4),
    }
