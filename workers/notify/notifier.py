"""The notification pipeline: incidents in the database → threads → mute → route → decide → claim → deliver.

A chain of small stages, as in Alertmanager's ``notify`` package, run by :meth:`Notifier.run` (after
each tick in embedded mode, in a Celery task in distributed mode):

1. **threads**: each incident not finished with joins a thread (its own, or the thread of the
   incident it ``follows`` when that one ended within the flapping window);
2. **mute**: active silences and inhibit rules (a firing source incident) mute a thread's newest
   incident; the state records what muted it;
3. **route**: the routing tree picks receivers by the incident's properties;
4. **decide** (:func:`workers.notify.decide.decide`): timers, real change, flapping hold-down;
5. **claim**: the notification is inserted in the log under a unique key (thread, receiver,
   sequence number, integration), in the same transaction as the receiver's state, with the
   state row locked (PostgreSQL): two workers, or a restarted one, never claim it twice;
6. **deliver**: due notifications are leased (a compare-and-set on the row), sent, and their
   outcome recorded with every attempt; errors retry with exponential backoff. Receivers are
   sent to in parallel, so one that is down never delays the others.

Every stage takes ``now``: tests drive it with their own clock.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from stormeye.workers import models as m
from stormeye.workers.db import Database
from stormeye.workers.notify import silences
from stormeye.workers.notify.config import NotifyConfig, Receiver, RouteOptions, load_config, matches_all
from stormeye.workers.notify.decide import StateView, decide, flapping
from stormeye.workers.notify.message import build
from stormeye.workers.notify.receivers import SENDERS, ReceiverError, SendContext
from stormeye.workers.notify.view import IncidentView, load_views

log = logging.getLogger("stormeye.notify")

TERMINAL = ("resolved", "merged")


@dataclass
class DeliverySettings:
    timeout_s: float = 10.0
    max_attempts: int = 12
    backoff_s: float = 1.0
    backoff_max_s: float = 300.0
    lease_s: float = 60.0
    parallel: int = 8
    batch: int = 1000


class Notifier:
    """Decides and sends notifications for the incidents of one database, by one config."""

    def __init__(
        self,
        config: NotifyConfig,
        database: Database,
        public_url: str = "",
        delivery: DeliverySettings | None = None,
        clock: Callable[[], float] = time.time,
        grouping: Any = None,
        step: float = 60.0,
    ) -> None:
        self.config = config
        self.grouping = grouping  # what counts as a names/shape/time link in a message's "why" (GroupingConfig)
        self.step = step
        self.db = database
        self.public_url = public_url
        self.delivery = delivery or DeliverySettings()
        self.clock = clock
        self._postgres = database.engine.dialect.name == "postgresql"

    @classmethod
    def from_settings(cls, settings: Any, database: Database) -> Notifier | None:
        """The notifier ``STORMEYE_NOTIFY_CONFIG`` asks for (None when it is not set)."""
        if not settings.notify_config:
            return None
        delivery = DeliverySettings(
            timeout_s=settings.notify_timeout_s,
            max_attempts=settings.notify_max_attempts,
            backoff_s=settings.notify_backoff_s,
            backoff_max_s=settings.notify_backoff_max_s,
        )
        return cls(
            load_config(settings.notify_config),
            database,
            settings.public_url,
            delivery,
            grouping=settings.grouping_config(),
            step=settings.step_s,
        )

    def run(self, now: float | None = None) -> dict[str, int]:
        """One pass: decide what is due and claim it, then deliver what is due."""
        now = self.clock() if now is None else now
        stats = self.evaluate(now)
        stats.update(self.deliver(now))
        return stats

    # -- 1-5: threads, mute, route, decide, claim ------------------------------------------------

    def evaluate(self, now: float) -> dict[str, int]:
        threads = self._threads(now)
        if not threads:
            return {"threads": 0, "claimed": 0}
        with self.db.sessions() as s:
            views = load_views(
                s, [incs[-1][0] for incs in threads.values()], self.config.teams, self.grouping, self.step
            )
            for incs in threads.values():
                if incs[-1][0] in views:
                    views[incs[-1][0]].seen_at = incs[-1][2]
            opens: dict[str, list[float]] = defaultdict(list)
            for tid, opened in s.execute(
                select(m.NotifyIncident.thread_id, m.NotifyIncident.opened_at).where(
                    m.NotifyIncident.thread_id.in_(list(threads))
                )
            ):
                opens[tid].append(float(opened))
            states = {
                (st.thread_id, st.receiver): st
                for st in s.scalars(select(m.NotifyState).where(m.NotifyState.thread_id.in_(list(threads))))
            }
        muted = self._mutes(list(views.values()), now)
        claimed = 0
        firing_after: dict[str, bool] = {}
        flap = self.config.flapping
        for tid, incs in threads.items():
            view = views.get(incs[-1][0])
            if view is None:
                continue
            window = [t for t in opens[tid] if now - flap.window <= t <= now]
            targets: dict[str, RouteOptions] = {r.receiver: r.options for r in self.config.routes_for(view.props)}
            for (t, recv), st in states.items():
                if t == tid and st.firing and recv not in targets:
                    targets[recv] = self.config.route.options  # no longer routed there: still owed a resolve
            any_firing = False
            for recv, opts in targets.items():
                receiver = self.config.receivers.get(recv)
                if receiver is None:
                    continue
                mute = muted.get(view.id, {})
                known = states.get((tid, recv))
                if known is not None and (known.muted_by or {}) == mute and known.incident_id == view.id:
                    # nothing due by the state read above: no transaction (another worker may have moved
                    # it on since; the next pass sees that)
                    sv = StateView(
                        known.firing, known.seq, known.last_at, known.last_priority, known.last_members, known.last_root
                    )
                    if decide(view, sv, opts, flap, len(window), bool(mute), now).kind is None:
                        any_firing |= known.firing
                        continue
                kind, still_firing = self._decide_one(tid, receiver, opts, view, len(window), opens[tid], mute, now)
                claimed += kind is not None
                any_firing |= still_firing
            firing_after[tid] = any_firing
        self._finish(threads, views, firing_after)
        return {"threads": len(threads), "claimed": claimed}

    def _threads(self, now: float) -> dict[str, list[tuple[str, float, float]]]:
        """Threads with an incident not finished with: thread id → [(incident id, opened_at, seen_at)], oldest first."""
        flap_window = self.config.flapping.window
        with self.db.sessions() as s:
            rows = s.execute(
                select(
                    m.Incident.id,
                    m.Incident.follows,
                    m.Incident.opened_at,
                    m.Incident.resolved_at,
                    m.Incident.updated_at,
                    m.NotifyIncident.thread_id,
                    m.NotifyIncident.seen_at,
                )
                .outerjoin(m.NotifyIncident, m.NotifyIncident.incident_id == m.Incident.id)
                .where(or_(m.NotifyIncident.incident_id.is_(None), m.NotifyIncident.done.is_(False)))
                .order_by(m.Incident.opened_at, m.Incident.id)
            ).all()
            new = [r for r in rows if r.thread_id is None]
            if new:
                prev_ids = sorted({r.follows for r in new if r.follows})
                known = dict(
                    s.execute(
                        select(m.NotifyIncident.incident_id, m.NotifyIncident.thread_id).where(
                            m.NotifyIncident.incident_id.in_(prev_ids)
                        )
                    ).all()
                )
                ended = {
                    r.id: (r.resolved_at if r.resolved_at is not None else r.updated_at)
                    for r in s.execute(
                        select(m.Incident.id, m.Incident.resolved_at, m.Incident.updated_at).where(
                            m.Incident.id.in_(prev_ids)
                        )
                    )
                }
                assigned: dict[str, str] = {}
                for r in new:
                    thread = r.id
                    prev = r.follows
                    if prev and (prev in assigned or prev in known):
                        end = ended.get(prev)
                        if end is None or float(r.opened_at) - float(end) <= flap_window:
                            thread = assigned.get(prev) or known[prev]
                    assigned[r.id] = thread
                with self.db.sessions.begin() as w:
                    stmt = self.db._insert(w, m.NotifyIncident)
                    values = [
                        {"incident_id": r.id, "thread_id": assigned[r.id], "opened_at": float(r.opened_at)}
                        | {"seen_at": now, "done": False}
                        for r in new
                    ]
                    for lo in range(0, len(values), 500):
                        w.execute(stmt.values(values[lo : lo + 500]).on_conflict_do_nothing())
                got: dict[str, tuple[str | None, float]] = {
                    iid: (tid, seen)
                    for iid, tid, seen in s.execute(
                        select(
                            m.NotifyIncident.incident_id, m.NotifyIncident.thread_id, m.NotifyIncident.seen_at
                        ).where(m.NotifyIncident.incident_id.in_([r.id for r in new]))
                    ).all()
                }
            else:
                got = {}
        threads: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        for r in rows:
            tid, seen = (r.thread_id, r.seen_at) if r.thread_id else got.get(r.id, (None, now))
            if tid is not None:
                threads[tid].append((r.id, float(r.opened_at), float(seen)))
        for incs in threads.values():
            incs.sort(key=lambda x: (x[1], x[0]))
        return dict(threads)

    def _mutes(self, views: list[IncidentView], now: float) -> dict[str, dict[str, list[str]]]:
        """What mutes each incident now: ``silenced_by`` (silence ids) and ``inhibited_by`` (incident ids)."""
        out: dict[str, dict[str, list[str]]] = {}
        active = [v for v in views if v.active]
        sil = silences.active(self.db, now)
        for v in active:
            hit = [sid for sid, ms in sil if matches_all(ms, v.props)]
            if hit:
                out.setdefault(v.id, {})["silenced_by"] = hit
        for rule in self.config.inhibit_rules:
            sources = [v for v in active if matches_all(rule.source, v.props)]
            if not sources:
                continue
            for v in active:
                if not matches_all(rule.target, v.props):
                    continue
                by = [
                    src.id
                    for src in sources
                    if src.id != v.id and all(src.props.get(k, "") == v.props.get(k, "") for k in rule.equal)
                ]
                if by:
                    out.setdefault(v.id, {}).setdefault("inhibited_by", []).extend(by)
        return out

    def _decide_one(
        self,
        thread: str,
        receiver: Receiver,
        opts: RouteOptions,
        view: IncidentView,
        opens_in_window: int,
        opens: list[float],
        muted_by: dict[str, list[str]],
        now: float,
    ) -> tuple[str | None, bool]:
        """Decide and claim for one thread and receiver in one transaction; (kind claimed, firing after)."""
        flap = self.config.flapping
        try:
            with self.db.sessions.begin() as s:
                s.execute(
                    self.db._insert(s, m.NotifyState)
                    .values(
                        thread_id=thread,
                        receiver=receiver.name,
                        incident_id=view.id,
                        firing=False,
                        seq=0,
                        muted_by={},
                        updated_at=now,
                    )
                    .on_conflict_do_nothing()
                )
                q = select(m.NotifyState).where(
                    m.NotifyState.thread_id == thread, m.NotifyState.receiver == receiver.name
                )
                st = s.scalars(q.with_for_update() if self._postgres else q).one()
                sv = StateView(st.firing, st.seq, st.last_at, st.last_priority, st.last_members, st.last_root)
                d = decide(view, sv, opts, flap, opens_in_window, bool(muted_by), now)
                if (st.muted_by or {}) != muted_by or st.incident_id != view.id:
                    st.muted_by, st.incident_id, st.updated_at = muted_by, view.id, now
                if d.kind is None:
                    return None, st.firing
                seq = st.seq + 1
                episode = st.episode_opened_at if st.firing and st.episode_opened_at is not None else view.opened_at
                msg = build(
                    view,
                    d.kind,
                    d.reason,
                    thread,
                    receiver.name,
                    seq,
                    sum(1 for t in opens if t >= episode),
                    self.public_url,
                    now,
                )
                msg["flapping"] = flapping(opens_in_window, flap)
                if st.firing:  # an alert's labels are its identity: keep the episode's first ones
                    first = s.scalar(
                        select(m.Notification.message)
                        .where(m.Notification.thread_id == thread, m.Notification.receiver == receiver.name)
                        .order_by(m.Notification.seq.desc())
                        .limit(1)
                    )
                    if first and "alert_labels" in first:
                        msg["alert_labels"] = first["alert_labels"]
                for integ in receiver.integrations:
                    if d.kind == "resolved" and not integ.send_resolved:
                        continue
                    s.add(
                        m.Notification(
                            thread_id=thread,
                            receiver=receiver.name,
                            seq=seq,
                            integration=integ.name,
                            incident_id=view.id,
                            kind=d.kind,
                            created_at=now,
                            status="pending",
                            attempts=0,
                            next_attempt_at=now,
                            message=msg,
                        )
                    )
                s.flush()
                st.seq, st.last_at, st.last_kind, st.updated_at = seq, now, d.kind, now
                st.last_priority, st.last_members, st.last_root = view.priority, view.member_count, view.root
                st.firing = d.kind != "resolved"
                st.episode_opened_at = episode if st.firing else None
                log.info("notify %s %s -> %s (%s)", d.kind, view.id, receiver.name, d.reason)
                return d.kind, st.firing
        except IntegrityError:
            # another worker claimed this very notification first: it sends it
            return None, True

    def _finish(
        self,
        threads: dict[str, list[tuple[str, float, float]]],
        views: dict[str, IncidentView],
        firing: dict[str, bool],
    ) -> None:
        """Incidents nothing more is owed for leave the working set (older ones of a thread at once)."""
        done: list[str] = []
        for tid, incs in threads.items():
            done += [iid for iid, _, _ in incs[:-1]]
            v = views.get(incs[-1][0])
            if v is not None and v.status in TERMINAL and not firing.get(tid, False):
                done.append(v.id)
        if done:
            with self.db.sessions.begin() as s:
                for lo in range(0, len(done), 500):
                    s.execute(
                        update(m.NotifyIncident)
                        .where(m.NotifyIncident.incident_id.in_(done[lo : lo + 500]))
                        .values(done=True)
                    )

    # -- 6: deliver ----------------------------------------------------------------------------

    def deliver(self, now: float) -> dict[str, int]:
        """Send every due notification (per receiver integration in order, integrations in parallel)."""
        with self.db.sessions() as s:
            rows = s.execute(
                select(
                    m.Notification.id,
                    m.Notification.thread_id,
                    m.Notification.receiver,
                    m.Notification.integration,
                    m.Notification.next_attempt_at,
                    m.Notification.lease_until,
                )
                .where(m.Notification.status == "pending")
                .order_by(m.Notification.id)
                .limit(self.delivery.batch)
            ).all()
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        first_of_thread: set[tuple[str, str, str]] = set()
        for r in rows:
            key = (r.receiver, r.integration, r.thread_id)
            if key in first_of_thread:
                continue  # a thread's notifications reach a receiver in order
            first_of_thread.add(key)
            if r.next_attempt_at > now or (r.lease_until is not None and r.lease_until > now):
                continue
            groups[(r.receiver, r.integration)].append(r.id)
        if not groups:
            return {"sent": 0, "failed": 0}
        with ThreadPoolExecutor(max_workers=min(len(groups), self.delivery.parallel)) as pool:
            results = list(pool.map(lambda kv: self._deliver_group(kv[0], kv[1], now), groups.items()))
        return {"sent": sum(r[0] for r in results), "failed": sum(r[1] for r in results)}

    def _deliver_group(self, target: tuple[str, str], ids: list[int], now: float) -> tuple[int, int]:
        """Lease a receiver integration's due notifications at once (a compare-and-set per row: another
        worker's lease is left alone), send them in order, record each outcome as it happens."""
        token = uuid.uuid4().hex
        leased = and_(m.Notification.id.in_(ids), m.Notification.lease_owner == token)
        with self.db.sessions.begin() as s:
            s.execute(
                update(m.Notification)
                .where(
                    m.Notification.id.in_(ids),
                    m.Notification.status == "pending",
                    m.Notification.next_attempt_at <= now,
                    or_(m.Notification.lease_until.is_(None), m.Notification.lease_until <= now),
                )
                .values(lease_until=now + self.delivery.lease_s, lease_owner=token)
            )
        with self.db.sessions() as s:
            rows = s.execute(
                select(
                    m.Notification.id,
                    m.Notification.receiver,
                    m.Notification.integration,
                    m.Notification.message,
                    m.Notification.attempts,
                    m.Notification.incident_id,
                )
                .where(leased)
                .order_by(m.Notification.id)
            ).all()
        sent = failed = 0
        for k, r in enumerate(rows):
            if self._deliver_one(r.id, r.receiver, r.integration, dict(r.message), r.attempts, r.incident_id, now):
                sent += 1
                continue
            failed += 1
            # this receiver is failing: the rest of its notifications wait for the next pass
            rest = [x.id for x in rows[k + 1 :]]
            if rest:
                with self.db.sessions.begin() as s:
                    s.execute(
                        update(m.Notification)
                        .where(m.Notification.id.in_(rest), m.Notification.lease_owner == token)
                        .values(lease_until=None, lease_owner=None)
                    )
            break
        return sent, failed

    def _deliver_one(
        self,
        nid: int,
        receiver: str,
        integration: str,
        message: dict[str, Any],
        attempts: int,
        incident: str,
        now: float,
    ) -> bool:
        """Send one leased notification and record the attempt; True when the receiver took it."""
        started = time.monotonic()
        error: str | None = None
        permanent = False
        try:
            integ = self._integration(receiver, integration)
            SENDERS[integ.kind](integ.options, message, self._context(receiver))
        except ReceiverError as exc:
            error, permanent = str(exc), exc.permanent
        except Exception as exc:  # a bug in a template or sender: record it, never kill the loop
            error, permanent = f"{type(exc).__name__}: {exc}", False
        took = time.monotonic() - started
        attempts += 1
        values: dict[str, Any] = {"attempts": attempts, "lease_until": None, "lease_owner": None, "last_error": error}
        if error is None:
            values.update(status="sent", sent_at=now)
        elif permanent or attempts >= self.delivery.max_attempts:
            values.update(status="failed")
            log.warning("notification %s to %s/%s failed for good: %s", nid, receiver, integration, error)
        else:
            delay = min(self.delivery.backoff_max_s, self.delivery.backoff_s * 2 ** (attempts - 1))
            values.update(next_attempt_at=now + delay)
            log.warning("notification %s to %s/%s failed (retry in %g s): %s", nid, receiver, integration, delay, error)
        with self.db.sessions.begin() as s:
            s.execute(update(m.Notification).where(m.Notification.id == nid).values(**values))
            s.add(
                m.NotificationAttempt(
                    notification_id=nid, incident_id=incident, at=now, ok=error is None, error=error, duration_s=took
                )
            )
        return error is None

    def _integration(self, receiver: str, name: str) -> Any:
        recv = self.config.receivers.get(receiver)
        for integ in recv.integrations if recv else []:
            if integ.name == name:
                return integ
        raise ReceiverError(f"receiver {receiver!r} has no {name} in the config any more", permanent=True)

    def _context(self, receiver: str) -> SendContext:
        return SendContext(receiver, self.config.global_, self.delivery.timeout_s)


