import io

import numpy as np
import pytest

from stormeye.workers.ingest import PointError, infer_step, parse_timestamp, parse_value, read_csv, read_jsonl

GOOD_CSV = """metric,timestamp,value
"cpu{host=""a"",region=""eu""}",1700000000,1.5
cpu{host="b"},1700000060,2
"""


def test_csv_with_quoted_names_and_header() -> None:
    b = read_csv(io.StringIO(GOOD_CSV))
    assert b.names == ['cpu{host="a",region="eu"}', 'cpu{host="b"}'] and b.values == [1.5, 2.0]
    assert not b.errors


def test_csv_bad_rows_are_rejected_with_reasons_and_good_rows_kept() -> None:
    text = "\n".join(
        [
            "metric,timestamp,value",
            "cpu,1700000000,1",
            "cpu,1700000060,NaN",
            "cpu,1700000120,inf",
            "cpu,1700000180,abc",
            "cpu,yesterday,1",
            'cpu{host="a",region="eu"},1700000240,1',  # unquoted commas
            "cpu{host=a},1700000300,1",
            "cpu,1700000360",
            "mem,2026-01-05T10:00:00Z,4",
        ]
    )
    b = read_csv(io.StringIO(text))
    assert b.names == ["cpu", "mem"] and b.timestamps[1] == 1767607200.0
    msgs = {e.where: e.message for e in b.errors}
    assert b.rejected == 7
    assert "not finite" in msgs["line 3"] and "not finite" in msgs["line 4"]
    assert "not a number" in msgs["line 5"]
    assert "ISO 8601" in msgs["line 6"]
    assert "quote metric names" in msgs["line 7"]
    assert "double quotes" in msgs["line 8"]
    assert "expected 3 fields" in msgs["line 9"]


def test_csv_header_in_another_order_and_no_header() -> None:
    b = read_csv(io.StringIO("value,metric,time\n3,cpu,1700000000\n"))
    assert (b.names, b.values) == (["cpu"], [3.0])
    b = read_csv(io.StringIO("cpu,1700000000,3\n"))
    assert b.names == ["cpu"]
    b = read_csv(io.StringIO("value,timestamp,nothing\n1,2,3\n"))
    assert "no column named 'metric'" in b.errors[0].message


def test_jsonl_forms_and_errors() -> None:
    lines = [
        '{"metric": "cpu{host=\\"a\\"}", "timestamp": 1700000000, "value": 1}',
        '{"metric": {"__name__": "cpu", "host": "b"}, "timestamp": 1700000000000, "value": "2.5"}',
        '{"name": "mem", "labels": {"host": "c"}, "time": "2026-01-05T00:00:00+00:00", "value": 3}',
        '{"metric": "cpu", "value": 1}',
        '{"metric": "cpu", "timestamp": 1700000000, "value": null}',
        "not json",
        '[{"metric": "x", "timestamp": 1, "value": 1}, 5]',
        "",
    ]
    b = read_jsonl(lines)
    assert b.names == ['cpu{host="a"}', 'cpu{host="b"}', 'mem{host="c"}', "x"]
    assert b.timestamps[1] == 1700000000.0  # milliseconds recognised
    msgs = [str(e) for e in b.errors]
    assert any("line 4" in m and "missing field(s) timestamp" in m for m in msgs)
    assert any("line 5" in m and "must be a number" in m for m in msgs)
    assert any("line 6" in m and "not valid JSON" in m for m in msgs)
    assert any("line 7[1]" in m and "JSON object" in m for m in msgs)


@pytest.mark.parametrize("raw", [True, None, float("nan"), "1e400", -5, 1e16, [1]])
def test_timestamp_refusals(raw: object) -> None:
    with pytest.raises(PointError):
        parse_timestamp(raw)


@pytest.mark.parametrize("raw", [True, None, "nan", "-inf", "", {}])
def test_value_refusals(raw: object) -> None:
    with pytest.raises(PointError):
        parse_value(raw)


def test_step_inference() -> None:
    names = ["a"] * 5 + ["b"] * 5
    ts = np.concatenate([np.arange(5) * 300.0, np.arange(5) * 300.0 + 7])
    assert infer_step(names, ts) == 300
    assert infer_step(["a"], np.array([1.0])) == 60


def test_graphite_templates_from_settings_name_the_nodes() -> None:
    from stormeye.grouping.names import parse
    from stormeye.workers.ingest import PointReader
    from stormeye.workers.settings import Settings

    settings = Settings(graphite_templates=["region.host.measurement*"])
    name = PointReader(settings.graphite).metric("eu.web-1.cpu.load")
    assert parse(name) == {"__name__": "cpu.load", "region": "eu", "host": "web-1"}
    with pytest.raises(ValueError, match="STORMEYE_GRAPHITE_TEMPLATES"):
        Settings(graphite_templates=["a b c d"])
