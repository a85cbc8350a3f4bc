"""learning from the on-call: noise_profile, labelled_event (missed), incident.profile_id, replay_state

``noise`` actions make noise profiles (stormeye.grouping.profiles); an incident that matched one is
``recognised`` and names it in ``profile_id``. ``missed`` actions are labelled events. ``stormeye
ingest`` keeps where it stopped in ``replay_state`` so the next ingest continues from there.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident", sa.Column("profile_id", sa.String(40), nullable=True))
    op.create_table(
        "noise_profile",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("incident_id", sa.String(40), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=True),
        sa.Column("forgotten_by", sa.String(200), nullable=True),
        sa.Column("forgotten_at", sa.Float(), nullable=True),
    )
    op.create_table(
        "labelled_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("metric", sa.Text(), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("label", sa.String(32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action_id", sa.Integer(), nullable=True),
    )
    op.create_index("ix_labelled_event_metric", "labelled_event", ["metric"])
    op.create_table(
        "replay_state",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replay_state")
    op.drop_index("ix_labelled_event_metric", table_name="labelled_event")
    op.drop_table("labelled_event")
    op.drop_table("noise_profile")
    op.drop_column("incident", "profile_id")
