"""Cascades along the service topology, a new problem on an open incident's service, and the topology itself."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from stormeye.detectors.events import Anomaly
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import IncidentTracker
from stormeye.grouping.names import NameIndex
from stormeye.grouping.topology import DependencyError, Topology, parse_dependencies
from stormeye.workers.settings import Settings

STEP = 60.0
SERVICES = [
    "frontend",
    "checkout",
    "payment",
    "ledger",
    "search",
    "catalog",
    "inventory",
    "email",
    "ads",
    "auth",
    "users",
    "reviews",
]
REGIONS = ["eu", "us"]
MEASURES = ["http_requests_total", "http_errors_total", "http_latency_p99_seconds", "process_cpu_ratio"]
#: caller -> callee: two chains with no path between them, and a few services beside them
DEPENDENCIES = [
    ("frontend", "checkout"),
    ("checkout", "payment"),
    ("payment", "ledger"),
    ("search", "catalog"),
    ("catalog", "inventory"),
    ("auth", "users"),
]


def metric(measure: str, service: str, region: str = "eu") -> str:
    return f'{measure}{{region="{region}",service="{service}"}}'


class Estate:
    """A microservice estate in Prometheus naming, its windows and a tracker with the declared topology."""

    def __init__(self, topology: bool = True, **cfg: float) -> None:
        self.index = NameIndex()
        self.index.add([metric(m, s, r) for m in MEASURES for s in SERVICES for r in REGIONS])
        topo = Topology(DEPENDENCIES if topology else (), cooccur_min=0)
        self.tracker = IncidentTracker(self.index, GroupingConfig(**cfg), step=STEP, topology=topo)
        self.onset: dict[str, float] = {}  # metric -> when its problem started (its ramp)
        self.started: dict[str, float] = {}  # metric -> when its anomaly was detected
        self.closed: dict[str, float] = {}

    def fail(
        self, service: str, at: float, measures: tuple[str, ...] = ("http_errors_total", "http_latency_p99_seconds")
    ) -> None:
        for m in measures:
            self.onset[metric(m, service)] = at

    def window(self, name: str, now: float) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        t = now - STEP * np.arange(59, -1, -1)
        x = rng.normal(0.0, 0.3, 60)
        if name in self.onset:
            # a ramp of about ten steps, then a plateau
            x += 8.0 * np.clip((t - self.onset[name]) / (10 * STEP), 0.0, 1.0)
        return x

    def evidence(self, name: str) -> dict[str, float]:
        """What the detector says of an anomaly of ``name`` (nothing here)."""
        return {}

    def windows(self, now: float):  # type: ignore[no-untyped-def]
        return lambda metrics: np.vstack([self.window(m, now) for m in metrics])

    def tick(self, now: float) -> None:
        """Detect (two steps into a ramp) and hand the changed anomalies to the tracker."""
        changed = []
        for m, onset in self.onset.items():
            if now >= onset + 2 * STEP and m not in self.closed:
                start = self.started.setdefault(m, now)
                changed.append(Anomaly(m, start, now, 1.0, now, 1, "test", evidence=self.evidence(m)))
        self.tracker.update(now, changed, self.windows(now))

    def run(self, until: float, start: float = 0.0) -> None:
        for now in np.arange(start, until + 1, STEP):
            self.tick(float(now))

    def incidents_with(self, service: str) -> list[str]:
        return sorted(
            i.id
            for i in self.tracker.incidents.values()
            if i.status != "merged" and any(f'service="{service}"' in m for m in i.metrics)
        )


def test_a_four_service_cascade_with_lags_is_one_incident_rooted_at_the_callee() -> None:
    est = Estate()
    # ledger fails; payment, checkout and frontend (its callers, hop after hop) follow 1-3 minutes later
    for service, at in (("ledger", 0), ("payment", 120), ("checkout", 240), ("frontend", 420)):
        est.fail(service, at)
    est.run(900)
    (inc,) = [i for i in est.tracker.incidents.values() if i.status == "open"]
    assert {m.split('service="')[1].rstrip('"}') for m in inc.metrics} == {"ledger", "payment", "checkout", "frontend"}
    assert inc.root_entity == "service=ledger"
    assert inc.root is not None and 'service="ledger"' in inc.root
    # every member says how it was linked; with a topology that includes whether it linked them
    assert all("topology" in m.evidence for m in inc.members.values() if m.evidence)


def test_without_the_topology_the_same_cascade_splits_per_service() -> None:
    est = Estate(topology=False)
    for service, at in (("ledger", 0), ("payment", 120), ("checkout", 240), ("frontend", 420)):
        est.fail(service, at)
    est.run(900)
    assert len([i for i in est.tracker.incidents.values() if i.status == "open"]) >= 3


def test_two_concurrent_cascades_on_disjoint_services_stay_two() -> None:
    est = Estate()
    for service, at in (("ledger", 0), ("payment", 120), ("checkout", 180)):
        est.fail(service, at)
    for service, at in (("inventory", 0), ("catalog", 120), ("search", 180)):
        est.fail(service, at)
    est.run(900)
    open_ = [i for i in est.tracker.incidents.values() if i.status == "open"]
    assert len(open_) == 2
    roots = sorted(str(i.root_entity) for i in open_)
    assert roots == ["service=inventory", "service=ledger"]
    for inc in open_:
        services = {m.split('service="')[1].rstrip('"}') for m in inc.metrics}
        assert services in ({"ledger", "payment", "checkout"}, {"inventory", "catalog", "search"})


def test_unrelated_services_failing_at_the_same_minute_stay_apart() -> None:
    est = Estate()
    est.fail("ledger", 0)
    est.fail("users", 0)  # no path from auth/users to the checkout chain
    est.run(600)
    assert len(est.incidents_with("ledger")) == 1 and len(est.incidents_with("users")) == 1
    assert est.incidents_with("ledger") != est.incidents_with("users")


def test_a_second_fault_on_a_service_with_an_open_incident_opens_a_new_incident() -> None:
    est = Estate()
    est.fail("payment", 0)  # errors and latency: incident 1, still open below
    est.run(480)
    (first,) = est.incidents_with("payment")
    # eight minutes later the same service's CPU and requests go wrong: a new problem
    est.fail("payment", 480, ("process_cpu_ratio", "http_requests_total"))
    est.run(1200, start=540)
    ids = est.incidents_with("payment")
    assert len(ids) == 2 and first in ids
    second = est.tracker.incidents[next(i for i in ids if i != first)]
    assert {m.split("{")[0] for m in second.metrics} == {"process_cpu_ratio", "http_requests_total"}
    assert est.tracker.incidents[first].status == "open"  # the first problem is still going on


class Relapse(Estate):
    """payment fails at 0; its latency anomaly closes at 600 while the errors go on (the detector got
    used to the new level), and opens again at 1500, judged against the level before the failure."""

    LATENCY = metric("http_latency_p99_seconds", "payment")

    def __init__(self, recovered: bool, reference: bool = True) -> None:
        super().__init__()
        self.recovered, self.reference = recovered, reference
        self.fail("payment", 0)

    def window(self, name: str, now: float) -> np.ndarray:
        x = super().window(name, now)
        if self.recovered and name == self.LATENCY:  # back at its level between the two anomalies
            t = now - STEP * np.arange(59, -1, -1)
            x[(t > 600) & (t < 1500)] -= 8.0
        return x

    def evidence(self, name: str) -> dict[str, float]:
        return {"median": 0.0} if self.reference else {}  # the reference it is judged against: before the failure

    def play(self) -> list[str]:
        self.run(540)
        self.closed[self.LATENCY] = 600.0
        gone = Anomaly(self.LATENCY, 120.0, 600.0, 1.0, 300.0, 1, "test", open=False)
        self.tracker.update(600, [gone], self.windows(600))
        self.run(1440, start=660)
        del self.closed[self.LATENCY]
        self.started[self.LATENCY] = 1500.0
        self.run(1800, start=1500)
        return self.incidents_with("payment")


def test_a_metric_that_never_went_back_opening_again_is_the_same_problem() -> None:
    est = Relapse(recovered=False)
    (only,) = est.play()
    latency = [m for m in est.tracker.incidents[only].members.values() if m.metric == Relapse.LATENCY]
    assert sorted(m.start for m in latency) == [120.0, 1500.0]


def test_a_metric_that_went_back_opening_again_is_a_new_problem() -> None:
    assert len(Relapse(recovered=True).play()) == 2


def test_without_the_detector_reference_a_metric_opening_again_is_a_new_problem() -> None:
    assert len(Relapse(recovered=False, reference=False).play()) == 2


def test_onsets_close_together_still_grow_one_incident() -> None:
    est = Estate()
    est.fail("payment", 0)
    est.fail("payment", 120, ("process_cpu_ratio",))  # two minutes later: the same problem spreading
    est.run(900)
    assert len(est.incidents_with("payment")) == 1


# -- the topology ---------------------------------------------------------------------------


def test_dependency_file_parses_header_comments_and_weights() -> None:
    text = "Source,Target,Weight\n# the shop\nfrontend,checkout,1\n\ncheckout, payment\n"
    assert parse_dependencies(text) == [("frontend", "checkout"), ("checkout", "payment")]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("caller,callee\nfrontend,checkout\nfrontend\n", 3, "names no callee"),
        ("frontend,checkout\ncheckout,payment,heavy\n", 2, "is not a number"),
        ("frontend,checkout\n\npayment,payment\n", 3, "calls itself"),
        ("a,b,1,2\n", 1, "4 columns"),
        ("a,\n", 1, "names no callee"),
    ],
)
def test_a_bad_dependency_line_fails_with_its_line_number(text: str, line: int, what: str) -> None:
    with pytest.raises(DependencyError, match=rf"deps.csv, line {line}: .*{what}"):
        parse_dependencies(text, "deps.csv")


def test_settings_refuse_a_bad_dependency_file_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "deps.csv"
    bad.write_text("frontend,checkout\ncheckout\n")
    with pytest.raises(ValidationError, match="line 2"):
        Settings(database_url="sqlite://", dependencies_file=bad)
    with pytest.raises(ValidationError, match="does not exist"):
        Settings(database_url="sqlite://", dependencies_file=tmp_path / "missing.csv")
    good = tmp_path / "good.csv"
    good.write_text("frontend,checkout\n")
    topo = Settings(database_url="sqlite://", dependencies_file=good).topology()
    assert topo.adjacent("checkout", "frontend") and len(topo) == 1


def test_service_graph_metrics_name_dependencies() -> None:
    index = NameIndex()
    names = [
        'istio_requests_total{destination_workload="payment",source_workload="checkout"}',
        'traces_service_graph_request_total{client="frontend",server="checkout"}',
        'http_requests_total{service="payment"}',
    ]
    index.add(names)
    tracker = IncidentTracker(index)
    assert tracker.learn_names(names) == 2
    topo = tracker.topology
    assert topo.adjacent("checkout", "payment") and topo.adjacent("frontend", "checkout")
    assert list(topo.graph.successors("checkout")) == ["payment"]
    assert topo.root({"frontend": 0.0, "checkout": 0.0, "payment": 0.0}) == "payment"


def test_history_links_services_that_keep_failing_together_beyond_chance() -> None:
    topo = Topology(cooccur_min=4, cooccur_lift=10.0)
    rng = np.random.default_rng(0)
    others = [f"svc-{i}" for i in range(30)]
    for k in range(200):
        episode = list(rng.choice(others, size=2, replace=False))
        if k % 20 == 0:
            episode += ["cart", "redis"]  # rare, and always together
        topo.observe(episode)
    assert topo.adjacent("cart", "redis")
    # services that meet only by chance are not linked
    assert not any(topo.adjacent(a, b) for a in others for b in others if a < b)
    state = topo.to_state()
    again = Topology(cooccur_min=4, cooccur_lift=10.0)
    again.load_state(state)
    assert again.adjacent("cart", "redis")
