"""People's actions over HTTP: acknowledge, resolve, merge, split, a metric's priority; the timeline.

- ``POST /api/v1/incidents/{id}/acknowledge`` ``{"note": ...}`` (body optional);
- ``POST /api/v1/incidents/{id}/resolve`` ``{"note": ...}`` (body optional);
- ``POST /api/v1/incidents/{id}/merge`` ``{"from": "inc-..."}``: that incident's members move into ``{id}``;
- ``POST /api/v1/incidents/{id}/split`` ``{"metrics": [...]}``: those members move into a new incident (201);
- ``PUT /api/v1/metrics/priority`` ``{"metric": ..., "weight": 5, "kpi": true}`` (null: back to the rules);
- ``GET /api/v1/incidents/{id}/timeline``: what the pipeline and people did to the incident, by time.
- ``POST /api/v1/incidents/{id}/noise`` ``{"scope": "daily" | "any" | "HH:MM-HH:MM", "window": [from, until],
  "note": ...}`` (all optional): "not a problem", its noise profile is learnt (docs/feedback.md);
- ``POST /api/v1/incidents/{id}/real`` ``{"note": ...}``: a ``recognised`` incident is real after all: it pages;
- ``POST /api/v1/missed`` ``{"metric", "start", "end", "note"}``: "this should have paged", a labelled event;
- ``GET /api/v1/profiles`` (``?forgotten=true``: those forgotten too), each with what it matched since;
- ``POST /api/v1/profiles/{id}/forget``: what matches it pages again.

Who did it is the request's actor (``request.state.actor``, set by the API's token auth; ``local``
without one). 404 for an unknown incident or metric, 409 when its state forbids the action
(resolved, merged, acknowledged already), 422 when the request makes no sense (merging an
incident with itself, splitting off every member). In the embedded service the action is
replayed on the running tracker at once (under the tick's lock), so the next tick builds on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from stormeye.api.lookup import incident_or_404
from stormeye.workers.actions import Actions

if TYPE_CHECKING:
    from stormeye.api.app import Service

router = APIRouter()


class Note(BaseModel):
    note: str = Field("", max_length=2000)


class MergeBody(BaseModel):
    from_: str = Field(..., alias="from", description="the incident whose members move in")


class SplitBody(BaseModel):
    metrics: list[str] = Field(..., min_length=1, description="member metrics to move into a new incident")


class NoiseBody(BaseModel):
    scope: str | None = Field(
        None, description="any, daily (the incident's time of day) or HH:MM-HH:MM (UTC); null: daily when it repeats"
    )
    window: tuple[float, float] | None = Field(None, description="[from, until] epoch seconds: a deploy window")
    note: str = Field("", max_length=2000)


class MissedBody(BaseModel):
    metric: str = Field(..., min_length=1)
    start: float = Field(..., description="epoch seconds")
    end: float = Field(..., description="epoch seconds, not before start")
    note: str = Field("", max_length=2000)


class MetricPriorityBody(BaseModel):
    metric: str
    weight: float | None = Field(None, description="priority weight (1 ordinary, 10 revenue); null: the rules'")
    kpi: bool | None = Field(None, description="a KPI flag; null: the rules'")


def actor_of(request: Request) -> str:
    return str(getattr(request.state, "actor", "local"))


def _run(request: Request, do: Callable[[Actions], dict[str, Any]]) -> dict[str, Any]:
    """Do an action through the backend: the incident tracker decides, the database stores the decision.

    The deciding tracker is built like the running one: with its name index and topology."""
    service: Service = request.app.state.service
    running = service.backend.series()
    actions = Actions(service.database, service.settings, running.index, running.topology)
    return service.backend.act(lambda: do(actions))


@router.post("/api/v1/incidents/{incident_id}/acknowledge")
def acknowledge(incident_id: str, request: Request, body: Note | None = None) -> dict[str, Any]:
    note = body.note if body else ""
    return {"action": _run(request, lambda a: a.acknowledge(incident_id, actor_of(request), note))}


@router.post("/api/v1/incidents/{incident_id}/resolve")
def resolve(incident_id: str, request: Request, body: Note | None = None) -> dict[str, Any]:
    note = body.note if body else ""
    return {"action": _run(request, lambda a: a.resolve(incident_id, actor_of(request), note))}


@router.post("/api/v1/incidents/{incident_id}/merge")
def merge(incident_id: str, body: MergeBody, request: Request) -> dict[str, Any]:
    act = _run(request, lambda a: a.merge(incident_id, body.from_, actor_of(request)))
    return {"action": act, "incident": incident_id}


@router.post("/api/v1/incidents/{incident_id}/split", status_code=201)
def split(incident_id: str, body: SplitBody, request: Request) -> dict[str, Any]:
    act = _run(request, lambda a: a.split(incident_id, body.metrics, actor_of(request)))
    return {"action": act, "incident": act["details"]["into"]}


@router.post("/api/v1/incidents/{incident_id}/noise")
def noise(incident_id: str, request: Request, body: NoiseBody | None = None) -> dict[str, Any]:
    b = body or NoiseBody(scope=None, window=None, note="")
    act = _run(request, lambda a: a.noise(incident_id, actor_of(request), b.scope, b.window, b.note))
    return {"action": act, "profile": act["details"]["profile"]}


@router.post("/api/v1/incidents/{incident_id}/real")
def real(incident_id: str, request: Request, body: Note | None = None) -> dict[str, Any]:
    note = body.note if body else ""
    return {"action": _run(request, lambda a: a.real(incident_id, actor_of(request), note))}


@router.post("/api/v1/missed")
def missed(body: MissedBody, request: Request) -> dict[str, Any]:
    return {
        "action": _run(request, lambda a: a.missed(body.metric, body.start, body.end, actor_of(request), body.note))
    }


@router.get("/api/v1/profiles")
def profiles(request: Request, forgotten: bool = False) -> dict[str, Any]:
    service = request.app.state.service
    return {"profiles": Actions(service.database).profiles(include_forgotten=forgotten)}


@router.post("/api/v1/profiles/{profile_id}/forget")
def forget(profile_id: str, request: Request) -> dict[str, Any]:
    return {"action": _run(request, lambda a: a.forget(profile_id, actor_of(request)))}


@router.put("/api/v1/metrics/priority")
def metric_priority(body: MetricPriorityBody, request: Request) -> dict[str, Any]:
    act = _run(request, lambda a: a.set_metric_priority(body.metric, actor_of(request), body.weight, body.kpi))
    return {"action": act}


@router.get("/api/v1/incidents/{incident_id}/timeline")
def timeline(incident_id: str, request: Request) -> dict[str, Any]:
    service = request.app.state.service
    incident_or_404(service.database, incident_id)
    return {"timeline": Actions(service.database).history(incident_id)}
