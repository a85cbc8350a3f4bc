"""registry_row and runtime_state: distributed mode's name→row registry and tick state, kept durable

Redis holds the registry and the trackers' state for speed; a Redis that restarts without its data
(no persistence) would otherwise number names from row 0 again and store points under another
metric's row. Each deployment (Redis prefix) writes every row it gives out here before a point is
stored under it, and its committed tick state with every step; a process that finds Redis' registry
epoch gone rebuilds both from these tables (workers/distributed.py).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_row",
        sa.Column("prefix", sa.String(200), primary_key=True),
        sa.Column("row", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.UniqueConstraint("prefix", "name", name="uq_registry_row_name"),
    )
    op.create_table(
        "runtime_state",
        sa.Column("prefix", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("runtime_state")
    op.drop_table("registry_row")
