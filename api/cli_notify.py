"""``stormeye silences add|list|expire`` and ``stormeye notifications INCIDENT``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from stormeye.api.cli_incidents import URL, Refused, Remote, Unreachable
from stormeye.core.times import EXAMPLE, BadTime, parse_time
from stormeye.workers.notify.config import parse_duration

silences = typer.Typer(no_args_is_help=True, help="mute notifications of matching incidents for a while")
out = Console()
err = Console(stderr=True)


def _db(database: str | None) -> Any:
    from stormeye.workers.db import Database
    from stormeye.workers.settings import get_settings

    try:
        settings = get_settings(database_url=database)
    except ValueError as exc:
        err.print(f"[red]bad setting:[/red] {exc}")
        raise typer.Exit(2) from None
    return Database(settings.database_url)


def _remote(url: str, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
    """A call to a running server (``--url``; the token in STORMEYE_API_TOKEN): exit 1 refused, 2 unreachable."""
    try:
        return Remote(url).call(method, path, body, query)
    except Refused as exc:
        err.print(f"[red]refused:[/red] {exc}")
        raise typer.Exit(1) from None
    except Unreachable as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _one_place(url: str | None, database: str | None) -> None:
    if url and database:
        err.print("[red]give either --url (a server) or --database (the database directly), not both[/red]")
        raise typer.Exit(2)


def _when(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        return parse_time(text, "time")
    except BadTime:
        err.print(f"[red]{text!r} is not a time:[/red] give UTC epoch seconds or ISO 8601 ({EXAMPLE})")
        raise typer.Exit(2) from None


def _fmt(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@silences.command("add")
def add(
    matchers: list[str] = typer.Argument(..., help='label matchers, like service="checkout" priority=~"[34]"'),
    duration: str = typer.Option("2h", help="how long, like 30m, 2h, 1d (unless --end)"),
    start: str | None = typer.Option(None, help="start: epoch seconds or ISO 8601 (default: now)"),
    end: str | None = typer.Option(None, help="end: epoch seconds or ISO 8601"),
    comment: str = typer.Option("", help="why"),
    author: str = typer.Option("", "--by", help="who"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    database: str | None = typer.Option(None, help="database URL (default: STORMEYE_DATABASE_URL)"),
    url: str | None = URL,
) -> None:
    """Silence incidents matching every matcher."""
    from stormeye.workers.notify import silences as sil

    _one_place(url, database)
    now = time.time()
    starts = _when(start, now)
    try:
        ends = _when(end, 0.0) if end else starts + parse_duration(duration)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if url:
        body = {"matchers": matchers, "starts_at": starts, "ends_at": ends, "created_by": author, "comment": comment}
        s = _remote(url, "POST", "/api/v1/silences", body)
    else:
        try:
            s = sil.add(_db(database), matchers, starts, ends, author, comment, now)
        except ValueError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    out.print_json(json.dumps(s)) if as_json else out.print(f"silence {s['id']} until {_fmt(s['ends_at'])}")


@silences.command("list")
def list_(
    show_all: bool = typer.Option(False, "--all", help="with expired silences"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    database: str | None = typer.Option(None, help="database URL (default: STORMEYE_DATABASE_URL)"),
    url: str | None = URL,
) -> None:
    """Silences in force or to come (``--all``: expired ones too)."""
    from stormeye.workers.notify import silences as sil

    _one_place(url, database)
    if url:
        got = _remote(url, "GET", "/api/v1/silences", query={"all": str(show_all).lower()})["silences"]
    else:
        got = sil.list_silences(_db(database), time.time(), include_expired=show_all)
    if as_json:
        out.print_json(json.dumps({"silences": got}))
        return
    t = Table(title=f"silences ({len(got)})")
    for col in ("id", "state", "matchers", "starts", "ends", "by", "comment"):
        t.add_column(col, overflow="fold")
    for s in got:
        t.add_row(s["id"], s["state"], " ".join(s["matchers"]), _fmt(s["starts_at"]), _fmt(s["ends_at"]),
                  s["created_by"], s["comment"])  # fmt: skip
    out.print(t)


@silences.command("expire")
def expire(
    silence_id: str = typer.Argument(..., help="the silence's id"),
    database: str | None = typer.Option(None, help="database URL (default: STORMEYE_DATABASE_URL)"),
    url: str | None = URL,
) -> None:
    """End a silence now."""
    from stormeye.workers.notify import silences as sil

    _one_place(url, database)
    if url:
        import urllib.parse

        s = _remote(url, "DELETE", f"/api/v1/silences/{urllib.parse.quote(silence_id)}")
        out.print(f"silence {s['id']} expired at {_fmt(s['ends_at'])}")
        return
    try:
        s = sil.expire(_db(database), silence_id, time.time())
    except sil.SilenceError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out.print(f"silence {s['id']} expired at {_fmt(s['ends_at'])}")


def notifications(
    incident: str = typer.Argument(..., help="the incident's id"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    database: str | None = typer.Option(None, help="database URL (default: STORMEYE_DATABASE_URL)"),
    url: str | None = URL,
) -> None:
    """Every notification about an incident, each attempt, and what suppresses it."""
    from stormeye.workers.notify.notifier import notifications as log

    _one_place(url, database)
    if url:
        import urllib.parse

        got = _remote(url, "GET", f"/api/v1/incidents/{urllib.parse.quote(incident)}/notifications")
    else:
        db = _db(database)
        if db.get_incident(incident) is None:
            err.print(f"[red]no incident {incident!r}[/red]")
            raise typer.Exit(2)
        got = log(db, incident)
    if as_json:
        out.print_json(json.dumps(got))
        return
    for r in got["receivers"]:
        sup = "; ".join(f"{k.replace('_', ' ')} {', '.join(v)}" for k, v in r["suppressed_by"].items())
        out.print(f"{r['receiver']}: notified {r['notified']}x, last {r['last_kind'] or '-'} {_fmt(r['last_at'])}"
                  + (f" · [yellow]suppressed: {sup}[/yellow]" if sup else ""))  # fmt: skip
    t = Table(title=f"notifications of {incident} (thread {got['thread']})")
    for col in ("#", "receiver", "kind", "status", "created", "attempts", "last error"):
        t.add_column(col, overflow="fold")
    for n in got["notifications"]:
        tries = " ".join(("ok" if a["ok"] else "x") + f"@{_fmt(a['at'])[11:]}" for a in n["attempts"])
        t.add_row(str(n["seq"]), f"{n['receiver']}/{n['integration']}", n["kind"], n["status"], _fmt(n["created_at"]),
                  tries, n["last_error"] or "")  # fmt: skip
    out.print(t)
