from dataclasses import dataclass

import pytest

from stormeye.grouping.names import parse
from stormeye.grouping.priority import PriorityConfigError, PriorityModel, PriorityRule
from stormeye.grouping.report import root_entity, root_metric, summary, title


@dataclass
class M:
    metric: str
    start: float
    end: float
    peak_score: float
    direction: int


def props_of(members: list[M]) -> dict[str, dict[str, str]]:
    return {m.metric: parse(m.metric) for m in members}


def test_a_kpi_drop_outranks_a_bigger_infra_spike() -> None:
    model = PriorityModel()
    kpi = [M(f'revenue{{country="England",product="{p}"}}', 0, 600, 0.55, -1) for p in ("a", "b", "c")]
    infra = [M(f'cpu_usage{{host="h{i}",service="batch"}}', 0, 600, 1.0, 1) for i in range(30)]
    pk = model.score(kpi, props_of(kpi), 600)
    pi = model.score(infra, props_of(infra), 600)
    assert pk.score > pi.score and pk.level < pi.level
    assert pk.parts["kpi"] == 1.0 and pi.parts["importance"] == 1.0


def test_the_good_direction_of_a_kpi_is_less_urgent() -> None:
    model = PriorityModel()
    down = [M('signups{country="US"}', 0, 60, 0.8, -1)]
    up = [M('signups{country="US"}', 0, 60, 0.8, 1)]
    assert model.score(down, props_of(down), 60).score > model.score(up, props_of(up), 60).score


def test_rules_from_config_and_their_errors() -> None:
    model = PriorityModel.from_config([{"match": {"__name__": "orders"}, "weight": 7, "kpi": True, "bad": "down"}])
    imp = model.importance("orders", {"__name__": "orders"})
    assert (imp.weight, imp.kpi, imp.bad) == (7.0, True, "down")
    assert model.importance("x", {"__name__": "x"}).weight == 1.0
    with pytest.raises(PriorityConfigError, match="'bad' must be one of"):
        PriorityModel.from_config([{"match": {"a": "b"}, "bad": "sideways"}])
    with pytest.raises(PriorityConfigError, match="bad regular expression"):
        PriorityRule({"a": "("})
    with pytest.raises(PriorityConfigError, match="unknown field"):
        PriorityModel.from_config([{"match": {"a": "b"}, "weigth": 3}])
    with pytest.raises(PriorityConfigError, match="positive number"):
        PriorityRule({"a": "b"}, weight=-1)


def test_title_names_the_measure_the_direction_and_the_shared_scope() -> None:
    members = [
        M(f'purchase_count{{country="England",device="{d}"}}', 0, 60, 0.7, -1) for d in ("mobile", "desktop", "tablet")
    ]
    t = title(members, props_of(members), members[0].metric, "country=England")
    assert t == "purchase_count dropped for country=England across 3 metrics"
    mixed = [*members, M('revenue{country="England",device="tv"}', 0, 60, 0.9, -1)]
    t2 = title(mixed, props_of(mixed), mixed[-1].metric, None)
    assert t2 == "revenue and 1 other measure dropped for country=England across 4 metrics"
    assert title(members[:1], props_of(members), None, None).endswith(" dropped")


def test_root_metric_is_the_earliest_strong_high_weight_member() -> None:
    model = PriorityModel()
    cascade = [
        M('latency_p99{host="db-1",service="db"}', 120, 600, 0.9, 1),
        M('error_rate{host="api-1",service="api"}', 180, 600, 0.95, 1),
        M('error_rate{host="db-1",service="db"}', 60, 600, 0.85, 1),  # earliest strong, weight 2
        M('cpu_usage{host="db-1",service="db"}', 0, 600, 0.99, 1),  # earlier but weight 1
        M('error_rate{host="db-2",service="db"}', 30, 600, 0.4, 1),  # earlier but weak
    ]
    props = props_of(cascade)
    assert root_metric(cascade, lambda m: model.importance(m, props[m])) == 'error_rate{host="db-1",service="db"}'
    assert root_entity([m.metric for m in cascade], props) == "host=db-1"  # 3 of 5 members
    spread = [
        'latency_p99{host="db-1",service="db"}',
        'error_rate{host="db-2",service="db"}',
        'cpu_usage{host="db-3",service="db"}',
        'error_rate{host="api-1",service="api"}',
    ]
    assert root_entity(spread, {s: parse(s) for s in spread}) == "service=db"
    business = ['revenue{country="England",device="a"}', 'orders{country="England",device="b"}']
    assert root_entity(business, {s: parse(s) for s in business}) == "country=England"


def test_summary_is_readable() -> None:
    inc = {
        "id": "inc-1",
        "priority": 2,
        "title": "t",
        "status": "open",
        "root": "r",
        "root_entity": "host=a",
        "priority_parts": {"importance": 2.0},
        "members": [{"metric": f"m{i}", "peak_score": i / 20, "direction": 1} for i in range(12)],
    }
    text = summary(inc)
    assert text.startswith("[P2] t") and "root: r (host=a)" in text and "… and 2 more" in text


def test_title_says_the_roots_own_direction_when_its_symptoms_moved_the_other_way() -> None:
    """Issue 34: "payment_success_count and 4 other measures rose" while that KPI, the root, dropped."""
    kpi = M('payment_success_count{service="pay"}', 0, 600, 0.95, -1)
    symptoms = [M(f'{what}{{service="pay"}}', 60, 600, 0.8, 1) for what in ("latency", "errors", "retries", "queue")]
    members = [kpi, *symptoms]
    t = title(members, props_of(members), kpi.metric, None)
    assert t == "payment_success_count dropped, 4 other measures rose, for service=pay across 5 metrics"
    together = [kpi, M('refunds{service="pay"}', 60, 600, 0.8, -1)]
    assert title(together, props_of(together), kpi.metric, None) == (
        "payment_success_count and 1 other measure dropped for service=pay across 2 metrics"
    )
    # the root's strongest member decides when the root metric moved both ways
    swing = [kpi, M(kpi.metric, 700, 800, 0.5, 1), *symptoms]
    assert title(swing, props_of(swing), kpi.metric, None).startswith("payment_success_count dropped, ")
