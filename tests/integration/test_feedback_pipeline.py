"""People's actions reach the running pipeline: a split stays apart and a resolve stays resolved
on the next ticks of a simulated storm."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from storm_helpers import run_part, small_storm

from stormeye.api.app import create_app
from stormeye.workers.actions import Actions
from stormeye.workers.settings import Settings


def test_a_split_pair_stays_apart_on_the_next_ticks_and_a_resolve_stays_resolved(tmp_path: Path) -> None:
    storm = small_storm()
    url = f"sqlite:///{tmp_path / 'stormeye.db'}"
    h = storm.history_steps
    pipe = run_part(storm, url, until=h + 180)
    db = pipe.database
    assert db is not None
    big, other = sorted(pipe.incidents.open_incidents(), key=lambda i: -len(i.metrics))[:2]
    off, stay = big.metrics[: len(big.metrics) // 2], big.metrics[len(big.metrics) // 2 :]

    def holding_a_split_pair() -> dict[str, list[str]]:
        return {i: ms for i, ms in db.incident_members().items() if set(ms) & set(off) and set(ms) & set(stay)}

    # another incident may have held both sides already (other anomalies of the same metrics): it may
    # keep them, but gain none
    before = holding_a_split_pair()
    before.pop(big.id)
    # the page's way in: the API of the embedded service over this very pipeline
    with TestClient(create_app(Settings(database_url=url, step_s=60), pipeline=pipe, start_ticker=False)) as c:
        r = c.post(f"/api/v1/incidents/{big.id}/split", json={"metrics": off})
        assert r.status_code == 201, r.text
        new_id = r.json()["incident"]
        assert c.post(f"/api/v1/incidents/{other.id}/resolve").status_code == 200
    # replayed on the running tracker at once, and its apart pairs read
    assert pipe.incidents.incidents[new_id].metrics == off and set(big.metrics) == set(stay)
    assert pipe.incidents.incidents[other.id].status == "resolved"
    assert len(pipe.incidents.apart) == len(off) * len(stay)
    pipe = run_part(storm, url, until=h + 330, pipe=pipe)  # the storm goes on: the same evidence again
    assert holding_a_split_pair() == before, "a split pair was grouped again"
    assert db.get_incident(other.id)["status"] == "resolved"  # type: ignore[index]
    timeline = Actions(db).history(big.id)
    assert [e["kind"] for e in timeline if e["actor"]] == ["split"]
