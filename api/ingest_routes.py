"""Inputs from the stack people already run: Prometheus remote write, Alertmanager, any JSON alerts.

- ``POST /api/v1/write``: Prometheus remote write 1.0 (``Content-Type: application/x-protobuf``,
  ``Content-Encoding: snappy``). 200 with counts when anything was kept (or when only stale
  markers came); 4xx when the body cannot be read or nothing in it was usable — Prometheus drops
  the request then, as it should, since sending it again cannot help; 503 when Redis failed
  (distributed mode) — Prometheus sends it again.
- ``POST /api/v1/alerts/alertmanager``: Alertmanager's webhook (payload version 4).
- ``POST /api/v1/alerts``: alerts of any JSON sender, read through ``STORMEYE_ALERT_MAPPING``.

Alerts become anomalies grouped with the metric anomalies at the next tick
(:mod:`workers.alerts`); repeats of an alert are counted, not added again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from stormeye.api.graphite_listener import GraphiteListener
from stormeye.api.remote_write import RemoteWriteDecoder, RemoteWriteError, RemoteWriteTooLarge, decompress
from stormeye.core.errors import BadInput, Unavailable
from stormeye.workers.alerts import Alert, AlertError, is_own, read_alertmanager, read_generic
from stormeye.workers.ingest import PointBatch

if TYPE_CHECKING:
    from stormeye.api.app import Service

router = APIRouter()

_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")


def _reject(request: Request, status: int, detail: str, reason: str = "bad_request") -> HTTPException:
    meters = getattr(request.app.state, "selfmetrics", None)
    if meters is not None:
        meters.reject(reason)
    return HTTPException(status, detail)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


class _SeriesWhere(Sequence[str]):
    """Where each kept sample came from (``timeseries[i]``), built only for the few rejected."""

    def __init__(self, series_of: np.ndarray, series_index: list[int]) -> None:
        self.series_of = series_of
        self.series_index = series_index

    def __len__(self) -> int:
        return len(self.series_of)

    def __getitem__(self, k: Any) -> Any:
        return f"timeseries[{self.series_index[int(self.series_of[k])]}]"


_WRITE_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}},
        "description": "a snappy-compressed (block format) protobuf prometheus.WriteRequest",
    }
}


@router.post("/api/v1/write", openapi_extra=_WRITE_DOC)
async def remote_write(request: Request) -> JSONResponse:
    """Prometheus remote write 1.0: series labels become metric names; stale markers and NaN are not stored."""
    svc: Service = request.app.state.service
    media = _media_type(request)
    if media not in _PROTOBUF_TYPES:
        raise _reject(
            request,
            415,
            f"Content-Type {media or 'missing'!r}: remote write sends application/x-protobuf "
            "(point Prometheus' remote_write url here; JSON points go to /api/v1/points)",
        )
    encoding = request.headers.get("content-encoding", "snappy").strip().lower()
    if encoding != "snappy":
        raise _reject(request, 415, f"Content-Encoding {encoding!r}: remote write 1.0 is snappy-compressed")
    version = request.headers.get("x-prometheus-remote-write-version", "0.1.0")
    if not version.startswith("0.1"):
        raise _reject(
            request,
            415,
            f"remote write version {version!r}: stormeye reads protocol 1.0 (0.1.0, prometheus.WriteRequest)",
        )
    body = await request.body()
    try:
        raw = decompress(body, svc.settings.max_body_bytes)
        decoded = request.app.state.remote_write.decode(raw)
    except RemoteWriteTooLarge as exc:
        raise _reject(request, 413, str(exc), "too_large") from None
    except RemoteWriteError as exc:
        raise _reject(request, 400, str(exc)) from None
    meters = getattr(request.app.state, "selfmetrics", None)
    if meters is not None:
        if decoded.stale:
            meters.stale.inc(decoded.stale)
        if decoded.not_finite:
            meters.reject("not_finite", decoded.not_finite)
    batch = PointBatch(
        names=[decoded.names[i] for i in decoded.series_of.tolist()] if len(decoded.names) else [],
        timestamps=decoded.timestamps,
        values=decoded.values,
        sources=_SeriesWhere(decoded.series_of, decoded.series_index),  # type: ignore[arg-type]
    )
    for where, msg in decoded.errors:
        batch.reject(where, msg)
    batch.rejected = decoded.rejected
    with svc.admit():  # in a thread: the event loop (and /healthz) never waits for the tick
        result = await run_in_threadpool(svc.accept_batch, batch, time.time(), "remote_write")
    result["stale"] = decoded.stale
    result["not_finite"] = decoded.not_finite
    usable = result["accepted"] or decoded.stale or decoded.not_finite or not (result["rejected"])
    return JSONResponse(result, status_code=200 if usable else 422)


def parse_json(raw: bytes) -> Any:
    """The JSON document of a request body; :class:`BadInput` (400) saying what is wrong with it."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadInput(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"body is not UTF-8 text (byte {exc.start}): send JSON encoded as UTF-8") from None
    except RecursionError:
        raise BadInput(
            "body is not usable JSON: it is nested too deeply (arrays or objects inside each other)"
        ) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise BadInput(f"body is not usable JSON: {exc}") from None


