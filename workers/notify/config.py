"""The notification config: a YAML routing tree in Alertmanager's shape, validated once at load.

``route`` (``receiver``, ``matchers``, nested ``routes`` with ``continue``, ``group_wait``,
``group_interval``, ``repeat_interval``), ``receivers`` and ``inhibit_rules`` read as they do in
Alertmanager; stormeye adds ``flapping`` (hold-down), ``teams`` (service → team) and, per route,
``update_growth`` (the member growth that counts as a real change). Every error names the line
of the file and says what to write instead (:class:`NotifyConfigError`).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stormeye.core.errors import BadInput
from stormeye.core.labels import Matcher as Matcher
from stormeye.core.labels import matches_all as matches_all
from stormeye.workers.notify.message import TemplateProblem, check_template

LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


class NotifyConfigError(BadInput):
    """The notification config is wrong; the message names the file's line and what to fix."""


# -- YAML with line numbers ------------------------------------------------------------------


class LineDict(dict):
    """A YAML mapping that remembers its line and each key's line (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class LineList(list):
    """A YAML sequence that remembers its line and each item's line (1-based)."""

    line: int = 0
    lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for k_node, v_node in node.value:
        key = loader.construct_object(k_node, deep=True)
        out[key] = loader.construct_object(v_node, deep=True)
        out.lines[key] = k_node.start_mark.line + 1
    return out


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def _line(obj: Any, key: Any = None, default: int = 0) -> int:
    if isinstance(obj, LineDict):
        return obj.lines.get(key, obj.line) if key is not None else obj.line
    if isinstance(obj, LineList) and isinstance(key, int) and key < len(obj.lines):
        return obj.lines[key]
    return getattr(obj, "line", default)


# -- values ------------------------------------------------------------------------------------


def parse_duration(text: Any) -> float:
    """Alertmanager's durations: ``30s``, ``5m``, ``4h``, ``1h30m``, ``1d``, ``1w``, ``100ms``, ``0``; seconds."""
    s = str(text).strip()
    if s == "0":
        return 0.0
    m = _DURATION_RE.match(s)
    if not s or m is None or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration: write it like 30s, 5m, 4h, 1h30m or 1d")
    return sum(float(g) * u for g, u in zip(m.groups(), _DURATION_UNITS) if g)


# -- the tree ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteOptions:
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    update_growth: float = 0.5  # members grown by this fraction since the last notification: a real change


@dataclass
class Route:
    receiver: str
    matchers: list[Matcher]
    options: RouteOptions
    cont: bool = False
    routes: list[Route] = field(default_factory=list)
    line: int = 0

    def match(self, props: Mapping[str, str]) -> list[Route]:
        """The routes an incident with ``props`` goes to (Alertmanager's walk: depth first, first match
        wins unless ``continue``; a route none of whose children match is itself the match)."""
        if not matches_all(self.matchers, props):
            return []
        out: list[Route] = []
        for child in self.routes:
            got = child.match(props)
            out += got
            if got and not child.cont:
                break
        return out or [self]


@dataclass(frozen=True)
class Integration:
    """One way of sending a receiver's notifications (a webhook, a Slack channel, ...)."""

    kind: str  # webhook | slack | pagerduty | email | alertmanager | apprise
    index: int
    options: Mapping[str, Any]
    send_resolved: bool
    line: int

    @property
    def name(self) -> str:
        return f"{self.kind}[{self.index}]"


@dataclass
class Receiver:
    name: str
    integrations: list[Integration]
    line: int = 0


@dataclass(frozen=True)
class InhibitRule:
    source: list[Matcher]
    target: list[Matcher]
    equal: list[str]
    line: int = 0


@dataclass(frozen=True)
class Flapping:
    """An incident thread that opened ``threshold`` times within ``window`` is flapping: its
    transitions are held down and its resolve waits ``hold`` without a reopen."""

    window: float = 3600.0
    threshold: int = 3
    hold: float = 900.0


