"""stormeye's own metrics at ``/metrics`` (Prometheus exposition format), and ``/readyz``.

- ``stormeye_points_received_total{source}``: points accepted, by source (json, remote_write, graphite);
- ``stormeye_points_rejected_total{reason}``: points or requests refused — ``invalid`` (a point that
  cannot be read), ``refused`` (too old, too far ahead, or a step already scored), ``not_finite``
  (NaN or infinity), and for whole requests ``bad_request``, ``too_large``, ``unauthorized``;
- ``stormeye_stale_markers_total``: Prometheus stale markers seen (series that ended; never stored);
- ``stormeye_alerts_received_total{source}`` and ``stormeye_alert_repeats_total{source}``;
- ``stormeye_anomalies_open``, ``stormeye_incidents_open{priority}``;
- ``stormeye_tick_duration_seconds`` (the newest tick), ``stormeye_backlog_steps`` (complete steps
  not yet scored) and, in distributed mode, ``stormeye_backlog_batches`` (accepted batches not yet stored).

Each app has its own registry, so several apps in one process (tests) do not share counters.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from stormeye.workers import models
from stormeye.workers.pipeline import due_slot

router = APIRouter()
disable_created_metrics()  # the *_created series only repeat the start time of the process


class SelfMetrics:
    """The counters the edges update, and a collector that reads the service's state at scrape time."""

    def __init__(self, service: Any) -> None:
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
        for reason in ("invalid", "refused", "not_finite", "bad_request", "too_large", "unauthorized"):
            self.rejected.labels(reason)
        for source in ("json", "remote_write", "graphite"):
            self.points.labels(source)
        for source in ("alertmanager", "generic"):
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


class _StateCollector(Collector):
    def __init__(self, service: Any) -> None:
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
        tick.add_metric([], float(svc.last_tick_s or 0.0))
        yield tick
        backlog = GaugeMetricFamily("stormeye_backlog_steps", "Complete steps not yet scored")
        if svc.runtime is not None:
            h = svc.runtime.health()
            backlog.add_metric([], float(h["steps_behind"] or 0))
            yield backlog
            batches = GaugeMetricFamily("stormeye_backlog_batches", "Accepted batches not yet stored by a worker")
            batches.add_metric([], float(h["pending_batches"]))
            yield batches
            return
        p = svc.pipeline
        behind = 0
        if p.last_scored is not None:
            behind = max(0, due_slot(time.time(), p.step, svc.settings.grace_s) - p.last_scored)
        backlog.add_metric([], float(behind))
        yield backlog
        anomalies = GaugeMetricFamily("stormeye_anomalies_open", "Open anomalies (detected and alerts)")
        anomalies.add_metric([], float(len(p.anomalies.open_anomalies) + len(p.alerts)))
        yield anomalies


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """stormeye's own metrics in Prometheus' text format (no token needed)."""
    meters: SelfMetrics = request.app.state.selfmetrics
    return Response(generate_latest(meters.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/readyz")
def readyz(request: Request) -> dict[str, Any]:
    """Ready when the database answers and, in distributed mode, Redis does (503 otherwise)."""
    svc = request.app.state.service
    try:
        with svc.database.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise HTTPException(503, f"the database at {svc.settings.database_url} does not answer: {exc}") from None
    if svc.runtime is not None:
        try:
            svc.runtime.r.ping()
        except Exception as exc:
            raise HTTPException(503, f"Redis at {svc.settings.redis_url} does not answer: {exc}") from None
    return {"status": "ready", "mode": svc.settings.mode}
