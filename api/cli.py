"""The ``stormeye`` command line: demo, ingest, serve; and for distributed mode worker, beat, status, deadletter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stormeye.api.cli_incidents import app as incidents_app
from stormeye.api.cli_notify import notifications, silences
from stormeye.workers.settings import Settings, get_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="stormeye: turn an alert storm into a few business-prioritized incidents.",
)
out = Console()
err = Console(stderr=True)


#: `demo` and `ingest` write simulated or replayed incidents: never into the service's database by
#: default (a demo run once added 59 simulated incidents to a live one). `--database` chooses another.
DEMO_DATABASE = "sqlite:///stormeye-demo.db"
INGEST_DATABASE = "sqlite:///stormeye-ingest.db"


def _settings(**overrides: Any) -> Settings:
    try:
        return get_settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        err.print(f"[red]bad setting:[/red] {exc}")
        raise typer.Exit(2) from None


def _progress(label: str, enabled: bool) -> Progress:
    """A progress bar redrawn by its updates (``refresh=True``), not by a thread of its own:
    ``stormeye ingest``'s replay forks processes to score ahead only while this one runs no other
    thread (``workers.ingest.replay``'s prefetch)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled,
        transient=True,
        auto_refresh=False,
    )


def _incident_table(incidents: list[dict[str, Any]], limit: int = 15) -> Table:
    table = Table(title=f"incidents ({len(incidents)}), most urgent first", show_lines=False)
    table.add_column("prio", justify="center")
    table.add_column("title", overflow="fold")
    table.add_column("members", justify="right")
    table.add_column("root metric", overflow="fold")
    for inc in incidents[:limit]:
        table.add_row(f"P{inc['priority']}", inc["title"], str(len(inc["members"])), inc.get("root") or "")
    if len(incidents) > limit:
        table.add_row("", f"… and {len(incidents) - limit} more", "", "")
    return table


@app.command()
def demo(
    seed: int = typer.Option(0, help="seed of the simulated storm"),
    metrics: int = typer.Option(2000, help="number of metrics"),
    incidents: int = typer.Option(10, help="number of multi-metric incidents"),
    cascades: int = typer.Option(4, help="outages cascading through a microservice estate (0: none)"),
    history_days: float = typer.Option(
        1.0, min=0.1, help="days of normal history before the storm (two or more: daily seasonality at 1 minute)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the figures as one JSON object"),
    database: str = typer.Option(
        DEMO_DATABASE, help="database URL (its own by default, never the service's STORMEYE_DATABASE_URL)"
    ),
) -> None:
    """Simulate an alert storm, group it, and measure the result against the ground truth."""
    from stormeye.workers.db import Database
    from stormeye.workers.demo import run_demo

    settings = _settings(database_url=database)
    db = Database(settings.database_url)
    with _progress("storm", not as_json and err.is_terminal) as prog:
        task = prog.add_task("storm", total=None)
        result = run_demo(
            settings,
            seed=seed,
            n_metrics=metrics,
            n_incidents=incidents,
            database=db,
            progress=lambda k, n: prog.update(task, completed=k, total=n, refresh=True),
            cascades=cascades,
            history_steps=round(history_days * 86_400 / settings.step_s),
        )
    f = result.figures
    if as_json:
        print(json.dumps(f))
        return
    out.print(_incident_table(result.incidents))
    q = Table(title="quality against the simulator's ground truth")
    q.add_column("figure")
    q.add_column("value", justify="right")
    rows = [
        ("metrics", f["metrics"]),
        (
            "true incidents (multi-metric + singletons)",
            f"{f['true_incidents']} ({f['true_multi_metric_incidents']} multi)",
        ),
        (
            "true incidents paged (multi-metric, single-metric)",
            f"{f['multi_metric_incidents_found']}, {f['single_metric_incidents_found']}",
        ),
        ("anomalies in incidents", f["anomalies"]),
        ("detection precision (anomalies in incidents)", f["detection_precision"]),
        ("detection recall (per incident member)", f["detection_recall"]),
        (
            "detector precision / recall (every anomaly, paged or not)",
            f"{f['detector_precision']} / {f['detector_recall']} of {f['detected_anomalies']}",
        ),
        ("incidents", f["incidents"]),
        ("compression (anomalies per incident)", f["compression"]),
        ("pairwise precision", f["pairwise_precision"]),
        ("pairwise recall", f["pairwise_recall"]),
        ("pairwise F1", f["pairwise_f1"]),
        ("adjusted Rand index", f["ari"]),
        ("median detection delay (s)", f["detection_delay_s_p50"]),
    ]
    if f["cascade_incidents_true"]:
        rows += [
            ("pairwise F1 / ARI of everything but the cascades", f"{f['other_pairwise_f1']} / {f['other_ari']}"),
            (
                "cascades: true, incidents holding them, found as one, root hit",
                f"{f['cascade_incidents_true']}, {f['cascade_incidents_pred']}, "
                f"{f['cascade_one_incident']}, {f['cascade_root_hit']}",
            ),
            (
                "cascades: pairwise P / R / F1, ARI",
                f"{f['cascade_pairwise_precision']} / {f['cascade_pairwise_recall']} / "
                f"{f['cascade_pairwise_f1']}, {f['cascade_ari']}",
            ),
            ("cascades: detection recall", f["cascade_detection_recall"]),
        ]
    rows.append(("seconds", f["seconds"]))
    for k, v in rows:
        q.add_row(k, str(v))
    out.print(q)
    out.print(
        f"stored in {settings.database_url}; to browse them: "
        f"STORMEYE_DATABASE_URL={settings.database_url} stormeye serve"
    )


