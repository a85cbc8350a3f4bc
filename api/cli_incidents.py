"""``stormeye incidents``: list, show and act on incidents from a terminal.

With ``--url`` (or ``STORMEYE_URL``) the commands talk to a running server, with the bearer token
in ``STORMEYE_API_TOKEN`` when it asks for one (the server then knows who acts). Without, they
read and change the local database (``--database`` or ``STORMEYE_DATABASE_URL``) directly and
record the OS user as the actor (or ``--actor``). Exit status: 0 done, 1 refused (unknown id,
a state that forbids it, a request that makes no sense: the message says which), 2 the server or
database could not be reached.
"""

from __future__ import annotations

import builtins
import getpass
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from stormeye.core.errors import StormeyeError, Unavailable
from stormeye.workers.db import LIST_STATUSES

app = typer.Typer(no_args_is_help=True, help="List, show and act on incidents (a server with --url, or the database).")
out = Console()
err = Console(stderr=True)

URL = typer.Option(None, "--url", envvar="STORMEYE_URL", help="a running server, e.g. http://127.0.0.1:8000")
DATABASE = typer.Option(None, "--database", help="database URL (default: STORMEYE_DATABASE_URL)")
ACTOR = typer.Option(None, "--actor", help="who acts, on the local database (default: the OS user)")
JSON = typer.Option(False, "--json", help="print JSON")


class Refused(StormeyeError):
    """The server or the database refused the request (the message says why)."""


class Unreachable(Unavailable):
    pass