@dataclass
class NotifyConfig:
    route: Route
    receivers: dict[str, Receiver]
    inhibit_rules: list[InhibitRule]
    flapping: Flapping
    teams: dict[str, str]
    global_: dict[str, Any]
    source: str = "<config>"

    def routes_for(self, props: Mapping[str, str]) -> list[Route]:
        """Matched routes, one per receiver (the first route reaching a receiver sets its timers)."""
        seen: dict[str, Route] = {}
        for r in self.route.match(props):
            seen.setdefault(r.receiver, r)
        return list(seen.values())


# -- loading -----------------------------------------------------------------------------------

_INTEGRATIONS = {
    "webhook_configs": ("webhook", True, {"url"}, {"url", "send_resolved", "max_alerts", "timeout"}),
    "slack_configs": (
        "slack",
        False,
        {"api_url"},
        {"api_url", "channel", "username", "title", "text", "send_resolved", "icon_emoji", "timeout"},
    ),
    "pagerduty_configs": (
        "pagerduty",
        True,
        {"routing_key"},
        {"routing_key", "url", "severity", "description", "client", "send_resolved", "timeout"},
    ),
    "email_configs": (
        "email",
        False,
        {"to"},
        {
            "to",
            "from",
            "smarthost",
            "auth_username",
            "auth_password",
            "require_tls",
            "headers",
            "subject",
            "text",
            "send_resolved",
            "timeout",
        },
    ),
    "alertmanager_configs": ("alertmanager", True, {"url"}, {"url", "send_resolved", "timeout", "ttl"}),
    "apprise_configs": ("apprise", True, {"urls"}, {"urls", "title", "body", "send_resolved"}),
}
_ROUTE_KEYS = {
    "receiver",
    "matchers",
    "match",
    "match_re",
    "routes",
    "continue",
    "group_by",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "update_growth",
}
_TOP_KEYS = {"global", "route", "receivers", "inhibit_rules", "flapping", "teams"}


class _Ctx:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, line: int, msg: str) -> NotifyConfigError:
        return NotifyConfigError(f"{self.source}:{line}: {msg}")

    def mapping(self, obj: Any, where: str, line: int) -> LineDict:
        if not isinstance(obj, dict):
            raise self.fail(_line(obj, default=line), f"{where} must be a mapping (key: value lines)")
        if not isinstance(obj, LineDict):
            d = LineDict(obj)
            d.line, d.lines = line, {}
            return d
        return obj

    def unknown(self, obj: LineDict, allowed: set[str], where: str) -> None:
        for k in obj:
            if k not in allowed:
                raise self.fail(_line(obj, k), f"unknown field {k!r} in {where}; use one of {sorted(allowed)}")

    def duration(self, obj: LineDict, key: str, default: float) -> float:
        if key not in obj:
            return default
        try:
            return parse_duration(obj[key])
        except ValueError as exc:
            raise self.fail(_line(obj, key), f"{key}: {exc}") from None

    def matchers(self, obj: LineDict, where: str, key: str = "matchers") -> list[Matcher]:
        out: list[Matcher] = []
        raw = obj.get(key)
        if raw is not None:
            if not isinstance(raw, list):
                raise self.fail(_line(obj, key), f'{where}.{key} must be a list of matchers like - service="checkout"')
            for i, text in enumerate(raw):
                try:
                    out.append(Matcher.parse(text))
                except ValueError as exc:
                    raise self.fail(_line(raw, i, _line(obj, key)), f"{where}.{key}: {exc}") from None
        for old, op in (("match", "="), ("match_re", "=~")):
            if old in obj:
                m = self.mapping(obj[old], f"{where}.{old}", _line(obj, old))
                for name, value in m.items():
                    if not isinstance(name, str) or not LABEL_RE.match(name):
                        raise self.fail(_line(m, name), f"{where}.{old}: {name!r} is not a label name")
                    try:
                        out.append(Matcher.make(name, op, str(value)))
                    except ValueError as exc:
                        raise self.fail(_line(m, name), f"{where}.{old}: {exc}") from None
        return out