@app.command()
def ingest(
    file: Path = typer.Argument(..., help="CSV (metric,timestamp,value) or JSON lines of points"),
    as_json: bool = typer.Option(False, "--json", help="print the incidents as JSON"),
    step: int | None = typer.Option(None, help="seconds between points (default: inferred from the file)"),
    database: str = typer.Option(
        INGEST_DATABASE, help="database URL (its own by default, never the service's STORMEYE_DATABASE_URL)"
    ),
    keep_open: bool = typer.Option(
        False, "--keep-open", help="leave what is still going on open: the next ingest into this database goes on"
    ),
    fresh: bool = typer.Option(False, "--fresh", help="start anew, not from where the last ingest here stopped"),
) -> None:
    """Replay a history through the pipeline as if live: "this history becomes N incidents".

    An ingest into a database that an earlier ingest used continues from where that one stopped (its
    windows, open anomalies and incidents, learnt topology, and people's actions since, such as noise)."""
    from stormeye.workers.db import Database
    from stormeye.workers.ingest import infer_step, read_points, replay, resume, save_replay_state
    from stormeye.workers.pipeline import Pipeline

    settings = _settings(database_url=database)
    try:
        batch = read_points(file, settings.graphite)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        err.print(f"[red]cannot read {file}:[/red] {exc}")
        raise typer.Exit(2) from None
    for e in batch.errors[:20]:
        err.print(f"[yellow]rejected[/yellow] {e}")
    if batch.rejected > 20:
        err.print(f"[yellow]… {batch.rejected - 20} more rejected rows[/yellow]")
    if not len(batch):
        err.print(f"[red]no usable points in {file}[/red] ({batch.rejected} rows rejected)")
        raise typer.Exit(2)
    names, ts, _ = batch.arrays()
    settings = _settings(database_url=database, step_s=step or infer_step(names, ts))  # now with the step
    pipe = Pipeline(settings, database=Database(settings.database_url), keep_archive=True)
    if not fresh and resume(pipe):
        err.print(f"continuing from where the last ingest into {database} stopped (--fresh: start anew)")
    with _progress("replay", not as_json and err.is_terminal) as prog:
        task = prog.add_task("replay", total=None)
        res = replay(
            pipe,
            batch,
            progress=lambda k, n: prog.update(task, completed=k, total=n, refresh=True),
            finish=not keep_open,
            prefetch=settings.ingest_prefetch,
        )
    save_replay_state(pipe)
    incidents = pipe.incident_list()
    if res.rejected_too_old:
        err.print(f"[yellow]{res.rejected_too_old} points arrived later than the window store keeps[/yellow]")
    if res.merged or res.reordered:
        err.print(
            f"{res.merged} points shared a step with a later one of their metric (merged: the last one given wins); "
            f"{res.reordered} came out of time order (sorted)"
        )
    if as_json:
        keys = ("id", "priority", "title", "start", "end", "root", "root_entity", "status")
        print(
            json.dumps(
                {
                    "incidents": [
                        {**{k: inc.get(k) for k in keys}, "members": sorted({m["metric"] for m in inc["members"]})}
                        for inc in incidents
                    ],
                    "points": res.points,
                    "rejected": batch.rejected,
                    "merged": res.merged,
                    "reordered": res.reordered,
                    "step": settings.step_s,
                    "prefetched_blocks": res.prefetched,
                }
            )
        )
        return
    out.print(_incident_table(incidents))
    out.print(
        f"{res.points} points over {res.steps} steps of {settings.step_s} s became "
        f"{len(incidents)} incidents ({batch.rejected} rows rejected)"
    )


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="port to listen on"),
    database: str | None = typer.Option(None, help="database URL (default: STORMEYE_DATABASE_URL)"),
    insecure: bool = typer.Option(False, "--insecure", help="listen beyond this machine without a token"),
) -> None:
    """Run the HTTP API: with the embedded pipeline and its tick, or in front of distributed workers."""
    import uvicorn

    from stormeye.api.app import create_app
    from stormeye.api.auth import AuthConfigError, is_loopback, parse_tokens
    from stormeye.core.errors import StormeyeError

    settings = _settings(database_url=database)
    try:
        tokens = parse_tokens(settings)
    except AuthConfigError as exc:
        err.print(f"[red]bad setting:[/red] {exc}")
        raise typer.Exit(2) from None
    if not tokens and not is_loopback(host) and not insecure:
        err.print(
            f"[red]refusing to listen on {host} without a token:[/red] anyone who reaches it could write points "
            "and read incidents. Set STORMEYE_API_TOKEN (or STORMEYE_API_TOKENS=name=token,...), or pass "
            "--insecure if something in front of stormeye already checks who calls."
        )
        raise typer.Exit(2)
    if settings.graphite_port is not None and not tokens and not is_loopback(settings.graphite_host) and not insecure:
        err.print(
            f"[red]refusing to listen for Graphite on {settings.graphite_host} without a token:[/red] anyone who "
            "reaches it could write points (the plaintext protocol has no authentication). Keep "
            "STORMEYE_GRAPHITE_HOST=127.0.0.1, set STORMEYE_API_TOKEN to show the deployment is meant to be "
            "reached (and firewall the Graphite port to your senders), or pass --insecure."
        )
        raise typer.Exit(2)
    try:
        application = create_app(settings)
    except StormeyeError as exc:  # Redis unreachable, a bad notification config, a missing extra
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    uvicorn.run(application, host=host, port=port, log_level="info", timeout_keep_alive=settings.http_keepalive_s)


