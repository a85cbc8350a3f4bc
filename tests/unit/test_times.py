"""core/times.py: one reader of times, and what each edge (points, alerts, the CLI) adds to it."""

from __future__ import annotations

import pytest
import typer

from stormeye.api.cli_notify import _when
from stormeye.core.errors import BadInput
from stormeye.core.times import BadTime, parse_time, seconds_from
from stormeye.workers.alerts import AlertError
from stormeye.workers.alerts import parse_time as alert_time
from stormeye.workers.ingest import PointError, parse_timestamp

T = 1767607200.0  # 2026-01-05T10:00:00Z


@pytest.mark.parametrize(
    "raw", [T, int(T), str(T), "2026-01-05T10:00:00Z", "2026-01-05T10:00:00+00:00", "2026-01-05T11:00:00+01:00"]
)
def test_every_form_reads_the_same_time(raw: object) -> None:
    assert parse_time(raw) == T and parse_timestamp(raw) == T and alert_time(raw, "startsAt") == T


def test_naive_text_is_utc_and_nanoseconds_are_cut_to_microseconds() -> None:
    assert parse_time("2026-01-05T10:00:00") == T
    assert parse_time("2026-01-05T10:00:00.123456789Z") == T + 0.123456


def test_milliseconds_are_the_edges_choice() -> None:
    assert seconds_from(T * 1000) == T and seconds_from(T) == T
    assert parse_time(T * 1000) == T * 1000  # the CLI's --start takes seconds as given
    assert parse_timestamp(T * 1000) == T and alert_time(T * 1000, "endsAt") == T


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (None, "must be epoch seconds or ISO 8601 text, got None"),
        (True, "got True"),
        ([1], "must be a number or text, got list"),
        ("soon", "is neither epoch seconds nor ISO 8601 time (e.g. 2026-01-05T10:00:00Z)"),
        ("nan", "is not finite"),
    ],
)
def test_what_cannot_be_read_says_how_to_write_it(raw: object, says: str) -> None:
    with pytest.raises(BadTime, match=says.replace("(", r"\(").replace(")", r"\)")) as exc:
        parse_time(raw, "startsAt")
    assert isinstance(exc.value, BadInput) and str(exc.value).startswith("startsAt")
    with pytest.raises(PointError, match="timestamp"):
        parse_timestamp(raw)


def test_each_edge_keeps_its_own_rules() -> None:
    assert alert_time("0001-01-01T00:00:00Z", "endsAt") is None and alert_time("", "endsAt") is None
    with pytest.raises(AlertError, match="endsAt 'soon' is neither epoch seconds nor RFC 3339 time"):
        alert_time("soon", "endsAt")
    with pytest.raises(PointError, match="too large"):
        parse_timestamp(1e16)
    with pytest.raises(PointError, match="before 1970"):
        parse_timestamp(-5)
    assert _when(None, 7.0) == 7.0 and _when("2026-01-05T10:00:00Z", 0.0) == T
    with pytest.raises(typer.Exit):
        _when("soon", 0.0)
