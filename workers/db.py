"""The database: migrations, idempotent writes of a tick's results, and the queries the API needs.

SQLite by default, PostgreSQL in production; the same code serves both (upserts use each
dialect's ``INSERT ... ON CONFLICT``). Writing the same tick twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from stormeye.grouping.incidents import Incident as IncidentState
from stormeye.grouping.incidents import IncidentChange, Member
from stormeye.grouping.names import parse
from stormeye.grouping.profiles import move_size
from stormeye.workers import models as m


def anomaly_id(metric: str, start: float) -> str:
    return "a-" + hashlib.sha1(f"{metric}|{start:.3f}".encode()).hexdigest()[:24]


def _digest(details: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(details, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Database:
    """Engine, sessions and the stormeye queries over one database URL."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._metric_ids: dict[str, int] = {}
        if migrate:
            self.migrate()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision."""
        cfg = Config()
        cfg.set_main_option("script_location", "stormeye.workers:migrations")
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # workers on several machines start together: one migrates, the others wait for it
                conn.execute(text("SELECT pg_advisory_xact_lock(7365617965)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writes --------------------------------------------------------------------------

    def _insert(self, session: Session, table: Any) -> Any:
        dialect = session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

    def ensure_metrics(self, names: Sequence[str], at: float | None = None) -> dict[str, int]:
        """Register metrics (idempotent); returns their database ids."""
        missing = [n for n in dict.fromkeys(names) if n not in self._metric_ids]
        if missing:
            now = time.time() if at is None else at
            with self.sessions.begin() as s:
                for lo in range(0, len(missing), 2000):
                    chunk = missing[lo : lo + 2000]
                    stmt = self._insert(s, m.Metric).values(
                        [{"name": n, "labels": parse(n), "created_at": now} for n in chunk]
                    )
                    s.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
                    rows = s.execute(select(m.Metric.name, m.Metric.id).where(m.Metric.name.in_(chunk)))
                    self._metric_ids.update({name: mid for name, mid in rows})
        return {n: self._metric_ids[n] for n in names}

    # -- distributed mode's durable registry and tick state (see workers/distributed.py) -------

    def save_registry_rows(self, prefix: str, pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int, str]]:
        """Record the rows Redis gave these names (idempotent). Returns the conflicts: ``(name, row, what
        the database holds)`` where the database already gives the name another row or the row another
        name (then Redis' registry is not the one the database knows, and must not be trusted)."""
        conflicts: list[tuple[str, int, str]] = []
        with self.sessions.begin() as s:
            for lo in range(0, len(pairs), 2000):
                chunk = pairs[lo : lo + 2000]
                values = [{"prefix": prefix, "name": n, "row": r} for n, r in chunk]
                stmt = self._insert(s, m.RegistryRow).values(values)
                s.execute(stmt.on_conflict_do_nothing())
                want = dict(chunk)
                rows = {r: n for n, r in chunk}
                q = select(m.RegistryRow.name, m.RegistryRow.row).where(
                    m.RegistryRow.prefix == prefix,
                    (m.RegistryRow.name.in_(list(want))) | (m.RegistryRow.row.in_(list(rows))),
                )
                for name, row in s.execute(q):
                    if want.get(name, row) != row:
                        conflicts.append((name, want[name], f"row {row}"))
                    elif rows.get(row, name) != name:
                        conflicts.append((rows[row], row, f"name {name!r}"))
        return conflicts

    def registry_rows(self, prefix: str) -> list[tuple[int, str]]:
        """Every (row, name) a deployment gave out, by row."""
        with self.sessions() as s:
            q = select(m.RegistryRow.row, m.RegistryRow.name).where(m.RegistryRow.prefix == prefix)
            return [(int(r), str(n)) for r, n in s.execute(q.order_by(m.RegistryRow.row))]

    def save_runtime_state(self, prefix: str, key: str, value: bytes, at: float | None = None) -> None:
        with self.sessions.begin() as s:
            stmt = self._insert(s, m.RuntimeState).values(prefix=prefix, key=key, value=value, at=at or time.time())
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=["prefix", "key"], set_={"value": stmt.excluded.value, "at": stmt.excluded.at}
                )
            )

    def runtime_state(self, prefix: str, key: str) -> bytes | None:
        with self.sessions() as s:
            q = select(m.RuntimeState.value).where(m.RuntimeState.prefix == prefix, m.RuntimeState.key == key)
            v = s.execute(q).scalar_one_or_none()
            return None if v is None else bytes(v)

    # -- embedded mode: one process ticks a database (a lease with a heartbeat) -----------------

    def take_lease(self, key: str, owner: str, now: float, ttl: float, dead: Callable[[str], bool]) -> str | None:
        """Take or renew the lease ``key`` for ``owner``; None when held now, else who holds it.

        Taken when free, already ours, its heartbeat is older than ``ttl`` seconds, or ``dead(holder)``
        says its holder is gone (a process of this machine that no longer runs). Compare-and-swap
        updates, so two processes never both hold it.
        """
        me = owner.encode()
        rs = m.RuntimeState
        where = (rs.prefix == "lease") & (rs.key == key)
        with self.sessions.begin() as s:
            got = s.execute(update(rs).where(where & ((rs.value == me) | (rs.at < now - ttl))).values(value=me, at=now))
            if getattr(got, "rowcount", 0):
                return None
            ins = self._insert(s, rs).values(prefix="lease", key=key, value=me, at=now)
            if getattr(s.execute(ins.on_conflict_do_nothing()), "rowcount", 0):
                return None
            row = s.execute(select(rs.value, rs.at).where(where)).first()
            if row is None:
                return None
            holder = bytes(row[0]).decode()
            if dead(holder):
                got = s.execute(update(rs).where(where & (rs.value == row[0])).values(value=me, at=now))
                if getattr(got, "rowcount", 0):
                    return None
            return f"{holder} (its heartbeat {now - float(row[1]):.0f} s ago)"

    def drop_lease(self, key: str, owner: str) -> None:
        rs = m.RuntimeState
        with self.sessions.begin() as s:
            s.execute(delete(rs).where((rs.prefix == "lease") & (rs.key == key) & (rs.value == owner.encode())))

    def close_left_open(self, keep: Iterable[str], at: float, reason: str) -> list[str]:
        """Resolve the open incidents no tracker holds any more (a process that tracked them crashed),
        each with ``reason`` in its timeline; returns their ids."""
        keep = set(keep)
        with self.sessions.begin() as s:
            ids = [i for i in s.scalars(select(m.Incident.id).where(m.Incident.status == "open")) if i not in keep]
            if not ids:
                return []
            for lo in range(0, len(ids), 500):
                chunk = ids[lo : lo + 500]
                s.execute(
                    update(m.Incident)
                    .where(m.Incident.id.in_(chunk), m.Incident.status == "open")
                    .values(status="resolved", resolved_at=at, updated_at=at, version=m.Incident.version + 1)
                )
            changes = [IncidentChange(i, "resolved", at, {"reason": reason, "restart": True}) for i in ids]
            self._record_changes(s, changes)
        return ids

    def save_tick(
        self, anomalies: Iterable[Any], incidents: Iterable[IncidentState], changes: Iterable[IncidentChange]
    ) -> None:
        """Upsert the anomalies and incidents a tick changed and record its incident changes."""
        anomalies = list(anomalies)
        incidents = list(incidents)
        changes = list(changes)
        if not (anomalies or incidents or changes):
            return
        names = [a.metric for a in anomalies] + [mem.metric for inc in incidents for mem in inc.members.values()]
        ids = self.ensure_metrics(names)
        member_incident = {(mem.metric, mem.start): inc.id for inc in incidents for mem in inc.members.values()}
        rows: dict[str, dict[str, Any]] = {}
        for a in anomalies:
            rows[anomaly_id(a.metric, a.start)] = {
                "id": anomaly_id(a.metric, a.start),
                "metric_id": ids[a.metric],
                "start": a.start,
                "end": a.end,
                "peak_score": a.peak_score,
                "peak_at": a.peak_at,
                "direction": a.direction,
                "open": a.open,
                "detector": a.detector,
                "evidence": a.evidence,
                "incident_id": member_incident.get((a.metric, a.start)),
            }
        for inc in incidents:
            for mem in inc.members.values():
                aid = anomaly_id(mem.metric, mem.start)
                row = rows.get(aid)
                if row is None:
                    rows[aid] = {
                        "id": aid,
                        "metric_id": ids[mem.metric],
                        "start": mem.start,
                        "end": mem.end,
                        "peak_score": mem.peak_score,
                        "peak_at": mem.peak_at,
                        "direction": mem.direction,
                        "open": mem.open,
                        "detector": "",
                        "evidence": {},
                        "incident_id": inc.id,
                    }
                else:
                    row["incident_id"] = inc.id
        with self.sessions.begin() as s:
            if rows:
                stmt = self._insert(s, m.Anomaly)
                detected = {anomaly_id(a.metric, a.start) for a in anomalies}
                common = ("end", "peak_score", "peak_at", "direction", "open", "incident_id")
                # a detected anomaly brings its evidence at the peak (its z is the move's size: noise
                # profiles); a member written for its incident alone keeps the evidence stored
                for fresh, cols in ((True, (*common, "evidence")), (False, common)):
                    part = [r for r in rows.values() if (r["id"] in detected) == fresh]
                    for chunk in _chunks(part, 500):
                        ins = stmt.values(chunk)
                        s.execute(
                            ins.on_conflict_do_update(
                                index_elements=["id"], set_={c: getattr(ins.excluded, c) for c in cols}
                            )
                        )
            if incidents:
                inc_rows = [_incident_row(i) for i in incidents]
                stmt = self._insert(s, m.Incident)
                for chunk in _chunks(inc_rows, 500):
                    ins = stmt.values(chunk)
                    s.execute(
                        ins.on_conflict_do_update(
                            index_elements=["id"], set_={c: getattr(ins.excluded, c) for c in inc_rows[0] if c != "id"}
                        )
                    )
                members = [
                    {
                        "incident_id": inc.id,
                        "anomaly_id": anomaly_id(mem.metric, mem.start),
                        "joined_at": mem.joined_at,
                        "evidence": mem.evidence,
                    }
                    for inc in incidents
                    for mem in inc.members.values()
                ]
                stmt = self._insert(s, m.IncidentMember)
                for chunk in _chunks(members, 500):
                    s.execute(stmt.values(chunk).on_conflict_do_nothing())
                # members that moved away in a merge no longer belong to the merged incident
                gone = [inc.id for inc in incidents if inc.status == "merged"]
                if gone:
                    s.query(m.IncidentMember).filter(m.IncidentMember.incident_id.in_(gone)).delete(
                        synchronize_session=False
                    )
            self._record_changes(s, changes)

    def _record_changes(self, s: Session, changes: list[IncidentChange]) -> None:
        """The incident changes as events (idempotent: the same change twice is one row)."""
        ev = [
            {"incident_id": c.incident, "kind": c.kind, "at": c.at, "digest": _digest(c.details), "details": c.details}
            for c in changes
        ]
        stmt = self._insert(s, m.IncidentEvent)
        for chunk in _chunks(ev, 500):
            s.execute(stmt.values(chunk).on_conflict_do_nothing())

    def store_decided(self, s: Session, incidents: Sequence[IncidentState], changes: Sequence[IncidentChange]) -> None:
        """Store what the incident tracker decided for a person's action, in the caller's transaction
        (:class:`~stormeye.grouping.incidents.Decision`): each incident's row as decided, its members
        moved to it, and the tracker's changes as events."""
        for inc in incidents:
            values = _incident_row(inc)
            row = s.get(m.Incident, inc.id)
            if row is None:
                s.add(m.Incident(**values))
                s.flush()
            else:
                for column, value in values.items():
                    setattr(row, column, value)
            aids = [anomaly_id(mem.metric, mem.start) for mem in inc.members.values()]
            for lo in range(0, len(aids), 900):
                chunk = aids[lo : lo + 900]
                s.execute(
                    update(m.IncidentMember)
                    .where(m.IncidentMember.anomaly_id.in_(chunk), m.IncidentMember.incident_id != inc.id)
                    .values(incident_id=inc.id)
                )
                s.execute(update(m.Anomaly).where(m.Anomaly.id.in_(chunk)).values(incident_id=inc.id))
        self._record_changes(s, list(changes))

    # -- reads ---------------------------------------------------------------------------

    def load_incidents(self, s: Session, ids: Sequence[str]) -> list[IncidentState]:
        """Incidents as the tracker holds them (members, evidence, version), from their stored rows."""
        out = []
        for iid in ids:
            inc = s.get(m.Incident, iid)
            if inc is None:
                continue
            parts = dict(inc.priority_parts or {})
            state = IncidentState(
                id=inc.id,
                opened_at=inc.opened_at,
                updated_at=inc.updated_at,
                status=inc.status,
                resolved_at=inc.resolved_at,
                merged_into=inc.merged_into,
                follows=inc.follows,
                priority=inc.priority,
                priority_score=inc.priority_score,
                priority_parts=parts,
                title=inc.title,
                root=inc.root,
                root_entity=inc.root_entity,
                root_service=inc.root_service or "",
                version=inc.version,
                evidence=float(parts.get("evidence", 0.0)),
                profile=inc.profile_id,
            )
            for name, a, joined, ev in _member_rows(s, iid):
                mem = Member(
                    metric=name,
                    start=a.start,
                    end=a.end,
                    peak_score=a.peak_score,
                    peak_at=a.peak_at,
                    direction=a.direction,
                    open=a.open,
                    joined_at=joined,
                    evidence=dict(ev or {}),
                    symptom=bool((ev or {}).get("symptom")),
                    size=move_size(a),
                )
                state.members[mem.key] = mem
            out.append(state)
        return out

    def list_incidents(
        self, status: str | None = None, limit: int = 100, offset: int = 0, include_merged: bool = False
    ) -> list[dict[str, Any]]:
        """Incidents with ``status`` (:data:`LIST_STATUSES`; None: all but merged ones unless
        ``include_merged``): open ones first, then by priority, priority score and start."""
        with self.sessions() as s:
            q = _with_status(select(m.Incident), status, include_merged)
            q = q.order_by(
                m.Incident.status != "open",
                m.Incident.priority,
                m.Incident.priority_score.desc(),
                m.Incident.start,
                m.Incident.id,
            )
            q = q.limit(limit).offset(offset)
            rows = [_incident_dict(i) for i in s.scalars(q)]
            acks = acknowledgements(s, [r["id"] for r in rows])
            for r in rows:
                _with_ack(r, acks.get(r["id"]))
            return rows

    def count_incidents(self, status: str | None = None) -> int:
        with self.sessions() as s:
            return int(s.scalar(_with_status(select(func.count()).select_from(m.Incident), status)) or 0)

    def get_incident(self, incident_id: str) -> dict[str, Any] | None:
        with self.sessions() as s:
            inc = s.get(m.Incident, incident_id)
            if inc is None:
                return None
            out = _with_ack(_incident_dict(inc), acknowledgements(s, [incident_id]).get(incident_id))
            rows = _member_rows(s, incident_id)
            out["members"] = [
                {
                    "metric": name,
                    "start": a.start,
                    "end": a.end,
                    "peak_score": a.peak_score,
                    "peak_at": a.peak_at,
                    "direction": a.direction,
                    "open": a.open,
                    "detector": a.detector,
                    "anomaly_evidence": a.evidence,
                    "joined_at": joined,
                    "evidence": ev,
                }
                for name, a, joined, ev in rows
            ]
            prof = s.get(m.NoiseProfile, inc.profile_id) if inc.profile_id else None
            if prof is not None:  # the noise profile it matched (recognised), as the page shows it
                out["profile_detail"] = {
                    "id": prof.id,
                    "incident": prof.incident_id,
                    "by": prof.actor,
                    "at": prof.at,
                    "scope": (prof.profile.get("scope") or {}).get("kind", "any"),
                    "members": prof.profile.get("members", []),
                    "forgotten_at": prof.forgotten_at,
                }
            out["events"] = [
                {"kind": e.kind, "at": e.at, "details": e.details}
                for e in s.scalars(
                    select(m.IncidentEvent)
                    .where(m.IncidentEvent.incident_id == incident_id)
                    .order_by(m.IncidentEvent.at, m.IncidentEvent.id)
                )
            ]
            return out

    def incident_members(self) -> dict[str, list[str]]:
        """Member metric names of every incident (for exports and evaluation)."""
        with self.sessions() as s:
            rows = s.execute(
                select(m.IncidentMember.incident_id, m.Metric.name)
                .join(m.Anomaly, m.Anomaly.id == m.IncidentMember.anomaly_id)
                .join(m.Metric, m.Metric.id == m.Anomaly.metric_id)
            ).all()
        out: dict[str, list[str]] = {}
        for iid, name in rows:
            out.setdefault(iid, []).append(name)
        return {k: sorted(set(v)) for k, v in out.items()}

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return {
                t.__tablename__: int(s.scalar(select(func.count()).select_from(t)) or 0)
                for t in (m.Metric, m.Anomaly, m.Incident, m.IncidentMember, m.IncidentEvent)
            }


