"""Evidence counted once per signal (issue 28): quantiles and buckets of one measurement are one."""

from __future__ import annotations

import numpy as np

from stormeye.core.labels import parse
from stormeye.detectors.events import Anomaly
from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import IncidentTracker
from stormeye.grouping.names import NameIndex
from stormeye.grouping.signals import signal_key


def key(name: str) -> object:
    return signal_key(parse(name))


def test_quantiles_and_buckets_of_one_measurement_are_one_signal() -> None:
    svc = 'service="checkout",instance="a"'
    assert len({key(f"request_latency_{q}_seconds{{{svc}}}") for q in ("p90", "p95", "p99")}) == 1
    assert len({key(f"client_latency_{q}{{{svc}}}") for q in ("p50", "p99", "p999")}) == 1
    assert len({key(f'rpc_duration_seconds{{{svc},quantile="{q}"}}') for q in ("0.5", "0.9", "0.99")}) == 1
    assert len({key(f'http_duration_seconds_bucket{{{svc},le="{le}"}}') for le in ("0.1", "0.5", "+Inf")}) == 1
    # the bucket series are one measurement; the histogram's count is another (traffic)
    assert key(f'http_duration_seconds_bucket{{{svc},le="0.1"}}') != key(f"http_duration_seconds_count{{{svc}}}")


def test_unrelated_metrics_and_other_entities_stay_separate_signals() -> None:
    assert key('cpu{host="a"}') != key('memory{host="a"}')
    assert key('latency_p99{service="a"}') != key('latency_p99{service="b"}')
    assert key("api_p99") != key("api_errors")
    assert key("shipping") == key("shipping")  # a name with 'p' inside is left whole
    assert key("tcp9x") != key("tcp")


def _tracker(metrics: list[str]) -> IncidentTracker:
    index = NameIndex()
    index.add(metrics)
    return IncidentTracker(index, GroupingConfig(), step=60.0)


def _update(tracker: IncidentTracker, metrics: list[str]) -> None:
    shape = np.r_[np.zeros(50), np.full(10, 8.0)] + np.random.default_rng(0).normal(0, 0.1, 60)
    anomalies = [Anomaly(m, 0.0, 60.0, 0.9, 0.0, 1) for m in metrics]  # seen on two samples each
    tracker.update(60.0, anomalies, lambda ms: np.vstack([shape] * len(ms)))


def test_three_quantiles_of_one_latency_do_not_page_where_three_measures_do() -> None:
    quantiles = [f'checkout_latency_{q}_seconds{{service="checkout"}}' for q in ("p90", "p95", "p99")]
    t = _tracker(quantiles)
    _update(t, quantiles)
    # one signal: 0.9 x 2 (a latency's priority weight) = 1.8, below the evidence to page (2);
    # counted as three metrics it was 5.4
    assert not t.open_incidents()
    assert t.evidence([Anomaly(m, 0.0, 60.0, 0.9, 0.0, 1) for m in quantiles]) == 1.8
    measures = [f'checkout_{w}{{service="checkout"}}' for w in ("latency_p99_seconds", "queue_depth", "cpu_ratio")]
    t = _tracker(measures)
    _update(t, measures)
    (inc,) = t.open_incidents()  # three signals: 1.8 + 0.9 + 0.9
    assert set(inc.metrics) == set(measures)
