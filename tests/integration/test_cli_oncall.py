"""Issue 34.6 and 34.8, as a user met them: `stormeye incidents list --status acknowledged` and
`/api/v1/incidents` said "open" for an acknowledged incident; `--status all` was refused though the
page offers it; `notifications` and `silences` had no `--url`; `show` cut timeline details in the
middle of a string; `incidents list` on an 80-column terminal wrapped titles a few letters a line."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import notify_helpers
import pytest
import storm_helpers
from typer.testing import CliRunner

from stormeye.api.app import create_app
from stormeye.api.cli import app as cli
from stormeye.workers.db import Database
from stormeye.workers.settings import Settings

runner = CliRunner()
LONG = "checkout_payment_authorisation_latency_seconds rose for service=checkout across 12 hosts in eu-west-1"


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A server with a token over a database of an open, a second open and a resolved incident."""
    url = f"sqlite:///{tmp_path / 'stormeye.db'}"
    db = Database(url)
    t0 = time.time() - 3600
    long_names = [
        f'checkout_payment_authorisation_latency_seconds{{host="web-{i:02d}",region="eu-west-1"}}' for i in range(12)
    ]
    notify_helpers.save(
        db,
        notify_helpers.incident("inc-a", t0, long_names, priority=1, title=LONG),
        notify_helpers.incident("inc-b", t0, ['errors{service="cart"}', 'errors{service="cart",host="h"}']),
        notify_helpers.incident("inc-c", t0 - 900, ['x{service="old"}'], "resolved", resolved_at=t0),
    )
    db.dispose()
    app = create_app(Settings(database_url=url, step_s=60, api_tokens="alice=tok-a"), start_ticker=False)
    with storm_helpers.serving(app) as base:
        yield base, url


def cli_run(*args: str, columns: int = 200) -> tuple[int, str, str]:
    res = runner.invoke(cli, list(args), env={"STORMEYE_API_TOKEN": "tok-a", "COLUMNS": str(columns)})
    return res.exit_code, res.stdout, res.stderr


def test_acknowledged_shows_in_the_api_and_the_cli_and_status_all(served: tuple[str, str]) -> None:
    base, url = served
    assert cli_run("incidents", "ack", "inc-b", "--url", base)[0] == 0
    listed = httpx.get(f"{base}/api/v1/incidents", headers={"authorization": "Bearer tok-a"}).json()["incidents"]
    b = next(i for i in listed if i["id"] == "inc-b")
    assert b["state"] == "acknowledged" and b["acknowledged"]["by"] == "alice" and b["status"] == "open"
    a = next(i for i in listed if i["id"] == "inc-a")
    assert a["state"] == "open" and a["acknowledged"] is None
    for where in (["--url", base], ["--database", url]):
        code, out, err = cli_run("incidents", "list", "--status", "acknowledged", "--json", *where)
        assert code == 0, err
        assert [(i["id"], i["state"]) for i in json.loads(out)["incidents"]] == [("inc-b", "acknowledged")]
        code, out, err = cli_run("incidents", "list", "--status", "acknowledged", *where)
        assert code == 0 and "acknowledged" in out and " open " not in out, out
        code, out, err = cli_run("incidents", "list", "--status", "all", "--json", *where)
        assert code == 0, err
        assert sorted(i["id"] for i in json.loads(out)["incidents"]) == ["inc-a", "inc-b", "inc-c"]
        code, out, _ = cli_run("incidents", "show", "inc-b", *where)
        assert code == 0 and "acknowledged by alice" in out.replace("\n", " ")
    assert cli_run("incidents", "list", "--status", "everything", "--url", base)[0] == 2


def test_list_fits_80_columns_and_show_keeps_details_whole(served: tuple[str, str]) -> None:
    base, _ = served
    code, out, err = cli_run("incidents", "list", "--url", base, columns=80)
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    row = next(line for line in lines if "inc-a" in line)  # one line per incident, the title cut with …
    assert "checkout_payment" in row and row.rstrip().endswith("…"), out
    assert sum("inc-" in line for line in lines) == 3
    # a split of many long-named members: the timeline names the first few whole and how many
    metrics = [
        f'checkout_payment_authorisation_latency_seconds{{host="web-{i:02d}",region="eu-west-1"}}' for i in range(1, 9)
    ]
    assert cli_run("incidents", "split", "inc-a", *metrics, "--url", base)[0] == 0
    code, out, err = cli_run("incidents", "show", "inc-a", "--url", base, columns=400)
    assert code == 0, err
    assert f"metrics: {', '.join(metrics[:4])} … (8)" in out, out


def test_silences_and_notifications_with_url(served: tuple[str, str]) -> None:
    base, url = served
    code, out, err = cli_run(
        "silences", "add", 'service="cart"', "--duration", "1h", "--comment", "deploy", "--url", base
    )
    assert code == 0, err
    sid = out.split()[1]
    code, out, err = cli_run("silences", "list", "--json", "--url", base)
    assert code == 0, err
    (s,) = json.loads(out)["silences"]
    assert s["id"] == sid and s["created_by"] == "alice" and s["comment"] == "deploy"  # the token's name
    code, out, err = cli_run("silences", "expire", sid, "--url", base)
    assert code == 0 and "expired" in out, err
    assert json.loads(cli_run("silences", "list", "--json", "--url", base)[1])["silences"] == []
    code, _, err = cli_run("silences", "expire", "sil-nope", "--url", base)
    assert code == 1 and "404" in err
    code, _, err = cli_run("silences", "add", "service=~(", "--url", base)
    assert code == 1 and "422" in err
    code, out, err = cli_run("notifications", "inc-b", "--json", "--url", base)
    assert code == 0 and json.loads(out)["notifications"] == [], err
    code, _, err = cli_run("notifications", "inc-nope", "--url", base)
    assert code == 1 and "404" in err
    code, _, err = cli_run("notifications", "inc-b", "--url", "http://127.0.0.1:9")  # nothing listens there
    assert code == 2 and "cannot reach" in err
    code, _, err = cli_run("silences", "list", "--url", base, "--database", url)
    assert code == 2 and "not both" in err