def _route(ctx: _Ctx, raw: Any, parent: RouteOptions | None, parent_receiver: str | None, where: str) -> Route:
    obj = ctx.mapping(raw, where, 1)
    ctx.unknown(obj, _ROUTE_KEYS, where)
    receiver = obj.get("receiver", parent_receiver)
    if receiver is None:
        raise ctx.fail(obj.line, f"{where} needs a receiver (the root route names the default one)")
    base = parent or RouteOptions()
    growth = obj.get("update_growth", base.update_growth)
    if not isinstance(growth, int | float) or isinstance(growth, bool) or growth < 0:
        raise ctx.fail(_line(obj, "update_growth"), f"{where}.update_growth must be a fraction >= 0, like 0.5")
    opts = RouteOptions(
        group_wait=ctx.duration(obj, "group_wait", base.group_wait),
        group_interval=ctx.duration(obj, "group_interval", base.group_interval),
        repeat_interval=ctx.duration(obj, "repeat_interval", base.repeat_interval),
        update_growth=float(growth),
    )
    if opts.group_interval <= 0 or opts.repeat_interval <= 0:
        raise ctx.fail(obj.line, f"{where}: group_interval and repeat_interval must be more than 0")
    cont = obj.get("continue", False)
    if not isinstance(cont, bool):
        raise ctx.fail(_line(obj, "continue"), f"{where}.continue must be true or false")
    children = obj.get("routes") or []
    if not isinstance(children, list):
        raise ctx.fail(_line(obj, "routes"), f"{where}.routes must be a list of routes")
    route = Route(str(receiver), ctx.matchers(obj, where), opts, cont, line=obj.line)
    if "receiver" in obj:
        route.line = _line(obj, "receiver")
    route.routes = [_route(ctx, c, opts, str(receiver), f"{where}.routes[{i}]") for i, c in enumerate(children)]
    return route


def _receivers(ctx: _Ctx, raw: Any, line: int) -> dict[str, Receiver]:
    if not isinstance(raw, list) or not raw:
        raise ctx.fail(_line(raw, default=line), "receivers must be a list of receivers, each with a name")
    out: dict[str, Receiver] = {}
    for i, item in enumerate(raw):
        where = f"receivers[{i}]"
        obj = ctx.mapping(item, where, _line(raw, i))
        ctx.unknown(obj, {"name", *_INTEGRATIONS}, where)
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise ctx.fail(obj.line, f"{where} needs a name")
        if name in out:
            raise ctx.fail(_line(obj, "name"), f"receiver {name!r} is defined twice (first at line {out[name].line})")
        integrations: list[Integration] = []
        for key, (kind, resolved_default, required, allowed) in _INTEGRATIONS.items():
            confs = obj.get(key) or []
            if not isinstance(confs, list):
                raise ctx.fail(_line(obj, key), f"{where}.{key} must be a list")
            for j, conf in enumerate(confs):
                cw = f"receiver {name!r} {key}[{j}]"
                c = ctx.mapping(conf, cw, _line(confs, j))
                ctx.unknown(c, allowed, cw)
                missing = required - set(c)
                if missing:
                    raise ctx.fail(c.line, f"{cw} needs {', '.join(sorted(missing))}")
                if kind == "apprise":
                    urls = c["urls"]
                    if isinstance(urls, str):
                        urls = [urls]
                    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                        raise ctx.fail(_line(c, "urls"), f"{cw}.urls must be a list of apprise URLs")
                    if importlib.util.find_spec("apprise") is None:
                        raise ctx.fail(c.line, f"{cw}: apprise is not installed: pip install 'stormeye[notify]'")
                if kind == "email":
                    to = c["to"]
                    if not isinstance(to, str) or "@" not in to:
                        raise ctx.fail(_line(c, "to"), f"{cw}.to must be an email address (several: comma-separated)")
                for key_ in ("title", "text", "subject", "body", "description"):
                    if key_ in c:
                        try:
                            check_template(str(c[key_]))
                        except TemplateProblem as exc:
                            raise ctx.fail(_line(c, key_), f"{cw}.{key_} is not a valid template: {exc}") from None
                if "ttl" in c:
                    ctx.duration(c, "ttl", 0.0)
                opts = {k: v for k, v in c.items() if k != "send_resolved"}
                if "timeout" in c:
                    opts["timeout"] = ctx.duration(c, "timeout", 10.0)
                sr = c.get("send_resolved", resolved_default)
                if not isinstance(sr, bool):
                    raise ctx.fail(_line(c, "send_resolved"), f"{cw}.send_resolved must be true or false")
                integrations.append(Integration(kind, j, opts, sr, c.line))
        out[name] = Receiver(name, integrations, _line(obj, "name"))
    return out


