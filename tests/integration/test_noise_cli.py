"""The on-call's feedback from a terminal (issue 29): `stormeye ingest --keep-open`, then
`stormeye incidents noise`, then the next `stormeye ingest` continues from the database and the
routine comes back recognised; `profiles`, `forget` and `missed`, with what to fix when wrong."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from feedback_helpers import DAY, T0, Day, day_of, points, split
from typer.testing import CliRunner

from stormeye.api.cli import app as cli
from stormeye.workers.ingest import PointBatch

runner = CliRunner()
ENV = {"STORMEYE_DETECTOR": "robust_z"}  # the feedback is under test, not the detector: keep it quick


def write(batch: PointBatch, path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["metric", "timestamp", "value"])
        w.writerows(zip(batch.names, batch.timestamps, batch.values))
    return path


def run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(cli, list(args), env=ENV)
    return res.exit_code, res.stdout, res.stderr


def test_noise_from_the_cli_between_two_ingests_keeps_the_repeat_quiet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    first, rest = split(points([Day(), Day()]), T0 + 2 * DAY)
    code, out, err = run("ingest", str(write(first, tmp_path / "a.csv")), "--json", "--keep-open", "--database", url)
    assert code == 0, err
    (day0,) = [i for i in json.loads(out)["incidents"] if day_of(i["start"]) == 0]
    db = ["--database", url]
    code, out, err = run("incidents", "noise", day0["id"], "--scope", "daily", "--actor", "dana", "--json", *db)
    assert code == 0, err
    profile = json.loads(out)["profile"]
    code, out, err = run("incidents", "noise", day0["id"], "--scope", "2am", "--actor", "dana", *db)
    assert code == 1 and "HH:MM-HH:MM" in " ".join(err.split())
    code, out, err = run("ingest", str(write(rest, tmp_path / "b.csv")), "--json", "--database", url)
    assert code == 0 and "continuing from where the last ingest" in " ".join(err.split()), err
    (day1,) = [i for i in json.loads(out)["incidents"] if day_of(i["start"]) == 1]
    code, out, _ = run("incidents", "show", day1["id"], "--json", *db)
    assert json.loads(out)["profile"] == profile
    code, out, _ = run("incidents", "profiles", "--json", *db)
    (listed,) = json.loads(out)["profiles"]
    assert listed["id"] == profile and listed["matched"] == 1 and listed["actor"] == "dana"
    cpu = next(m for m in day0["members"] if m.startswith("cpu_seconds"))  # its canonical name
    code, out, err = run("incidents", "missed", cpu, str(T0 + 600), str(T0), "--actor", "dana", *db)
    assert code == 1 and "the end not before the start" in " ".join(err.split())
    code, out, err = run("incidents", "missed", cpu, str(T0), str(T0 + 600), "--actor", "dana", *db)
    assert code == 0, err
    code, out, err = run("incidents", "forget", profile, "--actor", "erin", *db)
    assert code == 0, err
    code, out, err = run("incidents", "forget", profile, "--actor", "erin", *db)
    assert code == 1 and "forgotten already by erin" in " ".join(err.split())
    code, out, _ = run("incidents", "profiles", "--json", "--forgotten", *db)
    assert json.loads(out)["profiles"][0]["forgotten_by"] == "erin"
