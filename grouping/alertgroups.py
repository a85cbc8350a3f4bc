"""Instances of one service failing together are one incident; alerts are confirmed (issue 30).

**Service incidents.** When the same alert (its ``alertname``) starts on two or more instances of
one service (:data:`~stormeye.core.labels.SERVICE_KEYS`: ``service``, ``job``, ``app``, ...; the
instance is the first of :data:`~stormeye.core.labels.MACHINE_KEYS`: ``host``, ``instance``,
``node``, ``pod``, ``container``) with onsets at most :data:`SERVICE_WINDOW_S` apart, the alerts
belong to one problem of the service: the tracker puts their clusters in one incident
(:func:`service_links`), titled for the service (:func:`service_title`: ``checkout: 8 alerts on 5
of 5 instances (...)``) with the service as its root entity. Different services are never linked
by this rule (the topology's cascades do that, docs/topology.md); an alert on one instance only
links nothing; and onsets further apart than the window (a new fault on another pod of the
service ten minutes later) are a new problem. Measures (the detector's anomalies) are left to the
graph, whose hot properties already group a service's hosts: the same rule on them lowered the
demo's pairwise F1 of the independent incidents (seed 0: 0.8483 to 0.8467, docs/grouping.md).

**Alerts are confirmed.** An alert fired upstream (Prometheus waited its ``for:``): it needs no
second sample to count fully as evidence (:func:`is_alert`), so its incident opens in the first
tick after it arrives when its evidence is enough. A ``severity`` label weighs in the priority
(:data:`stormeye.grouping.priority.SEVERITY_FACTOR`): one ``critical`` or ``page`` alert opens an
incident alone, ``warning`` alerts need company.

Pure: no clock, socket or file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stormeye.core.labels import MACHINE_KEYS, NAME_KEY, SERVICE_KEYS

#: the ``detector`` of anomalies that are alerts (workers/alerts.py: the sender)
ALERT_SOURCES = frozenset({"alertmanager", "generic", "prometheus", "grafana"})

#: onsets of one signal on two instances of a service at most this far apart are one problem
SERVICE_WINDOW_S = 300.0


def is_alert(anomaly: Any) -> bool:
    """Whether an anomaly (or an incident member) is an alert another system fired."""
    if getattr(anomaly, "detector", None) in ALERT_SOURCES:
        return True
    evidence = getattr(anomaly, "evidence", None)
    if type(evidence) is dict:  # the usual case, without the abstract class check
        return bool(evidence.get("alert"))
    return isinstance(evidence, Mapping) and bool(evidence.get("alert"))


def note_severity(anomaly: Any, props: dict[str, str]) -> None:
    """Keep an alert's ``severity`` label (left out of its metric name, as it says how loud rather than
    what is wrong) among its metric's properties, where the priority rules read it."""
    if "severity" in props or not is_alert(anomaly):
        return
    labels = (getattr(anomaly, "evidence", None) or {}).get("alert")
    if isinstance(labels, Mapping) and labels.get("severity"):
        props["severity"] = str(labels["severity"])


def service_of(props: Mapping[str, str]) -> tuple[str, str] | None:
    """``(label, value)`` of the service a metric belongs to (the first :data:`SERVICE_KEYS` label)."""
    for key in SERVICE_KEYS:
        value = props.get(key)
        if value:
            return key, value
    return None


def instance_of(props: Mapping[str, str]) -> str | None:
    """The instance (host, pod, ...) a metric is of, as ``label=value``; None when it has none."""
    for key in MACHINE_KEYS:
        value = props.get(key)
        if value:
            return f"{key}={value}"
    return None


