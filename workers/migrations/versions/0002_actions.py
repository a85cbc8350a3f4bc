"""people's actions: incident_action (audit trail), feedback_pair (together / apart), metric_priority

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_action",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_incident_action_incident", "incident_action", ["incident_id"])
    op.create_table(
        "feedback_pair",
        sa.Column("metric_a", sa.Text(), primary_key=True),
        sa.Column("metric_b", sa.Text(), primary_key=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=True),
    )
    op.create_table(
        "metric_priority",
        sa.Column("metric", sa.Text(), primary_key=True),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("kpi", sa.Boolean(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("metric_priority")
    op.drop_table("feedback_pair")
    op.drop_index("ix_incident_action_incident", table_name="incident_action")
    op.drop_table("incident_action")
