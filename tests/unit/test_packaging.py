"""The four folders install as one package, ``stormeye``: no top-level ``api`` or ``workers``."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("api", "workers", "grouping", "detectors", "core", "sim")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_folder_with_an_init_is_a_listed_package() -> None:
    """A new sub-package must be added to pyproject's list, or `pip install .` leaves it out."""
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {
        "stormeye." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert found == listed, f"pyproject [tool.setuptools] packages should be {sorted(found)}"


def test_the_package_imports_by_its_one_name_outside_the_repo(tmp_path: Path) -> None:
    """Run from elsewhere, so the repo root is not on sys.path: only `stormeye.*` resolves."""
    code = (
        "import importlib.util, stormeye.api.app, stormeye.workers.pipeline\n"
        "import stormeye.grouping, stormeye.detectors, stormeye.core.errors, stormeye.sim.quality\n"
        "tops = ('api', 'workers', 'grouping', 'detectors', 'core', 'sim')\n"
        "print([n for n in tops if importlib.util.find_spec(n)])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_name(tmp_path: Path) -> None:
    """What `pip install .` puts into site-packages: `stormeye/` with its data, nothing else."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("stormeye-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"stormeye"}
    assert "stormeye/api/static/index.html" in names
    assert "stormeye/workers/migrations/versions/0001_initial.py" in names
    assert "stormeye/workers/migrations/script.py.mako" in names
    assert not any(n.startswith("stormeye/__init__") for n in names), "stormeye is a namespace package"
