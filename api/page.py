"""The on-call page (``GET /``, static files under ``/static``) and the JSON it reads.

- ``GET /api/v1/page/incidents``: the list as the page shows it — open first, then by priority —
  with filters: ``status`` (open, acknowledged, resolved, merged, all), ``priority`` (e.g. ``1,2``),
  ``match`` (label matchers such as ``service="checkout",region=~"eu.*"``: some member must
  match them all), ``since``/``until`` (epoch seconds: the incident's span overlaps them);
- ``GET /api/v1/page/incidents/{id}``: one incident with its members (by onset), who acknowledged
  it, its shared properties and its timeline (what the pipeline and people did);
- ``GET /api/v1/incidents/{id}/series``: the members' series on one time axis (from the window store);
- ``GET /api/v1/incidents/{id}/graph``: "why grouped" — each member's recorded evidence (the edge
  that brought it in) as a graph, with what linked it: names, shape, time, topology;
- ``GET /api/v1/metrics/search?q=``: metrics whose name holds ``q``;
- ``GET /api/v1/metrics/series?metric=``: one metric's recent series;
- ``GET /api/v1/metrics/similar?metric=``: the metrics most like it by name (IDF-weighted cosine of
  the name index) and by shape (lagged correlation of the windows' step-to-step changes; flat series
  and constant-rate counters are left out, they have no shape), ranked, with the similarity.

The series and the shape search read the window store: the embedded pipeline's, or in distributed
mode the one in Redis (every endpoint works in both modes).
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from stormeye.api import auth
from stormeye.api.lookup import incident_or_404
from stormeye.core.errors import NotFound
from stormeye.core.labels import NAME_KEY, Matcher, MatcherError, matches_all, parse, parse_matchers
from stormeye.grouping.correlation import shape_similarity_pairs
from stormeye.grouping.report import link_kinds, shared_scope
from stormeye.workers import models as m
from stormeye.workers.actions import Actions
from stormeye.workers.backend import SeriesSource

if TYPE_CHECKING:
    from stormeye.api.app import Service

STATIC = Path(__file__).with_name("static")
router = APIRouter()


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _source(request: Request) -> SeriesSource:
    """The registry, window store, step and name index the series and the shape search read."""
    return _service(request).backend.series()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    """Browsers ask for it unasked: nothing (and never counted as an unauthorized request)."""
    return Response(status_code=204, headers={"cache-control": "max-age=86400"})


@router.get("/api/v1/page/auth")
def page_auth(request: Request) -> dict[str, Any]:
    """The page's login: whether the server wants a token and, when the request carries one, whether
    it is valid and whose it is. Open (no data in the answer); a wrong token counts as unauthorized."""
    service = _service(request)
    tokens = [(t.encode(), n) for t, n in auth.parse_tokens(service.settings).items()]
    if not tokens:
        return {"auth_required": False, "valid": True, "actor": auth.LOCAL_ACTOR}
    header = request.headers.get("authorization", "").encode()
    if not header:
        return {"auth_required": True, "valid": False, "actor": None}
    actor, problem = auth.check_bearer(tokens, header)
    if actor is None:
        meters = getattr(request.app.state, "selfmetrics", None)
        if meters is not None:
            meters.reject("unauthorized")
        raise HTTPException(401, problem)
    return {"auth_required": True, "valid": True, "actor": actor}


@router.get("/api/v1/page/incidents")
def page_incidents(
    request: Request,
    status: str = Query("all", pattern="^(open|acknowledged|recognised|resolved|merged|all)$"),
    priority: str | None = Query(None, pattern=r"^[1-5](,[1-5])*$", description="e.g. 1,2"),
    match: str | None = Query(None, description='label matchers: service="checkout",region=~"eu.*"'),
    since: float | None = Query(None, description="epoch seconds"),
    until: float | None = Query(None, description="epoch seconds"),
    limit: int = Query(1000, ge=1, le=5000),
) -> dict[str, Any]:
    """The incident list: open first, then most urgent first."""
    service = _service(request)
    try:
        matchers = parse_matchers(match) if match else []
    except MatcherError as exc:
        raise HTTPException(422, str(exc)) from None
    with service.database.sessions() as s:
        q = select(m.Incident)
        if status in ("open", "acknowledged"):
            q = q.where(m.Incident.status == "open")
        elif status != "all":
            q = q.where(m.Incident.status == status)
        else:
            q = q.where(m.Incident.status != "merged")
        if priority:
            q = q.where(m.Incident.priority.in_([int(p) for p in priority.split(",")]))
        if since is not None:
            q = q.where(m.Incident.end >= since)
        if until is not None:
            q = q.where(m.Incident.start <= until)
        q = q.order_by(
            (m.Incident.status != "open"), m.Incident.priority, m.Incident.priority_score.desc(), m.Incident.start
        )
        rows = list(s.scalars(q.limit(limit if not matchers and status != "acknowledged" else 50_000)))
        if matchers and rows:
            keep = _matching(s, [r.id for r in rows], matchers)
            rows = [r for r in rows if r.id in keep]
    acks = Actions(service.database).acknowledged([r.id for r in rows])
    if status == "acknowledged":
        rows = [r for r in rows if r.id in acks]
    rows = rows[:limit]
    return {
        "empty": None if rows else _why_empty(service, status, acks_total=len(acks)),
        "incidents": [
            {
                "id": r.id,
                "status": r.status,
                "acknowledged": acks.get(r.id),
                "priority": r.priority,
                "priority_score": r.priority_score,
                "title": r.title,
                "size": r.member_count,
                "start": r.start,
                "end": r.end,
                "root": r.root,
                "root_entity": r.root_entity,
                "profile": r.profile_id,
            }
            for r in rows
        ],
    }


#: where ``stormeye demo`` keeps its incidents unless told otherwise (api/cli.py: DEMO_DATABASE)
DEMO_FILE = "stormeye-demo.db"


def _why_empty(service: Service, status: str, acks_total: int) -> dict[str, Any]:
    """Why the list is empty, for the page to say: what the database holds by status, which database
    that is (without a password), and whether a demo's database lies beside it (``stormeye demo``
    keeps its own)."""
    with service.database.sessions() as s:
        counts = {
            st: int(n) for st, n in s.execute(select(m.Incident.status, func.count()).group_by(m.Incident.status))
        }
        acked = int(
            s.scalar(
                select(func.count(func.distinct(m.IncidentAction.incident_id)))
                .join(m.Incident, m.Incident.id == m.IncidentAction.incident_id)
                .where(m.IncidentAction.kind == "acknowledge", m.Incident.status == "open")
            )
            or 0
        )
    url = make_url(service.settings.database_url)
    demo = None
    if sum(counts.values()) == 0 and Path(DEMO_FILE).exists() and Path(url.database or "").name != DEMO_FILE:
        demo = {
            "file": str(Path(DEMO_FILE).resolve()),
            "serve": f"STORMEYE_DATABASE_URL=sqlite:///{DEMO_FILE} stormeye serve",
        }
    return {
        "status": status,
        "counts": {
            "open": counts.get("open", 0) - acked,
            "acknowledged": acked,
            **{k: v for k, v in counts.items() if k != "open"},
        },
        "total": sum(counts.values()),
        "database": url.render_as_string(hide_password=True),
        "demo": demo,
    }


def _matching(s: Any, ids: list[str], matchers: list[Matcher]) -> set[str]:
    """Incidents (of ``ids``) with a member whose labels match every matcher."""
    keep: set[str] = set()
    for lo in range(0, len(ids), 900):
        q = (
            select(m.IncidentMember.incident_id, m.Metric.labels)
            .join(m.Anomaly, m.Anomaly.id == m.IncidentMember.anomaly_id)
            .join(m.Metric, m.Metric.id == m.Anomaly.metric_id)
            .where(m.IncidentMember.incident_id.in_(ids[lo : lo + 900]))
        )
        for iid, labels in s.execute(q):
            if iid not in keep and matches_all(matchers, labels):
                keep.add(iid)
    return keep


@router.get("/api/v1/page/incidents/{incident_id}")
def page_incident(incident_id: str, request: Request) -> dict[str, Any]:
    """One incident for the page: members by onset, acknowledgement, shared properties, timeline."""
    service = _service(request)
    inc = incident_or_404(service.database, incident_id)
    actions = Actions(service.database)
    metrics = sorted({x["metric"] for x in inc["members"]})
    props = {x: parse(x) for x in metrics}
    counts = Counter(f"{k}={v}" for x in metrics for k, v in props[x].items() if k != NAME_KEY)
    inc["shared"] = shared_scope(metrics, props)
    inc["common"] = [{"pair": p, "members": c} for p, c in counts.most_common(8) if c > 1]
    inc["acknowledged"] = actions.acknowledged([incident_id]).get(incident_id)
    inc["timeline"] = actions.history(incident_id)
    inc["members"] = sorted(inc["members"], key=_onset)
    return inc


@router.get("/api/v1/incidents/{incident_id}/series")
def incident_series(incident_id: str, request: Request, before: int = Query(30, ge=0, le=10_000)) -> dict[str, Any]:
    """The members' series from ``before`` steps ahead of the incident's start to its end."""
    service = _service(request)
    inc = incident_or_404(service.database, incident_id)
    return {"step": service.settings.step_s, "series": service.member_windows(inc, before)}


def _onset(member: dict[str, Any]) -> tuple[float, float, str]:
    """Members by onset (ties: the stronger first, then by name)."""
    return (member["start"], -member["peak_score"], member["metric"])


@router.get("/api/v1/incidents/{incident_id}/graph")
def incident_graph(incident_id: str, request: Request) -> dict[str, Any]:
    """Why grouped: members as nodes (by onset), each one's recorded evidence as an edge."""
    service = _service(request)
    inc = incident_or_404(service.database, incident_id)
    cfg, step = service.settings.grouping_config(), service.settings.step_s
    members = sorted(inc["members"], key=_onset)  # the page's order: node k is member #k+1
    first: dict[str, int] = {}
    nodes: list[dict[str, Any]] = []
    for x in members:
        if x["metric"] in first:
            continue
        first[x["metric"]] = len(nodes)
        nodes.append(
            {
                "metric": x["metric"],
                "start": x["start"],
                "peak_score": x["peak_score"],
                "direction": x["direction"],
                "root": x["metric"] == inc.get("root"),
                # joined as a symptom of the open incident on its machine (no edge: docs/grouping.md)
                "symptom": bool((x.get("evidence") or {}).get("symptom")),
            }
        )
    edges = []
    for x in members:
        ev = x.get("evidence") or {}
        to = ev.get("to")
        if not to or to not in first or to == x["metric"]:
            continue
        edges.append(
            {
                "source": first[x["metric"]],
                "target": first[to],
                "kinds": link_kinds(ev, parse(x["metric"]), parse(to), cfg, step),
                **{k: ev.get(k) for k in ("weight", "name", "shape", "lag_s", "onset_gap_s")},
            }
        )
    return {"nodes": nodes, "edges": edges, "root": inc.get("root"), "root_entity": inc.get("root_entity")}


