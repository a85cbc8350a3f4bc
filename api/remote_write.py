"""Prometheus remote write, protocol 1.0: a snappy-compressed protobuf ``WriteRequest``.

The message types are Prometheus' ``prompb`` ones (``types.proto``/``remote.proto``), declared
here as a descriptor instead of generated code: only the fields stormeye reads are named
(series labels and float samples); metadata, exemplars and native histograms are skipped by
the protobuf parser as unknown fields.

Series labels become the metric name ``__name__{labels}`` in canonical form. Prometheus marks
the end of a series with a stale marker (a NaN with the bit pattern ``0x7ff0000000000002``):
it is counted, never stored. Any other NaN or infinity is not a value either: it is counted
as such and left out, as ``docs/ingest.md`` says of every source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cramjam
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from stormeye.core.errors import BadInput
from stormeye.core.labels import DEFAULT_LIMITS, ControlCharacterError, LabelLimits
from stormeye.grouping.names import MetricNameError, canonical, parse

STALE_NAN_BITS = 0x7FF0000000000002
_CACHE_MAX = 2_000_000


class RemoteWriteError(BadInput):
    """The body is not a remote-write request; the message says what is wrong."""


def _message_types() -> tuple[type, type, type]:
    fd = descriptor_pb2.FileDescriptorProto(name="stormeye_prompb.proto", package="prometheus", syntax="proto3")
    f = descriptor_pb2.FieldDescriptorProto
    rep, opt = f.LABEL_REPEATED, f.LABEL_OPTIONAL

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, label, ftype, type_name in fields:
            fld = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                fld.type_name = type_name

    message("Label", [("name", 1, opt, f.TYPE_STRING, None), ("value", 2, opt, f.TYPE_STRING, None)])
    message("Sample", [("value", 1, opt, f.TYPE_DOUBLE, None), ("timestamp", 2, opt, f.TYPE_INT64, None)])
    message(
        "TimeSeries",
        [
            ("labels", 1, rep, f.TYPE_MESSAGE, ".prometheus.Label"),
            ("samples", 2, rep, f.TYPE_MESSAGE, ".prometheus.Sample"),
        ],
    )
    message("WriteRequest", [("timeseries", 1, rep, f.TYPE_MESSAGE, ".prometheus.TimeSeries")])
    # the same request with each series left as its bytes (the wire format of an embedded message
    # and of bytes is the same): see RemoteWriteDecoder
    message("WireWriteRequest", [("timeseries", 1, rep, f.TYPE_BYTES, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)

    def cls(name: str) -> type:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))

    return cls("WriteRequest"), cls("TimeSeries"), cls("WireWriteRequest")


#: Prometheus' ``WriteRequest`` and ``TimeSeries`` messages (senders in tests and benches use them too)
WriteRequest, TimeSeries, _WireWriteRequest = _message_types()

# A series with one sample, as Prometheus encodes it: its labels, then the sample field
# (0x12, length, then 0x09 + 8-byte double and 0x10 + varint milliseconds; a 0.0 value is left out).
# Milliseconds since 1970 take 6 varint bytes until the year 2109.
_TAIL_FULL = 18  # 0x12 0x10 | 0x09 <8 bytes> 0x10 <6 bytes>
_TAIL_ZERO = 9  # 0x12 0x07 | 0x10 <6 bytes>


def snappy_length(body: bytes) -> int:
    """The uncompressed length a snappy block announces (its leading varint), read before decompressing."""
    n = shift = 0
    for i, b in enumerate(body[:10]):
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n
        shift += 7
        if i == 4:
            break
    raise RemoteWriteError("the body is not snappy-compressed (block format): its length header is unreadable")


def decompress(body: bytes, limit: int) -> bytes:
    """The protobuf bytes of a remote-write body; refuses bodies that would grow beyond ``limit``."""
    if not body:
        raise RemoteWriteError("the body is empty: send a snappy-compressed protobuf WriteRequest")
    size = snappy_length(body)
    if size > limit:
        raise RemoteWriteTooLarge(
            f"the request decompresses to {size} bytes, more than STORMEYE_MAX_BODY_BYTES={limit}: "
            "lower max_samples_per_send in Prometheus' queue_config"
        )
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except Exception as exc:  # cramjam raises its own DecompressionError
        raise RemoteWriteError(
            f"the body is not valid snappy block-format data ({exc}); remote write 1.0 sends "
            "Content-Encoding: snappy with Content-Type: application/x-protobuf"
        ) from None


class RemoteWriteTooLarge(RemoteWriteError):
    http_status = 413

    """The decompressed request is larger than the limit."""


@dataclass
class Decoded:
    """Samples of one request as columns, and what was left out."""

    names: list[str] = field(default_factory=list)
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    series_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # each sample's entry in names
    series_index: list[int] = field(default_factory=list)  # each name's position in the request
    stale: int = 0
    not_finite: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    rejected: int = 0


class RemoteWriteDecoder:
    """Decodes requests into columns, remembering the canonical name of every label set seen.

    Most series of a live Prometheus carry one sample; their bytes are the label bytes (the same
    every time) followed by the sample. Those label bytes are the key of the cached name, so a
    known series costs a dictionary lookup, and its sample is read with the others in one numpy
    pass. A series seen for the first time, or encoded otherwise (several samples, another field
    order), is decoded as a protobuf message.
    """

    def __init__(self, limits: LabelLimits = DEFAULT_LIMITS) -> None:
        self._names: dict[bytes, str] = {}
        self.limits = limits

    def _full(self, raw: bytes) -> tuple[str, list[tuple[int, float]]]:
        """Name and samples of one series, decoded as a message; learns its label bytes when it has one sample."""
        ts = TimeSeries()
        try:
            ts.ParseFromString(raw)
        except DecodeError as exc:
            raise MetricNameError(f"the series is not a protobuf TimeSeries ({exc})") from None
        self.limits.check_labels(len(ts.labels))  # before any work per label: 100,000 of them cost seconds
        props = {lab.name: lab.value for lab in ts.labels}
        if "__name__" not in props:
            raise MetricNameError("the series has no __name__ label")
        name = canonical(parse(props, limits=self.limits))
        samples = [(s.timestamp, s.value) for s in ts.samples]
        if len(samples) == 1 and len(self._names) < _CACHE_MAX:
            for tail in (_TAIL_FULL, _TAIL_ZERO):
                head = raw[:-tail]
                if len(raw) > tail and raw[-tail] == 0x12 and raw[-tail + 1] == tail - 2 and _labels_only(head, ts):
                    self._names[head] = name
                    break
        return name, samples

    def decode(self, raw: bytes) -> Decoded:
        req = _WireWriteRequest()
        try:
            req.ParseFromString(raw)
        except DecodeError as exc:
            raise RemoteWriteError(
                f"the body is not a protobuf WriteRequest ({exc}); send Prometheus remote write 1.0"
            ) from None
        series = list(req.timeseries)
        out = Decoded()
        cache = self._names
        fast_name: list[str] = []
        fast_idx: list[int] = []
        tails: list[bytes] = []
        slow: list[int] = []
        zero_pad = b"\x09" + bytes(8)
        for i, s in enumerate(series):
            n = len(s)
            if n > _TAIL_FULL and s[-_TAIL_FULL] == 0x12 and s[-_TAIL_FULL + 1] == 16:
                name = cache.get(s[:-_TAIL_FULL])
                tail = s[-16:]
            elif n > _TAIL_ZERO and s[-_TAIL_ZERO] == 0x12 and s[-_TAIL_ZERO + 1] == 7:
                name = cache.get(s[:-_TAIL_ZERO])
                tail = zero_pad + s[-7:]
            else:
                name = None
            if name is None:
                slow.append(i)
            else:
                fast_name.append(name)
                fast_idx.append(i)
                tails.append(tail)
        ts_parts: list[np.ndarray] = []
        val_parts: list[np.ndarray] = []
        names: list[str] = []
        series_index: list[int] = []
        counts: list[int] = []
        if tails:
            a = np.frombuffer(b"".join(tails), dtype=np.uint8).reshape(-1, 16)
            ok = (a[:, 0] == 0x09) & (a[:, 9] == 0x10) & (a[:, 10:15] >= 0x80).all(axis=1) & (a[:, 15] < 0x80)
            if not ok.all():
                bad = np.flatnonzero(~ok)
                slow = sorted(slow + [fast_idx[k] for k in bad.tolist()])
                a = a[ok]
                keep = np.flatnonzero(ok).tolist()
                fast_name = [fast_name[k] for k in keep]
                fast_idx = [fast_idx[k] for k in keep]
            val_parts.append(np.ascontiguousarray(a[:, 1:9]).view("<f8").ravel().astype(np.float64))
            ms = np.zeros(len(a), dtype=np.uint64)
            for k in range(6):
                ms |= (a[:, 10 + k].astype(np.uint64) & np.uint64(0x7F)) << np.uint64(7 * k)
            ts_parts.append(ms.astype(np.float64))
            names += fast_name
            series_index += fast_idx
            counts += [1] * len(fast_name)
        for i in slow:
            try:
                name, samples = self._full(series[i])
            except ControlCharacterError as exc:  # refused as a whole, as the JSON routes do
                raise RemoteWriteError(f"timeseries[{i}]: labels: {exc}") from None
            except MetricNameError as exc:
                out.rejected += 1
                if len(out.errors) < 1000:
                    out.errors.append((f"timeseries[{i}]", f"labels: {exc}"))
                continue
            if not samples:
                continue
            names.append(name)
            series_index.append(i)
            counts.append(len(samples))
            ts_parts.append(np.array([t for t, _ in samples], dtype=np.float64))
            val_parts.append(np.array([v for _, v in samples], dtype=np.float64))
        if not names:
            return out
        ts = np.concatenate(ts_parts) / 1000.0
        vals = np.concatenate(val_parts)
        series_of = np.repeat(np.arange(len(names)), counts)
        finite = np.isfinite(vals)
        if not finite.all():
            stale = vals.view(np.uint64) == np.uint64(STALE_NAN_BITS)
            out.stale = int(stale.sum())
            out.not_finite = int((~finite).sum()) - out.stale
            ts, vals, series_of = ts[finite], vals[finite], series_of[finite]
        out.names, out.series_index = names, series_index
        out.timestamps, out.values, out.series_of = ts, vals, series_of
        return out


def _labels_only(head: bytes, full: Any) -> bool:
    """Whether ``head`` is the series' labels and nothing else (so it can stand for them)."""
    ts = TimeSeries()
    try:
        ts.ParseFromString(head)
    except DecodeError:
        return False
    return not len(ts.samples) and list(ts.labels) == list(full.labels)
