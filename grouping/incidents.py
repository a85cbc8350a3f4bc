"""Incidents that live across ticks: open, grow, merge, change priority, resolve.

Every tick the tracker receives the anomalies that changed. Known ones update their
incident. New ones are put in a graph (:mod:`grouping.graph`) together with the *linkable*
members of open incidents — members still anomalous or active within ``link_window_s`` — and
each (guarded) component decides:

- only new anomalies: a new incident opens — unless the cluster holds ``scope_join_min`` or more
  anomalies and has the same scope as an open, active incident, which it then joins;
- new anomalies and members of one incident: they join it (it grows), unless the cluster is
  wider than the incident's scope and links to no other incident;
- members of several incidents: the incidents merge into the one opened first (ties: the
  smaller id); the others end with status ``merged`` and ``merged_into`` pointing at it.

A cluster of new anomalies linked to no open incident opens one (pages) only when its evidence
reaches ``open_min_evidence`` (:meth:`IncidentTracker.evidence`: the sum over its metrics of peak
score x priority weight, a member seen on fewer than ``confirm_points`` samples counting
``unconfirmed_weight`` of that), or when one of its anomalies on a metric of priority weight
``open_after_min_weight`` or more has been seen on ``open_after_points`` samples. Until then its
anomalies wait (:meth:`IncidentTracker.pending`), page nobody, and are grouped again with every
tick's new anomalies, so related evidence, strength or persistence arriving later opens the
incident. A waiting anomaly is let go once quiet for longer than ``link_window_s``. Clusters that
join an open incident need no evidence of their own.

An incident resolves when all its members have closed and ``resolve_after_s`` has passed
since its last activity. A resolved incident never reopens: a new problem on the same
metrics opens a NEW incident whose ``follows`` names the one before (so a service failing
again ten minutes later is a new page, linked to its history). Because only recently active
members are linkable, an incident cannot absorb members forever: a quiet gap longer than
``link_window_s`` separates two problems.

Two rules look beyond names (docs/topology.md). **Cascades**: anomalies of services adjacent in
the service topology (:mod:`grouping.topology`) link on their shapes though their names differ; a
cluster linked to an incident that way may join it whatever the scopes, and the root of such an
incident is the callee-most of the services failing first. **A new problem is a new incident**:
a cluster on a host or service of an open incident, after a quiet spell there of
``new_onset_gap_steps`` steps and half the incident's age, opens its own incident (or waits for
the evidence to) instead of joining, unless it only opens again metrics the incident holds whose
level never went half way back while they were quiet (:meth:`IncidentTracker._held`).

**Symptoms**: an anomaly the anomaly tracker opened below its threshold because its machine
(:data:`MACHINE_KEYS`: host, instance, node, pod, container) has an open incident
(:mod:`detectors.events`; ``symptom=True``) is not grouped in the graph: it joins the open
incident with the newest activity on that machine as a member marked ``symptom`` when its shape
correlates with one of that incident's own members there, or is let go when none is open there
any more. Symptoms never
open, link, bridge or date an incident. The incident's start and end, when it resolves, its root
and title, the new-problem rule's quiet spell and the members others link to all come from its
other members.

Incident ids are derived from the first anomaly (metric and start), so the same input gives
the same ids in every mode. Every change is returned as an :class:`IncidentChange`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

import networkx as nx
import numpy as np

from stormeye.core.errors import Conflict
from stormeye.core.labels import ENTITY_KEYS, MACHINE_KEYS
from stormeye.grouping import alertgroups
from stormeye.grouping.correlation import shape_similarity_pairs
from stormeye.grouping.feedback import Pair, allowed_targets, drop_apart, pair, separate_apart
from stormeye.grouping.graph import (
    Edges,
    GroupingConfig,
    Node,
    build_edges,
    components,
    hot_properties,
    strongest_edges,
)
from stormeye.grouping.lsh import ranges
from stormeye.grouping.names import NameIndex, parse
from stormeye.grouping.priority import PriorityModel
from stormeye.grouping.profiles import Profile, move_size, recognise, why_not_each
from stormeye.grouping.report import root_entity, root_metric, root_service, shared_scope, title
from stormeye.grouping.signals import signal_key
from stormeye.grouping.topology import LOCATION_KEYS, Topology

Key = tuple[str, float]

#: labels naming a machine or a container: its metrics share one set of resources, so while it has
#: an open incident its other metrics' moderate moves are symptoms of it (a service's request rates
#: and latencies are driven by its callers and callees instead: the topology links those)
#: a symptom is compared with this many of its machine's incident's own members (the strongest)
SYMPTOM_PEERS = 8


class AnomalyLike(Protocol):
    metric: str
    start: float
    end: float
    peak_score: float
    peak_at: float
    direction: int
    open: bool


class Spanned(Protocol):
    start: float
    end: float
    open: bool


def problem_start(members: Sequence[Spanned]) -> float:
    """The first onset of the members that lasted. A blip (a member seen on one sample only and
    closed since) does not date the problem; when nothing lasted, the first blip does."""
    lasting = [m for m in members if m.open or m.end > m.start]
    return min(m.start for m in lasting or members)


@dataclass
class Member:
    """An anomaly inside an incident, with the evidence that brought it in."""

    metric: str
    start: float
    end: float
    peak_score: float
    peak_at: float
    direction: int
    open: bool
    joined_at: float
    evidence: dict[str, Any] = field(default_factory=dict)
    #: joined as a symptom of the incident (see the module doc)
    symptom: bool = False
    #: how far it moved (:func:`~stormeye.grouping.profiles.move_size`, the largest seen): noise profiles compare it
    size: float = 0.0
    #: the anomaly's highest uncapped level (:attr:`~stormeye.detectors.events.Anomaly.peak_level`)
    peak_level: float = 0.0

    @property
    def key(self) -> Key:
        return (self.metric, self.start)


_PRIMITIVE = (str, int, float, bool, type(None))
_PRIMITIVE_TYPES = frozenset(_PRIMITIVE)


def _plain(v: Any) -> Any:
    """``v`` as ``dataclasses.asdict`` copies a field's value: containers copied, items alike
    (plain items taken as they are, without a call each: an incident's members' evidence holds
    hundreds of them)."""
    if isinstance(v, _PRIMITIVE):
        return v
    if isinstance(v, dict):
        prim = _PRIMITIVE_TYPES
        return type(v)((k if type(k) in prim else _plain(k), x if type(x) in prim else _plain(x)) for k, x in v.items())
    if isinstance(v, (list, tuple)) and not hasattr(v, "_fields"):
        return type(v)(x if type(x) in _PRIMITIVE_TYPES else _plain(x) for x in v)
    return asdict(v) if hasattr(v, "__dataclass_fields__") else deepcopy(v)


def _member_dict(m: Member) -> dict[str, Any]:
    """A member's fields as :func:`_plain` copies them (plain values as they are, without a call each)."""
    out = {}
    for k in _MEMBER_FIELDS:
        v = getattr(m, k)
        out[k] = v if type(v) in _PRIMITIVE_TYPES else _plain(v)
    return out


