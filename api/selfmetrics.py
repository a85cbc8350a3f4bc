"""stormeye's own metrics at ``/metrics`` (Prometheus exposition format), and ``/readyz``.

- ``stormeye_points_received_total{source}``: points accepted, by source (json, remote_write, graphite);
- ``stormeye_points_rejected_total{reason}``: points or requests refused — ``invalid`` (a point that
  cannot be read), ``refused`` (too old, too far ahead, or a step already scored), ``not_finite``
  (NaN or infinity), ``unavailable`` (answered 503: Redis or the database failed; the sender retries),
  and for whole requests ``bad_request``, ``too_large``, ``unauthorized``, ``overloaded`` (429: more
  than ``STORMEYE_MAX_INFLIGHT_REQUESTS`` ingest requests at once);
- ``stormeye_stale_markers_total``: Prometheus stale markers seen (series that ended; never stored);
- ``stormeye_alerts_received_total{source}`` and ``stormeye_alert_repeats_total{source}``;
- ``stormeye_anomalies_open``, ``stormeye_incidents_open{priority}``;
- ``stormeye_tick_duration_seconds`` (the newest tick), ``stormeye_backlog_steps`` (complete steps
  not yet scored) and, in distributed mode, ``stormeye_backlog_batches`` (accepted batches not yet stored).

Each app has its own registry, so several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from stormeye.core.errors import Unavailable
from stormeye.workers import models

if TYPE_CHECKING:
    from stormeye.api.app import Service

router = APIRouter()
disable_created_metrics()  # the *_created series only repeat the start time of the process


class SelfMetrics:
    """The counters the edges update, and a collector that reads the service's state at scrape time."""

    def __init__(self, service: Service) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.points = Counter(
            "stormeye_points_received", "Points accepted, by source", ["source"], registry=self.registry
        )
        self.rejected = Counter(
            "stormeye_points_rejected", "Points or requests refused, by reason", ["reason"], registry=self.registry
        )
        self.stale = Counter(
            "stormeye_stale_markers", "Prometheus stale markers received (never stored)", registry=self.registry
        )
        self.alerts = Counter(
            "stormeye_alerts_received", "Alerts received, by source", ["source"], registry=self.registry
        )
        self.repeats = Counter(
            "stormeye_alert_repeats",
            "Alerts received again (same fingerprint), by source",
            ["source"],
            registry=self.registry,
        )
        self.own_alerts = Counter(
            "stormeye_own_alerts_skipped",
            "stormeye's own StormeyeIncident alerts that came back (a routing loop) and were skipped",
            registry=self.registry,
        )
        for reason in (
            "invalid",
            "refused",
            "not_finite",
            "unavailable",
            "bad_request",
            "too_large",
            "unauthorized",
            "overloaded",
        ):
            self.rejected.labels(reason)
        for source in ("json", "remote_write", "graphite"):
            self.points.labels(source)
        for source in ("alertmanager", "generic", "prometheus", "grafana"):
            self.alerts.labels(source)
            self.repeats.labels(source)
        self.registry.register(_StateCollector(service))
        service.intake_hooks.append(self.intake)

    def intake(self, source: str, accepted: int, rejected: dict[str, int]) -> None:
        if accepted:
            self.points.labels(source).inc(accepted)
        for reason, n in rejected.items():
            if n:
                self.rejected.labels(reason).inc(n)

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected.labels(reason).inc(n)


#: the backend's gauges (:meth:`workers.backend.Backend.gauges`) and their help
_GAUGES = {
    "backlog_steps": "Complete steps not yet scored",
    "backlog_batches": "Accepted batches not yet stored by a worker",
    "anomalies_open": "Open anomalies (detected and alerts)",
}


class _StateCollector(Collector):
    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily]:
        svc = self.service
        by_prio = GaugeMetricFamily("stormeye_incidents_open", "Open incidents, by priority", labels=["priority"])
        counts = {p: 0 for p in range(1, 6)}
        with svc.database.engine.connect() as conn:
            q = select(models.Incident.priority, func.count()).where(models.Incident.status == "open")
            for prio, n in conn.execute(q.group_by(models.Incident.priority)):
                counts[int(prio)] = int(n)
        for p, n in sorted(counts.items()):
            by_prio.add_metric([f"P{p}"], n)
        yield by_prio
        tick = GaugeMetricFamily("stormeye_tick_duration_seconds", "How long the newest tick took (embedded mode)")
        tick.add_metric([], float(svc.backend.last_tick_s or 0.0))
        yield tick
        try:
            gauges = svc.backend.gauges()
        except Unavailable:  # Redis down: the counters are still served (the backlog is unknown until it is back)
            gauges = {}
        for name, value in gauges.items():
            gauge = GaugeMetricFamily(f"stormeye_{name}", _GAUGES[name])
            gauge.add_metric([], value)
            yield gauge


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """stormeye's own metrics in Prometheus' text format (no token needed)."""
    meters: SelfMetrics = request.app.state.selfmetrics
    return Response(generate_latest(meters.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
def readyz(request: Request) -> dict[str, Any]:
    """Ready when the database answers and, in distributed mode, Redis does (503 otherwise)."""
    svc: Service = request.app.state.service
    try:
        with svc.database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise Unavailable(f"the database at {svc.settings.database_url} does not answer: {exc}") from None
    svc.backend.ready()
    return {"status": "ready", "mode": svc.settings.mode}