def _member_rows(s: Session, incident_id: str) -> list[Any]:
    """``(metric name, anomaly row, joined_at, member evidence)`` of an incident's members, by start."""
    return list(
        s.execute(
            select(m.Metric.name, m.Anomaly, m.IncidentMember.joined_at, m.IncidentMember.evidence)
            .join(m.Anomaly, m.Anomaly.id == m.IncidentMember.anomaly_id)
            .join(m.Metric, m.Metric.id == m.Anomaly.metric_id)
            .where(m.IncidentMember.incident_id == incident_id)
            .order_by(m.Anomaly.start, m.Metric.name)
        ).all()
    )


def _incident_row(inc: IncidentState) -> dict[str, Any]:
    return {
        "id": inc.id,
        "status": inc.status,
        "opened_at": inc.opened_at,
        "updated_at": inc.updated_at,
        "resolved_at": inc.resolved_at,
        "start": inc.start,
        "end": inc.end,
        "priority": inc.priority,
        "priority_score": inc.priority_score,
        "priority_parts": inc.priority_parts,
        "title": inc.title,
        "root": inc.root,
        "root_entity": inc.root_entity,
        "root_service": inc.root_service,
        "merged_into": inc.merged_into,
        "follows": inc.follows,
        "member_count": len(inc.members),
        "version": inc.version,
        "profile_id": inc.profile,
    }


