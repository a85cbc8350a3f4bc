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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from grouping.evaluation import pairwise_scores
from workers.simulator import Storm


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
    predicted, truth = [], []
    found_members: set[tuple[int, str]] = set()
    first_seen: dict[int, float] = {}
    n_incidents = 0
    for inc in incidents:
        members = inc.get("members") or []
        if not members:
            continue
        n_incidents += 1
        for m in members:
            label = label_of(m)
            predicted.append(inc["id"])
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
    return detector | {
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
