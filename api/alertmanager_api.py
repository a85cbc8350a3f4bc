"""Stormeye in Alertmanager's place: the endpoints Prometheus and Grafana push alerts to.

- ``POST /api/v2/alerts``: Alertmanager API v2's postableAlerts, a JSON list (what Prometheus
  sends to the ``alerting: alertmanagers:`` it is given, and Grafana to an external Alertmanager).
  Answers 200 as Alertmanager does (with stormeye's counts), 400 when the body is not such a list,
  422 when no alert in it was usable.
- ``GET /api/v2/status``: the status object senders and ``amtool`` read to check the peer.
- ``POST /api/v1/alerts/grafana``: Grafana alerting's webhook contact point body.

Each needs stormeye's bearer token like any ingest path (Prometheus: ``authorization:
{credentials: TOKEN}``). Alerts become anomalies grouped at the next tick (:mod:`workers.alerts`);
stormeye's own alert coming back is skipped (:func:`workers.alerts.is_own`).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from stormeye.api.ingest_routes import _json_body, _json_doc, _reject, _take_alerts
from stormeye.workers.alerts import AlertError, read_grafana, read_postable

router = APIRouter()

_POSTABLE_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["labels"],
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "startsAt": {"type": "string", "format": "date-time"},
            "endsAt": {"type": "string", "format": "date-time"},
            "generatorURL": {"type": "string"},
        },
    },
}


@router.post("/api/v2/alerts", openapi_extra=_json_doc(_POSTABLE_SCHEMA, "Alertmanager API v2 postableAlerts"))
async def post_alerts(request: Request) -> JSONResponse:
    """Alertmanager API v2: Prometheus (or Grafana) pushes its firing and resolved alerts here."""
    data = await _json_body(request)
    try:
        alerts, bad = read_postable(data, time.time())
    except AlertError as exc:
        raise _reject(request, 400, str(exc)) from None
    return _take_alerts(request, alerts, bad, "prometheus")


@router.get("/api/v2/status")
async def status(request: Request) -> JSONResponse:
    """Alertmanager API v2's status: ready, one peer (stormeye), its version."""
    started = getattr(request.app.state, "started_at", None) or time.time()
    return JSONResponse(
        {
            "cluster": {"name": "stormeye", "status": "ready", "peers": []},
            "versionInfo": {
                "version": "stormeye",
                "branch": "",
                "revision": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": "",
            },
            "config": {"original": ""},
            "uptime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(started)),
        }
    )


@router.post(
    "/api/v1/alerts/grafana", openapi_extra=_json_doc({"type": "object"}, "Grafana's webhook contact point body")
)
async def grafana_webhook(request: Request) -> JSONResponse:
    """Grafana alerting's webhook contact point (``version: "1"``)."""
    data = await _json_body(request)
    try:
        alerts, bad = read_grafana(data)
    except AlertError as exc:
        raise _reject(request, 400, str(exc)) from None
    return _take_alerts(request, alerts, bad, "grafana")


def install(app: FastAPI) -> None:
    app.state.started_at = time.time()
    app.include_router(router)
