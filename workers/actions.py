"""What people do to incidents — acknowledge, resolve, merge, split — and to metrics (priority
weight, KPI flag): checked, decided by the incident tracker, stored, kept with who and when.

The incident tracker decides what an action makes of the incidents (:meth:`IncidentTracker.merge`,
``split``, ``resolve``: members, root, title, priority, start — cascade roots included); this module
stores exactly that. The database is where people's actions land first (the API, the page and the
CLI on a local database all go through :class:`Actions`), so the list shows them at once in every
mode: :class:`Actions` holds the incidents the database has in a tracker built like the running one
(the settings' grouping config, priority rules with people's overrides, topology, every known
metric in its name index), lets it decide, and stores the decision. The running pipeline then
applies the same recorded action, at the time it was done, on its own tracker (:class:`PeopleSync`,
once per tick and right after an action in the embedded service; the correlate stage in the
distributed mode) so its next ticks build on it; it decides the same and stores the same. It also
reads the feedback: metric pairs split *apart* (never linked again by grouping) and priority
overrides.

Every action is a row of ``incident_action``; merges and splits also record their metric pairs
in ``feedback_pair`` (``together`` / ``apart``, the newest verdict wins).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from stormeye.core import errors
from stormeye.core.errors import StormeyeError
from stormeye.grouping.feedback import Pair, cross_pairs
from stormeye.grouping.incidents import LIVE, ActionRefused, Decision, IncidentChange, IncidentTracker
from stormeye.grouping.names import NameIndex
from stormeye.grouping.priority import MetricImportance, PriorityModel
from stormeye.grouping.profiles import DAY_S, DAY_SLACK_S, Profile, Scope, learn, parse_time_of_day
from stormeye.grouping.topology import Topology
from stormeye.workers import models as m
from stormeye.workers.db import Database, acknowledgements
from stormeye.workers.settings import Settings, get_settings

#: how many metric pairs one merge or split records at most (200 x 200 members: 40,000)
MAX_FEEDBACK_PAIRS = 50_000


class ActionError(StormeyeError):
    """An action that cannot be done; ``http_status`` is the HTTP status that says why."""

    http_status = 400


class NotFound(ActionError, errors.NotFound):
    http_status = 404


class Conflict(ActionError, errors.Conflict):
    """The incident's state does not allow it (resolved, merged, acknowledged already)."""

    http_status = 409


class Invalid(ActionError, ValueError):
    """The request itself makes no sense (merge with itself, split off every member)."""

    http_status = 422


def split_id(source: str, metrics: Sequence[str], at: float) -> str:
    """The id of the incident a split creates (derived, so a replayed action names the same one)."""
    digest = hashlib.sha1(f"split|{source}|{at:.3f}|{'|'.join(sorted(metrics))}".encode()).hexdigest()[:12]
    return f"inc-{digest}"


