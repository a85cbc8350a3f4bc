"""`stormeye ingest` as a user runs it: a real process, a real file, bad rows reported."""

import json
import pathlib
import subprocess
import sys

import numpy as np


def run(args: list[str], cwd: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "stormeye.api.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_ingest_json_keeps_good_rows_reports_bad_ones(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    lines = ["metric,timestamp,value"]
    for k in range(300):
        t = 1_767_225_600 + 300 * k
        for h in range(3):
            v = 5 + rng.normal() + (25 if 250 <= k < 270 else 0)
            lines.append(f'"disk_busy{{host=""db-1"",dev=""sd{h}""}}",{t},{v:.4f}')
        lines.append(f"quiet_metric,{t},{1 + rng.normal():.4f}")
    lines += ["broken,line", "cpu,1767225600,NaN", "cpu,notatime,1"]
    f = tmp_path / "history.csv"
    f.write_text("\n".join(lines) + "\n")
    res = run(["ingest", str(f), "--json"], str(tmp_path), STORMEYE_DATABASE_URL=f"sqlite:///{tmp_path}/s.db")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["step"] == 300 and out["rejected"] == 3 and out["points"] == 1200
    assert "line 1202" in res.stderr and "not finite" in res.stderr and "ISO 8601" in res.stderr
    (inc,) = out["incidents"]
    assert set(inc) >= {"id", "priority", "title", "members", "start", "end", "root", "status"}
    assert inc["members"] == sorted(f'disk_busy{{dev="sd{h}",host="db-1"}}' for h in range(3))
    assert 1_767_225_600 + 300 * 249 <= inc["start"] <= 1_767_225_600 + 300 * 252
    assert inc["status"] == "resolved"


def test_ingest_takes_repeated_and_reordered_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    rows = []
    for k in range(200):
        t = 1_767_225_600 + 300 * k
        rows += [f"qa,{t},{1 + rng.normal():.4f}", f"qb,{t},{1 + rng.normal():.4f}"]
    rows = [*rows[::-1], "qa,1767225600,7.5", "qa,1767225600,1.0"]  # reversed, then repeats
    f = tmp_path / "messy.csv"
    f.write_text("metric,timestamp,value\n" + "\n".join(rows) + "\n")
    res = run(["ingest", str(f), "--json"], str(tmp_path), STORMEYE_DATABASE_URL=f"sqlite:///{tmp_path}/s.db")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["points"], out["step"], out["rejected"], out["merged"], out["reordered"]) == (402, 300, 0, 2, 398)
    assert "2 points shared a step" in res.stderr and "398 came out of time order" in res.stderr


def test_ingest_of_nothing_usable_fails_clearly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "bad.csv"
    f.write_text("cpu,abc,1\n")
    res = run(["ingest", str(f), "--json"], str(tmp_path), STORMEYE_DATABASE_URL=f"sqlite:///{tmp_path}/s.db")
    assert res.returncode == 2 and "no usable points" in res.stderr
    res = run(["ingest", str(tmp_path / "missing.csv")], str(tmp_path))
    assert res.returncode == 2 and "cannot read" in res.stderr


def test_ingest_reads_graphite_paths_with_configured_templates(tmp_path) -> None:  # type: ignore[no-untyped-def]
    lines = []
    for k in range(40):
        for host in ("web-1", "web-2"):
            lines.append(f"eu.{host}.cpu.load,{1_767_225_600 + 60 * k},{1.0 + 0.01 * (k % 3)}")
    f = tmp_path / "graphite.csv"
    f.write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{tmp_path}/s.db"
    ok = run(
        ["ingest", str(f), "--json"],
        str(tmp_path),
        STORMEYE_DATABASE_URL=db,
        STORMEYE_GRAPHITE_TEMPLATES='["region.host.measurement*"]',
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["points"] == 80
    bad = run(
        ["ingest", str(f), "--json"],
        str(tmp_path),
        STORMEYE_DATABASE_URL=db,
        STORMEYE_GRAPHITE_TEMPLATES='["region..host* x y z"]',
    )
    assert bad.returncode == 2 and "STORMEYE_GRAPHITE_TEMPLATES" in bad.stderr


def test_demo_and_ingest_keep_out_of_the_services_database(tmp_path: pathlib.Path) -> None:
    """Issue 34.8: a demo run added 59 simulated incidents to the database `serve` used."""
    live = tmp_path / "live.db"
    env = {"STORMEYE_DATABASE_URL": f"sqlite:///{live}"}
    res = run(["demo", "--metrics", "200", "--incidents", "2", "--cascades", "0", "--json"], str(tmp_path), **env)
    assert res.returncode == 0, res.stderr
    f = tmp_path / "h.csv"
    f.write_text("".join(f'cpu{{host="a"}},{1_767_225_600 + 60 * i},{i % 7}\n' for i in range(50)))
    res = run(["ingest", str(f), "--json"], str(tmp_path), **env)
    assert res.returncode == 0, res.stderr
    assert not live.exists(), "demo or ingest wrote into the service's database"
    assert (tmp_path / "stormeye-demo.db").exists() and (tmp_path / "stormeye-ingest.db").exists()


def test_ingest_scores_ahead_in_other_processes_and_gives_the_same_incidents(tmp_path: pathlib.Path) -> None:
    """`stormeye ingest` forks two scoring processes by itself on a machine with two cores (its
    progress bar runs no thread); the incidents are those of the single-process replay."""
    import os

    rng = np.random.default_rng(2)
    lines = ["metric,timestamp,value"]
    steps, t0 = 3000, 1_767_225_600
    for k in range(steps):
        t = t0 + 60 * k
        for h in range(6):
            bump = 30 if (1500 <= k < 1530 and h < 4) or (2600 <= k < 2620 and h >= 3) else 0
            lines.append(f'"latency_ms{{host=""web-{h}""}}",{t},{50 + 3 * rng.normal() + bump:.3f}')
    f = tmp_path / "storm.csv"
    f.write_text("\n".join(lines) + "\n")
    outs = {}
    for mode in ("false", "true", "auto"):
        env = {"STORMEYE_INGEST_PREFETCH": mode} if mode != "auto" else {}
        res = run(["ingest", str(f), "--json", "--database", f"sqlite:///{tmp_path}/{mode}.db"], str(tmp_path), **env)
        assert res.returncode == 0, res.stderr
        outs[mode] = json.loads(res.stdout)
    assert outs["false"]["prefetched_blocks"] == 0
    assert outs["true"]["prefetched_blocks"] >= 8  # every block of the run came from the scorers
    if (os.cpu_count() or 1) > 1:
        assert outs["auto"]["prefetched_blocks"] == outs["true"]["prefetched_blocks"]
    assert len(outs["false"]["incidents"]) >= 2
    for mode in ("true", "auto"):
        assert outs[mode]["incidents"] == outs["false"]["incidents"]