@dataclass
class Incident:
    """A group of anomalies that belong together, kept across ticks."""

    id: str
    opened_at: float
    updated_at: float
    status: str = "open"  # open | recognised | resolved | merged
    resolved_at: float | None = None
    merged_into: str | None = None
    merged_from: list[str] = field(default_factory=list)
    follows: str | None = None
    members: dict[Key, Member] = field(default_factory=dict)
    priority: int = 5
    priority_score: float = 0.0
    priority_parts: dict[str, float] = field(default_factory=dict)
    title: str = ""
    root: str | None = None
    root_entity: str | None = None
    #: the service it is about (:func:`~stormeye.grouping.report.root_service`), "" when none
    root_service: str = ""
    version: int = 0
    #: the evidence of the anomalies that opened it (see :meth:`IncidentTracker.evidence`)
    evidence: float = 0.0
    #: the noise profile it matched (status ``recognised``: it pages nobody), or matched until it escalated
    profile: str | None = None

    @property
    def start(self) -> float:
        """When the problem began (:func:`problem_start` of its own members)."""
        return problem_start(self.own_members()) if self.members else self.opened_at

    @property
    def first_sign(self) -> float:
        """Its own members' first onset, blips included: how long the trouble has been showing."""
        return min(m.start for m in self.own_members()) if self.members else self.opened_at

    def own_members(self) -> list[Member]:
        """Members that are not symptoms (all of them when every one is)."""
        own = [m for m in self.members.values() if not m.symptom]
        return own or list(self.members.values())

    @property
    def end(self) -> float:
        return max(m.end for m in self.own_members()) if self.members else self.updated_at

    @property
    def last_activity(self) -> float:
        return self.end

    @property
    def metrics(self) -> list[str]:
        return sorted({m.metric for m in self.members.values()})

    def to_dict(self) -> dict[str, Any]:
        """The raw data of the incident, JSON-ready (members sorted by start).

        What ``dataclasses.asdict`` gives (fields in order, containers copied), field by field:
        a replay snapshots every incident a step touches, and ``asdict`` walked and deep-copied
        every member twice (a third of a replay of SMD's seven servers)."""
        d: dict[str, Any] = {}
        for name in _INCIDENT_FIELDS:
            if name == "members":
                members = sorted(self.members.values(), key=lambda m: (m.start, m.metric))
                d[name] = [_member_dict(m) for m in members]
            else:
                d[name] = _plain(getattr(self, name))
        d["start"], d["end"] = self.start, self.end
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Incident:
        data = {k: v for k, v in d.items() if k not in ("members", "start", "end")}
        inc = cls(**data)
        for m in d.get("members", []):
            mem = Member(**m)
            inc.members[mem.key] = mem
        return inc


@dataclass(frozen=True)
class IncidentChange:
    """One recorded change: opened, grew, merged, absorbed, priority_changed, resolved."""

    incident: str
    kind: str
    at: float
    details: dict[str, Any] = field(default_factory=dict)


class ActionRefused(Conflict, ValueError):
    """A person's action the tracker's state does not allow (the message says why)."""


@dataclass
class Decision:
    """What the tracker decided for a person's action: the incidents it touched as they are now
    (members, status, start and end, root, title, priority) and the changes to record. The
    database stores exactly this; nothing downstream works the incidents' properties out again."""

    incidents: list[Incident]
    changes: list[IncidentChange]


#: statuses of an incident still going on: ``recognised`` is open, but a known routine that pages nobody
LIVE = ("open", "recognised")

#: share of a group's anomalies that must hold a hot pair for it to be the group's scope
SCOPE_SHARE = 0.8


