"""The HTTP API (FastAPI) on embedded defaults: points in, incidents out.

- ``POST /api/v1/points``: a JSON list of points, or ``{"points": [...]}``; each point is
  ``{"metric": ..., "timestamp": ..., "value": ...}`` (see :mod:`workers.ingest`). Good points
  are kept even when others are rejected; the answer lists every rejected one with its index
  and what to fix. 202 when at least one point was accepted, 422 when none was.
- ``GET /api/v1/incidents``: incidents, open ones first, most urgent first (``status``: open,
  acknowledged, unacknowledged, resolved or merged; ``limit``, ``offset``).
- ``GET /api/v1/incidents/{id}``: one incident with its members, evidence, history and a
  readable summary.
- ``GET /healthz``: liveness and a few counters.

The embedded tick runs in a background thread every ``STORMEYE_TICK_S`` seconds. In
distributed mode (``STORMEYE_MODE=distributed``) points are written to Redis and queued for
the workers before the answer (so a worker's death cannot lose them), Celery beat drives the
tick, and a point whose step was already scored is refused with that reason.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from redis import RedisError

from stormeye.api import auth, ingest_routes, selfmetrics
from stormeye.api.actions import router as actions_router
from stormeye.api.lookup import incident_or_404
from stormeye.api.notify_routes import notify_loop, notify_router
from stormeye.api.page import STATIC
from stormeye.api.page import router as page_router
from stormeye.grouping.report import incident_report, summary
from stormeye.workers.db import Database
from stormeye.workers.distributed import Runtime, check_redis
from stormeye.workers.ingest import PointBatch, PointReader
from stormeye.workers.pipeline import Pipeline
from stormeye.workers.settings import Settings, get_settings
from stormeye.workers.store import WindowStore

MAX_POINTS_PER_REQUEST = 100_000


class Service:
    """The pipeline, its lock and the ticker thread (embedded), or the Redis runtime (distributed)."""

    def __init__(self, settings: Settings, pipeline: Pipeline | None = None) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        if settings.mode == "distributed" and pipeline is None:
            from stormeye.workers.celery_app import CeleryDispatcher, make_app

            self.runtime = Runtime(settings, client=check_redis(settings.redis_url))
            self.dispatcher = CeleryDispatcher(make_app(settings))
            self.database = Database(settings.database_url)
        else:
            self.database = pipeline.database if pipeline and pipeline.database else Database(settings.database_url)
            self._pipeline = pipeline or Pipeline(settings, database=self.database)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_tick: float | None = None
        self.reader = PointReader(settings.graphite)
        #: called after every intake as ``hook(source, accepted, {reason: rejected})`` (api/selfmetrics.py)
        self.intake_hooks: list[Any] = []
        self.last_tick_s: float | None = None  # how long the newest tick took

    @property
    def pipeline(self) -> Pipeline:
        if self.runtime is not None:
            raise RuntimeError("distributed mode has no in-process pipeline")
        return self._pipeline

    @property
    def store(self) -> WindowStore:
        return self.runtime.store if self.runtime is not None else self.pipeline.store

    def series_source(self) -> Any:
        """What the page's series and shape search read: the metric registry, the window store, the
        step and the name index, of the embedded pipeline or, in distributed mode, of the Redis runtime
        (brought up to date with the metrics other processes registered)."""
        if self.runtime is None:
            return self.pipeline
        self.runtime.warm()
        return self.runtime

    def start(self) -> None:
        if self.runtime is not None:
            return  # Celery beat drives the tick
        self._thread = threading.Thread(target=self._run, name="stormeye-tick", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.tick_s):
            self.tick()

    def tick(self, until: float | None = None) -> int:
        began = time.perf_counter()
        with self.lock:
            results = self.pipeline.tick(until)
        self.last_tick = time.time()
        self.last_tick_s = time.perf_counter() - began
        return len(results)

    def member_windows(self, incident: dict[str, Any], before: int) -> dict[str, dict[str, Any]]:
        """Series of an incident's members from ``before`` steps ahead of its start to its end."""
        p = self.series_source()
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

    def accept(self, records: list[Any], now: float, source: str = "json") -> dict[str, Any]:
        batch = PointBatch()
        self.reader.add_records(batch, records, "points")
        return self.accept_batch(batch, now, source)

    def accept_batch(self, batch: PointBatch, now: float, source: str) -> dict[str, Any]:
        """Store a validated batch (points too far ahead or too old are rejected with the reason)."""
        invalid = batch.rejected
        names, ts, vals = batch.arrays()
        store = self.store
        try:
            newest = store.newest()
        except RedisError as exc:
            raise self._redis_down(exc) from None
        oldest_ok = None if newest is None else newest - (store.length - 1) * store.step
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
                    f"timestamp {t:.0f} is older than the window store keeps "
                    f"({store.length} steps); it cannot be scored",
                )
        keep = np.flatnonzero(~(future | old))
        kept_names = names if len(keep) == len(names) else [names[k] for k in keep.tolist()]
        accepted = late = merged = 0
        if len(keep):  # repeats of a (metric, step) in this request: the last one given wins, the others are counted
            steps = np.floor(ts[keep] / store.step).astype(np.int64).tolist()
            merged = len(keep) - len(set(zip(kept_names, steps, strict=True)))
        if len(keep) and self.runtime is not None:
            accepted = self._accept_distributed(batch, kept_names, ts[keep], vals[keep], keep.tolist())
        elif len(keep):
            with self.lock:
                before = self.pipeline.late_points
                accepted = self.pipeline.ingest(kept_names, ts[keep], vals[keep])
                late = self.pipeline.late_points - before
        errors = [{"where": e.where, "error": e.message} for e in batch.errors]
        for hook in self.intake_hooks:
            hook(source, accepted, {"invalid": invalid, "refused": batch.rejected - invalid})
        # embedded mode keeps a point that arrived after its step was scored as history only: say so
        return {"accepted": accepted, "late": late, "merged": merged, "rejected": batch.rejected, "errors": errors}

    def _redis_down(self, exc: Exception) -> HTTPException:
        return HTTPException(
            503,
            f"points not accepted: Redis at {self.settings.redis_url} failed ({exc}); nothing of this request "
            "was kept, send it again",
        )

    def _accept_distributed(self, batch: PointBatch, names: list[str], ts: Any, vals: Any, where: list[int]) -> int:
        assert self.runtime is not None
        try:
            res = self.runtime.accept(names, ts, vals, self.dispatcher)
        except RedisError as exc:
            raise self._redis_down(exc) from None
        step = self.runtime.step
        for i in res.late:
            batch.reject(
                batch.sources[where[int(i)]],
                f"timestamp {ts[int(i)]:.0f} is for a step already scored (steps up to "
                f"{(res.closed_slot + 1) * step:.0f} are closed); send points within STORMEYE_GRACE_S="
                f"{self.settings.grace_s:g} s after their step ends, or raise it",
            )
        return res.accepted