class Remote:
    """The HTTP API of a running server."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.token = os.environ.get("STORMEYE_API_TOKEN")

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        q = "?" + urllib.parse.urlencode({k: v for k, v in (query or {}).items() if v is not None}) if query else ""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path + q, data=data, method=method)
        req.add_header("accept", "application/json")
        if data is not None:
            req.add_header("content-type", "application/json")
        if self.token:
            req.add_header("authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail", exc.reason)
            except (ValueError, AttributeError):
                detail = exc.reason
            if exc.code in (401, 403):
                detail = f"{detail} (set STORMEYE_API_TOKEN to a token the server knows)"
            raise Refused(f"{exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/incidents", query={"status": status, "limit": limit})["incidents"])

    def show(self, iid: str) -> dict[str, Any]:
        inc = self.call("GET", f"/api/v1/incidents/{urllib.parse.quote(iid)}")
        inc["timeline"] = self.call("GET", f"/api/v1/incidents/{urllib.parse.quote(iid)}/timeline")["timeline"]
        return dict(inc)

    def act(self, iid: str, action: str, body: Any = None) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/v1/incidents/{urllib.parse.quote(iid)}/{action}", body or {}))

    def priority(self, metric: str, weight: float | None, kpi: bool | None) -> dict[str, Any]:
        return dict(self.call("PUT", "/api/v1/metrics/priority", {"metric": metric, "weight": weight, "kpi": kpi}))

    def missed(self, metric: str, start: float, end: float, note: str) -> dict[str, Any]:
        return dict(self.call("POST", "/api/v1/missed", {"metric": metric, "start": start, "end": end, "note": note}))

    def profiles(self, forgotten: bool) -> builtins.list[dict[str, Any]]:
        return list(self.call("GET", "/api/v1/profiles", query={"forgotten": str(forgotten).lower()})["profiles"])

    def forget(self, profile: str) -> dict[str, Any]:
        return dict(self.call("POST", f"/api/v1/profiles/{urllib.parse.quote(profile)}/forget", {}))


class Local:
    """The database, changed directly (no server needed)."""

    def __init__(self, database: str | None, actor: str | None) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from stormeye.workers.actions import Actions
        from stormeye.workers.db import Database
        from stormeye.workers.settings import get_settings

        settings = get_settings(database_url=database)
        try:
            self.db = Database(settings.database_url)
        except (SQLAlchemyError, OSError) as exc:
            raise Unreachable(
                f"cannot use the database at {settings.database_url}: {str(exc).splitlines()[0]}"
            ) from None
        self.actions = Actions(self.db, settings)
        self.actor = actor or _os_user()

    def list(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        return self.db.list_incidents(status, limit)

    def show(self, iid: str) -> dict[str, Any]:
        inc = self.db.get_incident(iid)
        if inc is None:
            raise Refused(f"404: no incident {iid!r}")
        inc["timeline"] = self.actions.history(iid)
        return inc

    def act(self, iid: str, action: str, body: Any = None) -> dict[str, Any]:
        from stormeye.workers.actions import ActionError

        body = body or {}
        a = self.actions
        try:
            if action == "acknowledge":
                return {"action": a.acknowledge(iid, self.actor, body.get("note", ""))}
            if action == "resolve":
                return {"action": a.resolve(iid, self.actor, body.get("note", ""))}
            if action == "merge":
                return {"action": a.merge(iid, body["from"], self.actor), "incident": iid}
            if action == "split":
                act = a.split(iid, body["metrics"], self.actor)
                return {"action": act, "incident": act["details"]["into"]}
            if action == "noise":
                window = tuple(body["window"]) if body.get("window") else None
                act = a.noise(iid, self.actor, body.get("scope"), window, body.get("note", ""))
                return {"action": act, "profile": act["details"]["profile"]}
            if action == "real":
                return {"action": a.real(iid, self.actor, body.get("note", ""))}
        except ActionError as exc:
            raise Refused(f"{exc.http_status}: {exc}") from None
        raise ValueError(action)

    def priority(self, metric: str, weight: float | None, kpi: bool | None) -> dict[str, Any]:
        from stormeye.workers.actions import ActionError

        try:
            return {"action": self.actions.set_metric_priority(metric, self.actor, weight, kpi)}
        except ActionError as exc:
            raise Refused(f"{exc.http_status}: {exc}") from None

    def missed(self, metric: str, start: float, end: float, note: str) -> dict[str, Any]:
        from stormeye.workers.actions import ActionError

        try:
            return {"action": self.actions.missed(metric, start, end, self.actor, note)}
        except ActionError as exc:
            raise Refused(f"{exc.http_status}: {exc}") from None

    def profiles(self, forgotten: bool) -> builtins.list[dict[str, Any]]:
        return self.actions.profiles(include_forgotten=forgotten)

    def forget(self, profile: str) -> dict[str, Any]:
        from stormeye.workers.actions import ActionError

        try:
            return {"action": self.actions.forget(profile, self.actor)}
        except ActionError as exc:
            raise Refused(f"{exc.http_status}: {exc}") from None


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def _backend(url: str | None, database: str | None, actor: str | None) -> Remote | Local:
    if url and database:
        err.print("[red]give either --url (a server) or --database (the database directly), not both[/red]")
        raise typer.Exit(2)
    if url and actor:
        err.print("[red]--actor is for the local database; a server names the actor from its token[/red]")
        raise typer.Exit(2)
    try:
        return Remote(url) if url else Local(database, actor)
    except Unreachable as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _do(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Refused as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from None
    except Unreachable as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S") if t else ""


def _console() -> Console:
    """A console made at the command's call, so it reads the terminal's width (COLUMNS) then."""
    return Console()


def _state(i: dict[str, Any]) -> str:
    """What the page shows: ``acknowledged`` for an open incident someone acknowledged, else the status."""
    return str(i.get("state") or ("acknowledged" if i["status"] == "open" and i.get("acknowledged") else i["status"]))


@app.command("list")
def list_(
    status: str | None = typer.Option(
        None, help="open, acknowledged, unacknowledged, resolved, merged or all (default: all but merged, as all)"
    ),
    limit: int = typer.Option(50, help="at most this many, most urgent first"),
    url: str | None = URL,
    database: str | None = DATABASE,
    as_json: bool = JSON,
) -> None:
    """Incidents, most urgent first (acknowledged ones say so). Titles are cut to the terminal's width."""
    if status is not None and status not in LIST_STATUSES:
        err.print(f"[red]--status {status!r}: use one of {', '.join(LIST_STATUSES)}[/red]")
        raise typer.Exit(2)
    rows = _do(_backend(url, database, None).list, None if status == "all" else status, limit)
    rows.sort(key=lambda i: i["status"] != "open")  # open first, each part most urgent first
    if as_json:
        print(json.dumps({"incidents": rows}))
        return
    con = _console()
    table = [[i["id"], f"P{i['priority']}", _state(i), str(i["member_count"]), _when(i["start"])[:16]] for i in rows]
    heads = ["id", "prio", "status", "size", "start (UTC)"]
    fixed = [max([len(h)] + [len(r[k]) for r in table]) for k, h in enumerate(heads)]
    # one line per incident: the title gets what the fixed columns leave (cut with …), the root
    # metric a third of it where the terminal is wide enough
    room = con.width - sum(fixed) - 2 * (len(fixed) + 1) - 4  # a space each side of a column, the box's edges
    root_w = room // 3 if room >= 90 else 0
    title_w = max(12, room - (root_w + 2 if root_w else 0))
    t = Table(title=f"incidents ({len(rows)} shown)", box=box.SIMPLE_HEAD, pad_edge=False)
    for h, w in zip(heads, fixed, strict=True):
        t.add_column(h, no_wrap=True, width=w, justify="right" if h == "size" else "left")
    t.add_column("title", no_wrap=True, overflow="ellipsis", width=title_w)
    if root_w:
        t.add_column("root", no_wrap=True, overflow="ellipsis", width=root_w)
    for i, cells in zip(rows, table, strict=True):
        t.add_row(*cells, i["title"], *([i["root"] or ""] if root_w else []))
    con.print(t)


