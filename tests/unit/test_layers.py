"""The one dependency rule, checked on the imports: api -> workers -> {sim, grouping, detectors} -> core.

docs/architecture.md states the rule; this reads every module's imports (at any depth, type-only ones
included) so that no import runs upward or sideways.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: what each package may import of stormeye (besides itself)
ALLOWED = {
    "core": set(),
    "detectors": {"core"},
    "grouping": {"core"},
    "sim": {"core", "grouping"},
    "workers": {"core", "detectors", "grouping", "sim"},
    "api": {"core", "detectors", "grouping", "sim", "workers"},
}


def _stormeye_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "stormeye":  # from stormeye import detectors
                names = [f"stormeye.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("stormeye.")}
    return found


def test_no_import_runs_upward() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for used in _stormeye_imports(path) - allowed - {package}:
                wrong.append(f"{path.relative_to(ROOT)} imports stormeye.{used}")
    assert not wrong, "imports against api -> workers -> {sim, grouping, detectors} -> core:\n" + "\n".join(wrong)


def test_the_check_sees_imports() -> None:
    """The rule is only as good as the reader: it finds the imports modules are known to have."""
    assert "core" in _stormeye_imports(ROOT / "grouping" / "report.py")
    assert {"grouping", "detectors"} <= _stormeye_imports(ROOT / "workers" / "pipeline.py")
