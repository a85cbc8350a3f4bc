"""The embedded default needs neither extra: celery and redis (``stormeye[distributed]``) and apprise
(``stormeye[notify]``) are never imported on its paths, and asking for distributed mode without them
says what to install.

Each check runs in a fresh interpreter where those packages cannot be imported (``sys.modules[name] =
None`` makes ``import name`` raise ImportError), as in a venv made by ``pip install .``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXTRAS = ("celery", "kombu", "redis", "apprise")

_BLOCK = f"import sys\nfor _n in {EXTRAS!r}:\n    sys.modules[_n] = None\n"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK + code], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_embedded_paths_run_without_celery_redis_or_apprise(tmp_path: Path) -> None:
    points = tmp_path / "points.csv"
    points.write_text(
        "metric,timestamp,value\n"
        + "".join(f'cpu{{host="a"}},{1_700_000_000 + 60 * k},{(k % 7) + 1}\n' for k in range(60))
    )
    code = f"""
import json
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from stormeye.api.app import create_app
from stormeye.api.cli import app as cli
from stormeye.workers.settings import Settings

db = "sqlite:///{tmp_path / "api.db"}"
with TestClient(create_app(Settings(database_url=db, step_s=60), start_ticker=False)) as c:
    got = c.post("/api/v1/points", json=[{{"metric": "cpu", "timestamp": 1_700_000_000, "value": 1.0}}])
    assert got.status_code == 202, got.text
    assert c.get("/healthz").json()["mode"] == "embedded"
    assert c.get("/readyz").status_code == 200
runner = CliRunner()
for args in (
    ["ingest", "{points}", "--json", "--database", "sqlite:///{tmp_path / "ingest.db"}"],
    ["demo", "--json", "--metrics", "120", "--incidents", "2", "--cascades", "0", "--history-days", "0.2",
     "--database", "sqlite:///{tmp_path / "demo.db"}"],
):
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, (args, res.output, res.exception)
loaded = sorted(n for n in sys.modules if sys.modules[n] is not None and n.split(".")[0] in {EXTRAS!r})
print(json.dumps(loaded))
"""
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_distributed_mode_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    code = """
from typer.testing import CliRunner
from stormeye.api.app import create_app
from stormeye.api.cli import app as cli
from stormeye.workers.backend import MissingExtra
from stormeye.workers.settings import Settings

try:
    create_app(Settings(mode="distributed", database_url="sqlite://"))
except MissingExtra as exc:
    print("app:", exc)
res = CliRunner().invoke(cli, ["status"])
print("cli:", res.exit_code, " ".join(res.output.split()))
"""
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    app_line, cli_line = out.stdout.strip().splitlines()[-2:]
    assert app_line.startswith("app: distributed mode needs") and "pip install 'stormeye[distributed]'" in app_line
    assert cli_line.startswith("cli: 2 ") and "pip install 'stormeye[distributed]'" in cli_line