def service_links(
    metrics: Sequence[str],
    starts: Sequence[float],
    props: Callable[[str], Mapping[str, str]],
    n_new: int,
    alerts: Sequence[bool] | None = None,
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` of anomalies that are one service's problem: the same signal on two
    instances of one service, onsets at most :data:`SERVICE_WINDOW_S` apart. ``i`` is always one of
    the first ``n_new`` (the new anomalies); ``j`` may be any (the others are members of open
    incidents). Each new anomaly links to the nearest onset on each other instance. ``alerts``: only
    the anomalies flagged there take part (the tracker passes which are alerts: see the module doc)."""
    buckets: dict[tuple[str, str, str], list[tuple[float, str, int]]] = {}
    for i, (m, t) in enumerate(zip(metrics, starts)):
        if alerts is not None and not alerts[i]:
            continue
        p = props(m)
        svc = service_of(p)
        inst = instance_of(p) if svc is not None else None
        if svc is None or inst is None or inst.endswith(f"={svc[1]}"):
            continue
        buckets.setdefault((svc[0], svc[1], p.get(NAME_KEY, "")), []).append((float(t), inst, i))
    out: list[tuple[int, int]] = []
    for items in buckets.values():
        if len({inst for _, inst, _ in items}) < 2:
            continue
        for t, inst, i in items:
            if i >= n_new:
                continue
            nearest: dict[str, tuple[float, int]] = {}
            for u, other, j in items:
                if other == inst or abs(u - t) > SERVICE_WINDOW_S:
                    continue
                if other not in nearest or abs(u - t) < nearest[other][0]:
                    nearest[other] = (abs(u - t), j)
            out.extend((i, j) for _, j in nearest.values())
    return out


def service_scope(members: Sequence[Any], props: Mapping[str, Mapping[str, str]]) -> tuple[str, str, list[str]] | None:
    """``(label, service, instances)`` when an incident is one service's problem on two or more of
    its instances: at least 80% of its members are of that service; else None."""
    count: dict[tuple[str, str], int] = {}
    for m in members:
        svc = service_of(props[m.metric])
        if svc is not None:
            count[svc] = count.get(svc, 0) + 1
    if not count:
        return None
    best = max(count, key=lambda s: (count[s], s))
    if count[best] < 0.8 * len(members):
        return None
    instances = sorted(
        {inst for m in members if service_of(props[m.metric]) == best and (inst := instance_of(props[m.metric]))}
    )
    if len(instances) < 2:
        return None
    return best[0], best[1], instances


def service_title(
    members: Sequence[Any], props: Mapping[str, Mapping[str, str]], service: str, instances: Sequence[str], known: int
) -> str:
    """E.g. ``checkout: 8 alerts on 5 of 5 instances (instance=checkout-0:8080, ...)``: the distinct
    signals (alert names or measures; one is named: ``checkout: HighErrorRate on 2 of 2 instances``)
    and the instances they fire on, of the ``known`` ones."""
    names = {props[m.metric].get(NAME_KEY, m.metric) for m in members}
    alerts = {props[m.metric].get(NAME_KEY, m.metric) for m in members if is_alert(m)}
    measures = names - alerts
    what = []
    for kind, found in (("alert", alerts), ("measure", measures)):
        if len(found) == 1:
            what.append(next(iter(found)))
        elif found:
            what.append(f"{len(found)} {kind}s")
    cut = len(instances) if len(instances) <= 5 else 3
    listed = ", ".join(i.split("=", 1)[1] for i in instances[:cut])
    listed += f", … {len(instances) - cut} more" if cut < len(instances) else ""
    total = max(known, len(instances))
    return f"{service}: {' and '.join(what)} on {len(instances)} of {total} instances ({listed})"


class InstanceBook:
    """The instances of each service seen in anomalies and alerts: the ``of N`` of a service's title
    (kept with the tracker's state; all registered series would make that state as large as the
    metric registry)."""

    def __init__(self) -> None:
        self.seen: dict[str, set[str]] = {}

    def note(self, props: Mapping[str, str]) -> None:
        svc = service_of(props)
        inst = instance_of(props) if svc is not None else None
        if svc is not None and inst is not None:
            self.seen.setdefault(f"{svc[0]}={svc[1]}", set()).add(inst)

    def count(self, label: str, service: str) -> int:
        return len(self.seen.get(f"{label}={service}", ()))

    def to_state(self) -> dict[str, list[str]]:
        return {k: sorted(v) for k, v in self.seen.items()}

    def load_state(self, state: Mapping[str, Sequence[str]]) -> None:
        self.seen = {k: set(v) for k, v in state.items()}


def join_components(comps: list[np.ndarray], links: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """The components with those that ``links`` (pairs of node numbers) connect joined into one,
    in the order of their first node; unchanged (the same list) when no link crosses two."""
    if not links:
        return comps
    comp_of = {int(i): k for k, comp in enumerate(comps) for i in comp}
    parent = list(range(len(comps)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    crossed = False
    for i, j in links:
        a, b = find(comp_of[i]), find(comp_of[j])
        if a != b:
            parent[max(a, b)] = min(a, b)
            crossed = True
    if not crossed:
        return comps
    groups: dict[int, list[np.ndarray]] = {}
    for k, comp in enumerate(comps):
        groups.setdefault(find(k), []).append(comp)
    joined = [np.sort(np.concatenate(parts)) for parts in groups.values()]
    return sorted(joined, key=lambda c: int(c[0]) if len(c) else -1)
