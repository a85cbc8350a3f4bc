"""The Graphite plaintext listener: ``path value timestamp`` lines over TCP, as collectd's
``write_graphite`` and StatsD send them.

Off unless ``STORMEYE_GRAPHITE_PORT`` is set. Dotted paths are read by the templates of
``STORMEYE_GRAPHITE_TEMPLATES`` (:mod:`grouping.graphite`); tagged paths (``cpu;host=a``) are read
as such. The plaintext protocol has no answer, so a bad line (a text value, no timestamp, a
path that cannot be a name) is logged with the sender and counted in
``stormeye_points_rejected_total`` and the good lines are kept.

The listener runs its own event loop in a thread: the lines of one read (up to 1 MiB) are
parsed together and stored as one batch, the same path the HTTP points take. It holds at most
``STORMEYE_GRAPHITE_MAX_CONNECTIONS`` connections (more are closed at once, and logged at most every
10 s), closes one idle for ``STORMEYE_GRAPHITE_IDLE_S``, and skips a line longer than 64 KiB up to its
end with one log line and one rejected point.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING

import numpy as np

from stormeye.workers.ingest import PointBatch, PointError, PointReader, parse_timestamp

if TYPE_CHECKING:
    from stormeye.api.app import Service

log = logging.getLogger("stormeye.graphite")
READ_BYTES = 1 << 20
MAX_LINE = 64 * 1024


def parse_lines(reader: PointReader, lines: list[bytes], peer: str, first_line: int) -> PointBatch:
    """A batch from plaintext lines (``reader``: the service's :class:`workers.ingest.PointReader`)."""
    batch = PointBatch()
    paths: list[str] = []
    vals: list[str] = []
    tss: list[str] = []
    where: list[int] = []
    for k, raw in enumerate(lines):
        fields = raw.split()
        if len(fields) == 3:
            try:
                paths.append(fields[0].decode())
            except UnicodeDecodeError:
                batch.reject(f"{peer} line {first_line + k}", "the path is not UTF-8 text")
                continue
            vals.append(fields[1].decode("latin-1"))
            tss.append(fields[2].decode("latin-1"))
            where.append(first_line + k)
        elif fields:
            batch.reject(
                f"{peer} line {first_line + k}",
                f"expected 'path value timestamp', got {len(fields)} field(s)"
                + ("; the timestamp (epoch seconds) is missing" if len(fields) == 2 else ""),
            )
    if not paths:
        return batch
    try:  # the common case: every value and timestamp is a plain number
        v = np.array(vals, dtype=np.float64)
        t = np.array(tss, dtype=np.float64)
        fast = bool(np.isfinite(v).all() and np.isfinite(t).all() and (t >= 0).all() and (t < 1e11).all())
    except ValueError:
        fast = False
    names: dict[str, str] = {}
    for i, path in enumerate(paths):
        w = f"{peer} line {where[i]}"
        name = names.get(path)
        if name is None:
            try:
                name = names[path] = reader.metric(path)
            except PointError as exc:
                batch.reject(w, str(exc))
                continue
        if fast:
            batch.names.append(name)
            batch.timestamps.append(t[i])
            batch.values.append(v[i])
            batch.sources.append(w)
            continue
        try:
            val = float(vals[i])
        except ValueError:
            batch.reject(w, f"value {vals[i]!r} is not a number")
            continue
        if not np.isfinite(val):
            batch.reject(w, f"value {vals[i]!r} is not finite: leave the line out when there is no value", True)
            continue
        try:
            ts = parse_timestamp(tss[i])
        except PointError as exc:
            batch.reject(w, str(exc))
            continue
        batch.names.append(name)
        batch.timestamps.append(ts)
        batch.values.append(val)
        batch.sources.append(w)
    return batch


class GraphiteListener:
    """A TCP server in a thread of its own, handing each read's lines to ``service.accept_batch``."""

    def __init__(
        self, service: Service, host: str, port: int, max_connections: int = 1000, idle_s: float = 300.0
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.idle_s = idle_s
        self.connections = 0
        self.refused = 0  # connections closed because max_connections were held
        self.idle_closed = 0
        self._refusal_logged = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="stormeye-graphite", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Graphite listener did not start within 10 s")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._server is not None:
            loop.call_soon_threadsafe(self._server.close)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
            self.port = self._server.sockets[0].getsockname()[1]
        except OSError as exc:
            self._error = OSError(f"STORMEYE_GRAPHITE_PORT: cannot listen on {self.host}:{self.port}: {exc}")
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        if self.connections >= self.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged >= 10:
                self._refusal_logged = now
                log.warning(
                    "graphite: %d connections held (STORMEYE_GRAPHITE_MAX_CONNECTIONS); closing %s (%d refused so far)",
                    self.connections,
                    peer,
                    self.refused,
                )
            writer.close()
            return
        self.connections += 1
        rest = b""
        line_no = 1
        skipping = False  # inside a line too long to keep: dropped up to its end
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(READ_BYTES), self.idle_s)
                except TimeoutError:
                    self.idle_closed += 1
                    log.info("graphite: %s sent nothing for %.0f s; closing it", peer, self.idle_s)
                    break
                if not chunk:
                    break
                data = rest + chunk
                if skipping:
                    end = data.find(b"\n")
                    if end < 0:
                        rest = b""
                        continue
                    data, skipping = data[end + 1 :], False
                    line_no += 1
                cut = data.rfind(b"\n")
                rest = data[cut + 1 :] if cut >= 0 else data
                if len(rest) > MAX_LINE:
                    self._count_bad(
                        peer,
                        line_no + (data[: cut + 1].count(b"\n") if cut >= 0 else 0),
                        "a line longer than 64 KiB: skipped up to its end",
                    )
                    rest, skipping = b"", True
                if cut < 0:
                    continue
                lines = data[:cut].split(b"\n")
                await asyncio.to_thread(self._store, lines, peer, line_no)
                line_no += len(lines)
            if rest.strip() and not skipping:
                await asyncio.to_thread(self._store, [rest], peer, line_no)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.connections -= 1
            writer.close()

    def _store(self, lines: list[bytes], peer: str, first_line: int) -> None:
        svc = self.service
        batch = parse_lines(svc.reader, lines, peer, first_line)
        try:
            result = svc.accept_batch(batch, time.time(), "graphite")
        except Exception as exc:  # Redis down (distributed): the sender cannot be told; say it here
            log.error("graphite: %d points from %s not stored: %s", len(batch), peer, exc)
            return
        if result["rejected"]:
            first = result["errors"][0] if result["errors"] else {"where": peer, "error": "?"}
            log.warning(
                "graphite: %d line(s) from %s rejected, first: %s: %s",
                result["rejected"],
                peer,
                first["where"],
                first["error"],
            )

    def _count_bad(self, peer: str, line: int, what: str) -> None:
        log.warning("graphite: %s line %d: %s", peer, line, what)
        for hook in self.service.intake_hooks:
            hook("graphite", 0, {"invalid": 1})