@router.get("/api/v1/metrics/search")
def metric_search(request: Request, q: str = Query(..., min_length=1), limit: int = Query(20, ge=1, le=200)) -> dict:
    """Metrics whose canonical name holds ``q`` (case-insensitive), shortest names first."""
    service = _service(request)
    with service.database.sessions() as s:
        stmt = select(m.Metric.name).where(m.Metric.name.ilike(f"%{_like(q)}%", escape="\\"))
        names = [r[0] for r in s.execute(stmt.order_by(m.Metric.name).limit(2000))]
    names.sort(key=lambda n: (len(n), n))
    return {"metrics": names[:limit], "more": len(names) > limit}


def _like(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _rows(pipe: Any, metric: str) -> int:
    try:
        return int(pipe.registry.row(metric))
    except KeyError:
        raise NotFound(f"no series for {metric!r} in the window store (is it the canonical name?)") from None


@router.get("/api/v1/metrics/series")
def metric_series(request: Request, metric: str, points: int = Query(240, ge=8, le=10_000)) -> dict[str, Any]:
    """One metric's newest ``points`` points from the window store (null where missing)."""
    pipe = _source(request)
    service = _service(request)
    row = _rows(pipe, metric)
    newest = pipe.store.newest()
    if newest is None:
        raise NotFound("the window store holds no points yet")
    points = min(points, pipe.store.length)
    with service.lock:
        values = pipe.store.windows(np.array([row]), newest, points)[0]
    first = (np.floor(newest / pipe.step) - points + 1) * pipe.step
    return {
        "metric": metric,
        "start": float(first),
        "step": pipe.step,
        "values": [None if not np.isfinite(v) else round(float(v), 6) for v in values],
    }


@router.get("/api/v1/metrics/similar")
def metric_similar(
    request: Request,
    metric: str,
    limit: int = Query(10, ge=1, le=100),
    points: int = Query(120, ge=16, le=2000, description="how much recent history the shapes compare"),
) -> dict[str, Any]:
    """What else looks like this: the most similar metrics by name and by shape, ranked."""
    pipe = _source(request)
    service = _service(request)
    row = _rows(pipe, metric)
    cfg = service.settings.grouping_config()
    with service.lock:
        by_name = [{"metric": n, "similarity": round(s, 4)} for n, s in pipe.index.neighbours(metric, 0.05)[:limit]]
        newest = pipe.store.newest()
        n = len(pipe.registry.names)
        by_shape: list[dict[str, Any]] = []
        note = ""
        if newest is not None and n > 1:
            width = min(points, pipe.store.length)
            changes = _changes(pipe.store.windows(np.arange(n), newest, width))
            moving = _moving(changes)
            if not moving[row]:
                note = "its recent series is flat or changes at a constant rate: nothing to compare its shape with"
            others = np.array([i for i in range(n) if i != row and moving[i]], dtype=np.int64)
            if moving[row] and len(others):
                corr, lag = shape_similarity_pairs(
                    changes, np.full(len(others), row), others, cfg.max_lag_steps, ("raw",), absolute=True
                )
                order = np.argsort(-np.abs(corr), kind="stable")[:limit]
                names = pipe.registry.names
                by_shape = [
                    {
                        "metric": names[int(others[k])],
                        "similarity": round(float(corr[k]), 4),
                        "lag_s": int(lag[k]) * pipe.step,
                    }
                    for k in order
                    if abs(corr[k]) > 0
                ]
    return {"metric": metric, "by_name": by_name, "by_shape": by_shape, "by_shape_note": note}


def _changes(windows: np.ndarray) -> np.ndarray:
    """Step-to-step changes of each window (NaN where either point is missing). The shape search
    correlates these, not the levels: two unrelated counters that both only grow correlate at r = 1.00
    on their levels, and at about 0 on their changes; a shared jump or dip still lines up."""
    return np.diff(np.asarray(windows, dtype=np.float64), axis=1)


def _moving(changes: np.ndarray, min_changes: int = 8) -> np.ndarray:
    """Rows whose changes vary: at least ``min_changes`` of them, and not all (nearly) equal — a flat
    series or a counter growing at a constant rate has no shape to compare."""
    finite = np.isfinite(changes)
    enough = finite.sum(axis=1) >= min_changes
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows with no finite change: NaN, not moving
        spread = np.nanstd(changes, axis=1)
        scale = np.nanmean(np.abs(changes), axis=1)
    return np.asarray(enough & (spread > 1e-9 * (1.0 + np.nan_to_num(scale))), dtype=bool)
