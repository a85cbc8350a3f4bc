"""bench/realdata.py without the data: every data set is skipped with a message, and it exits 0."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "realdata.py"


def test_realdata_bench_skips_absent_data_sets(tmp_path: Path) -> None:
    none = str(tmp_path / "absent")
    args = [sys.executable, str(BENCH), "--json", "--asd", none, "--smd", none, "--nezha", none]
    res = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out["skipped"]) == {"asd", "smd", "nezha"} and set(out["reference"]) == {"asd", "smd", "nezha"}
    assert "ASD data not found" in res.stderr and "SMD data not found" in res.stderr and "Nezha-OB" in res.stderr
    res = subprocess.run([*args[:2], "--only", "smd", "--smd", none], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "SMD data not found" in res.stdout and "ASD" not in res.stdout
    bad = subprocess.run([*args[:2], "--only", "asd,nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--only" in bad.stderr