def notifications(db: Database, incident_id: str) -> dict[str, Any]:
    """Every notification about an incident's thread with its attempts, and what mutes it now."""
    with db.sessions() as s:
        thread = s.scalar(select(m.NotifyIncident.thread_id).where(m.NotifyIncident.incident_id == incident_id))
        ids = [incident_id]
        if thread is not None:
            ids = list(s.scalars(select(m.NotifyIncident.incident_id).where(m.NotifyIncident.thread_id == thread)))
        rows = list(
            s.scalars(select(m.Notification).where(m.Notification.incident_id.in_(ids)).order_by(m.Notification.id))
        )
        attempts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in s.scalars(
            select(m.NotificationAttempt)
            .where(m.NotificationAttempt.notification_id.in_([r.id for r in rows]))
            .order_by(m.NotificationAttempt.id)
        ):
            attempts[a.notification_id].append(
                {"at": a.at, "ok": a.ok, "error": a.error, "duration_s": round(a.duration_s, 4)}
            )
        states = list(s.scalars(select(m.NotifyState).where(m.NotifyState.thread_id == thread))) if thread else []
    return {
        "incident": incident_id,
        "thread": thread,
        "receivers": [
            {
                "receiver": st.receiver,
                "firing": st.firing,
                "notified": st.seq,
                "last_kind": st.last_kind,
                "last_at": st.last_at,
                "suppressed_by": st.muted_by or {},
            }
            for st in states
        ],
        "notifications": [
            {
                "id": r.id,
                "incident": r.incident_id,
                "receiver": r.receiver,
                "integration": r.integration,
                "seq": r.seq,
                "kind": r.kind,
                "status": r.status,
                "created_at": r.created_at,
                "sent_at": r.sent_at,
                "attempts": attempts.get(r.id, []),
                "last_error": r.last_error,
                "next_attempt_at": r.next_attempt_at if r.status == "pending" else None,
                "reason": r.message.get("reason"),
                "flaps": r.message.get("flaps"),
            }
            for r in rows
        ],
    }
