"""Alerts that other systems fired, as anomalies the tick groups with the metric anomalies.

An alert (from Alertmanager's webhook, payload version 4, or any JSON through a field
mapping) is a labelled span: its labels become the properties of a metric name (``alertname``
is the name, the other labels its properties), ``startsAt`` its start, ``endsAt`` its end —
Alertmanager sends ``0001-01-01T00:00:00Z`` while an alert still fires — and ``status:
resolved`` ends it. Its score is 1: the sender's rule already decided it is anomalous.

Repeats of one alert (Alertmanager resends every ``repeat_interval``, and one outage arrives
in many of its groups) are one anomaly: alerts are identified by a fingerprint of their labels
(``STORMEYE_ALERT_FINGERPRINT_IGNORE`` leaves labels such as ``replica`` out) and counted.
An alert that resolved and fires again within ``FLAP_S`` (15 minutes) flaps: it stays one
anomaly, open again (its ``flaps`` counted); one firing again later is a new anomaly.

:class:`AlertBook` holds them between ticks; each tick takes :meth:`AlertBook.changed` — the
alerts that arrived, still fire (their end moves to the tick) or resolved since the last tick —
and the pipeline groups them with the detector's anomalies. Without a window of its own an
alert's shape is its firing indicator (0 before its start, 1 while it fires), so alerts of one
outage that start a few steps apart still correlate.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stormeye.core.errors import BadInput
from stormeye.core.labels import ControlCharacterError, LabelLimits, check_text
from stormeye.core.times import BadTime, seconds_from
from stormeye.core.times import parse_time as read_time
from stormeye.detectors.events import Anomaly
from stormeye.grouping.names import NAME_KEY, MetricNameError, canonical, parse

if TYPE_CHECKING:
    from stormeye.workers.distributed import Runtime

#: the zero time Go (and so Alertmanager) writes for "no end yet": year 1
_GO_ZERO = "0001-"
ALERT_SCORE = 1.0
#: an alert that fires again at most this long after it resolved flaps: it stays one anomaly
FLAP_S = 900.0
MAX_ALERTS_PER_REQUEST = 10_000


class AlertError(BadInput):
    """One alert is unusable; the message says what to send instead."""


class UnsafeAlert(AlertError):
    """An alert's label or annotation holds a control character: the whole request is refused (400)."""


#: annotations are prose: newlines and tabs are fine there, other control characters (NUL) are not
_PROSE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass
class Alert:
    """One alert as a sender described it (times in UTC epoch seconds; ``ends_at`` None: still firing)."""

    labels: dict[str, str]
    starts_at: float
    ends_at: float | None
    resolved: bool
    source: str
    annotations: dict[str, str] = field(default_factory=dict)
    where: str = ""  # its place in the request, for error messages

    def metric(self, ignore: Iterable[str] = (), limits: LabelLimits | None = None) -> str:
        """The metric name of the alert: ``alertname`` is the name, the other labels (but ``ignore``) its properties."""
        skip = {"alertname", *ignore}
        props = {k: v for k, v in self.labels.items() if k not in skip}
        name = self.labels.get("alertname") or self.labels.get(NAME_KEY) or "alert"
        props[NAME_KEY] = name
        try:
            return canonical(parse(props, limits=limits))
        except MetricNameError as exc:
            raise AlertError(f"labels: {exc}") from None

    def fingerprint(self, ignore: Iterable[str] = ()) -> str:
        skip = set(ignore)
        text = "\x00".join(f"{k}\x01{v}" for k, v in sorted(self.labels.items()) if k not in skip)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


#: the alertname of stormeye's own alert (workers/notify: the ``alertmanager`` receiver and the
#: webhook body). When a team routes that alert back into stormeye (its Alertmanager sends every
#: alert to stormeye's webhook, and stormeye's receiver posts incidents to that Alertmanager), it
#: would become a member of its own incident and keep it open for ever: such alerts are skipped.
OWN_ALERTNAME = "StormeyeIncident"


def is_own(alert: Alert) -> bool:
    """An alert stormeye sent itself (about one of its incidents), come back through a loop."""
    return alert.labels.get("alertname") == OWN_ALERTNAME


