"""notifications: notify_incident, notify_state, notification, notification_attempt, silence

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notify_incident",
        sa.Column("incident_id", sa.String(40), primary_key=True),
        sa.Column("thread_id", sa.String(40), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_notify_incident_thread", "notify_incident", ["thread_id"])
    op.create_index("ix_notify_incident_done", "notify_incident", ["done"])
    op.create_table(
        "notify_state",
        sa.Column("thread_id", sa.String(40), primary_key=True),
        sa.Column("receiver", sa.String(128), primary_key=True),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("firing", sa.Boolean(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("episode_opened_at", sa.Float(), nullable=True),
        sa.Column("last_at", sa.Float(), nullable=True),
        sa.Column("last_kind", sa.String(16), nullable=True),
        sa.Column("last_priority", sa.SmallInteger(), nullable=True),
        sa.Column("last_members", sa.Integer(), nullable=True),
        sa.Column("last_root", sa.Text(), nullable=True),
        sa.Column("muted_by", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "notification",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("thread_id", sa.String(40), nullable=False),
        sa.Column("receiver", sa.String(128), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("integration", sa.String(64), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.Float(), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("lease_owner", sa.String(32), nullable=True),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("message", sa.JSON(), nullable=False),
        sa.UniqueConstraint("thread_id", "receiver", "seq", "integration", name="uq_notification"),
    )
    op.create_index("ix_notification_incident", "notification", ["incident_id"])
    op.create_index("ix_notification_due", "notification", ["status", "next_attempt_at"])
    op.create_table(
        "notification_attempt",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=False),
    )
    op.create_index("ix_notification_attempt_notification_id", "notification_attempt", ["notification_id"])
    op.create_index("ix_notification_attempt_incident", "notification_attempt", ["incident_id"])
    op.create_table(
        "silence",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("matchers", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    for t in ("silence", "notification_attempt", "notification", "notify_state", "notify_incident"):
        op.drop_table(t)