def _inhibit_rules(ctx: _Ctx, raw: Any, line: int) -> list[InhibitRule]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ctx.fail(line, "inhibit_rules must be a list")
    out = []
    for i, item in enumerate(raw):
        where = f"inhibit_rules[{i}]"
        obj = ctx.mapping(item, where, _line(raw, i))
        allowed = {"source_matchers", "target_matchers", "equal", "source_match", "target_match"}
        allowed |= {"source_match_re", "target_match_re"}
        ctx.unknown(obj, allowed, where)
        src = ctx.matchers(obj, where, "source_matchers")
        tgt = ctx.matchers(obj, where, "target_matchers")
        for side, acc in (("source", src), ("target", tgt)):
            for old, op in ((f"{side}_match", "="), (f"{side}_match_re", "=~")):
                if old in obj:
                    m = ctx.mapping(obj[old], f"{where}.{old}", _line(obj, old))
                    acc += [Matcher.make(str(k), op, str(v)) for k, v in m.items()]
        equal = obj.get("equal") or []
        if not isinstance(equal, list) or not all(isinstance(e, str) and LABEL_RE.match(e) for e in equal):
            raise ctx.fail(_line(obj, "equal"), f"{where}.equal must be a list of label names")
        if not src:
            raise ctx.fail(obj.line, f"{where} needs source_matchers (which incidents inhibit)")
        out.append(InhibitRule(src, tgt, list(equal), obj.line))
    return out


def _flapping(ctx: _Ctx, raw: Any, line: int) -> Flapping:
    if raw is None:
        return Flapping()
    obj = ctx.mapping(raw, "flapping", line)
    ctx.unknown(obj, {"window", "threshold", "hold"}, "flapping")
    thr = obj.get("threshold", Flapping.threshold)
    if not isinstance(thr, int) or isinstance(thr, bool) or thr < 2:
        raise ctx.fail(_line(obj, "threshold"), "flapping.threshold must be a whole number >= 2 (openings)")
    return Flapping(
        window=ctx.duration(obj, "window", Flapping.window),
        threshold=thr,
        hold=ctx.duration(obj, "hold", Flapping.hold),
    )


def _walk(route: Route) -> list[Route]:
    return [route, *(r for c in route.routes for r in _walk(c))]


def parse_config(text: str, source: str = "<config>") -> NotifyConfig:
    """A validated :class:`NotifyConfig` from YAML text, or :class:`NotifyConfigError` naming the line."""
    ctx = _Ctx(source)
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass that keeps lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise ctx.fail(line, f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    top = ctx.mapping(raw, "the config", 1)
    ctx.unknown(top, _TOP_KEYS, "the config")
    if "route" not in top:
        raise ctx.fail(1, "the config needs a route (the root of the routing tree, with a receiver)")
    if "receivers" not in top:
        raise ctx.fail(1, "the config needs receivers")
    receivers = _receivers(ctx, top["receivers"], _line(top, "receivers"))
    route = _route(ctx, top["route"], None, None, "route")
    for r in _walk(route):
        if r.receiver not in receivers:
            raise ctx.fail(
                r.line,
                f"unknown receiver {r.receiver!r}; define it under receivers (have: {', '.join(sorted(receivers))})",
            )
    teams_raw = top.get("teams") or {}
    teams = ctx.mapping(teams_raw, "teams", _line(top, "teams"))
    glob = ctx.mapping(top.get("global") or {}, "global", _line(top, "global"))
    return NotifyConfig(
        route=route,
        receivers=receivers,
        inhibit_rules=_inhibit_rules(ctx, top.get("inhibit_rules"), _line(top, "inhibit_rules")),
        flapping=_flapping(ctx, top.get("flapping"), _line(top, "flapping")),
        teams={str(k): str(v) for k, v in teams.items()},
        global_=dict(glob),
        source=source,
    )


def load_config(path: str | Path) -> NotifyConfig:
    """The config in the file ``path`` (``STORMEYE_NOTIFY_CONFIG``)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise NotifyConfigError(f"{p}: cannot read the notification config ({exc.strerror})") from None
    return parse_config(text, str(p))
