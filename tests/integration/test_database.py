"""Migrations match the models, writes are idempotent, and PostgreSQL round-trips incidents."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from stormeye.detectors.events import Anomaly
from stormeye.grouping.incidents import Incident, IncidentChange, Member
from stormeye.workers.db import Database
from stormeye.workers.models import Base


def _tick() -> tuple[list[Anomaly], list[Incident], list[IncidentChange]]:
    anomalies = [
        Anomaly(f'revenue{{country="{c}"}}', 600.0, 660.0, 0.8, 630.0, -1, "robust_z", {"z": -7.5})
        for c in ("England", "France")
    ]
    inc = Incident(
        id="inc-abc",
        opened_at=600.0,
        updated_at=660.0,
        priority=1,
        priority_score=55.0,
        priority_parts={"importance": 15.0},
        title="revenue dropped",
        root=anomalies[0].metric,
        root_entity="country=England",
    )
    for a in anomalies:
        inc.members[a.key] = Member(
            a.metric, a.start, a.end, a.peak_score, a.peak_at, a.direction, True, 600.0, {"to": "x", "name": 0.9}
        )
    return anomalies, [inc], [IncidentChange("inc-abc", "opened", 600.0, {"added": [a.metric for a in anomalies]})]


def _round_trip(url: str) -> None:
    db = Database(url)
    for _ in range(2):  # the same tick twice changes nothing
        db.save_tick(*_tick())
    counts = db.counts()
    assert counts == {"metric": 2, "anomaly": 2, "incident": 1, "incident_member": 2, "incident_event": 1}
    (listed,) = db.list_incidents()
    assert listed["title"] == "revenue dropped" and listed["member_count"] == 2
    got = db.get_incident("inc-abc")
    assert got is not None
    assert [m["metric"] for m in got["members"]] == ['revenue{country="England"}', 'revenue{country="France"}']
    assert got["members"][0]["anomaly_evidence"] == {"z": -7.5} and got["priority_parts"] == {"importance": 15.0}
    # a later tick: the incident resolves, the anomaly closes
    anomalies, (inc,), _ = _tick()
    inc.status, inc.resolved_at = "resolved", 2400.0
    for a in anomalies:
        a.open = False
    db.save_tick(anomalies, [inc], [IncidentChange("inc-abc", "resolved", 2400.0, {})])
    got = db.get_incident("inc-abc")
    assert got is not None and got["status"] == "resolved" and not any(m["open"] for m in got["members"])
    assert [e["kind"] for e in got["events"]] == ["opened", "resolved"]
    assert db.list_incidents(status="open") == [] and db.count_incidents("resolved") == 1
    _assert_schema_matches_models(db)
    db.dispose()


def _assert_schema_matches_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"the migrations and workers/models.py disagree: {diff}"


def test_sqlite_round_trip(sqlite_url: str) -> None:
    _round_trip(sqlite_url)


@pytest.mark.postgres
def test_postgres_round_trip(postgres_url: str) -> None:
    _round_trip(postgres_url)