def _detail(value: Any, most: int = 4) -> str:
    """One timeline detail, whole: lists show their first few items and how many there are (as the page)."""
    if isinstance(value, list):
        shown = ", ".join(str(v) for v in value[:most])
        return shown + (f" … ({len(value)})" if len(value) > most else "")
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _details(details: dict[str, Any]) -> str:
    """A timeline entry's details, one ``key: value`` a line, never cut inside a value."""
    skip = {"by", "manual"}
    return "\n".join(f"{k}: {_detail(v)}" for k, v in details.items() if k not in skip and v not in ("", None))


@app.command()
def show(incident: str, url: str | None = URL, database: str | None = DATABASE, as_json: bool = JSON) -> None:
    """One incident: members and timeline (what the pipeline and people did)."""
    inc = _do(_backend(url, database, None).show, incident)
    if as_json:
        print(json.dumps(inc))
        return
    con = _console()
    con.print(f"[bold][P{inc['priority']}] {inc['title']}[/bold]")
    ack = inc.get("acknowledged")
    who = f" by {ack['by']} at {_when(ack['at'])} UTC" if ack else ""
    con.print(f"{inc['id']} · {_state(inc)}{who} · {len(inc['members'])} anomalies · root {inc.get('root')}")
    t = Table(title="members, by onset")
    for col in ("onset (UTC)", "metric", "peak", "dir"):
        t.add_column(col, overflow="fold")
    for mem in inc["members"]:
        t.add_row(
            _when(mem["start"]), mem["metric"], f"{mem['peak_score']:.2f}", {1: "↑", -1: "↓"}.get(mem["direction"], "·")
        )
    con.print(t)
    tl = Table(title="timeline")
    for col in ("at (UTC)", "what", "who", "details"):
        tl.add_column(col, overflow="fold")
    for e in inc["timeline"]:
        tl.add_row(_when(e["at"]), e["kind"], e.get("actor") or "stormeye", _details(e.get("details") or {}))
    con.print(tl)


def _report(res: dict[str, Any], as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(res))
    else:
        out.print(text)


