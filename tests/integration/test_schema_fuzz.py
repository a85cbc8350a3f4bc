"""Schemathesis against the OpenAPI schema: no input the schema allows makes the server fail (5xx).

Bounded: a few dozen examples per operation, so it stays a few seconds in CI.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cramjam
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from stormeye.api.app import create_app
from stormeye.workers.settings import Settings

# remote write bodies: raw bytes, and snappy-compressed random bytes (which reach the protobuf parser)
schemathesis.openapi.media_type(
    "application/x-protobuf",
    st.one_of(st.binary(max_size=256), st.binary(max_size=256).map(lambda b: bytes(cramjam.snappy.compress_raw(b)))),
)
_DB = Path(tempfile.mkdtemp(prefix="stormeye-fuzz-")) / "stormeye.db"
app = create_app(Settings(database_url=f"sqlite:///{_DB}", step_s=60), start_ticker=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])
