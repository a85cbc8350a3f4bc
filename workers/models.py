"""Database tables (SQLAlchemy 2). Times are UTC epoch seconds (floats), as everywhere in stormeye.

Every table has a natural key so that writing the same tick twice changes nothing:
metrics by name, anomalies by (metric, start) — their id is derived from it — incidents by their
derived id, members by (incident, anomaly) and incident events by (incident, kind, time, digest).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class Metric(Base):
    __tablename__ = "metric"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)


class RegistryRow(Base):
    """Distributed mode: the row a deployment (Redis prefix) gave a metric name; Redis' registry is rebuilt
    from these when Redis lost its data (workers/distributed.py)."""

    __tablename__ = "registry_row"
    __table_args__ = (UniqueConstraint("prefix", "name", name="uq_registry_row_name"),)

    prefix: Mapped[str] = mapped_column(String(200), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(Text)


class RuntimeState(Base):
    """Distributed mode: the tick's committed state (step, trackers, alert book) per deployment, as Redis holds it."""

    __tablename__ = "runtime_state"

    prefix: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    at: Mapped[float] = mapped_column(Float)


class Anomaly(Base):
    __tablename__ = "anomaly"
    __table_args__ = (
        UniqueConstraint("metric_id", "start", name="uq_anomaly_metric_start"),
        Index("ix_anomaly_incident", "incident_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    metric_id: Mapped[int] = mapped_column(ForeignKey("metric.id"))
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    peak_score: Mapped[float] = mapped_column(Float)
    peak_at: Mapped[float] = mapped_column(Float)
    direction: Mapped[int] = mapped_column(SmallInteger)
    open: Mapped[bool] = mapped_column(Boolean)
    detector: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    incident_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class Incident(Base):
    __tablename__ = "incident"
    __table_args__ = (Index("ix_incident_status_priority", "status", "priority"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    priority: Mapped[int] = mapped_column(SmallInteger)
    priority_score: Mapped[float] = mapped_column(Float)
    priority_parts: Mapped[dict[str, Any]] = mapped_column(JSON)
    title: Mapped[str] = mapped_column(Text)
    root: Mapped[str | None] = mapped_column(Text, nullable=True)
    root_entity: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the service it is about, as the tracker decided (notifications route on it)
    root_service: Mapped[str | None] = mapped_column(Text, nullable=True)
    merged_into: Mapped[str | None] = mapped_column(String(40), nullable=True)
    follows: Mapped[str | None] = mapped_column(String(40), nullable=True)
    member_count: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    #: the noise profile it matched (status ``recognised``), kept when it escalated
    profile_id: Mapped[str | None] = mapped_column(String(40), nullable=True)


class IncidentMember(Base):
    __tablename__ = "incident_member"

    incident_id: Mapped[str] = mapped_column(ForeignKey("incident.id"), primary_key=True)
    anomaly_id: Mapped[str] = mapped_column(ForeignKey("anomaly.id"), primary_key=True)
    joined_at: Mapped[float] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)


class IncidentEvent(Base):
    __tablename__ = "incident_event"
    __table_args__ = (UniqueConstraint("incident_id", "kind", "at", "digest", name="uq_incident_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float)
    digest: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class IncidentAction(Base):
    """What a person did to an incident (acknowledge, resolve, merge, split) or a metric (set its priority),
    with who and when: the audit trail the page's timeline shows."""

    __tablename__ = "incident_action"
    __table_args__ = (Index("ix_incident_action_incident", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class FeedbackPair(Base):
    """A person's verdict on two metrics: ``together`` (merged by hand) or ``apart`` (split by hand).
    The newest verdict on a pair wins; grouping does not link an ``apart`` pair again."""

    __tablename__ = "feedback_pair"

    metric_a: Mapped[str] = mapped_column(Text, primary_key=True)  # metric_a < metric_b
    metric_b: Mapped[str] = mapped_column(Text, primary_key=True)
    verdict: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
    action_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class MetricPriority(Base):
    """A person's override of a metric's priority weight and KPI flag (None: the rules decide)."""

    __tablename__ = "metric_priority"

    metric: Mapped[str] = mapped_column(Text, primary_key=True)
    weight: Mapped[float | None] = mapped_column(Float, nullable=True)
    kpi: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)


class NoiseProfile(Base):
    """A routine people marked ``noise`` (grouping.profiles): clusters matching it open ``recognised``
    incidents that page nobody. ``forgotten_at`` set: forgotten (kept for the audit trail)."""

    __tablename__ = "noise_profile"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(40))
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
    action_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    forgotten_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    forgotten_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LabelledEvent(Base):
    """A person's label on a metric and a span: ``missed`` ("this should have paged")."""

    __tablename__ = "labelled_event"
    __table_args__ = (Index("ix_labelled_event_metric", "metric"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    metric: Mapped[str] = mapped_column(Text)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[float] = mapped_column(Float)
    action_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ReplayState(Base):
    """Where ``stormeye ingest`` stopped: the pipeline's state, so the next ingest continues from it."""

    __tablename__ = "replay_state"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    state: Mapped[bytes] = mapped_column(LargeBinary)


# -- notifications (workers/notify): threads, per-receiver state, the notification log, silences ----------


class NotifyIncident(Base):
    """Which notification thread an incident belongs to (a reopening joins its predecessor's thread)."""

    __tablename__ = "notify_incident"
    __table_args__ = (Index("ix_notify_incident_thread", "thread_id"), Index("ix_notify_incident_done", "done"))

    incident_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(40))
    opened_at: Mapped[float] = mapped_column(Float)
    seen_at: Mapped[float] = mapped_column(Float)  # when the notifier first saw it: group_wait starts here
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class NotifyState(Base):
    """What a receiver was last told about a thread: the timers and the change test read it."""

    __tablename__ = "notify_state"

    thread_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    receiver: Mapped[str] = mapped_column(String(128), primary_key=True)
    incident_id: Mapped[str] = mapped_column(String(40))
    firing: Mapped[bool] = mapped_column(Boolean, default=False)
    seq: Mapped[int] = mapped_column(Integer, default=0)
    episode_opened_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_priority: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    last_members: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_root: Mapped[str | None] = mapped_column(Text, nullable=True)
    muted_by: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[float] = mapped_column(Float)


class Notification(Base):
    """One notification to one integration of a receiver; claimed (inserted) before it is sent, once."""

    __tablename__ = "notification"
    __table_args__ = (
        UniqueConstraint("thread_id", "receiver", "seq", "integration", name="uq_notification"),
        Index("ix_notification_incident", "incident_id"),
        Index("ix_notification_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    thread_id: Mapped[str] = mapped_column(String(40))
    receiver: Mapped[str] = mapped_column(String(128))
    seq: Mapped[int] = mapped_column(Integer)
    integration: Mapped[str] = mapped_column(String(64))
    incident_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float] = mapped_column(Float)
    lease_until: Mapped[float | None] = mapped_column(Float, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sent_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSON)


class NotificationAttempt(Base):
    """Every try of a notification, its outcome and how long it took."""

    __tablename__ = "notification_attempt"
    __table_args__ = (Index("ix_notification_attempt_incident", "incident_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(Integer, index=True)
    incident_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_s: Mapped[float] = mapped_column(Float)


class Silence(Base):
    """Mute incidents matching ``matchers`` (strings, as in the config) from ``starts_at`` to ``ends_at``."""

    __tablename__ = "silence"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    matchers: Mapped[list[Any]] = mapped_column(JSON)
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
