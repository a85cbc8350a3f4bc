"""The edge readers: remote write decoding (fast path = message path), JSON columns, alerts."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stormeye.api.remote_write import STALE_NAN_BITS, RemoteWriteDecoder, WriteRequest
from stormeye.workers.alerts import AlertBook, parse_time, read_alertmanager
from stormeye.workers.ingest import PointBatch, PointReader

STALE = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])

values = st.one_of(
    st.just(0.0), st.just(STALE), st.just(math.nan), st.floats(allow_nan=False, width=64), st.integers(-5, 5)
)
# label values hold no C0 control character but tab: a request with one is refused as a whole (issue 31)
label_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(32) if c != 9]),
    min_size=1,
    max_size=5,
)
series_st = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(["job", "instance", "le", "x"]), label_text, max_size=3),
        st.lists(st.tuples(st.integers(0, 2**45), values), max_size=3),
    ),
    max_size=8,
)


def encode(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    req = WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for k, v in {"__name__": "m", **labels}.items():
            lab = ts.labels.add()
            lab.name, lab.value = k, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, float(v)
    return req.SerializeToString()


def as_set(d: object) -> list[tuple[str, float, str]]:
    names = [d.names[i] for i in d.series_of.tolist()]  # type: ignore[attr-defined]
    return sorted(zip(names, d.timestamps.tolist(), [repr(v) for v in d.values.tolist()]))  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(series_st)
def test_remote_write_fast_path_reads_what_the_message_says(series: list) -> None:
    raw = encode(series)
    dec = RemoteWriteDecoder()
    first = dec.decode(raw)  # learns the label bytes of one-sample series
    again = dec.decode(raw)  # known series take the fast path
    assert as_set(first) == as_set(again)
    assert (first.stale, first.not_finite) == (again.stale, again.not_finite)
    want = sorted((t / 1000.0, repr(float(v))) for _, samples in series for t, v in samples if math.isfinite(v))
    assert sorted((t, v) for _, t, v in as_set(again)) == want
    assert again.stale == sum(1 for _, s in series for _, v in s if np.float64(v).view(np.uint64) == STALE_NAN_BITS)


def test_json_columns_match_the_per_record_path() -> None:
    recs = [{"metric": f'cpu{{host="h{i}"}}', "timestamp": 1_767_225_600_000 + i, "value": i} for i in range(50)]
    a, b = PointBatch(), PointBatch()
    PointReader().add_records(a, recs)
    for i, r in enumerate(recs):
        PointReader().add_record(b, f"points[{i}]", r)
    assert a.names == b.names and a.sources[3] == b.sources[3] == "points[3]"
    for x, y in zip(a.arrays()[1:], b.arrays()[1:]):
        assert np.array_equal(x, y)
    # one odd record sends the whole list through the per-record path: same answer
    odd = [*recs[:3], {"metric": "cpu", "timestamp": 1, "value": True}]
    c = PointBatch()
    PointReader().add_records(c, odd)
    assert len(c) == 3 and c.rejected == 1 and c.errors[0].where == "points[3]"


def test_alert_times_and_episodes() -> None:
    assert parse_time("0001-01-01T00:00:00Z", "endsAt") is None
    assert parse_time("2026-01-05T10:00:00.123456789Z", "startsAt") == 1767607200.123456
    alerts, bad = read_alertmanager(
        {
            "version": "4",
            "commonLabels": {"team": "pay"},
            "alerts": [{"status": "firing", "labels": {"alertname": "Down"}, "startsAt": "2026-01-05T10:00:00Z"}],
        }
    )
    assert not bad and alerts[0].labels == {"team": "pay", "alertname": "Down"}
    book = AlertBook(60)
    book.receive(alerts)
    (a,) = book.changed(1767607200 + 300)
    assert a.open and a.end == 1767607200 + 300 and a.metric == 'Down{team="pay"}'
    assert list(book.window(a.metric, 1767607200 + 120, 4)) == [0.0, 1.0, 1.0, 1.0]
    alerts[0].resolved, alerts[0].ends_at = True, 1767607200 + 400
    book.receive(alerts)
    (a,) = book.changed(1767607200 + 600)
    assert not a.open and a.end == 1767607200 + 400
    assert book.changed(1767607200 + 660) == []
    # fires again later: a new anomaly
    again, _ = read_alertmanager(
        {
            "version": "4",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "Down", "team": "pay"}, "startsAt": "2026-01-05T11:00:00Z"}
            ],
        }
    )
    assert book.receive(again).new == 1
    state = book.to_state()
    other = AlertBook(60)
    other.load_state(state)
    assert [x.start for x in other.changed(1767607200 + 3700)] == [1767607200 + 3600]