def create_app(
    settings: Settings | None = None, pipeline: Pipeline | None = None, start_ticker: bool = True
) -> FastAPI:
    settings = settings or get_settings()
    service = Service(settings, pipeline)
    notifier = notify_loop(service)  # notifications in embedded mode (STORMEYE_NOTIFY_CONFIG)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_ticker:
            service.start()
            if notifier is not None:
                notifier.start()
        graphite = ingest_routes.start_graphite(service)
        yield
        if graphite is not None:
            graphite.stop()
        service.stop()
        if notifier is not None:
            notifier.stop()

    app = FastAPI(
        title="stormeye",
        version="0.1.0",
        lifespan=lifespan,
        description="Alert correlation and grouping: an alert storm in, a few incidents out.",
    )
    app.state.service = service
    app.state.selfmetrics = selfmetrics.SelfMetrics(service)
    auth.install(app, settings, on_reject=app.state.selfmetrics.reject)  # tokens, request.state.actor, size limit
    ingest_routes.install(app)  # remote write, Alertmanager and generic alerts
    app.include_router(selfmetrics.router)  # /metrics, /readyz
    app.include_router(actions_router)
    app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(notify_router(service))

    @app.post("/api/v1/points", status_code=202)
    async def post_points(request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError as exc:
            raise HTTPException(
                400, f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
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
        result = service.accept(records, time.time())
        status = 202 if result["accepted"] or not records else 422
        return JSONResponse(result, status_code=status)

    def db_open() -> int:
        return service.database.count_incidents("open")

    @app.get("/api/v1/incidents")
    def list_incidents(
        status: str | None = Query(None, pattern="^(open|acknowledged|unacknowledged|resolved|merged)$"),
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
    def healthz() -> dict[str, Any]:
        if service.runtime is not None:
            try:
                h = service.runtime.health()
            except RedisError as exc:
                raise HTTPException(503, f"Redis at {settings.redis_url} failed: {exc}") from None
            return {"status": "ok", "mode": settings.mode, **h, "open_incidents": db_open()}
        p = service.pipeline
        return {
            "status": "ok",
            "mode": settings.mode,
            "metrics": len(p.registry),
            "open_incidents": len(p.incidents.open_incidents()),
            "last_tick": service.last_tick,
            "newest_point": p.store.newest(),
        }

    return app
