"""Incidents that end and begin at the right time, through the whole embedded pipeline."""

import numpy as np

from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings

STEP = 60
T0 = 1_767_225_600


def build(shifts: dict[str, list[tuple[int, int]]], steps: int = 720, seed: int = 0):  # type: ignore[no-untyped-def]
    """Three services x three hosts x four metrics; `shifts[host]` lists (start, end) steps of a +12 sigma shift."""
    rng = np.random.default_rng(seed)
    names, values = [], []
    for svc in ("checkout", "search", "auth"):
        for h in range(3):
            host = f"{svc}-{h}"
            for metric in ("cpu", "latency", "errors", "queue"):
                x = 100 + rng.normal(0, 2, steps)
                for a, b in shifts.get(host, []):
                    x[a:b] += 24
                names.append(f'{metric}{{host="{host}",service="{svc}"}}')
                values.append(x)
    return names, np.array(values)


def run(names: list[str], values: np.ndarray, history: int = 300) -> Pipeline:
    pipe = Pipeline(Settings(database_url="sqlite://", step_s=STEP), keep_archive=True)
    ts = T0 + STEP * np.arange(values.shape[1])
    pipe.load_history(names, ts[:history], values[:, :history])
    rows = pipe.register(names)
    for j in range(history, values.shape[1]):
        pipe.store.append(rows, np.full(len(rows), ts[j]), values[:, j])
        pipe.tick(float(ts[j]))
    pipe.finish(float(ts[-1] + STEP))
    return pipe


def test_a_service_failing_again_after_a_quiet_gap_is_a_new_incident_that_follows_the_first() -> None:
    hosts = ["checkout-0", "checkout-1", "checkout-2"]
    names, values = build({h: [(400, 420), (480, 500)] for h in hosts})
    incidents = run(names, values).incident_list()
    checkout = sorted((i for i in incidents if i["root_entity"] == "service=checkout"), key=lambda i: i["start"])
    assert len(checkout) == 2, [(i["title"], i["start"]) for i in incidents]
    first, second = checkout
    assert first["start"] < T0 + STEP * 402 and T0 + STEP * 478 <= second["start"] < T0 + STEP * 485
    assert second["follows"] == first["id"] and first["status"] == "resolved"
    assert len(first["members"]) >= 10 and len(second["members"]) >= 10


def test_two_hosts_of_different_services_failing_in_the_same_minute_stay_apart() -> None:
    names, values = build({"search-1": [(400, 430)], "auth-2": [(400, 430)]})
    incidents = run(names, values).incident_list()
    big = [i for i in incidents if len(i["members"]) >= 3]
    assert sorted(i["root_entity"] for i in big) == ["host=auth-2", "host=search-1"]
    for inc in big:
        host = inc["root_entity"].split("=")[1]
        assert all(f'host="{host}"' in m["metric"] for m in inc["members"])
        assert inc["root"] is not None and host in inc["root"]