@app.command()
def ack(
    incident: str,
    note: str = typer.Option("", help="a note for the timeline"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Acknowledge an open incident: someone is on it."""
    res = _do(_backend(url, database, actor).act, incident, "acknowledge", {"note": note})
    _report(res, as_json, f"{incident} acknowledged by {res['action']['actor']}")


@app.command()
def resolve(
    incident: str,
    note: str = typer.Option("", help="a note for the timeline"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Resolve an open incident now."""
    res = _do(_backend(url, database, actor).act, incident, "resolve", {"note": note})
    _report(res, as_json, f"{incident} resolved by {res['action']['actor']}")


@app.command()
def merge(
    target: str = typer.Argument(..., help="the incident that stays"),
    source: str = typer.Argument(..., help="the incident whose members move into TARGET"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Merge SOURCE into TARGET (grouping remembers the pairs as together)."""
    res = _do(_backend(url, database, actor).act, target, "merge", {"from": source})
    _report(res, as_json, f"{source} merged into {target} by {res['action']['actor']}")


@app.command()
def split(
    incident: str,
    metrics: list[str] = typer.Argument(..., help="member metrics to move into a new incident"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Split members off into a new incident (grouping keeps the pairs apart from then on)."""
    res = _do(_backend(url, database, actor).act, incident, "split", {"metrics": metrics})
    _report(res, as_json, f"{len(metrics)} metric(s) of {incident} split off into {res['incident']}")


@app.command()
def priority(
    metric: str,
    weight: float | None = typer.Option(None, help="priority weight (1 ordinary, 10 revenue)"),
    kpi: bool | None = typer.Option(None, "--kpi/--no-kpi", help="flag the metric as a KPI or not"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Set a metric's priority weight and/or KPI flag (what is not given goes back to the rules)."""
    res = _do(_backend(url, database, actor).priority, metric, weight, kpi)
    _report(res, as_json, f"{metric}: weight {weight}, kpi {kpi} (set by {res['action']['actor']})")


@app.command()
def noise(
    incident: str,
    scope: str | None = typer.Option(
        None, help="any, daily (its time of day) or HH:MM-HH:MM UTC (default: daily when it repeats daily)"
    ),
    window: tuple[float, float] | None = typer.Option(None, help="FROM UNTIL epoch seconds: a deploy window"),
    note: str = typer.Option("", help="a note for the timeline"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Not a problem (routine, expected): learn its noise profile; its repeats page nobody (docs/feedback.md)."""
    body: dict[str, Any] = {"scope": scope, "note": note}
    if window:
        body["window"] = list(window)
    res = _do(_backend(url, database, actor).act, incident, "noise", body)
    det = res["action"]["details"]
    _report(
        res, as_json, f"{incident} marked noise by {res['action']['actor']}: profile {det['profile']} ({det['scope']})"
    )


@app.command()
def real(
    incident: str,
    note: str = typer.Option("", help="a note for the timeline"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """This one is real: a recognised incident (a known routine) becomes open and pages."""
    res = _do(_backend(url, database, actor).act, incident, "real", {"note": note})
    _report(res, as_json, f"{incident} marked real by {res['action']['actor']}: it pages")


@app.command()
def missed(
    metric: str,
    start: float = typer.Argument(..., help="epoch seconds"),
    end: float = typer.Argument(..., help="epoch seconds"),
    note: str = typer.Option("", help="what happened"),
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """This should have paged: keep METRIC from START to END as a labelled event."""
    res = _do(_backend(url, database, actor).missed, metric, start, end, note)
    _report(res, as_json, f"missed on {metric} kept (by {res['action']['actor']})")


@app.command()
def profiles(
    forgotten: bool = typer.Option(False, help="list forgotten profiles too"),
    url: str | None = URL,
    database: str | None = DATABASE,
    as_json: bool = JSON,
) -> None:
    """Noise profiles learnt from incidents marked noise, with what each matched since."""
    rows = _do(_backend(url, database, None).profiles, forgotten)
    if as_json:
        print(json.dumps({"profiles": rows}))
        return
    table = Table(title=f"noise profiles ({len(rows)})")
    for col in ("id", "learnt from", "by", "when", "matched", "escalated", "what"):
        table.add_column(col, overflow="fold")
    for p in rows:
        gone = f" (forgotten by {p['forgotten_by']})" if p.get("forgotten_at") else ""
        table.add_row(
            p["id"],
            p["incident"],
            p["actor"],
            _when(p["at"]),
            str(p["matched"]),
            str(p["escalated"]),
            p["description"] + gone,
        )
    out.print(table)


@app.command()
def forget(
    profile: str,
    url: str | None = URL,
    database: str | None = DATABASE,
    actor: str | None = ACTOR,
    as_json: bool = JSON,
) -> None:
    """Forget a noise profile: what matches it pages again."""
    res = _do(_backend(url, database, actor).forget, profile)
    _report(res, as_json, f"profile {profile} forgotten by {res['action']['actor']}")