def _incident_dict(inc: m.Incident) -> dict[str, Any]:
    return {
        "id": inc.id,
        "status": inc.status,
        "priority": inc.priority,
        "priority_score": inc.priority_score,
        "priority_parts": inc.priority_parts,
        "title": inc.title,
        "root": inc.root,
        "root_entity": inc.root_entity,
        "start": inc.start,
        "end": inc.end,
        "opened_at": inc.opened_at,
        "updated_at": inc.updated_at,
        "resolved_at": inc.resolved_at,
        "merged_into": inc.merged_into,
        "follows": inc.follows,
        "member_count": inc.member_count,
        "version": inc.version,
        "profile": inc.profile_id,
    }


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for lo in range(0, len(rows), size):
        yield rows[lo : lo + size]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


#: what ``status`` may ask of :meth:`Database.list_incidents`: a stored status, an open incident
#: someone has (``acknowledged``) or nobody has yet (``unacknowledged``) acknowledged, or ``all``
#: (every incident but merged ones, as the page's "all")
LIST_STATUSES = ("open", "acknowledged", "unacknowledged", "recognised", "resolved", "merged", "all")


def acknowledgements(s: Session, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The first acknowledgement of each of ``ids`` that has one: ``{"by", "at", "note"}``."""
    out: dict[str, dict[str, Any]] = {}
    for lo in range(0, len(ids), 900):
        q = (
            select(m.IncidentAction)
            .where(m.IncidentAction.kind == "acknowledge", m.IncidentAction.incident_id.in_(ids[lo : lo + 900]))
            .order_by(m.IncidentAction.id)
        )
        for a in s.scalars(q):
            out.setdefault(str(a.incident_id), {"by": a.actor, "at": a.at, "note": (a.details or {}).get("note", "")})
    return out


def _with_ack(row: dict[str, Any], ack: dict[str, Any] | None) -> dict[str, Any]:
    """``acknowledged`` (who and when, or None) and ``state``: the stored status, or ``acknowledged``
    for an open incident someone acknowledged (what the page and the CLI show)."""
    row["acknowledged"] = ack
    row["state"] = "acknowledged" if row["status"] == "open" and ack else row["status"]
    return row


def _with_status(q: Any, status: str | None, include_merged: bool = False) -> Any:
    if status == "all":
        status = None
    if status is None:
        return q if include_merged else q.where(m.Incident.status != "merged")
    if status not in LIST_STATUSES:
        raise ValueError(f"status must be one of {', '.join(LIST_STATUSES)}, got {status!r}")
    if status in ("acknowledged", "unacknowledged"):
        acked = select(m.IncidentAction.incident_id).where(m.IncidentAction.kind == "acknowledge")
        on = m.Incident.id.in_(acked)
        return q.where(m.Incident.status == "open", on if status == "acknowledged" else ~on)
    return q.where(m.Incident.status == status)
