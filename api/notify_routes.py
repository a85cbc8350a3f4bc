"""HTTP endpoints of notifications: silences, and every notification of an incident with its attempts.

- ``GET /api/v1/incidents/{id}/notifications``: what each receiver was told about the incident's
  thread, every attempt, and what suppresses it now (``suppressed_by``: silences, inhibiting incidents).
- ``GET /api/v1/silences`` (``?all=true`` with expired ones), ``POST /api/v1/silences``
  (``{"matchers": ["service=\\"checkout\\""], "ends_at": ..., or "duration_s": ..., "comment", "created_by"}``;
  ``created_by`` defaults to the token's name),
  ``DELETE /api/v1/silences/{id}`` (expires it now).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from stormeye.api.lookup import incident_or_404
from stormeye.workers.notify import silences

if TYPE_CHECKING:
    from stormeye.api.app import Service
from stormeye.workers.notify.notifier import notifications


class SilenceIn(BaseModel):
    matchers: list[str] = Field(..., min_length=1, description='label matchers, like service="checkout"')
    starts_at: float | None = Field(None, description="UTC epoch seconds (default: now)")
    ends_at: float | None = Field(None, description="UTC epoch seconds; or give duration_s")
    duration_s: float | None = Field(None, gt=0)
    created_by: str = ""
    comment: str = ""


def notify_router(service: Service) -> APIRouter:
    """The routes over ``service.database`` (the app's :class:`api.app.Service`)."""
    router = APIRouter(tags=["notifications"])

    @router.get("/api/v1/incidents/{incident_id}/notifications")
    def incident_notifications(incident_id: str) -> dict[str, Any]:
        incident_or_404(service.database, incident_id)
        return notifications(service.database, incident_id)

    @router.get("/api/v1/silences")
    def list_silences(all: bool = Query(False, description="include expired silences")) -> dict[str, Any]:
        return {"silences": silences.list_silences(service.database, time.time(), include_expired=all)}

    @router.post("/api/v1/silences", status_code=201)
    def add_silence(body: SilenceIn, request: Request) -> dict[str, Any]:
        now = time.time()
        start = body.starts_at if body.starts_at is not None else now
        if body.ends_at is None and body.duration_s is None:
            raise HTTPException(422, "give ends_at (UTC epoch seconds) or duration_s")
        end = body.ends_at if body.ends_at is not None else start + float(body.duration_s or 0)
        by = body.created_by or getattr(request.state, "actor", "")  # the token's name when not given
        return silences.add(service.database, body.matchers, start, end, by, body.comment, now)

    @router.delete("/api/v1/silences/{silence_id}")
    def expire_silence(silence_id: str) -> dict[str, Any]:
        return silences.expire(service.database, silence_id, time.time())

    return router