def parse_time(raw: Any, what: str) -> float | None:
    """RFC 3339 / ISO 8601 text or epoch seconds (``core.times``); Go's zero time (year 1) and empty mean "none"."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str) and raw.strip().startswith(_GO_ZERO):
        return None
    try:
        t = seconds_from(read_time(raw, what, "RFC 3339"))
    except BadTime as exc:
        raise AlertError(str(exc)) from None
    if t < 0:
        raise AlertError(f"{what} {raw!r} is not a time: it is before 1970")
    return t


def _labels(raw: Any, what: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AlertError(f"{what} must be an object of label names to values, got {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise AlertError(f"{what}.{k} must be text, got {type(v).__name__}")
        out[str(k)] = str(v)
    for k, v in out.items():
        _check_text(k, f"a name in {what}", what == "annotations")
        _check_text(v, f"{what}.{k}", what == "annotations")
    return out


def _check_text(text: str, what: str, prose: bool) -> None:
    """:class:`UnsafeAlert` when ``text`` holds a control character (in prose, newlines and tabs are fine)."""
    try:
        check_text(text, what)
    except ControlCharacterError as exc:
        if not prose or _PROSE_CONTROL.search(text):
            raise UnsafeAlert(str(exc)) from None


def _alert(
    labels: dict[str, str], starts: float | None, ends: float | None, status: Any, annotations: Any, source: str
) -> Alert:
    if not labels:
        raise AlertError("an alert needs labels (alertname and what it is about)")
    if starts is None:
        raise AlertError("startsAt is missing: give the time the alert started (RFC 3339)")
    if status not in (None, "firing", "resolved"):
        raise AlertError(f"status must be 'firing' or 'resolved', got {status!r}")
    resolved = status == "resolved"
    if ends is not None and ends < starts:
        raise AlertError("endsAt is before startsAt")
    return Alert(labels, starts, ends, resolved, source, _labels(annotations, "annotations"))


def read_alertmanager(body: Any) -> tuple[list[Alert], list[tuple[str, str]]]:
    """Alerts of an Alertmanager webhook body (version 4); bad alerts as (where, what to fix)."""
    if not isinstance(body, Mapping):
        raise AlertError("the body must be Alertmanager's webhook JSON object (version 4)")
    version = body.get("version")
    if version == "1" and "orgId" in body:
        return read_grafana(body)  # Grafana's webhook contact point, pointed at this path
    if version != "4":
        raise AlertError(
            f'webhook payload version {version!r} is not supported: stormeye reads Alertmanager\'s version "4"'
            ' (and Grafana\'s webhook contact point, version "1", on /api/v1/alerts/grafana)'
        )
    return _read_webhook(body, "alertmanager")


def read_grafana(body: Any) -> tuple[list[Alert], list[tuple[str, str]]]:
    """Alerts of Grafana alerting's webhook contact point body (``version: "1"``: Alertmanager's
    webhook fields plus ``orgId``, ``title``, ``state``, ``message`` and per alert ``values``,
    ``dashboardURL``, ...); bad alerts as (where, what to fix)."""
    if not isinstance(body, Mapping):
        raise AlertError("the body must be Grafana's webhook contact point JSON object")
    if str(body.get("version", "1")) != "1":
        raise AlertError(f'Grafana webhook version {body.get("version")!r} is not supported: stormeye reads "1"')
    return _read_webhook(body, "grafana")


def _read_webhook(body: Mapping[str, Any], source: str) -> tuple[list[Alert], list[tuple[str, str]]]:
    alerts = body.get("alerts")
    if not isinstance(alerts, list):
        raise AlertError("the webhook body has no 'alerts' list")
    if len(alerts) > MAX_ALERTS_PER_REQUEST:
        raise AlertError(f"{len(alerts)} alerts in one request; send at most {MAX_ALERTS_PER_REQUEST}")
    common = _labels(body.get("commonLabels"), "commonLabels")
    out: list[Alert] = []
    bad: list[tuple[str, str]] = []
    for i, a in enumerate(alerts):
        where = f"alerts[{i}]"
        try:
            if not isinstance(a, Mapping):
                raise AlertError(f"an alert must be an object, got {type(a).__name__}")
            labels = {**common, **_labels(a.get("labels"), "labels")}
            starts = parse_time(a.get("startsAt"), "startsAt")
            ends = parse_time(a.get("endsAt"), "endsAt")
            out.append(_alert(labels, starts, ends, a.get("status"), a.get("annotations"), source))
            out[-1].where = where
        except UnsafeAlert as exc:  # a control character refuses the whole request (400), as the other paths
            raise UnsafeAlert(f"{where}: {exc}") from None
        except AlertError as exc:
            bad.append((where, str(exc)))
    return out, bad


def read_postable(body: Any, now: float) -> tuple[list[Alert], list[tuple[str, str]]]:
    """Alerts of Alertmanager's API v2 ``POST /api/v2/alerts`` (what Prometheus and Grafana push to
    an Alertmanager): a JSON list of postableAlerts ``{labels, annotations, startsAt, endsAt,
    generatorURL}``. There is no status: an alert whose ``endsAt`` has passed is resolved, one
    whose ``endsAt`` lies ahead still fires (Prometheus sets it a few resends ahead and sends the
    alert again before then); a missing ``startsAt`` is now, as Alertmanager takes it."""
    if not isinstance(body, list):
        raise AlertError("send a JSON list of alerts (Alertmanager API v2 postableAlerts), as Prometheus does")
    if len(body) > MAX_ALERTS_PER_REQUEST:
        raise AlertError(f"{len(body)} alerts in one request; send at most {MAX_ALERTS_PER_REQUEST}")
    out: list[Alert] = []
    bad: list[tuple[str, str]] = []
    for i, a in enumerate(body):
        where = f"alerts[{i}]"
        try:
            if not isinstance(a, Mapping):
                raise AlertError(f"an alert must be an object, got {type(a).__name__}")
            labels = _labels(a.get("labels"), "labels")
            starts = parse_time(a.get("startsAt"), "startsAt")
            ends = parse_time(a.get("endsAt"), "endsAt")
            starts = min(now, ends) if starts is None and ends is not None else (now if starts is None else starts)
            resolved = ends is not None and ends <= now
            status = "resolved" if resolved else "firing"
            out.append(_alert(labels, starts, ends if resolved else None, status, a.get("annotations"), "prometheus"))
            out[-1].where = where
        except UnsafeAlert as exc:
            raise UnsafeAlert(f"{where}: {exc}") from None
        except AlertError as exc:
            bad.append((where, str(exc)))
    return out, bad


DEFAULT_MAPPING = {
    "alerts": "alerts",
    "name": "name",
    "labels": "labels",
    "starts_at": "starts_at",
    "ends_at": "ends_at",
    "status": "status",
    "annotations": "annotations",
}


def _get(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def read_generic(body: Any, mapping: Mapping[str, str], now: float) -> tuple[list[Alert], list[tuple[str, str]]]:
    """Alerts of any JSON sender: a list of objects (or ``{"alerts": [...]}``, or one object).

    ``mapping`` names, for each field, where it is in an alert (dotted paths reach into nested
    objects): ``name``, ``labels``, ``starts_at`` (default: now), ``ends_at``, ``status``
    (``firing``/``resolved``; ``ok``/``closed``/``false`` mean resolved too), ``annotations``.
    """
    m = {**DEFAULT_MAPPING, **mapping}
    items = _get(body, m["alerts"]) if isinstance(body, Mapping) else body
    if isinstance(body, Mapping) and items is None:
        items = [body]
    if not isinstance(items, list):
        raise AlertError(f"send a JSON list of alerts or an object whose {m['alerts']!r} is that list")
    if len(items) > MAX_ALERTS_PER_REQUEST:
        raise AlertError(f"{len(items)} alerts in one request; send at most {MAX_ALERTS_PER_REQUEST}")
    out: list[Alert] = []
    bad: list[tuple[str, str]] = []
    for i, a in enumerate(items):
        where = f"alerts[{i}]"
        try:
            if not isinstance(a, Mapping):
                raise AlertError(f"an alert must be an object, got {type(a).__name__}")
            labels = _labels(_get(a, m["labels"]), m["labels"])
            name = _get(a, m["name"])
            if name is not None:
                labels["alertname"] = str(name)
                _check_text(labels["alertname"], m["name"], False)
            if "alertname" not in labels:
                raise AlertError(f"no alert name: set {m['name']!r} (or the 'alertname' label)")
            raw_start = _get(a, m["starts_at"])
            starts = now if raw_start is None else parse_time(raw_start, m["starts_at"])
            ends = parse_time(_get(a, m["ends_at"]), m["ends_at"])
            status = _get(a, m["status"])
            if isinstance(status, str) and status.lower() in ("ok", "closed", "resolved", "false", "recovered"):
                status = "resolved"
            elif status is not None:
                status = "firing"
            out.append(_alert(labels, starts, ends, status, _get(a, m["annotations"]), "generic"))
            out[-1].where = where
        except UnsafeAlert as exc:
            raise UnsafeAlert(f"{where}: {exc}") from None
        except AlertError as exc:
            bad.append((where, str(exc)))
    return out, bad


@dataclass
class _Entry:
    anomaly: Anomaly
    count: int
    ends_at: float | None
    resolved: bool
    dirty: bool = True
    emitted_closed: bool = False


@dataclass
class Received:
    new: int = 0
    repeats: int = 0
    resolved: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


class AlertBook:
    """The alerts seen, one entry per fingerprint and episode, until the tick has taken their end."""

    def __init__(self, step: float, ignore: Sequence[str] = (), keep_s: float = 86_400.0) -> None:
        self.step = float(step)
        self.ignore = tuple(ignore)
        self.keep_s = keep_s
        self._entries: dict[str, _Entry] = {}
        self._spans: dict[str, list[tuple[float, float | None]]] | None = None  # by metric; None: to rebuild

    def __len__(self) -> int:
        return len(self._entries)

    def receive(self, alerts: Iterable[Alert]) -> Received:
        """Take alerts in: new ones open an anomaly, repeats are counted, resolved ones end it."""
        got = Received()
        self._spans = None
        for al in alerts:
            fp = al.fingerprint(self.ignore)
            start = math.floor(al.starts_at / self.step) * self.step
            end = al.ends_at if al.resolved and al.ends_at is not None else None
            if al.resolved and end is None:
                end = start
            e = self._entries.get(fp)
            if e is not None and e.resolved and start > (e.ends_at or e.anomaly.end):
                if start - (e.ends_at or e.anomaly.end) <= FLAP_S:  # it flaps: the same anomaly fires again
                    e.count += 1
                    e.anomaly.evidence["count"] = e.count
                    e.anomaly.evidence["flaps"] = int(e.anomaly.evidence.get("flaps", 0)) + 1
                    e.resolved, e.ends_at, e.emitted_closed, e.dirty = al.resolved, end, False, True
                    got.repeats += 1
                    got.resolved += int(al.resolved)
                    continue
                e = None  # the alert fired again long after it resolved: a new episode
            if e is None:
                a = Anomaly(
                    metric=al.metric(self.ignore),
                    start=start,
                    end=start if end is None else max(start, end),
                    peak_score=ALERT_SCORE,
                    peak_at=start,
                    direction=1,
                    detector=al.source,
                    evidence={"alert": al.labels, "fingerprint": fp, "count": 1, **_summary(al)},
                )
                self._entries[fp] = _Entry(a, 1, end, al.resolved)
                got.new += 1
            else:
                e.count += 1
                e.anomaly.evidence["count"] = e.count
                got.repeats += 1
                if al.resolved and not e.resolved:
                    e.resolved, e.ends_at = True, end
                    e.dirty = True
            if al.resolved:
                got.resolved += 1
        return got

    def changed(self, at: float) -> list[Anomaly]:
        """The alert anomalies to hand to the tick at ``at``: new, still firing, or just resolved."""
        out: list[Anomaly] = []
        for fp, e in list(self._entries.items()):
            a = e.anomaly
            if a.start > at:
                continue  # not yet: its step comes later
            if e.resolved:
                if e.emitted_closed:
                    if at - (e.ends_at or a.end) > self.keep_s:
                        del self._entries[fp]  # long over: forget it (a repeat now opens a new one)
                        self._spans = None
                    continue
                end = min(max(a.start, e.ends_at or a.start), at)
                a.end, a.open = end, False
                e.emitted_closed = True
            else:
                a.end, a.open = max(a.end, math.floor(at / self.step) * self.step), True
            e.dirty = False
            out.append(a)
        return out

    def fresh(self) -> bool:
        """Whether alerts arrived or resolved since the last :meth:`changed`."""
        return any(e.dirty for e in self._entries.values())

    def newest(self) -> float | None:
        """The latest start among the alerts held (lets a pipeline with no points yet start ticking)."""
        return max((e.anomaly.start for e in self._entries.values()), default=None)

    def window(self, metric: str, end: float, points: int) -> np.ndarray | None:
        """The firing indicator of an alert metric over ``points`` steps ending at ``end`` (None: not an alert)."""
        spans = self._by_metric().get(metric)
        if not spans:
            return None
        t = (math.floor(end / self.step) - np.arange(points - 1, -1, -1)) * self.step
        out = np.zeros(points)
        for s, f in spans:
            out[(t >= s) & (t <= (f if f is not None else np.inf))] = 1.0
        return out

    def metrics(self) -> set[str]:
        return set(self._by_metric())

    def _by_metric(self) -> dict[str, list[tuple[float, float | None]]]:
        if self._spans is None:
            spans: dict[str, list[tuple[float, float | None]]] = {}
            for e in self._entries.values():
                spans.setdefault(e.anomaly.metric, []).append((e.anomaly.start, e.ends_at))
            self._spans = spans
        return self._spans

    def to_state(self) -> dict[str, Any]:
        """Plain data that :meth:`load_state` restores (distributed mode keeps it in Redis)."""
        return {
            fp: {
                "anomaly": asdict(e.anomaly),
                "count": e.count,
                "ends_at": e.ends_at,
                "resolved": e.resolved,
                "emitted_closed": e.emitted_closed,
            }
            for fp, e in self._entries.items()
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self._spans = None
        self._entries = {
            fp: _Entry(Anomaly(**d["anomaly"]), d["count"], d["ends_at"], d["resolved"], False, d["emitted_closed"])
            for fp, d in state.items()
        }


def windows_with_alerts(
    metrics: Sequence[str],
    end: float,
    points: int,
    known: Any,
    series: Any,
    book: AlertBook,
) -> np.ndarray:
    """Windows of metrics some of which are alerts: ``series(names)`` reads the stored ones
    (``known(name)``: stored?), an alert without a series has its firing indicator."""
    out = np.full((len(metrics), points), np.nan)
    have = [i for i, m in enumerate(metrics) if known(m)]
    if have:
        out[have] = series([metrics[i] for i in have])
    for i, m in enumerate(metrics):
        if not known(m):
            w = book.window(m, end, points)
            if w is not None:
                out[i] = w
    return out


INBOX_BATCH = 10_000


def take_inbox(runtime: Runtime, book: AlertBook) -> int:
    """Receive the alerts the API queued in Redis into ``book``; returns how many were read (to trim after commit)."""
    raw = runtime.r.lrange(runtime.k("alerts", "inbox"), 0, INBOX_BATCH - 1)
    dead = 0
    from stormeye.workers.redis_store import as_bytes  # distributed mode only: the embedded one needs no redis

    for b in raw:
        try:
            al = Alert(**json.loads(b))
            al.metric(book.ignore)  # what receive needs of it: refused here, it cannot fail the book
        except (ValueError, TypeError, AlertError) as exc:
            # one alert this worker cannot read (queued by another version, or past an older edge) leaves
            # the inbox for the dead letters with its reason; the others and the step go on
            pipe = runtime.r.pipeline(transaction=True)
            pipe.xadd(
                runtime.k("deadletter"),
                {
                    "kind": "alert",
                    "ref": "inbox",
                    "reason": f"{type(exc).__name__}: {exc}"[:2000],
                    "at": time.time(),
                    "alert": as_bytes(b),
                },
                maxlen=100_000,
                approximate=True,
            )
            pipe.lrem(runtime.k("alerts", "inbox"), 1, b)  # type: ignore[arg-type]  # the bytes read
            pipe.hincrby(runtime.k("stats"), "alerts_dead", 1)
            pipe.execute()
            dead += 1
            continue
        book.receive([al])
    return len(raw) - dead


def _summary(al: Alert) -> dict[str, str]:
    for key in ("summary", "description", "message"):
        if al.annotations.get(key):
            return {"summary": al.annotations[key][:500]}
    return {}


def receive_distributed(runtime: Runtime, alerts: Sequence[Alert]) -> None:
    """Queue alerts in Redis for the next correlate step (distributed mode), which dedups and counts them."""
    if alerts:
        runtime.r.rpush(runtime.k("alerts", "inbox"), *(json.dumps(asdict(a)) for a in alerts))