class Actions:
    """People's actions on one database; ``settings`` build the tracker that decides them as the
    running one would (default: the environment's, :class:`Settings`)."""

    def __init__(
        self,
        database: Database,
        settings: Settings | None = None,
        index: NameIndex | None = None,
        topology: Topology | None = None,
    ) -> None:
        self.db = database
        self._settings = settings
        #: the running service's name index (every registered metric), read only; None: built from the
        #: database's metrics for each action (seconds at 100,000 metrics: the CLI without a server)
        self.index = index
        #: the running service's topology (copied for each action); None: the settings' and what the
        #: metric names say, without what the running tracker learnt from history
        self.topology = topology

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings(database_url=self.db.url)
        return self._settings

    def _tracker(self, s: Session, ids: Sequence[str]) -> IncidentTracker:
        """A tracker built like the running one, holding the incidents ``ids`` as stored."""
        st = self.settings
        held = self.db.load_incidents(s, ids)
        index = self.index
        if index is None or any(key[0] not in index for inc in held for key in inc.members):
            index = NameIndex(graphite=st.graphite)
            index.add(list(s.scalars(select(m.Metric.name).order_by(m.Metric.id))))  # as they were registered
        overrides = {r.metric: (r.weight, r.kpi) for r in s.scalars(select(m.MetricPriority))}
        base = st.priority_model
        priority = OverriddenPriority(base, overrides) if overrides else base
        topology = self.topology.copy() if self.topology is not None else st.topology()
        tracker = IncidentTracker(index, st.grouping_config(), priority, step=st.step_s, topology=topology)
        tracker.learn_names([n for n in index.names if Topology.may_name_edge(n)])  # as registering them does
        tracker.hold(held)
        return tracker

    def _decide(self, s: Session, ids: Sequence[str], act: Callable[[IncidentTracker], Decision]) -> Decision:
        """Let a tracker holding ``ids`` decide the action, and store what it decided."""
        try:
            decided = act(self._tracker(s, ids))
        except ActionRefused as exc:  # the checks above agree with the tracker's; this is a safety net
            raise Conflict(str(exc)) from None
        self.db.store_decided(s, decided.incidents, own_changes(decided.changes))
        return decided

    # -- incidents -----------------------------------------------------------------------

    def _incident(self, s: Session, iid: str) -> m.Incident:
        inc = s.get(m.Incident, iid)
        if inc is None:
            raise NotFound(f"no incident {iid!r}")
        return inc

    def _must_be_open(self, inc: m.Incident, doing: str) -> None:
        if inc.status == "merged":
            raise Conflict(f"incident {inc.id} was merged into {inc.merged_into}; {doing} that one instead")
        if inc.status not in LIVE:
            raise Conflict(f"incident {inc.id} is {inc.status}; only an open incident can be {doing}")

    def _record(
        self, s: Session, kind: str, actor: str, at: float, incident: str | None, **details: Any
    ) -> dict[str, Any]:
        row = m.IncidentAction(incident_id=incident, kind=kind, actor=actor, at=at, details=details)
        s.add(row)
        s.flush()
        return _action_dict(row)

    def acknowledge(self, iid: str, actor: str, note: str = "", at: float | None = None) -> dict[str, Any]:
        """Someone is on it: the incident stays open, marked acknowledged by ``actor``."""
        now = time.time() if at is None else at
        with self.db.sessions.begin() as s:
            inc = self._incident(s, iid)
            self._must_be_open(inc, "acknowledged")
            acked = _acks(s, [iid]).get(iid)
            if acked:
                raise Conflict(f"incident {iid} was acknowledged already by {acked['by']}")
            return self._record(s, "acknowledge", actor, now, iid, note=note)

    def resolve(self, iid: str, actor: str, note: str = "", at: float | None = None) -> dict[str, Any]:
        """Resolve an open incident now (its members stop linking new anomalies)."""
        now = time.time() if at is None else at
        with self.db.sessions.begin() as s:
            inc = self._incident(s, iid)
            self._must_be_open(inc, "resolved")
            self._decide(s, [iid], lambda t: t.resolve(iid, now, actor))
            return self._record(s, "resolve", actor, now, iid, note=note)

    def merge(self, target: str, source: str, actor: str, at: float | None = None) -> dict[str, Any]:
        """Move every member of ``source`` into ``target``; ``source`` ends as merged into it."""
        now = time.time() if at is None else at
        if target == source:
            raise Invalid(f"incident {target} cannot be merged with itself; name two different incidents")
        with self.db.sessions.begin() as s:
            dst, src = self._incident(s, target), self._incident(s, source)
            self._must_be_open(dst, "merged")
            self._must_be_open(src, "merged")
            src_metrics, dst_metrics = _member_metrics(s, source), _member_metrics(s, target)
            moved = src.member_count
            self._decide(s, [target, source], lambda t: t.merge(source, target, now, actor))
            act = self._record(s, "merge", actor, now, target, source=source, members=moved)
            self._record(s, "merged", actor, now, source, into=target, members=moved)
            self._feedback(s, cross_pairs(src_metrics, dst_metrics), "together", actor, now, act["id"])
            return act

    def split(self, iid: str, metrics: Iterable[str], actor: str, at: float | None = None) -> dict[str, Any]:
        """Move the members on ``metrics`` into a new open incident; the pairs split are kept apart."""
        now = time.time() if at is None else at
        wanted = sorted(set(metrics))
        if not wanted:
            raise Invalid("name the member metrics to split off")
        with self.db.sessions.begin() as s:
            src = self._incident(s, iid)
            self._must_be_open(src, "split")
            members = _member_metrics(s, iid)
            unknown = [x for x in wanted if x not in members]
            if unknown:
                raise Invalid(f"not members of {iid}: {', '.join(unknown[:5])}" + (" …" if len(unknown) > 5 else ""))
            if set(wanted) >= members:
                raise Invalid(
                    f"splitting off every member of {iid} leaves nothing behind; resolve it or leave some members"
                )
            new_id = split_id(iid, wanted, now)
            if s.get(m.Incident, new_id) is not None:
                raise Conflict(f"incident {new_id} exists already; this split was done already")
            self._decide(s, [iid], lambda t: t.split(iid, wanted, new_id, now, actor))
            act = self._record(s, "split", actor, now, iid, into=new_id, metrics=wanted)
            self._record(s, "split_from", actor, now, new_id, source=iid, metrics=wanted)
            self._feedback(s, cross_pairs(wanted, members - set(wanted)), "apart", actor, now, act["id"])
            return act

    def _feedback(self, s: Session, pairs: set[Pair], verdict: str, actor: str, at: float, action: int) -> None:
        rows = [
            {"metric_a": a, "metric_b": b, "verdict": verdict, "actor": actor, "at": at, "action_id": action}
            for a, b in (sorted(p) for p in sorted(pairs, key=sorted)[:MAX_FEEDBACK_PAIRS])
        ]
        if not rows:
            return
        stmt = self.db._insert(s, m.FeedbackPair)
        for lo in range(0, len(rows), 500):
            ins = stmt.values(rows[lo : lo + 500])
            s.execute(
                ins.on_conflict_do_update(
                    index_elements=["metric_a", "metric_b"],
                    set_={c: getattr(ins.excluded, c) for c in ("verdict", "actor", "at", "action_id")},
                )
            )

    # -- learning from the on-call (grouping.profiles) ------------------------------------

    def noise(
        self,
        iid: str,
        actor: str,
        scope: str | None = None,
        window: tuple[float, float] | None = None,
        note: str = "",
        at: float | None = None,
    ) -> dict[str, Any]:
        """ "Not a problem": learn the incident's noise profile (later clusters matching it open
        ``recognised`` and page nobody) and resolve the incident if it is still going on.

        ``scope``: ``any`` (any time), ``daily`` (the incident's time of day, an hour either side),
        ``HH:MM-HH:MM`` (UTC, daily) or None: daily when the same metrics had an incident at that
        time of day on an earlier day, else any time. ``window``: (from, until) epoch seconds, a
        deploy window (then ``scope`` must be None)."""
        now = time.time() if at is None else at
        with self.db.sessions.begin() as s:
            inc = self._incident(s, iid)
            if inc.status == "merged":
                raise Conflict(f"incident {iid} was merged into {inc.merged_into}; mark that one instead")
            held = self.db.load_incidents(s, [iid])[0]
            members = list(held.members.values())  # symptoms too: the routine drags them along
            if not members:
                raise Invalid(f"incident {iid} has no members to learn from")
            sc = self._scope(s, scope, window, held.start, held.end, [mem.metric for mem in members])
            tracker = self._tracker(s, [iid])
            props = {mem.metric: tracker.props(mem.metric) for mem in members}
            prof = learn(iid, members, props, sc)
            marked = s.scalar(
                select(m.NoiseProfile).where(m.NoiseProfile.incident_id == iid, m.NoiseProfile.forgotten_at.is_(None))
            )
            if marked is not None:
                raise Conflict(
                    f"incident {iid} was marked noise already (profile {marked.id}, by {marked.actor}); forget it first"
                )
            old = s.get(m.NoiseProfile, prof.id)
            live = inc.status in LIVE
            if live:
                self._decide(s, [iid], lambda t: t.resolve(iid, now, actor))
            act = self._record(
                s, "noise", actor, now, iid, profile=prof.id, scope=sc.describe(), resolved=live, note=note
            )
            if old is not None:
                s.delete(old)
                s.flush()
            s.add(
                m.NoiseProfile(
                    id=prof.id, incident_id=iid, profile=prof.to_dict(), actor=actor, at=now, action_id=act["id"]
                )
            )
            return act

    def _scope(
        self,
        s: Session,
        scope: str | None,
        window: tuple[float, float] | None,
        start: float,
        end: float,
        metrics: list[str],
    ) -> Scope:
        try:
            if window is not None:
                if scope not in (None, "window"):
                    raise Invalid("give either a time of day (scope) or a window, not both")
                return Scope("window", float(window[0]), float(window[1]))
            if scope == "any":
                return Scope()
            if scope == "daily":
                return Scope.around(start, end)
            if scope is not None:
                return parse_time_of_day(scope)
        except Invalid:
            raise
        except ValueError as exc:
            raise Invalid(f"{exc} (scope: any, daily or HH:MM-HH:MM; window: from and until)") from None
        return Scope.around(start, end) if _repeats_daily(s, metrics, start) else Scope()

    def missed(
        self, metric: str, start: float, end: float, actor: str, note: str = "", at: float | None = None
    ) -> dict[str, Any]:
        """ "This should have paged": kept as a labelled event on ``metric`` from ``start`` to ``end``."""
        now = time.time() if at is None else at
        if not (math.isfinite(start) and math.isfinite(end) and end >= start):
            raise Invalid(f"the span {start} .. {end} must be two epoch seconds, the end not before the start")
        with self.db.sessions.begin() as s:
            if s.scalar(select(m.Metric.id).where(m.Metric.name == metric)) is None:
                raise NotFound(f"no metric {metric!r}; use its canonical name, as the search shows it")
            act = self._record(s, "missed", actor, now, None, metric=metric, start=start, end=end, note=note)
            s.add(
                m.LabelledEvent(
                    metric=metric,
                    start=start,
                    end=end,
                    label="missed",
                    note=note,
                    actor=actor,
                    at=now,
                    action_id=act["id"],
                )
            )
            return act

    def forget(self, profile_id: str, actor: str, at: float | None = None) -> dict[str, Any]:
        """Forget a noise profile: what matches it pages again (the profile is kept, marked forgotten)."""
        now = time.time() if at is None else at
        with self.db.sessions.begin() as s:
            row = s.get(m.NoiseProfile, profile_id)
            if row is None:
                raise NotFound(f"no noise profile {profile_id!r}; `stormeye incidents profiles` lists them")
            if row.forgotten_at is not None:
                raise Conflict(f"profile {profile_id} was forgotten already by {row.forgotten_by}")
            row.forgotten_by, row.forgotten_at = actor, now
            return self._record(s, "forget", actor, now, row.incident_id, profile=profile_id)

    def real(self, iid: str, actor: str, note: str = "", at: float | None = None) -> dict[str, Any]:
        """ "This one is real": a ``recognised`` incident becomes ``open`` and pages."""
        now = time.time() if at is None else at
        with self.db.sessions.begin() as s:
            inc = self._incident(s, iid)
            if inc.status != "recognised":
                raise Conflict(f"incident {iid} is {inc.status}; only a recognised incident can be marked real")
            self._decide(s, [iid], lambda t: t.confirm(iid, now, actor))
            return self._record(s, "real", actor, now, iid, profile=inc.profile_id, note=note)

    def profiles(self, include_forgotten: bool = False) -> list[dict[str, Any]]:
        """Noise profiles, newest first, each with what it matched since it was learnt."""
        with self.db.sessions() as s:
            q = select(m.NoiseProfile).order_by(m.NoiseProfile.at.desc(), m.NoiseProfile.id)
            if not include_forgotten:
                q = q.where(m.NoiseProfile.forgotten_at.is_(None))
            rows = list(s.scalars(q))
            matched: dict[str, list[tuple[str, str, float]]] = {}
            ids = [r.id for r in rows]
            for lo in range(0, len(ids), 900):
                got = s.execute(
                    select(m.Incident.profile_id, m.Incident.id, m.Incident.status, m.Incident.start)
                    .where(m.Incident.profile_id.in_(ids[lo : lo + 900]))
                    .order_by(m.Incident.start)
                ).all()
                for pid, iid, status, start in got:
                    matched.setdefault(str(pid), []).append((iid, status, start))
            hit_ids = [i for hs in matched.values() for i, _, _ in hs]
            escalated: set[str] = set()
            for lo in range(0, len(hit_ids), 900):
                escalated.update(
                    s.scalars(
                        select(m.IncidentEvent.incident_id).where(
                            m.IncidentEvent.kind == "escalated", m.IncidentEvent.incident_id.in_(hit_ids[lo : lo + 900])
                        )
                    )
                )
        out = []
        for r in rows:
            prof = Profile.from_dict(r.profile)
            hits = matched.get(r.id, [])
            out.append(
                {
                    "id": r.id,
                    "incident": r.incident_id,
                    "actor": r.actor,
                    "at": r.at,
                    "scope": prof.scope.describe(),
                    "members": [p.to_dict() for p in prof.members],
                    "description": prof.describe(),
                    "forgotten_by": r.forgotten_by,
                    "forgotten_at": r.forgotten_at,
                    "matched": len(hits),
                    "escalated": sum(1 for i, _, _ in hits if i in escalated),
                    "matched_incidents": [{"id": i, "status": st, "start": t} for i, st, t in hits[-20:]],
                }
            )
        return out

    def active_profiles(self) -> list[Profile]:
        with self.db.sessions() as s:
            rows = s.scalars(select(m.NoiseProfile).where(m.NoiseProfile.forgotten_at.is_(None)))
            return sorted((Profile.from_dict(r.profile) for r in rows), key=lambda p: p.id)

    def labelled_events(self) -> list[dict[str, Any]]:
        with self.db.sessions() as s:
            return [
                {
                    "id": e.id,
                    "metric": e.metric,
                    "start": e.start,
                    "end": e.end,
                    "label": e.label,
                    "note": e.note,
                    "actor": e.actor,
                    "at": e.at,
                }
                for e in s.scalars(select(m.LabelledEvent).order_by(m.LabelledEvent.id))
            ]

    # -- metrics -------------------------------------------------------------------------

    def set_metric_priority(
        self, metric: str, actor: str, weight: float | None = None, kpi: bool | None = None, at: float | None = None
    ) -> dict[str, Any]:
        """Override a metric's priority weight and/or KPI flag (None leaves that one to the rules)."""
        now = time.time() if at is None else at
        if weight is not None and not (math.isfinite(weight) and weight > 0):
            raise Invalid(f"weight {weight} must be a positive number (1 is an ordinary metric, 10 revenue)")
        with self.db.sessions.begin() as s:
            if s.scalar(select(m.Metric.id).where(m.Metric.name == metric)) is None:
                raise NotFound(f"no metric {metric!r}; use its canonical name, as the search shows it")
            row = s.get(m.MetricPriority, metric)
            if row is None:
                s.add(m.MetricPriority(metric=metric, weight=weight, kpi=kpi, actor=actor, at=now))
            else:
                row.weight, row.kpi, row.actor, row.at = weight, kpi, actor, now
            return self._record(s, "set_priority", actor, now, None, metric=metric, weight=weight, kpi=kpi)

    # -- reads ---------------------------------------------------------------------------

    def acknowledged(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self.db.sessions() as s:
            return _acks(s, ids)

    def history(self, iid: str) -> list[dict[str, Any]]:
        """The incident's timeline: what the pipeline did (events) and what people did (actions), by time."""
        with self.db.sessions() as s:
            events = [
                {"kind": e.kind, "at": e.at, "actor": None, "details": e.details}
                for e in s.scalars(select(m.IncidentEvent).where(m.IncidentEvent.incident_id == iid))
            ]
            acts = [
                _action_dict(a) for a in s.scalars(select(m.IncidentAction).where(m.IncidentAction.incident_id == iid))
            ]
        return sorted(events + acts, key=lambda e: (e["at"], e.get("id") or 0))

    def actions_since(self, after: int) -> list[dict[str, Any]]:
        with self.db.sessions() as s:
            q = select(m.IncidentAction).where(m.IncidentAction.id > after).order_by(m.IncidentAction.id)
            return [_action_dict(a) for a in s.scalars(q)]

    def last_action_id(self) -> int:
        with self.db.sessions() as s:
            return int(s.scalar(select(func.max(m.IncidentAction.id))) or 0)

    def apart_pairs(self) -> set[Pair]:
        with self.db.sessions() as s:
            rows = s.execute(
                select(m.FeedbackPair.metric_a, m.FeedbackPair.metric_b).where(m.FeedbackPair.verdict == "apart")
            ).all()
        return {frozenset((a, b)) for a, b in rows}

    def feedback_version(self) -> tuple[float, ...]:
        """Changes whenever feedback pairs, priority overrides or noise profiles change (cheap to ask every tick)."""
        with self.db.sessions() as s:
            fp = s.execute(select(func.count(), func.max(m.FeedbackPair.at))).one()
            mp = s.execute(select(func.count(), func.max(m.MetricPriority.at))).one()
            npf = s.execute(
                select(
                    func.count(),
                    func.max(m.NoiseProfile.at),
                    func.count(m.NoiseProfile.forgotten_at),
                    func.max(m.NoiseProfile.forgotten_at),
                )
            ).one()
        return (
            int(fp[0]),
            float(fp[1] or 0),
            int(mp[0]),
            float(mp[1] or 0),
            int(npf[0]),
            float(npf[1] or 0),
            int(npf[2]),
            float(npf[3] or 0),
        )

    def priority_overrides(self) -> dict[str, tuple[float | None, bool | None]]:
        with self.db.sessions() as s:
            return {r.metric: (r.weight, r.kpi) for r in s.scalars(select(m.MetricPriority))}


def _repeats_daily(s: Session, metrics: list[str], start: float) -> bool:
    """Whether the move repeated at about this time of day: on one of the seven days before
    ``start``, most (more than half) of ``metrics`` had an anomaly in an incident within
    :data:`DAY_SLACK_S` of this time of day. One metric of many doing so is a coincidence (a busy
    host has an incident every few hours), not the routine coming back."""
    ids = set(s.scalars(select(m.Metric.id).where(m.Metric.name.in_(sorted(set(metrics))[:900]))))
    if not ids:
        return False
    rows = s.execute(
        select(m.Anomaly.metric_id, m.Anomaly.start).where(
            m.Anomaly.metric_id.in_(ids),
            m.Anomaly.incident_id.is_not(None),
            m.Anomaly.start >= start - 7 * DAY_S - DAY_SLACK_S,
            m.Anomaly.start <= start - DAY_S + DAY_SLACK_S,
        )
    )
    on_day: dict[int, set[int]] = {}
    for mid, t in rows:
        off = (start - t) % DAY_S
        if min(off, DAY_S - off) <= DAY_SLACK_S:
            on_day.setdefault(round((start - t) / DAY_S), set()).add(mid)
    return any(2 * len(seen) > len(ids) for seen in on_day.values())


def _action_dict(a: m.IncidentAction) -> dict[str, Any]:
    return {
        "id": a.id,
        "incident": a.incident_id,
        "kind": a.kind,
        "actor": a.actor,
        "at": a.at,
        "details": a.details,
    }


def _acks(s: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    return acknowledgements(s, ids)


def _member_metrics(s: Session, iid: str) -> set[str]:
    rows = s.execute(
        select(m.Metric.name)
        .join(m.Anomaly, m.Anomaly.metric_id == m.Metric.id)
        .join(m.IncidentMember, m.IncidentMember.anomaly_id == m.Anomaly.id)
        .where(m.IncidentMember.incident_id == iid)
    ).all()
    return {r[0] for r in rows}


class OverriddenPriority(PriorityModel):
    """The rules' priority model with people's per-metric overrides of weight and KPI flag on top."""

    def __init__(self, base: PriorityModel, overrides: Mapping[str, tuple[float | None, bool | None]]) -> None:
        super().__init__(base.rules, base.default_weight)
        self.base = base
        self.overrides = dict(overrides)

    def importance(self, metric: str, props: Mapping[str, str]) -> MetricImportance:
        got = self.base.importance(metric, props)
        o = self.overrides.get(metric)
        if o is None:
            return got
        weight, kpi = o
        return MetricImportance(
            got.weight if weight is None else float(weight), got.kpi if kpi is None else bool(kpi), got.bad, "manual"
        )


class PeopleSync:
    """Brings people's actions and feedback from the database into a tracker.

    ``cursor``: the newest action already on the tracker (default: the newest in the database, as a
    tracker that starts now has nothing older to replay). The distributed mode keeps it beside the
    tracker's state; replaying an action twice changes nothing (the second finds it done).
    """

    def __init__(self, database: Database, base: PriorityModel, cursor: int | None = None) -> None:
        self.actions = Actions(database)
        self.database = database
        self.base = base
        self.cursor = self.actions.last_action_id() if cursor is None else cursor
        self._version: tuple[float, ...] | None = None
        self._profiles: list[Profile] = []
        self._apart: set[Pair] = set()
        self._priority: OverriddenPriority | None = None
        self._changed: set[str] = set()
        self._seen: int | None = None  # the newest action id when the actions and feedback were last read

    def feedback(self, tracker: IncidentTracker) -> None:
        """Apart pairs and priority overrides on the tracker (read again only when they changed)."""
        version = self.actions.feedback_version()
        if version != self._version:
            self._version = version
            self._apart = self.actions.apart_pairs()
            self._profiles = self.actions.active_profiles()
            overrides = self.actions.priority_overrides()
            old = self._priority.overrides if self._priority is not None else {}
            self._changed = {k for k in set(old) | set(overrides) if old.get(k) != overrides.get(k)}
            self._priority = OverriddenPriority(self.base, overrides) if overrides or old else None
        self._apply_feedback(tracker)

    def _apply_feedback(self, tracker: IncidentTracker) -> None:
        tracker.apart = self._apart
        tracker.profiles = self._profiles
        if self._priority is not None and tracker.priority is not self._priority:
            tracker.priority = self._priority
            for metric in self._changed:
                tracker._weights.pop(metric, None)  # the tracker remembers weights: forget the changed ones

    def sync(self, tracker: IncidentTracker, now: float, save: bool = True) -> list[IncidentChange]:
        """Replay actions newer than the cursor on the tracker; store the incidents they touched
        (``save``; else the caller stores them with its own writes).

        One indexed read a tick while nobody acts: the newest action's id. Every action, feedback
        verdict and priority override is recorded as an action in the same transaction
        (:meth:`Actions._record`), so while that id stays the same there is nothing new to read
        and the feedback read last is put on the tracker again.
        """
        newest = self.actions.last_action_id()
        if newest == self._seen and self._version is not None:
            self._apply_feedback(tracker)
            return []
        self.feedback(tracker)
        self._seen = newest
        todo = self.actions.actions_since(self.cursor)
        if not todo:
            return []
        changes: list[IncidentChange] = []
        touched: dict[str, None] = {}
        for act in todo:
            self.cursor = max(self.cursor, act["id"])
            got = replay(tracker, act)
            changes += got
            touched.update(dict.fromkeys(c.incident for c in got))
        if save:
            incidents = [tracker.incidents[i] for i in touched if i in tracker.incidents]
            self.database.save_tick([], incidents, own_changes(changes))
        return changes


def own_changes(changes: list[IncidentChange]) -> list[IncidentChange]:
    """The tracker's own changes among a replay's (people's side is in incident_action already)."""
    return [c for c in changes if "by" not in c.details]


def replay(tracker: IncidentTracker, action: Mapping[str, Any]) -> list[IncidentChange]:
    """One recorded action on the tracker's incidents, at the time it was done (so the tracker decides
    what the database stored); nothing when it does not hold them or holds them done already."""
    kind, iid, d, who, at = action["kind"], action["incident"], action["details"], action["actor"], action["at"]
    try:
        if kind == "resolve":
            return tracker.resolve(iid, at, who).changes
        if kind == "merge":
            return tracker.merge(d["source"], iid, at, who).changes
        if kind == "split":
            return tracker.split(iid, d["metrics"], d["into"], at, who).changes
        if kind == "noise" and d.get("resolved"):
            return tracker.resolve(iid, at, who).changes
        if kind == "real":
            return tracker.confirm(iid, at, who).changes
    except ActionRefused:
        return []  # an incident the tracker no longer holds, or the action is on it already
    return []
