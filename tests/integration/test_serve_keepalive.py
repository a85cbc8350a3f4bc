"""`stormeye serve` keeps idle connections longer than senders do (issue 34.4).

Prometheus' remote write was reset 26 times in 43 minutes ("broken pipe", "connection reset by
peer"): uvicorn closed idle connections after its default 5 s while Prometheus, which keeps them
for 5 minutes, sent its next batch into them. The test holds one real connection to the real
command idle past those 5 s and sends again on it.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from peers import Stormeye


def test_an_idle_connection_outlives_uvicorns_default(tmp_path: Path) -> None:
    se = Stormeye(tmp_path, {}, token=None)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", se.port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() and conn.sock is not None
        sock = conn.sock
        time.sleep(7)  # idle longer than uvicorn's default keep-alive (5 s)
        conn.request("GET", "/healthz")  # on the same socket: http.client reconnects only when it has none
        assert conn.sock is sock
        response = conn.getresponse()  # RemoteDisconnected when the server closed the idle connection
        assert response.status == 200
        conn.close()
    finally:
        se.stop()