async def _json_body(request: Request) -> Any:
    media = _media_type(request)
    if media != "application/json" and not media.endswith("+json"):
        raise _reject(request, 415, f"Content-Type {media or 'missing'!r}: send application/json")
    raw = await request.body()
    try:
        return parse_json(raw)
    except BadInput as exc:
        raise _reject(request, 400, str(exc)) from None


def _take_alerts(request: Request, alerts: list[Alert], bad: list[tuple[str, str]], source: str) -> JSONResponse:
    svc: Service = request.app.state.service
    now = time.time()
    limit = now + svc.settings.max_future_s
    keep = []
    own = [a for a in alerts if is_own(a)]  # stormeye's own alert, routed back to it: never a member
    for a in alerts:
        if is_own(a):
            continue
        if a.starts_at > limit:
            bad.append((a.where, f"startsAt is {a.starts_at - now:.0f} s in the future; check the sender's clock"))
        else:
            keep.append(a)
    named = []
    for a in keep:  # labels that cannot be a metric name are refused here, not at the tick
        try:
            a.metric(limits=svc.settings.label_limits)
            named.append(a)
        except AlertError as exc:
            bad.append((a.where, str(exc)))
    keep = named
    bad.sort(key=lambda wb: int(wb[0].strip("alerts[]") or 0))
    meters = getattr(request.app.state, "selfmetrics", None)
    try:
        got = svc.backend.receive_alerts(keep)
    except Unavailable:
        if meters is not None:
            meters.reject("unavailable", len(keep))
        raise
    if meters is not None:
        meters.alerts.labels(source).inc(len(keep))
        meters.repeats.labels(source).inc(got.get("repeats", 0))
        meters.own_alerts.inc(len(own))
        if bad:
            meters.reject("invalid", len(bad))
    body = {**got, "own_skipped": len(own), "rejected": len(bad), "errors": [{"where": w, "error": e} for w, e in bad]}
    return JSONResponse(body, status_code=200 if keep or not bad else 422)


def _json_doc(schema: dict[str, Any], what: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "description": what, "content": {"application/json": {"schema": schema}}}}


_AM_SCHEMA = {
    "type": "object",
    "required": ["version", "alerts"],
    "properties": {
        "version": {"type": "string"},
        "status": {"type": "string"},
        "receiver": {"type": "string"},
        "commonLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "alerts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "status": {"type": "string", "enum": ["firing", "resolved"]},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                    "startsAt": {"type": "string", "format": "date-time"},
                    "endsAt": {"type": "string", "format": "date-time"},
                    "fingerprint": {"type": "string"},
                },
            },
        },
    },
}


@router.post(
    "/api/v1/alerts/alertmanager", openapi_extra=_json_doc(_AM_SCHEMA, "Alertmanager's webhook body, version 4")
)
async def alertmanager_webhook(request: Request) -> JSONResponse:
    """Alertmanager's webhook (version 4): each alert becomes an anomaly grouped with the metric anomalies."""
    data = await _json_body(request)
    try:
        alerts, bad = read_alertmanager(data)
    except AlertError as exc:
        raise _reject(request, 400, str(exc)) from None
    return _take_alerts(request, alerts, bad, "alertmanager")


@router.post(
    "/api/v1/alerts",
    openapi_extra=_json_doc(
        {"oneOf": [{"type": "array", "items": {"type": "object"}}, {"type": "object"}]},
        "a list of alerts, or an object holding them, read through STORMEYE_ALERT_MAPPING",
    ),
)
async def generic_alerts(request: Request) -> JSONResponse:
    """Alerts of any JSON sender, fields found through STORMEYE_ALERT_MAPPING (docs/ingest.md)."""
    data = await _json_body(request)
    svc: Service = request.app.state.service
    try:
        alerts, bad = read_generic(data, svc.settings.alert_mapping, time.time())
    except AlertError as exc:
        raise _reject(request, 400, str(exc)) from None
    return _take_alerts(request, alerts, bad, "generic")


def install(app: FastAPI) -> None:
    """The routes and the decoder state they share."""
    app.state.remote_write = RemoteWriteDecoder(app.state.service.settings.label_limits)
    app.include_router(router)


def start_graphite(service: Service) -> GraphiteListener | None:
    """The Graphite listener when ``STORMEYE_GRAPHITE_PORT`` is set (None otherwise), started."""
    port = service.settings.graphite_port
    if port is None:
        return None
    st = service.settings
    listener = GraphiteListener(service, st.graphite_host, port, st.graphite_max_connections, st.graphite_idle_s)
    listener.start()
    service.graphite = listener
    return listener
