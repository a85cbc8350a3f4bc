"""The embedded pipeline end to end on a seeded storm, with the quality bound of the demo."""

from stormeye.workers.db import Database
from stormeye.workers.demo import run_demo
from stormeye.workers.settings import Settings


def test_demo_defaults_group_the_storm_well(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    db = Database(sqlite_url)
    result = run_demo(settings, seed=0, database=db)
    f = result.figures
    assert f["pairwise_f1"] >= 0.8, f
    assert f["detection_recall"] >= 0.6, f
    assert f["incidents"] < f["anomalies"]
    # what the run reports is what the database holds
    stored = db.list_incidents(limit=10_000)
    assert {i["id"] for i in stored} == {i["id"] for i in result.incidents}
    top = db.get_incident(stored[0]["id"])
    assert top is not None and top["members"] and top["events"][0]["kind"] == "opened"
    assert stored[0]["priority"] == min(i["priority"] for i in stored)
    counts = db.counts()
    # the figures count the anomalies in incidents; every detected anomaly is stored, also a lone
    # weak one that paged nobody (grouping's lone-anomaly rule)
    assert counts["incident_member"] == f["anomalies"]
    assert counts["anomaly"] >= f["anomalies"]
