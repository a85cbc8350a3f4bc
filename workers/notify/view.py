"""An incident as routing sees it: the properties matchers test, and what a message says.

Properties (all strings, as Alertmanager labels): every label all members share (``service``,
``region``, ...), ``priority`` (``1`` is the most urgent), ``kpi`` (``true`` when a KPI member
moved its bad way), ``root`` (root metric), ``root_entity``, ``root_service`` (these three as
the incident tracker decided and stored them), ``team`` (a shared ``team`` label, else the root
metric's, else the config's ``teams`` map by root service), ``status``, ``incident`` and ``title``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from stormeye.core.labels import shared_labels
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.names import NAME_KEY, parse
from stormeye.grouping.report import LINK_KINDS, link_kinds
from stormeye.workers import models as m

ACTIVE = ("open", "acknowledged")
TOP_MEMBERS = 10


@dataclass
class IncidentView:
    id: str
    status: str
    priority: int
    title: str
    root: str | None
    root_entity: str | None
    opened_at: float
    resolved_at: float | None
    updated_at: float
    follows: str | None
    merged_into: str | None
    member_count: int
    root_service: str = ""  # the tracker's, as stored (grouping.report.root_service)
    seen_at: float | None = None  # when the notifier first saw it (after the tick committed it)
    props: dict[str, str] = field(default_factory=dict)
    top_members: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def since(self) -> float:
        """Where ``group_wait`` starts: the incident reached the notifier (its opening step is older)."""
        return max(self.opened_at, self.seen_at if self.seen_at is not None else self.opened_at)

    @property
    def ended_at(self) -> float:
        return self.resolved_at if self.resolved_at is not None else self.updated_at


def _why(members: list[tuple[str, dict[str, Any]]], shared: Mapping[str, str], cfg: GroupingConfig, step: float) -> str:
    """Why grouped, in the words of the page's evidence graph: each member's edge (the evidence that
    brought it in, towards another member) counted by what linked it — names, shape, time, topology —
    the members that opened the incident (no edge) and those that joined as symptoms."""
    metrics = {x for x, _ in members}
    kinds: Counter[str] = Counter()
    opened = symptoms = edges = 0
    for metric, ev in members:
        ev = ev or {}
        to = ev.get("to")
        if ev.get("symptom"):
            symptoms += 1
        elif not to or to == metric or to not in metrics:
            opened += 1
        else:
            edges += 1
            kinds.update(link_kinds(ev, parse(metric), parse(str(to)), cfg, step) or ["weak evidence"])
    n = len(members)
    text = f"{n} member{'s' if n != 1 else ''}"
    if edges:
        text += f"; {edges} link{'s' if edges != 1 else ''} by " + ", ".join(
            f"{k} {kinds[k]}" for k in (*LINK_KINDS, "weak evidence") if kinds[k]
        )
    if opened and edges:
        text += f"; {opened} opened it"
    elif opened > 1:
        text += "; opened it together"
    if symptoms:
        text += f"; {symptoms} joined as symptom{'s' if symptoms != 1 else ''} of their machine"
    scope = {k: v for k, v in shared.items() if k != NAME_KEY}
    if scope:
        text += "; all share " + ", ".join(f"{k}={v}" for k, v in sorted(scope.items()))
    return text


def load_views(
    session: Session,
    ids: Iterable[str],
    teams: Mapping[str, str],
    grouping: GroupingConfig | None = None,
    step: float = 60.0,
) -> dict[str, IncidentView]:
    """Views of the incidents ``ids`` with their properties and top members (one query each);
    ``grouping`` and ``step``: what counts as a names, shape or time link (the service's settings)."""
    cfg = grouping or GroupingConfig()
    ids = sorted(set(ids))
    if not ids:
        return {}
    views: dict[str, IncidentView] = {}
    kpi: dict[str, str] = {}
    for inc in session.scalars(select(m.Incident).where(m.Incident.id.in_(ids))):
        views[inc.id] = IncidentView(
            id=inc.id,
            status=inc.status,
            priority=int(inc.priority),
            title=inc.title,
            root=inc.root,
            root_entity=inc.root_entity,
            root_service=inc.root_service or "",
            opened_at=float(inc.opened_at),
            resolved_at=inc.resolved_at,
            updated_at=float(inc.updated_at),
            follows=inc.follows,
            merged_into=inc.merged_into,
            member_count=int(inc.member_count),
        )
        kpi[inc.id] = "true" if float((inc.priority_parts or {}).get("kpi", 0) or 0) > 0 else "false"
    labels: dict[str, list[dict[str, str]]] = {i: [] for i in views}
    members: dict[str, list[dict[str, Any]]] = {i: [] for i in views}
    evidence: dict[str, list[tuple[str, dict[str, Any]]]] = {i: [] for i in views}
    rows = session.execute(
        select(
            m.IncidentMember.incident_id,
            m.Metric.name,
            m.Metric.labels,
            m.Anomaly.peak_score,
            m.Anomaly.direction,
            m.IncidentMember.evidence,
        )
        .join(m.Anomaly, m.Anomaly.id == m.IncidentMember.anomaly_id)
        .join(m.Metric, m.Metric.id == m.Anomaly.metric_id)
        .where(m.IncidentMember.incident_id.in_(list(views)))
    ).all()
    for iid, name, lab, peak, direction, ev in rows:
        labels[iid].append({str(k): str(v) for k, v in (lab or {}).items()})
        members[iid].append({"metric": name, "peak_score": round(float(peak), 3), "direction": int(direction)})
        evidence[iid].append((name, ev or {}))
    for iid, v in views.items():
        labs = labels[iid]
        shared = shared_labels(labs, skip=())
        root_labels = {str(k): str(val) for k, val in parse(v.root).items()} if v.root else {}
        # the root and its service are the tracker's (stored with the incident), not worked out here
        team = shared.get("team") or root_labels.get("team") or teams.get(v.root_service, "")
        v.props = {k: val for k, val in shared.items()}
        v.props.update(
            priority=str(v.priority),
            kpi=kpi[iid],
            root=v.root or "",
            root_entity=v.root_entity or "",
            root_service=v.root_service,
            team=team,
            status=v.status,
            incident=v.id,
            title=v.title,
        )
        v.top_members = sorted(members[iid], key=lambda x: (-x["peak_score"], x["metric"]))[:TOP_MEMBERS]
        v.why = _why(evidence[iid], shared, cfg, step)
    return views
