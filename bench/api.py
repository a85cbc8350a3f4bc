"""Intake throughput of a running ``stormeye serve``: JSON points, Prometheus remote write, Graphite plaintext.

    python bench/api.py            # 20,000 metrics x 20 steps per source (400,000 points each)
    python bench/api.py --quick    # 10,000 metrics x 10 steps (100,000 points each, under a minute)
    python bench/api.py --json     # one JSON object instead of the table

What it measures, each through a real ``stormeye serve`` process (embedded mode, SQLite in a
temporary directory, the tick held off so only intake is measured) from a client process
that sends pre-built bodies:

- ``points_per_s``: ``POST /api/v1/points``, JSON batches of one step of every metric;
- ``remote_write_samples_per_s``: ``POST /api/v1/write``, snappy protobuf ``WriteRequest``s of
  2,000 series with one sample each (Prometheus' default ``max_samples_per_send``);
- ``graphite_points_per_s``: plaintext lines over one TCP connection, until ``/metrics`` says
  the listener has stored them all.

The baseline, in the same run and on the same bodies: the server's own work in-process (parse,
validate, store; no HTTP, no socket), so ``*_http_share`` is the part of the time spent on
transport and the framework. The first run of each source registers the metric names (a
one-off per metric); figures are from a second pass over known metrics, as a live server sees
them. ``bottleneck`` names the function that takes most of the in-process time (cProfile).
The target is 100,000 a second for each source on this 2-core machine.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cramjam
import httpx
import numpy as np

from stormeye.api.remote_write import WriteRequest

TARGET = 100_000
RW_BATCH = 2_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def names(source: str, n: int) -> list[str]:
    return [f'{source}_requests{{service="svc{i % 50}",instance="i{i}"}}' for i in range(n)]


def json_bodies(n: int, steps: list[float], rng: np.random.Generator) -> list[bytes]:
    ms = names("json", n)
    return [
        json.dumps(
            [{"metric": m, "timestamp": t, "value": float(v)} for m, v in zip(ms, rng.normal(10, 1, n))]
        ).encode()
        for t in steps
    ]


def rw_bodies(n: int, steps: list[float], rng: np.random.Generator) -> list[bytes]:
    out = []
    for t in steps:
        vals = rng.normal(10, 1, n)
        for lo in range(0, n, RW_BATCH):
            req = WriteRequest()
            for i in range(lo, min(lo + RW_BATCH, n)):
                ts = req.timeseries.add()
                for k, v in (("__name__", "rw_requests"), ("instance", f"i{i}"), ("service", f"svc{i % 50}")):
                    lab = ts.labels.add()
                    lab.name, lab.value = k, v
                s = ts.samples.add()
                s.value, s.timestamp = float(vals[i]), int(t * 1000)
            out.append(bytes(cramjam.snappy.compress_raw(req.SerializeToString())))
    return out


def graphite_lines(n: int, steps: list[float], rng: np.random.Generator) -> bytes:
    parts = []
    for t in steps:
        vals = rng.normal(10, 1, n)
        parts.append("".join(f"servers.i{i}.svc{i % 50}.requests {vals[i]:.4f} {int(t)}\n" for i in range(n)))
    return "".join(parts).encode()


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port, self.gport = free_port(), free_port()
        env = {
            **os.environ,
            "STORMEYE_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
            "STORMEYE_TICK_S": "100000",
            "STORMEYE_STEP_S": "60",
            "STORMEYE_GRAPHITE_PORT": str(self.gport),
            "STORMEYE_GRAPHITE_TEMPLATES": '["servers.* .instance.service.measurement*"]',
            "STORMEYE_MAX_BODY_BYTES": str(256 * 1024 * 1024),
        }
        self.log = (tmp / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stormeye.api.cli", "serve", "--port", str(self.port)],
            env=env,
            cwd=tmp,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.http.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("stormeye serve did not start")

    def received(self, source: str) -> float:
        text = self.http.get("/metrics").text
        key = f'stormeye_points_received_total{{source="{source}"}} '
        return float(text.split(key)[1].split()[0])

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def post_all(http: httpx.Client, path: str, bodies: list[bytes], headers: dict[str, str]) -> float:
    began = time.perf_counter()
    for b in bodies:
        r = http.post(path, content=b, headers=headers)
        if r.status_code >= 300:
            raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - began


def send_graphite(server: Server, data: bytes, expect: float) -> float:
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", server.gport)) as s:
        s.sendall(data)
    deadline = time.monotonic() + 300
    while server.received("graphite") < expect:
        if time.monotonic() > deadline:
            raise RuntimeError("the Graphite listener did not store every line within 300 s")
        time.sleep(0.01)
    return time.perf_counter() - began


def in_process(n: int, bodies: dict[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """The server's own work on the same bodies, without HTTP: the baseline, and the top function of each."""
    from stormeye.api.app import Service
    from stormeye.api.graphite_listener import parse_lines
    from stormeye.api.remote_write import RemoteWriteDecoder
    from stormeye.workers.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite:///{tmp}/b.db",
            step_s=60,
            graphite_templates=["servers.* .instance.service.measurement*"],
        )
        svc = Service(settings)
        dec = RemoteWriteDecoder()

        def run_json() -> None:
            for b in bodies["json"]:
                svc.accept(json.loads(b), time.time())

        def run_rw() -> None:
            for b in bodies["rw"]:
                d = dec.decode(bytes(cramjam.snappy.decompress_raw(b)))
                from stormeye.workers.ingest import PointBatch

                batch = PointBatch(
                    names=[d.names[i] for i in d.series_of.tolist()],
                    timestamps=d.timestamps,  # type: ignore[arg-type]
                    values=d.values,  # type: ignore[arg-type]
                    sources=["x"] * len(d.values),
                )
                svc.accept_batch(batch, time.time(), "remote_write")

        def run_graphite() -> None:
            lines = bodies["graphite"].split(b"\n")
            for lo in range(0, len(lines), 20_000):
                svc.accept_batch(parse_lines(svc.reader, lines[lo : lo + 20_000], "bench", lo), time.time(), "graphite")

        rates, tops = {}, {}
        for key, fn, count in (
            ("points", run_json, bodies["n_json"]),
            ("remote_write", run_rw, bodies["n_rw"]),
            ("graphite", run_graphite, bodies["n_graphite"]),
        ):
            fn()  # registers the names
            began = time.perf_counter()
            fn()
            rates[key] = count / (time.perf_counter() - began)
            prof = cProfile.Profile()
            prof.enable()
            fn()
            prof.disable()
            stats = pstats.Stats(prof)
            top = max(
                ((f, v[2]) for f, v in stats.stats.items() if "cProfile" not in f[0]),  # type: ignore[attr-defined]
                key=lambda fv: fv[1],
            )
            tops[key] = f"{Path(top[0][0]).name}:{top[0][2]}"
        svc.database.dispose()
    return rates, tops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 metrics x 10 steps per source")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--metrics", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()
    n = args.metrics or (10_000 if args.quick else 20_000)
    k = args.steps or (10 if args.quick else 20)
    rng = np.random.default_rng(0)
    now = time.time()
    steps = [float((int(now) // 60 - k - 2 + i) * 60) for i in range(k)]
    first = [float((int(now) // 60 - k - 3) * 60)]  # the pass that registers the names
    bodies = {
        "json": json_bodies(n, steps, rng),
        "rw": rw_bodies(n, steps, rng),
        "graphite": graphite_lines(n, steps, rng),
        "n_json": n * k,
        "n_rw": n * k,
        "n_graphite": n * k,
    }
    out: dict[str, Any] = {"metrics": n, "steps": k, "points_per_source": n * k, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            jh = {"content-type": "application/json"}
            rh = {"content-type": "application/x-protobuf", "content-encoding": "snappy"}
            post_all(server.http, "/api/v1/points", json_bodies(n, first, rng), jh)
            out["points_per_s"] = round(n * k / post_all(server.http, "/api/v1/points", bodies["json"], jh))
            post_all(server.http, "/api/v1/write", rw_bodies(n, first, rng), rh)
            out["remote_write_samples_per_s"] = round(n * k / post_all(server.http, "/api/v1/write", bodies["rw"], rh))
            send_graphite(server, graphite_lines(n, first, rng), n)
            out["graphite_points_per_s"] = round(n * k / send_graphite(server, bodies["graphite"], n * (k + 1)))
        finally:
            server.stop()
    base, tops = in_process(n, bodies)
    for key, http_key in (
        ("points", "points_per_s"),
        ("remote_write", "remote_write_samples_per_s"),
        ("graphite", "graphite_points_per_s"),
    ):
        out[f"{key}_in_process_per_s"] = round(base[key])
        out[f"{key}_http_share"] = round(max(0.0, 1 - out[http_key] / base[key]), 3)
        out[f"{key}_bottleneck"] = tops[key]
    out["target_per_s"] = TARGET
    out["below_target"] = [
        k for k in ("points_per_s", "remote_write_samples_per_s", "graphite_points_per_s") if out[k] < TARGET
    ]
    if args.json:
        print(json.dumps(out))
        return
    width = max(len(k) for k in out)
    for key, v in out.items():
        print(f"{key:<{width}}  {v:,}" if isinstance(v, (int, float)) else f"{key:<{width}}  {v}")


if __name__ == "__main__":
    main()