def _distributed(**overrides: Any) -> Any:
    """Settings and a runtime for distributed mode, or exit 2 with what to fix."""
    from stormeye.workers.backend import MissingExtra, require_distributed

    try:
        require_distributed()
    except MissingExtra as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    from stormeye.workers.distributed import RedisUnavailable, Runtime, check_redis

    settings = _settings(mode="distributed", **overrides)
    try:
        return Runtime(settings, client=check_redis(settings.redis_url))
    except RedisUnavailable as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


def _prepare_deployment(rt: Any) -> None:
    """What every worker checks before taking tasks: the database (migrated) and the shard count."""
    from sqlalchemy.exc import SQLAlchemyError

    from stormeye.workers.db import Database
    from stormeye.workers.redis_store import ShardConfigError

    url = rt.settings.database_url
    if url.startswith("sqlite"):
        err.print(
            "[yellow]STORMEYE_DATABASE_URL is a SQLite file: fine for workers on this machine only; "
            "workers on several machines need PostgreSQL (postgresql+psycopg://user@host/db)[/yellow]"
        )
    try:
        Database(url).dispose()  # migrates, one process at a time
    except (SQLAlchemyError, OSError) as exc:
        err.print(
            f"[red]cannot use the database at {url}:[/red] {str(exc).splitlines()[0]}\n"
            "Check that it runs and that STORMEYE_DATABASE_URL names it (postgresql+psycopg://user@host/db)."
        )
        raise typer.Exit(2) from None
    try:
        rt.registry.check_shards()
    except ShardConfigError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


