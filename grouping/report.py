"""Readable incidents: titles, root metric and entity, text summaries and the raw data as JSON.

Root metric: among the members of the highest importance weight, the *strong* ones (peak score
at least 80% of the strongest of them) are candidates, and the earliest to start is the root;
ties go to the higher peak, then to the name. An early weak wobble does not become the root,
and a loud late symptom does not either.

Root entity: the entity label (``host``, ``instance``, ``pod``, ``container``, ``node``,
``service``, ``job``, ``app``, ``region``, most specific first) whose most common value covers
at least half the members; for metrics without entity labels (business metrics), the property
shared by all members, or failing that the most over-represented one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stormeye.core.labels import ENTITY_KEYS, NAME_KEY, SERVICE_ENTITY_KEYS, shared_labels
from stormeye.grouping.priority import MemberLike, MetricImportance


def root_metric(members: Sequence[MemberLike], importance: Callable[[str], MetricImportance]) -> str | None:
    if not members:
        return None
    top = max(importance(m.metric).weight for m in members)
    heavy = [m for m in members if importance(m.metric).weight >= top]
    strongest = max(m.peak_score for m in heavy)
    strong = [m for m in heavy if m.peak_score >= 0.8 * strongest]
    return min(strong, key=lambda m: (m.start, -m.peak_score, m.metric)).metric


def root_entity(
    metrics: Sequence[str], props: Mapping[str, Mapping[str, str]], hot: Sequence[tuple[str, int, int, float]] = ()
) -> str | None:
    if not metrics:
        return None
    n = len(metrics)
    for key in ENTITY_KEYS:
        values = Counter(props[m][key] for m in metrics if key in props[m])
        if values:
            value, count = values.most_common(1)[0]
            if count * 2 >= n:
                return f"{key}={value}"
    shared = shared_scope(metrics, props)
    if shared:
        return ",".join(f"{k}={v}" for k, v in shared.items())
    for pair, count, _total, _lift in hot:
        if not pair.startswith(NAME_KEY + "=") and count * 2 >= n:
            return pair
    return None


def root_service(root: Mapping[str, str] | None, shared: Mapping[str, str], entity: str | None) -> str:
    """The service an incident is about, for routing (``teams`` by service): the root metric's
    ``service`` label, else the one every member shares, else the root entity's value when its label
    names a service (:data:`SERVICE_ENTITY_KEYS`); "" when none does."""
    found = (root or {}).get("service") or shared.get("service") or ""
    if not found and entity and entity.split("=", 1)[0] in SERVICE_ENTITY_KEYS:
        found = entity.split("=", 1)[1]
    return found


def shared_scope(metrics: Sequence[str], props: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """Properties (other than the metric name) that every member has with the same value, by key."""
    return dict(sorted(shared_labels(props[m] for m in metrics).items()))


def verb(directions: Sequence[int]) -> str:
    ups = sum(d > 0 for d in directions)
    downs = sum(d < 0 for d in directions)
    if ups >= 2 * max(downs, 1) or (ups and not downs):
        return "rose"
    if downs >= 2 * max(ups, 1) or (downs and not ups):
        return "dropped"
    return "changed"


def title(
    members: Sequence[MemberLike], props: Mapping[str, Mapping[str, str]], root: str | None, entity: str | None
) -> str:
    """E.g. ``purchase_count dropped for country=England across 12 metrics``.

    The verb of the measure named first is that measure's own direction: with a root, the root
    metric's (its strongest member's); the others' direction follows only when it differs
    (``payment_success_count dropped, 4 other measures rose, for …``), so a KPI that fell is never
    titled "rose" because more of its symptoms went up.
    """
    metrics = sorted({m.metric for m in members})
    if not metrics:
        return "empty incident"
    how = verb([m.direction for m in members])
    if len(metrics) == 1:
        return f"{metrics[0]} {how}"
    names = Counter(props[m].get(NAME_KEY, "") for m in metrics)
    scope = shared_scope(metrics, props)
    where = ", ".join(f"{k}={v}" for k, v in scope.items()) if scope else (f"mostly {entity}" if entity else "")
    where = f" for {where}" if where else ""
    if len(names) == 1:
        return f"{next(iter(names))} {how}{where} across {len(metrics)} metrics"
    root_name = props[root].get(NAME_KEY, "") if root else names.most_common(1)[0][0]
    others = len(names) - 1
    measures = f"{others} other measure{'s' if others > 1 else ''}"
    of_root = [m for m in members if m.metric == root]
    own = (
        [max(of_root, key=lambda m: m.peak_score)]
        if of_root
        else [m for m in members if props[m.metric].get(NAME_KEY, "") == root_name]
    )
    rest = [m for m in members if props[m.metric].get(NAME_KEY, "") != root_name]
    root_how, rest_how = verb([m.direction for m in own]), verb([m.direction for m in rest])
    if root_how == rest_how:
        return f"{root_name} and {measures} {root_how}{where} across {len(metrics)} metrics"
    return f"{root_name} {root_how}, {measures} {rest_how},{where} across {len(metrics)} metrics"


def summary(incident: Mapping[str, Any]) -> str:
    """A few lines a person reads in a notification or a terminal."""
    lines = [
        f"[P{incident['priority']}] {incident['title']}",
        f"incident {incident['id']} · {incident['status']} · {len(incident['members'])} anomalies",
    ]
    if incident.get("root"):
        lines.append(
            f"root: {incident['root']}" + (f" ({incident['root_entity']})" if incident.get("root_entity") else "")
        )
    parts = incident.get("priority_parts") or {}
    if parts:
        lines.append("priority: " + ", ".join(f"{k} {v:g}" for k, v in parts.items()))
    for m in sorted(incident["members"], key=lambda m: (-m["peak_score"], m["metric"]))[:10]:
        arrow = {1: "↑", -1: "↓"}.get(m["direction"], "·")
        lines.append(f"  {arrow} {m['metric']}  peak {m['peak_score']:.2f}")
    if len(incident["members"]) > 10:
        lines.append(f"  … and {len(incident['members']) - 10} more")
    return "\n".join(lines)


def incident_report(incident: Mapping[str, Any], windows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The readable summary and the raw data of an incident in one JSON-ready object.

    ``windows`` maps member metrics to ``{"start": epoch s, "step": s, "values": [...]}`` (None
    for missing points): the series around the incident, so a reader can see what the
    detector saw. Members come with the evidence that brought each in.
    """
    members = [dict(m) for m in incident.get("members", [])]
    return {
        "summary": summary(incident),
        "incident": {k: v for k, v in incident.items() if k != "members"},
        "members": members,
        "windows": {m["metric"]: windows[m["metric"]] for m in members if m["metric"] in windows},
    }


#: what can link two members, in the order the page's legend and the notifications name them
LINK_KINDS = ("names", "shape", "time", "topology")


def link_kinds(ev: Mapping[str, Any], a: Mapping[str, str], b: Mapping[str, str], cfg: Any, step: float) -> list[str]:
    """What linked two members by the evidence of the edge that brought one in: names (the name
    similarity reached ``min_name``), shape (``|shape|`` reached ``min_shape``), time (onsets within
    the lag tolerance) and topology (a shared host, service, ... label). The page's "why grouped"
    and the notifications' "why" both say this."""
    out = []
    if float(ev.get("name", 0.0) or 0.0) >= cfg.min_name:
        out.append("names")
    if abs(float(ev.get("shape", 0.0) or 0.0)) >= cfg.min_shape:
        out.append("shape")
    gap = ev.get("onset_gap_s")
    if gap is not None and float(gap) <= max(cfg.max_lag_steps * step, cfg.co_onset_s):
        out.append("time")
    if any(k in a and a.get(k) == b.get(k) for k in ENTITY_KEYS):
        out.append("topology")
    return out
