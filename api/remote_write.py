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

import cramjam
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from grouping.names import MetricNameError, canonical, parse

STALE_NAN_BITS = 0x7FF0000000000002
_CACHE_MAX = 2_000_000


class RemoteWriteError(ValueError):
    """The body is not a remote-write request; the message says what is wrong."""


def _message_types() -> type:
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
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("prometheus.WriteRequest"))


WriteRequest = _message_types()


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
    """Decodes requests into columns, remembering the canonical name of every label set seen."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, ...], str] = {}

    def name(self, labels: list[str]) -> str:
        key = tuple(labels)
        got = self._names.get(key)
        if got is None:
            props = dict(zip(labels[::2], labels[1::2]))
            if "__name__" not in props:
                raise MetricNameError("the series has no __name__ label")
            got = canonical(parse(props))
            if len(self._names) < _CACHE_MAX:
                self._names[key] = got
        return got

    def decode(self, raw: bytes) -> Decoded:
        req = WriteRequest()
        try:
            req.ParseFromString(raw)
        except DecodeError as exc:
            raise RemoteWriteError(
                f"the body is not a protobuf WriteRequest ({exc}); send Prometheus remote write 1.0"
            ) from None
        out = Decoded()
        names: list[str] = []
        counts: list[int] = []
        tss: list[int] = []
        vals_l: list[float] = []
        for i, series in enumerate(req.timeseries):
            samples = series.samples
            if not len(samples):
                continue
            labels = [x for lab in series.labels for x in (lab.name, lab.value)]
            try:
                name = self.name(labels)
            except MetricNameError as exc:
                out.rejected += len(samples)
                if len(out.errors) < 1000:
                    out.errors.append((f"timeseries[{i}]", f"labels: {exc}"))
                continue
            names.append(name)
            out.series_index.append(i)
            counts.append(len(samples))
            for s in samples:
                tss.append(s.timestamp)
                vals_l.append(s.value)
        if not names:
            return out
        ts = np.array(tss, dtype=np.float64) / 1000.0
        vals = np.array(vals_l, dtype=np.float64)
        series_of = np.repeat(np.arange(len(names)), counts)
        finite = np.isfinite(vals)
        if not finite.all():
            stale = vals.view(np.uint64) == np.uint64(STALE_NAN_BITS)
            out.stale = int(stale.sum())
            out.not_finite = int((~finite).sum()) - out.stale
            ts, vals, series_of = ts[finite], vals[finite], series_of[finite]
        out.names = names
        out.timestamps, out.values, out.series_of = ts, vals, series_of
        return out
