"""initial schema: metric, anomaly, incident, incident_member, incident_event

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text(), nullable=False, unique=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "anomaly",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("metric_id", sa.Integer(), sa.ForeignKey("metric.id"), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("peak_score", sa.Float(), nullable=False),
        sa.Column("peak_at", sa.Float(), nullable=False),
        sa.Column("direction", sa.SmallInteger(), nullable=False),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("incident_id", sa.String(40), nullable=True),
        sa.UniqueConstraint("metric_id", "start", name="uq_anomaly_metric_start"),
    )
    op.create_index("ix_anomaly_incident", "anomaly", ["incident_id"])
    op.create_table(
        "incident",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("resolved_at", sa.Float(), nullable=True),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("priority_score", sa.Float(), nullable=False),
        sa.Column("priority_parts", sa.JSON(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("root", sa.Text(), nullable=True),
        sa.Column("root_entity", sa.Text(), nullable=True),
        sa.Column("merged_into", sa.String(40), nullable=True),
        sa.Column("follows", sa.String(40), nullable=True),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_incident_status_priority", "incident", ["status", "priority"])
    op.create_table(
        "incident_member",
        sa.Column("incident_id", sa.String(40), sa.ForeignKey("incident.id"), primary_key=True),
        sa.Column("anomaly_id", sa.String(40), sa.ForeignKey("anomaly.id"), primary_key=True),
        sa.Column("joined_at", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
    )
    op.create_table(
        "incident_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("digest", sa.String(16), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.UniqueConstraint("incident_id", "kind", "at", "digest", name="uq_incident_event"),
    )
    op.create_index("ix_incident_event_incident_id", "incident_event", ["incident_id"])


def downgrade() -> None:
    op.drop_table("incident_event")
    op.drop_table("incident_member")
    op.drop_table("incident")
    op.drop_index("ix_anomaly_incident", table_name="anomaly")
    op.drop_table("anomaly")
    op.drop_table("metric")