def _row_entries(mat: Any, nodes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The stored ``(columns, values)`` of rows ``nodes`` of a CSR matrix, row after row: what
    ``mat[nodes]`` holds, gathered without building a matrix (these are small, and built often)."""
    rows = np.asarray(nodes, dtype=np.int64)
    ptr = mat.indptr
    starts = ptr[rows].astype(np.int64)
    lens = ptr[rows + 1].astype(np.int64) - starts
    if not lens.sum():
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    flat = ranges(starts, lens)
    return mat.indices[flat], mat.data[flat]


def _scope(hotness: Any, nodes: list[int]) -> np.ndarray:
    """Hot pairs (columns) that at least ``SCOPE_SHARE`` of ``nodes`` hold."""
    cols, _ = _row_entries(hotness, nodes)
    counts = np.bincount(cols, minlength=hotness.shape[1])
    return np.flatnonzero(counts >= SCOPE_SHARE * len(nodes))


def incident_id(metric: str, start: float) -> str:
    digest = hashlib.sha1(f"{metric}|{start:.3f}".encode()).hexdigest()[:12]
    return f"inc-{digest}"


class IncidentTracker:
    """Groups anomalies into incidents and keeps them across ticks (pure; state is serializable)."""

    def __init__(
        self,
        index: NameIndex,
        config: GroupingConfig | None = None,
        priority: PriorityModel | None = None,
        step: float = 60.0,
        retain_s: float = 86400.0,
        topology: Topology | None = None,
    ) -> None:
        self.index = index
        self.config = config or GroupingConfig()
        self.priority = priority or PriorityModel()
        self.step = step
        self.retain_s = retain_s
        #: the service dependency graph (declared, read from service-graph metrics, learnt from history)
        self.topology = topology if topology is not None else Topology()
        self.incidents: dict[str, Incident] = {}
        self._of: dict[Key, str] = {}
        self._last_of_metric: dict[str, str] = {}
        self._props: dict[str, dict[str, str]] = {}
        self._pair_of_column: dict[int, tuple[str, str]] = {}
        self._weights: dict[str, float] = {}
        self._signals: dict[str, object] = {}
        #: within one update: each machine's open incident for symptoms (see :meth:`_attach_symptom`)
        self._machine_incident: dict[str, Incident] | None = None
        #: anomalies whose cluster has too little evidence to open an incident yet (see ``update``)
        self._pending: dict[Key, Member] = {}
        self.last_edges: Edges | None = None  # the newest tick's graph, for explanations
        #: metric pairs a person split apart: never linked or put in one incident again (grouping.feedback)
        self.apart: set[Pair] = set()
        #: the instances of each service seen anomalous or alerting: the "of N instances" of a service incident
        self.instances = alertgroups.InstanceBook()
        #: routines people marked ``noise`` (grouping.profiles): a cluster matching one opens ``recognised``
        self.profiles: list[Profile] = []

    # -- queries -------------------------------------------------------------------------

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.status in LIVE]

    def pending(self) -> list[Member]:
        """Anomalies waiting for enough evidence to open an incident, oldest first."""
        return sorted(self._pending.values(), key=lambda m: (m.start, m.metric))

    def symptom_candidates(self, metrics: Sequence[str]) -> np.ndarray:
        """Which of ``metrics`` may open a symptom: their machine (:meth:`_machine`) has an open
        incident, and they are not already anomalous members of one."""
        out = np.zeros(len(metrics), dtype=bool)
        open_incs = self.open_incidents()
        if not open_incs or not len(metrics):
            return out
        entities: set[str] = set()
        inside: set[str] = set()
        for inc in open_incs:
            for m in inc.members.values():
                inside.add(m.metric)
                if not m.symptom:
                    e = self._machine(m.metric)
                    if e is not None:
                        entities.add(e)
        if not entities:
            return out
        self._learn_props([name for name in metrics if name not in inside])
        for i, name in enumerate(metrics):
            out[i] = name not in inside and self._machine(name) in entities
        return out

    def incident_of(self, metric: str, start: float) -> Incident | None:
        iid = self._of.get((metric, start))
        return self.incidents.get(iid) if iid else None

    def props(self, metric: str) -> dict[str, str]:
        p = self._props.get(metric)
        if p is None:
            # a known metric was parsed when it was added: rebuild its properties from its pairs
            p = dict(t.split("=", 1) for t in self.index.tokens(metric)) if metric in self.index else parse(metric)
            self._props[metric] = p
        return p

    def _learn_props(self, metrics: Sequence[str]) -> None:
        """Properties of many known metrics at once, from the name index's rows (one gather)."""
        todo = [m for m in dict.fromkeys(metrics) if m not in self._props and m in self.index]
        if not todo:
            return
        rows = self.index.vectors(todo)
        cols = rows.indices.tolist()
        kv = self._pair_of_column
        for c in set(cols) - kv.keys():
            key, _, value = self.index.column_token(c).partition("=")
            kv[c] = (key, value)
        ptr = rows.indptr.tolist()
        for k, m in enumerate(todo):
            self._props[m] = dict(kv[c] for c in cols[ptr[k] : ptr[k + 1]])

    def learn_names(self, metrics: Sequence[str]) -> int:
        """Read service dependencies from service-graph metrics among ``metrics`` (registered names)."""
        return self.topology.learn_names(self.props(m) for m in metrics if Topology.may_name_edge(m))

    def _services(self, metrics: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, str | None]]] | None:
        """Per metric, the number of its (service, location) in the topology (-1: none), and those pairs
        by number; None when the topology is empty. The location is the metric's region, zone or
        cluster (:data:`LOCATION_KEYS`): a dependency links a service's callers in the same place."""
        if not len(self.topology):
            return None
        names: dict[tuple[str, str | None], int] = {}
        ids = np.full(len(metrics), -1, dtype=np.int64)
        for i, m in enumerate(metrics):
            p = self.props(m)
            svc = self.topology.service_of(p)
            if svc is not None:
                loc = next((p[k] for k in LOCATION_KEYS if k in p), None)
                ids[i] = names.setdefault((svc, loc), len(names))
        return ids, list(names)

    # -- the tick ------------------------------------------------------------------------

    def update(
        self, now: float, anomalies: Iterable[AnomalyLike], windows: Callable[[Sequence[str]], np.ndarray]
    ) -> list[IncidentChange]:
        """Apply one tick's changed anomalies; returns every incident change it caused."""
        changes: list[IncidentChange] = []
        touched: set[str] = set()
        new: list[AnomalyLike] = []
        seen: set[Key] = set()
        symptoms: list[AnomalyLike] = []
        self._machine_incident = None
        for a in anomalies:
            key = (a.metric, a.start)
            if key in seen:
                continue
            seen.add(key)
            iid = self._of.get(key)
            if iid is None and getattr(a, "symptom", False):
                symptoms.append(a)  # joins below if it moves like its machine's incident
                continue
            if iid is None and key not in self._pending:
                grown = self._symptom_grown(now, a, touched)
                if grown is not None:
                    changes += grown
                    continue
            if iid is None:
                held = self._pending.get(key)
                if held is not None:
                    held.end, held.open = max(held.end, a.end), a.open
                    held.peak_level = max(held.peak_level, getattr(a, "peak_level", 0.0))
                    if a.peak_score > held.peak_score:
                        held.peak_score, held.peak_at, held.direction = a.peak_score, a.peak_at, a.direction
                        held.size = move_size(a)
                else:
                    new.append(a)
                continue
            inc = self.incidents[iid]
            mem = inc.members[key]
            mem.end, mem.open = max(mem.end, a.end), a.open
            mem.peak_level = max(mem.peak_level, getattr(a, "peak_level", 0.0))
            if a.peak_score > mem.peak_score:
                mem.peak_score, mem.peak_at, mem.direction = a.peak_score, a.peak_at, a.direction
                mem.size = move_size(a)  # at the peak, as the anomaly's evidence
            elif not mem.size:
                mem.size = move_size(a)
            inc.updated_at = now
            touched.add(iid)
        if symptoms:
            changes += self._attach_symptoms(now, symptoms, windows, touched)
        # waiting anomalies are grouped again with the new ones: related evidence, strength or
        # persistence may have arrived; those that went quiet beyond the link window are let go
        horizon = self.config.link_window_s
        for key in [k for k, w in self._pending.items() if not w.open and now - w.end > horizon]:
            del self._pending[key]
        waiting: list[AnomalyLike] = list(self._pending.values())
        self._pending = {}
        if new or waiting:
            # waiting anomalies restored from a saved state may predate the index
            self.index.add(sorted({a.metric for a in new + waiting if a.metric not in self.index}))
            self._learn_props([a.metric for a in new])
            for a in new:
                alertgroups.note_severity(a, self.props(a.metric))
                self.instances.note(self.props(a.metric))
            if new and self.topology.cooccur_min > 0:
                onsets = [Topology.entity_of(self.props(a.metric)) for a in new]
                self.topology.observe([s for s in onsets if s])
            changes += self._group_new(now, new + waiting, windows, touched)
        for iid in sorted(touched):
            inc = self.incidents[iid]
            if inc.status in LIVE:
                changes += self._refresh(now, inc)
                if inc.status == "recognised":
                    changes += self._still_routine(now, inc)
        changes += self._resolve(now)
        self._prune(now)
        return changes

    def _attach_symptoms(
        self, now: float, symptoms: list[AnomalyLike], windows: Callable[[Sequence[str]], np.ndarray], touched: set[str]
    ) -> list[IncidentChange]:
        """Symptoms not in an incident yet join the open incident with the newest activity on their
        machine when they move like it: the shape of a symptom's recent window correlates (as a graph
        edge's shape must: :attr:`GroupingConfig.min_shape`, lags and views alike) with one of that
        incident's own members on the machine (its :data:`SYMPTOM_PEERS` strongest). A metric that
        only crossed the release level by chance does not; one the failure drags along does, from
        its first sample. Others are let go for now (the anomaly tracker hands a symptom over again
        at each step it stays above release, so it is looked at again as its window grows)."""
        self._learn_props([a.metric for a in symptoms])
        by_machine = self._machine_incidents()
        cfg = self.config
        rows: dict[str, int] = {}
        left: list[int] = []
        right: list[int] = []
        owner: list[int] = []
        placed: list[tuple[AnomalyLike, str, Incident] | None] = []
        for i, a in enumerate(symptoms):
            entity = self._machine(a.metric)
            inc = by_machine.get(entity) if entity is not None else None
            placed.append(None if inc is None or entity is None else (a, entity, inc))
            if inc is None:
                continue
            peers = [m for m in inc.own_members() if m.metric != a.metric and self._machine(m.metric) == entity]
            peers.sort(key=lambda m: (-m.peak_score, m.start, m.metric))
            mine = rows.setdefault(a.metric, len(rows))
            for m in peers[:SYMPTOM_PEERS]:
                left.append(mine)
                right.append(rows.setdefault(m.metric, len(rows)))
                owner.append(i)
        if not left:
            return []
        win = windows(list(rows))[:, -cfg.shape_points :]
        names = list(rows)
        shape, lag = shape_similarity_pairs(
            win,
            np.array(left, dtype=np.int64),
            np.array(right, dtype=np.int64),
            cfg.max_lag_steps,
            cfg.shape_kinds,
            absolute=cfg.shape_absolute,
        )
        strength = np.abs(shape) if cfg.shape_absolute else shape
        best: dict[int, int] = {}  # symptom -> its most similar peer's pair
        for k, i in enumerate(owner):
            if strength[k] >= cfg.min_shape and (i not in best or strength[k] > strength[best[i]]):
                best[i] = k
        changes: list[IncidentChange] = []
        for i, k in sorted(best.items()):
            got = placed[i]
            assert got is not None
            a, entity, inc = got
            mem = self._member(a, now)
            mem.symptom = True
            mem.evidence = {
                "symptom": True,
                "entity": entity,
                "to": names[right[k]],
                "shape": round(float(shape[k]), 4),
                "lag_s": float(lag[k]) * self.step,
            }
            inc.members[mem.key] = mem
            self._of[mem.key] = inc.id
            inc.updated_at = now
            touched.add(inc.id)
            changes.append(IncidentChange(inc.id, "grew", now, {"added": [a.metric], "symptom": True}))
        return changes

    def _machine_incidents(self) -> dict[str, Incident]:
        """Each machine's open incident with the newest activity (built once per tick)."""
        if self._machine_incident is None:
            best: dict[str, Incident] = {}
            ranked = sorted(self.open_incidents(), key=lambda i: (i.last_activity, i.opened_at, i.id))
            for open_inc in ranked:  # a later (newer) incident overwrites an older one
                for m in open_inc.members.values():
                    e = None if m.symptom else self._machine(m.metric)
                    if e is not None:
                        best[e] = open_inc
            self._machine_incident = best
        return self._machine_incident

    def _symptom_grown(self, now: float, a: AnomalyLike, touched: set[str]) -> list[IncidentChange] | None:
        """A new anomaly on a metric whose symptom just ended by reaching the threshold (the anomaly
        tracker ends a symptom there and opens this one): it stays in the symptom's incident as one of
        its own members, unless it is a new problem there (:meth:`_new_problem`); None: not such an
        anomaly, it is grouped like any other."""
        iid = self._last_of_metric.get(a.metric)  # the incident its symptom was in, if it was one
        inc = self.incidents.get(iid) if iid is not None else None
        if inc is None or inc.status not in LIVE:
            return None
        was = [m for m in inc.members.values() if m.symptom and m.metric == a.metric]
        if not was or max(m.end for m in was) < a.start - self.step - 1e-6:
            return None
        entity = self._entity(a.metric)
        gap = self.config.new_onset_gap_steps
        if gap > 0 and self._new_problem(inc.id, a.start, {entity}, gap):
            return None
        mem = self._member(a, now)
        mem.evidence = {"grew_from_symptom": True, "entity": entity}
        inc.members[mem.key] = mem
        self._of[mem.key] = inc.id
        inc.updated_at = now
        touched.add(inc.id)
        return [IncidentChange(inc.id, "grew", now, {"added": [a.metric]})]

    def _linkable(self, now: float) -> list[Member]:
        horizon = self.config.link_window_s
        out: list[Member] = []
        for inc in self.incidents.values():
            if inc.status not in LIVE:
                continue
            out.extend(m for m in inc.members.values() if not m.symptom and (m.open or now - m.end <= horizon))
        return out

    def _group_new(
        self, now: float, new: list[AnomalyLike], windows: Callable[[Sequence[str]], np.ndarray], touched: set[str]
    ) -> list[IncidentChange]:
        new.sort(key=lambda a: (a.start, a.metric))
        old = self._linkable(now)
        nodes = [Node(key=(a.metric, a.start), metric=a.metric, start=a.start) for a in new]
        nodes += [Node(key=m.key, metric=m.metric, start=m.start, incident=self._of[m.key]) for m in old]
        # the new and waiting anomalies' metrics were added by update(); members restored from a
        # saved state may predate the index
        self.index.add(sorted({m.metric for m in old if m.metric not in self.index}))
        n_new = len(new)
        svc = self._services([nd.metric for nd in nodes])
        services: tuple[np.ndarray, np.ndarray] | None = None
        adjacent, explained = None, None
        if svc is not None:
            node_services, svc_names = svc
            topo = self.topology

            def adjacent(a: int, b: int) -> bool:
                (sa, la), (sb, lb) = svc_names[a], svc_names[b]
                return (la is None or lb is None or la == lb) and topo.adjacent(sa, sb)

            def explained(part: np.ndarray) -> bool:
                return self._cascade(node_services[part], [n for n, _ in svc_names])

            svc_of = np.array([n for n, _ in svc_names] + [""], dtype=object)[:-1]
            same_service = (svc_of[:, None] == svc_of[None, :]).reshape(len(svc_names), len(svc_names)).astype(bool)
            services = (node_services, same_service)

        edges = build_edges(nodes, np.arange(n_new), self.index, windows, self.config, self.step, services, adjacent)
        if self.apart:
            edges = drop_apart(edges, [nd.metric for nd in nodes], self.apart)
        self.last_edges = edges
        inner = edges.subset(edges.right < n_new)
        cross = edges.subset(edges.right >= n_new)
        incident_of_node = np.array([nd.incident or "" for nd in nodes], dtype=object)
        comp_of = np.empty(n_new, dtype=np.int64)
        comps = components(n_new, inner, self.config, explained)
        if self.apart:
            comps = separate_apart(comps, inner, [a.metric for a in new], self.apart)
        is_alert = [alertgroups.is_alert(a) for a in new] + [alertgroups.is_alert(m) for m in old]
        links = alertgroups.service_links(
            [nd.metric for nd in nodes], [nd.start for nd in nodes], self.props, n_new, is_alert
        )
        if self.apart:
            links = [(i, j) for i, j in links if pair(nodes[i].metric, nodes[j].metric) not in self.apart]
        comps = alertgroups.join_components(comps, [(i, j) for i, j in links if j < n_new])
        for k, comp in enumerate(comps):
            comp_of[comp] = k
        old_nodes_of: dict[str, list[int]] = {}
        for j in range(n_new, len(nodes)):
            old_nodes_of.setdefault(str(nodes[j].incident), []).append(j)
        targets = self._targets(cross, comp_of, incident_of_node, edges.hotness, old_nodes_of, comps)
        for i, j in links:  # one service's instances failing together join its open incident
            if j >= n_new:
                got = targets.setdefault(int(comp_of[i]), [])
                if nodes[j].incident not in got:
                    got.append(str(nodes[j].incident))
        if self.apart:
            incs = self.incidents
            targets = allowed_targets(
                targets, lambda k: [new[int(i)].metric for i in comps[k]], lambda t: incs[t].metrics, self.apart
            )
        member_target = np.full(len(nodes), -1, dtype=np.int64)
        each = self.member_evidence(new)
        changes: list[IncidentChange] = []
        for k, comp in enumerate(comps):
            fresh = sorted(int(i) for i in comp)
            tg = self._still_growing(now, targets.get(k, []), [new[i] for i in fresh], each[fresh], windows)
            if tg is None:  # a new problem without the evidence of its own yet: it waits for more
                for i in fresh:
                    self._pending[(new[i].metric, new[i].start)] = self._member(new[i], now)
                continue
            if not tg:
                opened_on = self._opens([new[i] for i in fresh], each[fresh])
                if opened_on is None:  # too little evidence yet: its anomalies wait
                    for i in fresh:
                        self._pending[(new[i].metric, new[i].start)] = self._member(new[i], now)
                    continue
                first = new[fresh[0]]
                iid = incident_id(first.metric, first.start)
                inc = Incident(
                    id=iid,
                    opened_at=now,
                    updated_at=now,
                    follows=self._follows([new[i].metric for i in fresh]),
                    evidence=round(opened_on, 4),
                )
                routine = self._routine([new[i] for i in fresh])
                if routine is not None:  # a known routine: recorded, pages nobody
                    inc.status, inc.profile = "recognised", routine.id
                self.incidents[iid] = inc
                kind = "opened"
            else:
                live = sorted({self._current(t) for t in tg}, key=lambda t: (self.incidents[t].opened_at, t))
                iid = live[0]
                inc = self.incidents[iid]
                for other in live[1:]:
                    changes += self._merge(now, other, iid)
                kind = "grew"
            member_target[fresh] = k
            for t in tg:
                member_target[old_nodes_of.get(t, [])] = k
            inc.updated_at = now
            touched.add(iid)
            changes.append(IncidentChange(iid, kind, now, {"added": [new[i].metric for i in fresh]}))
            for i in fresh:
                mem = self._member(new[i], now)
                inc.members[mem.key] = mem
                self._of[mem.key] = iid
        # evidence: each new member's strongest edge to a node of the group it joined
        best = strongest_edges(edges, lambda n, o: (member_target[n] >= 0) & (member_target[n] == member_target[o]))
        placed = [i for i in range(n_new) if i in best and (new[i].metric, new[i].start) in self._of]
        k_edges = np.array([best[i] for i in placed], dtype=np.int64)
        peers = np.where(
            edges.left[k_edges] == np.array(placed, dtype=np.int64), edges.right[k_edges], edges.left[k_edges]
        )
        for i, peer, ev in zip(placed, peers.tolist(), edges.evidence_many(k_edges)):
            key = (new[i].metric, new[i].start)
            mem = self.incidents[self._of[key]].members[key]
            mem.evidence = {**({"alert": True} if mem.evidence.get("alert") else {}), "to": nodes[peer].metric, **ev}
        return changes

    def _routine(self, anomalies: Sequence[AnomalyLike]) -> Profile | None:
        """The noise profile a cluster about to open an incident matches (:func:`grouping.profiles.recognise`)."""
        if not self.profiles or not anomalies:
            return None
        props = {a.metric: self.props(a.metric) for a in anomalies}
        return recognise(self.profiles, anomalies, props, problem_start(anomalies))

    def _still_routine(self, now: float, inc: Incident) -> list[IncidentChange]:
        """A recognised incident that grew beyond what the live profiles know (a member no profile
        knows, a clearly larger move: :func:`grouping.profiles.why_not_each`) or whose profile was
        forgotten pages after all: it becomes ``open``."""
        prof = next((p for p in self.profiles if p.id == inc.profile), None)
        every = list(inc.members.values())  # symptoms too: the routine does not drag them along
        props = {m.metric: self.props(m.metric) for m in every}
        # its own profile knowing every member is one case of each member being known by some profile
        why = "its profile was forgotten" if prof is None else why_not_each(self.profiles, every, props, inc.start)[1]
        if why is None:
            return []
        inc.status = "open"
        inc.version += 1
        return [IncidentChange(inc.id, "escalated", now, {"profile": inc.profile, "why": why})]

    def _cascade(self, services: np.ndarray, names: list[str]) -> bool:
        """Whether a group of anomalies is one failure spread along the topology: nearly all (80%) of
        them are on services of the graph, and those services are connected in it."""
        on = services[services >= 0]
        if len(on) < SCOPE_SHARE * len(services):
            return False
        involved = {names[int(i)] for i in np.unique(on)}
        if len(involved) < 2:
            return False
        return bool(nx.is_connected(self.topology.graph.subgraph(involved).to_undirected(as_view=True)))

    def _still_growing(
        self,
        now: float,
        targets: list[str],
        anomalies: Sequence[AnomalyLike],
        each: np.ndarray,
        windows: Callable[[Sequence[str]], np.ndarray],
    ) -> list[str] | None:
        """The incidents a cluster may join. A cluster that is a new problem for every incident it links
        to (:meth:`_new_problem`: a quiet spell on its hosts or services first, and not a level that
        never went back, :meth:`_held`) is not more of the old one, which may still be open: with the
        evidence to open an incident of its own it opens one (``[]``); while its anomalies are too
        young for their evidence to count fully it waits (None); confirmed and still too weak to page
        on its own, it is a late symptom of the old problem and joins it. Incidents of both kinds
        linked: it joins those still growing."""
        gap = self.config.new_onset_gap_steps
        if not targets or gap <= 0:
            return targets
        onset = min(a.start for a in anomalies)
        entities = {self._entity(a.metric) for a in anomalies} - {None}
        growing = []
        for t in targets:
            cur = self._current(t)
            if not self._new_problem(cur, onset, entities, gap) or self._held(now, cur, anomalies, windows):
                growing.append(t)
        if growing:
            return growing
        if self._opens(anomalies, each) is not None:
            return []
        if not self.confirmed(anomalies).all():
            return None  # too young to tell: it waits a tick for its evidence to be confirmed
        return targets  # confirmed and too weak to be a problem of its own: a late symptom of the old one

    def _held(
        self, now: float, iid: str, anomalies: Sequence[AnomalyLike], windows: Callable[[Sequence[str]], np.ndarray]
    ) -> bool:
        """Whether every anomaly of a cluster opens again on a metric the incident already holds (same
        direction) whose values never went even half way back to the detector's reference while it
        was quiet: the detector got used to a level that did not recover, so the quiet spell the
        new-problem rule saw is the detector's, not the metric's. The reference is the anomaly's own
        (its detector's ``median`` evidence, what it was judged against); without one, or with no
        point of the quiet spell in the recent window, it is not held."""
        inc = self.incidents[iid]
        last: dict[str, Member] = {}
        for m in inc.members.values():
            if not m.symptom and (m.metric not in last or m.start > last[m.metric].start):
                last[m.metric] = m
        cases: list[tuple[AnomalyLike, Member, float]] = []
        for a in anomalies:
            before = last.get(a.metric)
            ref = (getattr(a, "evidence", None) or {}).get("median")
            if before is None or a.direction == 0 or before.direction != a.direction or before.end >= a.start:
                return False
            if not isinstance(ref, (int, float)) or not np.isfinite(ref):
                return False
            cases.append((a, before, float(ref)))
        if not cases:
            return False
        win = np.asarray(windows([a.metric for a, _, _ in cases]), dtype=np.float64)
        at = now - (win.shape[1] - 1 - np.arange(win.shape[1])) * self.step
        eps = 1e-6
        for row, (a, m, ref) in zip(win, cases):
            away = a.direction * (row - ref)  # how far from the reference, in the anomaly's direction
            moved = away[(at >= a.start - eps) & np.isfinite(away)]
            quiet = away[(at > m.end + eps) & (at < a.start - eps) & np.isfinite(away)]
            if not len(moved) or not len(quiet) or moved.max() <= 0 or quiet.min() < 0.5 * moved.max():
                return False
        return True

    def _new_problem(self, iid: str, onset: float, entities: set[str | None], gap: int) -> bool:
        """Whether a cluster starting at ``onset`` on ``entities`` (hosts, services) is a new problem
        rather than more of incident ``iid``: the incident's members there (all its members when none
        are there) last started a quiet spell ago that is at least ``gap`` steps and at least half
        as long as the incident had been going on (since its :attr:`~Incident.first_sign`). A young
        incident (a fault a few minutes old) is told apart from the next fault by a few quiet
        minutes; an incident that has been growing in waves for an hour needs a longer silence
        before a wave is something else."""
        inc = self.incidents[iid]
        own = inc.own_members()
        there = [m for m in own if entities and self._entity(m.metric) in entities]
        mine = there or own
        if not mine:
            return False
        quiet = onset - max(m.start for m in mine)
        return quiet >= max(gap * self.step, 0.5 * (onset - inc.first_sign)) - 1e-6

    def _machine(self, metric: str) -> str | None:
        """The machine a metric is of (:data:`MACHINE_KEYS`: host, instance, node, pod, container), if any."""
        p = self.props(metric)
        for key in MACHINE_KEYS:
            if key in p:
                return f"{key}={p[key]}"
        return None

    def _entity(self, metric: str) -> str | None:
        """The most specific entity (host, pod, service, ...: :data:`ENTITY_KEYS`) a metric is of."""
        p = self.props(metric)
        for key in ENTITY_KEYS[:-1]:  # a region is not one entity
            if key in p:
                return f"{key}={p[key]}"
        return None

    @staticmethod
    def _member(a: AnomalyLike, now: float) -> Member:
        return Member(
            evidence={"alert": True} if alertgroups.is_alert(a) else {},
            symptom=bool(getattr(a, "symptom", False)),
            metric=a.metric,
            start=a.start,
            end=a.end,
            peak_score=a.peak_score,
            peak_at=a.peak_at,
            direction=a.direction,
            open=a.open,
            joined_at=now,
            size=move_size(a),
            peak_level=float(getattr(a, "peak_level", 0.0)),
        )

    def samples(self, anomalies: Sequence[AnomalyLike]) -> np.ndarray:
        """Samples each anomaly has been seen on so far (a one-point anomaly has start == end)."""
        lasted = np.fromiter((a.end - a.start for a in anomalies), np.float64, len(anomalies))
        return np.floor(lasted / self.step + 1e-6).astype(np.int64) + 1

    def confirmed(self, anomalies: Sequence[AnomalyLike]) -> np.ndarray:
        """Which anomalies count fully: seen on ``confirm_points`` samples, or alerts (their sender
        already waited for them: :func:`grouping.alertgroups.is_alert`)."""
        seen = self.samples(anomalies) >= self.config.confirm_points
        return seen | np.fromiter((alertgroups.is_alert(a) for a in anomalies), bool, len(anomalies))

    def weight(self, metric: str) -> float:
        """The metric's priority weight (the rules of :class:`PriorityModel`), remembered."""
        w = self._weights.get(metric)
        if w is None:
            w = self._weights[metric] = self.priority.importance(metric, self.props(metric)).weight
        return w

    def member_evidence(self, anomalies: Sequence[AnomalyLike]) -> np.ndarray:
        """Each anomaly's evidence: peak score x its metric's priority weight, ``unconfirmed_weight``
        of that while it has been seen on fewer than ``confirm_points`` samples."""
        cfg = self.config
        n = len(anomalies)
        peak = np.fromiter((a.peak_score for a in anomalies), np.float64, n)
        weight = np.fromiter((self.weight(a.metric) for a in anomalies), np.float64, n)
        confirmed = self.confirmed(anomalies)
        return peak * weight * np.where(confirmed, 1.0, cfg.unconfirmed_weight)

    def evidence(self, anomalies: Sequence[AnomalyLike], each: np.ndarray | None = None) -> float:
        """How much a group of anomalies says that something is wrong: the sum over its *signals* of
        :meth:`member_evidence`. A signal is one measurement (:func:`grouping.signals.signal_key`:
        a metric, or the quantiles or histogram buckets of one latency) and counts once, by its
        strongest anomaly. ``each``: the anomalies' member evidence when already known."""
        e = self.member_evidence(anomalies) if each is None else each
        keys = [self.signal(a.metric) for a in anomalies]
        if len(set(keys)) == len(keys):
            return float(e.sum())
        best: dict[object, float] = {}
        for k, v in zip(keys, e.tolist()):
            best[k] = max(best.get(k, 0.0), v)
        return float(sum(best.values()))

    def signal(self, metric: str) -> object:
        """The measurement ``metric`` is one view of (:func:`grouping.signals.signal_key`), remembered."""
        key = self._signals.get(metric)
        if key is None:
            key = self._signals[metric] = signal_key(self.props(metric))
        return key

    def _opens(self, anomalies: Sequence[AnomalyLike], each: np.ndarray) -> float | None:
        """The evidence of a cluster linked to no open incident when it is worth an incident (a page)
        now, else None."""
        cfg = self.config
        ev = self.evidence(anomalies, each)
        if ev >= cfg.open_min_evidence:
            return ev
        if cfg.open_after_points > 0:
            weight = np.fromiter((self.weight(a.metric) for a in anomalies), np.float64, len(anomalies))
            lasting = (self.samples(anomalies) >= cfg.open_after_points) & (weight >= cfg.open_after_min_weight)
            if lasting.any():
                return ev
        if cfg.open_alone_level > 0:
            # one metric alone, whatever its weight, when its move is extreme and lasts (alerts and
            # other members without a level never qualify)
            level = np.fromiter((getattr(a, "peak_level", 0.0) for a in anomalies), np.float64, len(anomalies))
            alone = (level >= cfg.open_alone_level) & (self.samples(anomalies) >= cfg.open_alone_points)
            if alone.any():
                return ev
        return None

    def _targets(
        self,
        cross: Edges,
        comp_of: np.ndarray,
        incident_of_node: np.ndarray,
        hotness: Any,
        old_nodes_of: dict[str, list[int]],
        comps: list[np.ndarray],
    ) -> dict[int, list[str]]:
        """Open incidents each cluster of new anomalies joins.

        The cluster joins the most strongly linked incident that one hot property explains together
        with it (see :meth:`_shared_explanation`): a few members in the intersection of two scopes
        do not carry a whole cluster into the other problem. It also merges in any other linked
        incident that at least ``merge_min_links`` of its new anomalies link to with comparable
        weight and that shares an explanation with the chosen one. A cluster that only one incident
        can explain must hold that incident's whole scope (:meth:`_within`): a wider cluster joins
        only when it bridges two or more incidents."""
        weight: dict[int, dict[str, float]] = {}
        linkers: dict[tuple[int, str], set[int]] = {}
        cascade: set[tuple[int, str]] = set()  # (cluster, incident) linked along the service topology
        for a, b, w, t in zip(cross.left.tolist(), cross.right.tolist(), cross.weight.tolist(), cross.topo().tolist()):
            k, iid = int(comp_of[a]), str(incident_of_node[b])
            per = weight.setdefault(k, {})
            per[iid] = per.get(iid, 0.0) + w
            linkers.setdefault((k, iid), set()).add(a)
            if t > 0:
                cascade.add((k, iid))
        out: dict[int, list[str]] = {}
        for k, cand in weight.items():
            fresh = [int(i) for i in comps[k]]
            ranked = sorted(cand, key=lambda t: (-cand[t], t))
            # a failure spreading along a dependency is one problem, whatever the two services' scopes
            joinable = [
                t for t in ranked if (k, t) in cascade or self._explains(hotness, fresh, old_nodes_of.get(t, []))
            ]
            if not joinable:
                continue
            if (
                len(joinable) == 1
                and (k, joinable[0]) not in cascade
                and not self._within(hotness, fresh, old_nodes_of.get(joinable[0], []))
            ):
                continue  # a wider cluster that bridges nothing: it would widen the incident's scope
            best = joinable[0]
            out[k] = [best] + [
                iid
                for iid, w in cand.items()
                if iid != best
                and len(linkers[(k, iid)]) >= self.config.merge_min_links
                and w >= 0.5 * cand[best]
                and self._shared_explanation(hotness, old_nodes_of.get(best, []), old_nodes_of.get(iid, []))
                >= self.config.merge_min_shared
            ]
        if hotness is not None and self.config.scope_join_min > 0:
            self._join_by_scope(out, hotness, old_nodes_of, comps)
        return out

    def _join_by_scope(
        self, out: dict[int, list[str]], hotness: Any, old_nodes_of: dict[str, list[int]], comps: list[np.ndarray]
    ) -> None:
        """A cluster of at least ``scope_join_min`` new anomalies with no edge to any open incident
        joins the active incident whose scope (``SCOPE_SHARE``) is the same as its own (the one
        opened first when several are): the same property explains both at the same time, so
        they are one problem, though the candidate search proposed no pair across (each new
        anomaly's best name neighbours were other new ones) or the shapes differ. Measured in
        docs/grouping.md; a scope that merely contains the incident's joined too much."""
        if not any(k not in out and len(comp) >= self.config.scope_join_min for k, comp in enumerate(comps)):
            return  # no cluster may join by scope: the incidents' scopes are not needed
        scopes = {iid: set(_scope(hotness, nodes).tolist()) for iid, nodes in old_nodes_of.items() if nodes}
        scopes = {iid: sc for iid, sc in scopes.items() if sc}
        if not scopes:
            return
        for k, comp in enumerate(comps):
            if k in out or len(comp) < self.config.scope_join_min:
                continue
            own = set(_scope(hotness, [int(i) for i in comp]).tolist())
            fits = [iid for iid, sc in scopes.items() if sc == own]  # both non-empty: scopes holds none empty
            if fits:
                out[k] = [min(fits, key=lambda t: (self.incidents[t].opened_at, t))]

    def _explains(self, hotness: Any, a: list[int], b: list[int]) -> bool:
        """Whether one property explains both groups of nodes; groups without any hot property (bare
        names, a quiet moment) are judged by their edges alone.

        When each group has a *scope* — hot pairs that nearly all its nodes hold (``SCOPE_SHARE``)
        — they must share one: a burst of ``country=England`` anomalies is not the ``os=Android``
        incident that started four minutes earlier, even when half of the burst are England-Android
        metrics and Android, hot for longer, is the hotter pair. Otherwise one property must explain
        both well enough (:meth:`_shared_explanation`)."""
        if hotness is None or not a or not b:
            return True
        if not len(_row_entries(hotness, a)[0]) or not len(_row_entries(hotness, b)[0]):
            return True
        scope_a, scope_b = _scope(hotness, a), _scope(hotness, b)
        if len(scope_a) and len(scope_b):
            return bool(np.intersect1d(scope_a, scope_b).size)
        return self._shared_explanation(hotness, a, b) >= self.config.merge_min_shared

    def _within(self, hotness: Any, fresh: list[int], old: list[int]) -> bool:
        """Whether the incident's scope (``old``) is within the cluster's (``fresh``): the cluster is
        explained by everything that explains the incident. True when either has no scope."""
        if hotness is None or not fresh or not old:
            return True
        inc_scope, own = _scope(hotness, old), _scope(hotness, fresh)
        if not len(inc_scope) or not len(own):
            return True
        return bool(np.isin(inc_scope, own).all())

    def _shared_explanation(self, hotness: Any, a: list[int], b: list[int]) -> float:
        """How well one hot property explains both groups, relative to how well each is explained.

        A property explains a group by the share of its members holding it times its hotness. The
        best property both groups hold is scored by the smaller of its two explanations, over the
        smaller of the two groups' own best explanations: 1 when one property is the best account of
        both (two hosts of the failing service), low when each has a better account of its own
        (England and Android, whose shared ``device=mobile`` explains each far worse than its own
        country or OS).
        """
        if hotness is None or not a or not b:
            return 0.0
        (ia, va), (ib, vb) = _row_entries(hotness, a), _row_entries(hotness, b)
        width = hotness.shape[1]
        heat = np.zeros(width)
        heat[ia], heat[ib] = va, vb
        ea = np.bincount(ia, minlength=width) / len(a) * heat
        eb = np.bincount(ib, minlength=width) / len(b) * heat
        own = min(ea.max(), eb.max())
        return float(np.minimum(ea, eb).max() / own) if own > 0 else 0.0

    def _current(self, iid: str) -> str:
        """Follow merges to the incident that holds ``iid``'s members now."""
        seen = set()
        while self.incidents[iid].merged_into and iid not in seen:
            seen.add(iid)
            iid = self.incidents[iid].merged_into  # type: ignore[assignment]
        return iid

    def _follows(self, metrics: Sequence[str]) -> str | None:
        prev = [self._last_of_metric[m] for m in metrics if m in self._last_of_metric]
        prev = [p for p in prev if p in self.incidents]
        if not prev:
            return None
        return max(prev, key=lambda p: (self.incidents[p].updated_at, p))

    def _merge(self, now: float, source_id: str, target_id: str) -> list[IncidentChange]:
        src, dst = self.incidents[source_id], self.incidents[target_id]
        for key, mem in src.members.items():
            dst.members[key] = mem
            self._of[key] = target_id
        src.members = {}
        src.status, src.merged_into, src.updated_at = "merged", target_id, now
        src.version += 1
        dst.merged_from.append(source_id)
        return [
            IncidentChange(target_id, "absorbed", now, {"from": source_id}),
            IncidentChange(source_id, "merged", now, {"into": target_id}),
        ]

    def _refresh(self, now: float, inc: Incident) -> list[IncidentChange]:
        members = list(inc.members.values())  # the priority counts symptoms too (a KPI among them matters)
        own = inc.own_members()  # the root and the title come from the incident's own anomalies
        metrics = inc.metrics
        props = {m: self.props(m) for m in metrics}
        before = inc.priority
        pr = self.priority.score(members, props, inc.last_activity)
        inc.priority, inc.priority_score = pr.level, pr.score
        inc.priority_parts = {**pr.parts, "evidence": inc.evidence}  # what opened it, beside the priority's parts
        importance = lambda m: self.priority.importance(m, props[m])  # noqa: E731
        inc.root = root_metric(own, importance)
        own_metrics = sorted({m.metric for m in own})
        # members restored from a saved state (another process committed them) may predate this index
        self.index.add([m for m in own_metrics if m not in self.index])
        hot = hot_properties(self.index, own_metrics, self.config) if len(own_metrics) > 1 else []
        inc.root_entity = root_entity(own_metrics, props, hot)
        cascade_root = self._cascade_root(own, props)
        if cascade_root is not None:
            key, svc = cascade_root
            inc.root = root_metric([m for m in own if props[m.metric].get(key) == svc] or own, importance)
            inc.root_entity = f"{key}={svc}"
        inc.title = title(own, props, inc.root, inc.root_entity)
        alerting = any(alertgroups.is_alert(m) for m in own)
        service = alertgroups.service_scope(own, props) if cascade_root is None and alerting else None
        if service is not None:  # one service failing on several of its instances
            key, svc, instances = service
            inc.root_entity = f"{key}={svc}"
            known = self.instances.count(key, svc)
            inc.title = alertgroups.service_title(own, props, svc, instances, known)
        inc.root_service = root_service(
            props[inc.root] if inc.root else None, shared_scope(metrics, props), inc.root_entity
        )
        inc.version += 1
        for m in metrics:
            self._last_of_metric[m] = inc.id
        if inc.version > 1 and pr.level != before:
            return [IncidentChange(inc.id, "priority_changed", now, {"from": before, "to": pr.level})]
        return []

    def _cascade_root(self, members: Sequence[Member], props: dict[str, dict[str, str]]) -> tuple[str, str] | None:
        """``(label, service)`` where a cascade came from: the failing service that calls no other
        failing one (:meth:`Topology.root`); None when the members are on fewer than two services
        of the topology."""
        if not len(self.topology):
            return None
        first: dict[str, float] = {}
        keys: dict[str, str] = {}
        for m in members:
            p = props[m.metric]
            svc = self.topology.service_of(p)
            if svc is not None:
                first[svc] = min(first.get(svc, m.start), m.start)
                keys.setdefault(svc, self.topology.service_key(p) or "service")
        root = self.topology.root(first, 0.5 * self.step)  # the callee-most of those failing first
        return None if root is None else (keys[root], root)

    def _resolve(self, now: float) -> list[IncidentChange]:
        out = []
        for inc in self.open_incidents():
            if any(m.open for m in inc.own_members()):  # a lingering symptom does not keep it open
                continue
            if now - inc.last_activity >= self.config.resolve_after_s:
                inc.status, inc.resolved_at, inc.updated_at = "resolved", now, now
                inc.version += 1
                out.append(IncidentChange(inc.id, "resolved", now, {"members": len(inc.members)}))
        return out

    def resolve_all(self, now: float) -> list[IncidentChange]:
        """Close every member and resolve every open incident (end of a replay)."""
        for inc in self.open_incidents():
            for m in inc.members.values():
                m.open = False
        saved = self.config
        self.config = replace(saved, resolve_after_s=0.0)
        try:
            return self._resolve(now)
        finally:
            self.config = saved

    def _prune(self, now: float) -> None:
        """Forget incidents that ended long ago (they live on in the database)."""
        old = [
            i for i, inc in self.incidents.items() if inc.status not in LIVE and now - inc.updated_at > self.retain_s
        ]
        for iid in old:
            inc = self.incidents.pop(iid)
            for key in inc.members:
                if self._of.get(key) == iid:
                    del self._of[key]

    # -- people's actions ----------------------------------------------------------------
    #
    # A person resolves, merges or splits incidents; the tracker decides what that makes of them
    # (who holds which member, and each touched incident's root, title and priority, as a tick
    # would: cascade roots included) and returns it as a :class:`Decision` for the caller to store.
    # The runtime applies every recorded action to its running tracker, and workers/actions.py to
    # a tracker holding the incidents the database has (:meth:`hold`), so both store one answer.

    def hold(self, incidents: Iterable[Incident]) -> None:
        """Take incidents into the tracker (e.g. as the database holds them), replacing any of the same id."""
        for inc in incidents:
            old = self.incidents.get(inc.id)
            if old is not None:
                for key in old.members:
                    if self._of.get(key) == inc.id:
                        del self._of[key]
            self.incidents[inc.id] = inc
            for key in inc.members:
                self._of[key] = inc.id

    def _open(self, iid: str) -> Incident:
        inc = self.incidents.get(iid)
        if inc is None:
            raise ActionRefused(f"incident {iid!r} is not held by the tracker")
        if inc.status not in LIVE:
            raise ActionRefused(f"incident {iid!r} is {inc.status}")
        return inc

    def resolve(self, iid: str, now: float, actor: str = "") -> Decision:
        """Resolve an open incident now: its members stop linking new anomalies."""
        inc = self._open(iid)
        inc.status, inc.resolved_at, inc.updated_at = "resolved", now, now
        inc.version += 1
        change = IncidentChange(iid, "resolved", now, {"members": len(inc.members), "by": actor, "manual": True})
        return Decision([inc], [change])

    def merge(self, source: str, target: str, now: float, actor: str = "") -> Decision:
        """Move every member of ``source`` into ``target``; ``source`` ends as ``merged`` into it."""
        if source == target:
            raise ActionRefused("an incident cannot be merged with itself")
        src = self._open(source)
        dst = self._open(target)
        changes = [
            IncidentChange(c.incident, c.kind, c.at, {**c.details, "by": actor, "manual": True})
            for c in self._merge(now, source, target)
        ]
        dst.updated_at = now
        return Decision([dst, src], changes + self._refresh(now, dst))

    def split(self, iid: str, metrics: Iterable[str], new_id: str, now: float, actor: str = "") -> Decision:
        """Move the members on ``metrics`` into a new open incident ``new_id`` (some members must stay)."""
        src = self._open(iid)
        wanted = set(metrics)
        moving = [k for k, mem in src.members.items() if mem.metric in wanted]
        if not moving:
            raise ActionRefused(f"none of those metrics is a member of {iid!r}")
        if len(moving) == len(src.members):
            raise ActionRefused("splitting off every member leaves nothing behind; resolve the incident instead")
        if new_id in self.incidents:
            raise ActionRefused(f"incident {new_id!r} exists already")
        new = Incident(id=new_id, opened_at=now, updated_at=now, evidence=src.evidence)
        for key in moving:
            new.members[key] = src.members.pop(key)
            self._of[key] = new_id
        self.incidents[new_id] = new
        src.updated_at = now
        moved = sorted({new.members[k].metric for k in moving})
        changes = [
            IncidentChange(iid, "split", now, {"into": new_id, "metrics": moved, "by": actor}),
            IncidentChange(new_id, "opened", now, {"split_from": iid, "added": moved, "by": actor}),
        ]
        return Decision([src, new], changes + self._refresh(now, src) + self._refresh(now, new))

    def confirm(self, iid: str, now: float, actor: str = "") -> Decision:
        """ "This one is real": a ``recognised`` incident becomes ``open`` (it pages from now on)."""
        inc = self._open(iid)
        if inc.status != "recognised":
            raise ActionRefused(f"incident {iid!r} is {inc.status}, not recognised as a known routine")
        inc.status, inc.updated_at = "open", now
        inc.version += 1
        change = IncidentChange(iid, "escalated", now, {"profile": inc.profile, "by": actor, "manual": True})
        return Decision([inc], [change])

    # -- state ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "incidents": [inc.to_dict() for inc in self.incidents.values()],
            "last_of_metric": dict(self._last_of_metric),
            "pending": [asdict(m) for m in self.pending()],
            "topology": self.topology.to_state(),
            "instances": self.instances.to_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.incidents = {}
        self._of = {}
        for d in state.get("incidents", []):
            inc = Incident.from_dict(d)
            self.incidents[inc.id] = inc
            for key in inc.members:
                self._of[key] = inc.id
        self._last_of_metric = dict(state.get("last_of_metric", {}))
        self._pending = {}
        for d in state.get("pending", []):
            mem = Member(**d)
            self._pending[mem.key] = mem
        if "topology" in state:
            self.topology.load_state(state["topology"])
        self.instances.load_state(state.get("instances", {}))


_INCIDENT_FIELDS = tuple(f.name for f in fields(Incident))
_MEMBER_FIELDS = tuple(f.name for f in fields(Member))
