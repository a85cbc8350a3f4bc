"""The HTTP API (FastAPI) on embedded defaults: points in, incidents out.

- ``POST /api/v1/points``: a JSON list of points, or ``{"points": [...]}``; each point is
  ``{"metric": ..., "timestamp": ..., "value": ...}`` (see :mod:`workers.ingest`). Good points
  are kept even when others are rejected; the answer lists every rejected one with its index
  and what to fix. 202 when at least one point was accepted, 422 when none was.
- ``GET /api/v1/incidents``: incidents, open ones first, most urgent first (``status``: open,
  acknowledged, unacknowledged, recognised (a known routine: pages nobody), resolved, merged or
  all (all but merged, the default); ``limit``, ``offset``); each with ``acknowledged`` (who and
  when, or null) and ``state`` (``acknowledged`` for an open incident someone acknowledged, else
  its status).
- ``GET /api/v1/incidents/{id}``: one incident with its members, evidence, history and a
  readable summary.
- ``GET /healthz``: liveness and a few counters.

The routes run on one :class:`~workers.backend.Backend`, chosen once at start from
``STORMEYE_MODE``: the embedded pipeline with its tick in a background thread every
``STORMEYE_TICK_S`` seconds, or (``STORMEYE_MODE=distributed``) Redis and the Celery workers, where
points are queued before the answer and a point whose step was already scored is refused with
that reason.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from stormeye.api import alertmanager_api, auth, ingest_routes, selfmetrics
from stormeye.api.actions import router as actions_router
from stormeye.api.graphite_listener import GraphiteListener
from stormeye.api.lookup import incident_or_404
from stormeye.api.notify_routes import notify_router
from stormeye.api.page import STATIC
from stormeye.api.page import router as page_router
from stormeye.core.errors import Overloaded, StormeyeError, Unavailable
from stormeye.grouping.report import incident_report, summary
from stormeye.workers.backend import Backend, open_backend
from stormeye.workers.ingest import PointBatch, PointReader
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings, get_settings

MAX_POINTS_PER_REQUEST = 100_000


class Service:
    """What the routes share: the backend (chosen once, at start), the point reader and the intake hooks."""

    def __init__(self, settings: Settings, pipeline: Pipeline | None = None) -> None:
        self.settings = settings
        self.backend: Backend = open_backend(settings, pipeline)
        self.database = self.backend.database
        self.lock = self.backend.lock
        self.reader = PointReader(settings.graphite, settings.label_limits)
        #: called after every intake as ``hook(source, accepted, {reason: rejected})`` (api/selfmetrics.py)
        self.intake_hooks: list[Callable[[str, int, dict[str, int]], None]] = []
        self.graphite: GraphiteListener | None = None
        self.inflight = 0  # ingest requests being served (see admit)

    def member_windows(self, incident: dict[str, Any], before: int) -> dict[str, dict[str, Any]]:
        """Series of an incident's members from ``before`` steps ahead of its start to its end."""
        p = self.backend.series()
        step = p.step
        metrics = sorted({m["metric"] for m in incident["members"]} & set(p.registry.names))
        if not metrics or p.store.newest() is None:
            return {}
        end = min(float(incident["end"]), float(p.store.newest() or incident["end"]))
        points = int(min(p.store.length, (end - float(incident["start"])) // step + 1 + before))
        with self.lock:
            rows = np.array([p.registry.row(m) for m in metrics])
            values = p.store.windows(rows, end, points)
        first = (np.floor(end / step) - points + 1) * step
        return {
            m: {
                "start": float(first),
                "step": step,
                "values": [None if not np.isfinite(v) else round(float(v), 6) for v in values[i]],
            }
            for i, m in enumerate(metrics)
        }

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """One ingest request in flight; beyond ``STORMEYE_MAX_INFLIGHT_REQUESTS`` at once, 429 with
        Retry-After (counted as rejected, ``overloaded``). Entered on the event loop's thread only."""
        if self.inflight >= self.settings.max_inflight_requests:
            for hook in self.intake_hooks:
                hook("http", 0, {"overloaded": 1})
            raise Overloaded(
                f"{self.inflight} ingest requests are being served (STORMEYE_MAX_INFLIGHT_REQUESTS="
                f"{self.settings.max_inflight_requests}); nothing of this one was kept: send it again after "
                "Retry-After seconds",
                retry_after=1.0,
            )
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    def accept(self, records: list[Any], now: float, source: str = "json") -> dict[str, Any]:
        batch = PointBatch()
        self.reader.add_records(batch, records, "points")
        return self.accept_batch(batch, now, source)

    def accept_batch(self, batch: PointBatch, now: float, source: str) -> dict[str, Any]:
        """Store a validated batch (points too far ahead or too old are rejected with the reason). When
        Redis or the database fails (503, the sender sends them again), the points are counted as refused
        for the reason ``unavailable``."""
        try:
            return self._accept_batch(batch, now, source)
        except Unavailable:
            for hook in self.intake_hooks:
                hook(
                    source,
                    0,
                    {
                        "invalid": batch.rejected - batch.not_finite,
                        "not_finite": batch.not_finite,
                        "unavailable": len(batch),
                    },
                )
            raise

    def _accept_batch(self, batch: PointBatch, now: float, source: str) -> dict[str, Any]:
        invalid = batch.rejected  # unreadable points and (counted apart) values that are not finite
        names, ts, vals = batch.arrays()
        newest = self.backend.newest_point()
        length, step = self.settings.retention_points, self.settings.step_s
        oldest_ok = None if newest is None else newest - (length - 1) * step
        future = ts > now + self.settings.max_future_s
        old = ts < oldest_ok if oldest_ok is not None else np.zeros(len(ts), dtype=bool)
        for k in np.flatnonzero(future | old).tolist():
            t = float(ts[k])
            if future[k]:
                batch.reject(
                    batch.sources[k],
                    f"timestamp {t:.0f} is {t - now:.0f} s in the future; check the sender's clock (UTC epoch seconds)",
                )
            else:
                batch.reject(
                    batch.sources[k],
                    f"timestamp {t:.0f} is older than the window store keeps ({length} steps); it cannot be scored",
                )
        keep = np.flatnonzero(~(future | old))
        kept_names = names if len(keep) == len(names) else [names[k] for k in keep.tolist()]
        accepted = late = merged = 0
        if len(keep):  # repeats of a (metric, step) in this request: the last one given wins, the others are counted
            steps = np.floor(ts[keep] / step).astype(np.int64).tolist()
            merged = len(keep) - len(set(zip(kept_names, steps, strict=True)))
            stored = self.backend.store_points(kept_names, ts[keep], vals[keep])
            accepted, late = stored.accepted, stored.late
            where = keep.tolist()
            for i, why in stored.refused:
                batch.reject(batch.sources[where[i]], why)
        errors = [{"where": e.where, "error": e.message} for e in batch.errors]
        for hook in self.intake_hooks:
            hook(
                source,
                accepted,
                {
                    "invalid": invalid - batch.not_finite,
                    "not_finite": batch.not_finite,
                    "refused": batch.rejected - invalid,
                },
            )
        # the embedded pipeline keeps a point that arrived after its step was scored as history only: say so
        return {"accepted": accepted, "late": late, "merged": merged, "rejected": batch.rejected, "errors": errors}


async def _stormeye_error(_: Request, exc: Exception) -> JSONResponse:
    """Any of stormeye's own errors reaching a route: its HTTP status and the message (what to fix)."""
    status = exc.http_status if isinstance(exc, StormeyeError) else 500
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry is not None else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


def create_app(
    settings: Settings | None = None, pipeline: Pipeline | None = None, start_ticker: bool = True
) -> FastAPI:
    settings = settings or get_settings()
    service = Service(settings, pipeline)
    notifier = service.backend.notify_loop()  # notifications sent from this process (STORMEYE_NOTIFY_CONFIG)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_ticker:
            service.backend.start()
            if notifier is not None:
                notifier.start()
        graphite = ingest_routes.start_graphite(service)
        yield
        if graphite is not None:
            graphite.stop()
        service.backend.stop()
        if notifier is not None:
            notifier.stop()

    app = FastAPI(
        title="stormeye",
        version="0.1.0",
        lifespan=lifespan,
        description="Alert correlation and grouping: an alert storm in, a few incidents out.",
    )
    app.state.service = service
    app.add_exception_handler(StormeyeError, _stormeye_error)
    app.state.selfmetrics = selfmetrics.SelfMetrics(service)
    auth.install(app, settings, on_reject=app.state.selfmetrics.reject)  # tokens, request.state.actor, size limit
    ingest_routes.install(app)  # remote write, Alertmanager and generic alerts
    alertmanager_api.install(app)  # Alertmanager API v2 (Prometheus, Grafana) and Grafana's webhook
    app.include_router(selfmetrics.router)  # /metrics, /readyz
    app.include_router(actions_router)
    app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(notify_router(service))

    @app.post("/api/v1/points", status_code=202)
    async def post_points(request: Request) -> JSONResponse:
        raw = await request.body()
        body = ingest_routes.parse_json(raw) if raw else None
        records = body.get("points") if isinstance(body, dict) else body
        if isinstance(body, dict) and "points" not in body:
            records = [body] if {"metric", "value"} <= set(body) or "labels" in body else None
        if not isinstance(records, list):
            raise HTTPException(
                400,
                'send a JSON list of points or an object {"points": [...]}; each point is '
                '{"metric": ..., "timestamp": ..., "value": ...}',
            )
        if len(records) > MAX_POINTS_PER_REQUEST:
            raise HTTPException(
                413, f"{len(records)} points in one request; send at most {MAX_POINTS_PER_REQUEST} per request"
            )
        with service.admit():  # the work in a thread: the event loop (and /healthz) never waits for the tick
            result = await run_in_threadpool(service.accept, records, time.time())
        status = 202 if result["accepted"] or not records else 422
        return JSONResponse(result, status_code=status)

    @app.get("/api/v1/incidents")
    def list_incidents(
        status: str | None = Query(None, pattern="^(open|acknowledged|unacknowledged|recognised|resolved|merged|all)$"),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        db = service.database
        return {"incidents": db.list_incidents(status, limit, offset), "total": db.count_incidents(status)}

    @app.get("/api/v1/incidents/{incident_id}")
    def get_incident(incident_id: str) -> dict[str, Any]:
        inc = incident_or_404(service.database, incident_id)
        inc["summary"] = summary(inc)
        return inc

    @app.get("/api/v1/incidents/{incident_id}/report")
    def get_report(incident_id: str, before: int = Query(30, ge=0, le=10_000)) -> dict[str, Any]:
        """Summary, members with evidence, and each member's recent series (while the store holds it)."""
        inc = incident_or_404(service.database, incident_id)
        return incident_report(inc, service.member_windows(inc, before))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: always 200 while the process answers; ``status`` says "degraded" when the tick has
        stalled (``/readyz`` answers 503 then), with the tick's age and last error. In a thread (a Redis
        that hangs must not hold the event loop); ingest leaves threads free (``admit``)."""
        health = await run_in_threadpool(service.backend.health)
        return {"status": "degraded" if health.get("stalled") else "ok", "mode": settings.mode, **health}

    return app
