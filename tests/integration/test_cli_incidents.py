"""`stormeye incidents ...` against the local database and against a running server: every action
done well and every way to get one wrong, with who did it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import storm_helpers
from typer.testing import CliRunner

from stormeye.api.app import create_app
from stormeye.api.cli import app as cli
from stormeye.workers.actions import Actions
from stormeye.workers.db import Database
from stormeye.workers.settings import Settings

storm_template, db_url = storm_helpers.storm_template, storm_helpers.db_url  # the fixtures
runner = CliRunner()


def run(*args: str, **env: str) -> tuple[int, str, str]:
    res = runner.invoke(cli, ["incidents", *args], env=env)
    return res.exit_code, res.stdout, res.stderr


def reading(where: list[str]) -> list[str]:
    """The options of a read (no --actor)."""
    return [w for k, w in enumerate(where) if w != "--actor" and (k == 0 or where[k - 1] != "--actor")]


def open_ids(where: list[str], env: dict[str, str] | None = None) -> list[str]:
    code, out, _ = run("list", "--status", "open", "--json", *reading(where), **(env or {}))
    assert code == 0
    return [i["id"] for i in json.loads(out)["incidents"] if i["member_count"] >= 2]


def members(where: list[str], iid: str, env: dict[str, str] | None = None) -> list[str]:
    code, out, _ = run("show", iid, "--json", *reading(where), **(env or {}))
    assert code == 0, out
    return sorted({m["metric"] for m in json.loads(out)["members"]})


@pytest.fixture()
def server(db_url: str) -> Iterator[str]:
    """The API in a thread with bearer tokens (api/auth.py): the token's name is the actor."""
    app = create_app(Settings(database_url=db_url, step_s=60, api_tokens="alice=alice"), start_ticker=False)
    with storm_helpers.serving(app) as url:
        yield url


def check_every_action(where: list[str], actor: str, env: dict[str, str] | None = None) -> None:
    env = env or {}
    a, b, c = open_ids(where, env)[:3]
    code, out, err = run("ack", a, "--note", "on it", "--json", *where, **env)
    assert code == 0, err
    assert json.loads(out)["action"]["actor"] == actor
    code, _, err = run("ack", a, *where, **env)
    assert code == 1 and "acknowledged already" in err
    code, _, err = run("merge", a, a, *where, **env)
    assert code == 1 and "with itself" in err
    code, _, err = run("merge", a, b, *where, **env)
    assert code == 0, err
    code, _, err = run("ack", b, *where, **env)
    assert code == 1 and "merged into" in err
    every = members(where, c, env)
    code, _, err = run("split", c, *every, *where, **env)
    assert code == 1 and "every member" in err
    code, out, err = run("split", c, every[0], "--json", *where, **env)
    assert code == 0, err
    new = json.loads(out)["incident"]
    assert members(where, new, env) == every[:1]
    code, _, err = run("resolve", c, *where, **env)
    assert code == 0, err
    code, _, err = run("ack", c, *where, **env)
    assert code == 1 and "is resolved" in err
    for verb in (["ack"], ["resolve"], ["split"], ["merge", a]):
        code, _, err = run(*verb, "inc-nope", *(["x"] if verb == ["split"] else []), *where, **env)
        assert code == 1 and "404" in err, (verb, err)
    code, _, err = run("priority", every[0], "--weight", "4", "--kpi", *where, **env)
    assert code == 0, err
    code, _, err = run("priority", "nope", "--weight", "4", *where, **env)
    assert code == 1 and "no metric" in err
    code, out, _ = run("show", a, "--json", *reading(where), **env)
    timeline = [(e["kind"], e["actor"]) for e in json.loads(out)["timeline"] if e["actor"]]
    assert timeline == [("acknowledge", actor), ("merge", actor)]
    code, out, _ = run("show", a, *reading(where), **env)
    assert code == 0 and "acknowledge" in out and actor in out


def test_every_action_on_the_local_database_records_the_os_user_or_actor(db_url: str) -> None:
    check_every_action(["--database", db_url, "--actor", "carol"], "carol")
    # the OS user by default
    a = open_ids(["--database", db_url])[0]
    code, out, _ = run("resolve", a, "--database", db_url, "--json")
    assert code == 0 and json.loads(out)["action"]["actor"] not in ("", "carol")


def test_every_action_against_a_server_with_the_token_from_the_environment(server: str, db_url: str) -> None:
    check_every_action(["--url", server], "alice", {"STORMEYE_API_TOKEN": "alice"})
    history = Actions(Database(db_url)).actions_since(0)
    assert {a["actor"] for a in history} == {"alice"}


def test_wrong_use_says_what_to_fix(db_url: str) -> None:
    code, _, err = run("list", "--status", "bogus", "--database", db_url)
    said = " ".join(err.split())
    assert code == 2 and "use one of open, acknowledged, unacknowledged, recognised, resolved, merged" in said
    code, _, err = run("list", "--url", "http://127.0.0.1:9", "--database", db_url)
    assert code == 2 and "not both" in err
    code, _, err = run("list", "--url", f"http://127.0.0.1:{storm_helpers.free_port()}")
    assert code == 2 and "cannot reach" in err
    code, out, _ = run("list", "--database", db_url)
    assert code == 0 and "incidents" in out