@app.command()
def worker(
    concurrency: int | None = typer.Option(None, help="worker processes (default: one per CPU core)"),
    loglevel: str = typer.Option("info", help="debug, info, warning or error"),
    hostname: str | None = typer.Option(None, help="worker name, unique per machine (default: celery@HOST)"),
) -> None:
    """Run a Celery worker of distributed mode (ingest, score shards, correlate, notify)."""
    rt = _distributed()
    _prepare_deployment(rt)
    rt.close()
    from stormeye.workers.celery_app import app as celery_app

    argv = ["worker", f"--loglevel={loglevel}", "--queues", rt.settings.redis_prefix, "--without-mingle"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if hostname:
        argv += ["--hostname", hostname]
    celery_app.worker_main(argv)


@app.command()
def beat(
    loglevel: str = typer.Option("info", help="debug, info, warning or error"),
    schedule: Path | None = typer.Option(None, help="beat's state file (default: in the temp directory)"),
) -> None:
    """Run Celery beat: the tick of distributed mode (run one; a second one is harmless, not useful)."""
    import tempfile

    rt = _distributed()
    rt.close()
    from stormeye.workers.celery_app import app as celery_app

    path = schedule or Path(tempfile.gettempdir()) / f"stormeye-beat-{rt.settings.redis_prefix}"
    celery_app.start(["beat", f"--loglevel={loglevel}", f"--schedule={path}"])


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """Distributed mode at a glance: tick progress, backlog, dead letters, workers alive."""
    rt = _distributed()
    h = rt.health()
    if as_json:
        print(json.dumps(h))
        return
    t = Table(title=f"stormeye (Redis prefix {rt.settings.redis_prefix!r})")
    t.add_column("what")
    t.add_column("value", justify="right", overflow="fold")
    for k, v in h.items():
        if k != "stats":
            t.add_row(k, str(v))
    for k, v in sorted(h["stats"].items()):
        t.add_row(f"stats.{k}", str(v))
    out.print(t)


@app.command()
def deadletter(
    requeue: str | None = typer.Option(None, help="offer this dead-lettered batch again (its ref)"),
    limit: int = typer.Option(50, help="how many records to list, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Input that could not be processed, with the reason (distributed mode); requeue a batch."""
    rt = _distributed()
    if requeue:
        from stormeye.workers.celery_app import CeleryDispatcher, make_app

        try:
            res = rt.requeue_dead_batch(requeue, CeleryDispatcher(make_app(rt.settings)))
        except KeyError as exc:
            err.print(f"[red]{exc.args[0]}[/red]")
            raise typer.Exit(2) from None
        print(json.dumps({"accepted": res.accepted, "late": len(res.late)}))
        return
    records = rt.dead_letters(limit)
    if as_json:
        print(json.dumps(records))
        return
    t = Table(title=f"dead letters ({len(records)} shown)")
    for col in ("id", "kind", "ref", "points", "reason"):
        t.add_column(col, overflow="fold")
    for d in records:
        t.add_row(d["id"], d.get("kind", ""), d.get("ref", ""), str(d.get("points", ""))[:200], d.get("reason", ""))
    out.print(t)


app.add_typer(incidents_app, name="incidents")
app.add_typer(silences, name="silences")  # api/cli_notify.py
app.command()(notifications)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `stormeye ingest ... | head`
        sys.stderr.close()


if __name__ == "__main__":
    main()
