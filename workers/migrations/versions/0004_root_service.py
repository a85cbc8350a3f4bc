"""incident.root_service: the service an incident is about, as the incident tracker decided it

Notifications route on it (``root_service``, and ``teams`` by service); before, the notifier worked
it out again from the root metric's labels. Incidents stored before this revision get it from the
same rule (:func:`stormeye.grouping.report.root_service`) over their stored root and members.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from stormeye.grouping.names import parse
from stormeye.grouping.report import root_service, shared_scope

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incident", sa.Column("root_service", sa.Text(), nullable=True))
    conn = op.get_bind()
    incident = sa.table(
        "incident",
        sa.column("id", sa.String),
        sa.column("root", sa.Text),
        sa.column("root_entity", sa.Text),
        sa.column("root_service", sa.Text),
    )
    members: dict[str, list[str]] = {}
    rows = conn.execute(
        sa.text(
            "SELECT im.incident_id, m.name FROM incident_member im"
            " JOIN anomaly a ON a.id = im.anomaly_id JOIN metric m ON m.id = a.metric_id"
        )
    )
    for iid, name in rows:
        members.setdefault(iid, []).append(name)
    for iid, root, entity in conn.execute(sa.select(incident.c.id, incident.c.root, incident.c.root_entity)).all():
        names = sorted(set(members.get(iid, [])))
        props = {n: parse(n) for n in names}
        found = root_service(parse(root) if root else None, shared_scope(names, props), entity)
        conn.execute(incident.update().where(incident.c.id == iid).values(root_service=found))


def downgrade() -> None:
    op.drop_column("incident", "root_service")
