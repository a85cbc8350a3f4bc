"""Labels: what a metric's name says, and how people pick metrics and incidents by their labels.

The one home of every label concept the other packages share (``core`` is pure: no socket, file or
clock):

- **names**: :func:`parse` reads a metric name in any accepted form into its labels (the metric name
  itself is the label ``__name__``, :data:`NAME_KEY`); :func:`canonical` writes them back as
  ``name{k="v",...}`` with the labels sorted; ``docs/names.md`` has the full rules;
- **vocabularies**: the labels that name an entity (:data:`ENTITY_KEYS`), a machine
  (:data:`MACHINE_KEYS`) and a service (:data:`SERVICE_KEYS`, :data:`SERVICE_ENTITY_KEYS`);
- **shared scope**: :func:`shared_labels`, the labels every member of a group has with the same value;
- **matchers**: one :class:`Matcher` type and one matching function (:func:`matches_all`) for
  priority rules, detector rules, notification routes, inhibit rules, silences and the page's filter.
  Two ways to write them, read by one parser: Alertmanager's text ``key="v"``, ``key!="v"``,
  ``key=~"regex"``, ``key!~"regex"`` (:func:`parse_matcher`, comma-separated lists with
  :func:`parse_matchers`), and the rules' map ``{"key": "regex"}`` (:func:`matchers_from_map`).
  Regexes match the whole value and are refused when they could take exponential time
  (:func:`check_regex`).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stormeye.core.errors import BadInput

# the regex parser itself, to see a pattern's structure (sre_parse is its deprecated name)
_sre_parse: Any = importlib.import_module("re._parser")
_sre: Any = importlib.import_module("re._constants")

NAME_KEY = "__name__"
#: other spellings of the metric name label (Anodot's ``what=...``)
NAME_ALIASES = ("what",)

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:.\-/]*")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_PROM = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:.\-/]*)?\s*\{(.*)\}\s*$", re.S)
_KEY_RE = r"[A-Za-z_][A-Za-z0-9_.\-]*"
_VAL_RE = r'"(?:[^"\\]|\\.)*"'
_PROM_PAIR = re.compile(rf"\s*({_KEY_RE})\s*=\s*({_VAL_RE})\s*(,|$)", re.S)
_PROM_QUOTED_NAME = re.compile(rf"\s*({_VAL_RE})\s*(,|$)", re.S)
_PROM_BODY_FAST = re.compile(rf"(?:\s*{_KEY_RE}\s*=\s*{_VAL_RE}\s*(?:,(?=\s*[A-Za-z_])|,?\s*$))*\s*", re.S)
_PROM_PAIR_FAST = re.compile(rf"({_KEY_RE})\s*=\s*\"((?:[^\"\\]|\\.)*)\"", re.S)
_JSON_START = re.compile(r'\{\s*"(?:[^"\\]|\\.)*"\s*:', re.S)
_PAIR_SPLIT = re.compile(r"[,\s]+")
_ESCAPE = re.compile(r"\\(.)", re.S)


class MetricNameError(BadInput):
    """A metric name could not be read; the message says what is wrong and how to write it."""


class ControlCharacterError(MetricNameError):
    """A name or label holds a control character (NUL, newline, escape, ...). No sender means one: the
    edges refuse the whole request with it (400 naming where), as PostgreSQL refuses NUL in text."""


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\ud800-\udfff]")


def check_text(text: str, what: str) -> None:
    """Raise :class:`ControlCharacterError` naming ``what`` when ``text`` holds a C0 control character
    other than tab."""
    m = _CONTROL.search(text)
    if m is not None and "\ud800" <= m.group() <= "\udfff":
        raise ControlCharacterError(
            f"{what} holds a lone UTF-16 surrogate U+{ord(m.group()):04X} at position {m.start()} (a \\u escape "
            "of half a character): it is not text and cannot be stored; send the whole character"
        )
    if m is not None:
        raise ControlCharacterError(
            f"{what} holds the control character U+{ord(m.group()):04X} at position {m.start()}: names and label "
            "values are printable text (tab is the only control character allowed); remove it"
        )


@dataclass(frozen=True)
class LabelLimits:
    """How large a metric name may be (``STORMEYE_MAX_NAME_CHARS``, ``STORMEYE_MAX_LABELS``,
    ``STORMEYE_MAX_LABEL_VALUE_CHARS``): far above what real senders use (Mimir's defaults are 30
    labels and 2,048-character values), low enough that one name cannot cost megabytes."""

    name_chars: int = 16_384  # the whole name as sent
    labels: int = 128  # labels of one series, the metric name included
    value_chars: int = 4096  # one label's value (and the metric name itself)

    def check_size(self, chars: int) -> None:
        if chars > self.name_chars:
            raise MetricNameError(
                f"the metric name is {chars} characters long; at most {self.name_chars} are accepted "
                "(STORMEYE_MAX_NAME_CHARS)"
            )

    def check_labels(self, count: int) -> None:
        if count > self.labels:
            raise MetricNameError(
                f"the series has {count} labels; at most {self.labels} are accepted (STORMEYE_MAX_LABELS): "
                "drop the labels that do not say what is measured"
            )

    def check_value(self, key: str, value: str) -> None:
        if len(value) > self.value_chars:
            raise MetricNameError(
                f"label {key!r} has a value of {len(value)} characters; at most {self.value_chars} are accepted "
                "(STORMEYE_MAX_LABEL_VALUE_CHARS)"
            )

    def check(self, props: Mapping[str, str]) -> None:
        """Every limit on parsed labels (the size: of the canonical text they make, about)."""
        self.check_labels(len(props))
        for key, value in props.items():
            self.check_value(key, value)
            if len(key) > self.value_chars:
                raise MetricNameError(f"a label name is {len(key)} characters long; at most {self.value_chars}")
        self.check_size(sum(len(k) + len(v) + 4 for k, v in props.items()))


#: the limits the edges apply unless settings say otherwise
DEFAULT_LIMITS = LabelLimits()


def parse(
    name: str | Mapping[str, object], graphite: PathTemplates | None = None, limits: LabelLimits | None = None
) -> dict[str, str]:
    """Read a metric name into its properties.

    Accepted forms:

    - Prometheus: ``purchase_count{country="England",device="mobile"}``, a bare
      ``purchase_count``, or the quoted-name form ``{"http.server.duration",le="1"}``;
    - property lists: ``what=purchase_count,country=England`` (commas or spaces) or
      ``what=purchase_count.country=England`` (dots; a dot-separated piece without ``=``
      continues the value before it, so ``host=web.example.com`` keeps its dots);
    - Graphite/Carbon 2.0 tagged: ``purchase_count;country=England;device=mobile``;
    - a JSON object of labels, as text or as a mapping: ``{"__name__": "cpu", "host": "a"}``;
    - a dotted path ``eu.web-3.cpu.load``: with ``graphite`` it is read by those templates
      (positional ``node0``, ``node1``, … when none matches); without, it is one metric name.

    Names holding control characters (:class:`ControlCharacterError`) are refused, and with ``limits``
    (the edges: what a sender may send) names larger than they allow.

    Raises :class:`MetricNameError` with a message that says what to fix.
    """
    if isinstance(name, Mapping):
        if limits is not None:
            limits.check_labels(len(name))
        props = _from_mapping(name)
    elif isinstance(name, str):
        if limits is not None:
            limits.check_size(len(name))
        check_text(name, "the metric name")
        props = _parse_text(name, graphite)
    else:
        raise MetricNameError(f"a metric name must be text or a label object, got {type(name).__name__}")
    if limits is not None:
        limits.check(props)
    return props


def _parse_text(name: str, graphite: PathTemplates | None) -> dict[str, str]:
    text = name.strip()
    if not text:
        raise MetricNameError('empty metric name: give a name like cpu_usage{host="a"}')
    if text.startswith("{") and _JSON_START.match(text):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetricNameError(f"metric name {text!r} looks like JSON but is not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise MetricNameError(f"metric name {text!r}: a JSON name must be an object of labels")
        return _from_mapping(obj)
    if "{" in text or "}" in text:
        return _parse_prometheus(text)
    if ";" in text:
        return _parse_tagged(text)
    if "=" in text:
        return _parse_pairs(text)
    if graphite is not None:
        props: dict[str, str] = {}
        for key, value in graphite.read(text, MetricNameError, NAME_KEY):
            _set(props, key, value)
        return props
    if _IDENT.fullmatch(text):
        return {NAME_KEY: text}
    raise MetricNameError(
        f'metric name {text!r} is not a name we can read: use name{{label="value",...}}, '
        "label=value pairs separated by commas, name;label=value tags, or a JSON object of labels"
        + (" (a Graphite path needs Graphite templates configured)" if "." in text else "")
    )


def _from_mapping(obj: Mapping[str, object]) -> dict[str, str]:
    props: dict[str, str] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not key:
            raise MetricNameError(f"label keys must be non-empty text, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise MetricNameError(f"label {key!r} must have a text or number value, got {type(value).__name__}")
        _set(props, key, str(value))
    if not props:
        raise MetricNameError("a label object must hold at least one label")
    return props


def _set(props: dict[str, str], key: str, value: str) -> None:
    key = NAME_KEY if key in NAME_ALIASES else key
    check_text(key, "a label name")
    check_text(value, "the metric name" if key == NAME_KEY else f"label {key!r}")
    if key != NAME_KEY and not _LABEL_KEY.fullmatch(key):
        raise MetricNameError(f"label key {key!r} must start with a letter or _ and hold letters, digits, _ . -")
    if value == "":
        raise MetricNameError(f"label {key!r} has an empty value: drop the label or give it a value")
    old = props.get(key)
    if old is not None and old != value:
        raise MetricNameError(f"label {key!r} is given twice with different values ({old!r}, {value!r})")
    props[key] = value


def _unescape(body: str) -> str:
    """The text of a double-quoted value, given what is between the quotes."""
    if "\\" not in body:
        return body
    return _ESCAPE.sub(lambda g: {"n": "\n"}.get(g.group(1), g.group(1)), body)


def _parse_prometheus(text: str) -> dict[str, str]:
    m = _PROM.match(text)
    if not m:
        raise MetricNameError(f'metric name {text!r}: braces must enclose labels at the end, as in cpu{{host="a"}}')
    props: dict[str, str] = {}
    if m.group(1):
        props[NAME_KEY] = m.group(1)
    body = m.group(2)
    if _PROM_BODY_FAST.fullmatch(body):  # the common case: key="value" pairs only
        for key, value in _PROM_PAIR_FAST.findall(body):
            _set(props, key, _unescape(value))
    else:
        pos = 0
        first = True
        while pos < len(body) and body[pos:].strip():
            qm = _PROM_QUOTED_NAME.match(body, pos) if first and not m.group(1) else None
            if qm:  # Prometheus 3: {"metric.name", label="v"}
                _set(props, NAME_KEY, _unescape(qm.group(1)[1:-1]))
                pos, first = qm.end(), False
                continue
            pm = _PROM_PAIR.match(body, pos)
            if not pm:
                rest = body[pos:].strip()
                raise MetricNameError(
                    f'metric name {text!r}: cannot read labels at {rest[:30]!r}; write label="value" pairs '
                    "separated by commas, values in double quotes"
                )
            _set(props, pm.group(1), _unescape(pm.group(2)[1:-1]))
            pos, first = pm.end(), False
    if not props:
        raise MetricNameError(f"metric name {text!r} has neither a name nor labels")
    return props


def _parse_tagged(text: str) -> dict[str, str]:
    """Graphite tagged series / Carbon 2.0: ``name;tag=value;tag2=value2``."""
    if any(c.isspace() for c in text):
        raise MetricNameError(f"metric name {text!r}: a name;tag=value name cannot hold spaces")
    head, *tags = text.split(";")
    if not head or "=" in head:
        raise MetricNameError(
            f"metric name {text!r}: a tagged name starts with the metric name, then ;tag=value parts "
            "(cpu.load;host=a;region=eu)"
        )
    if not _IDENT.fullmatch(head):
        raise MetricNameError(f"metric name {text!r}: {head!r} is not a metric name (letters, digits, _ : . - /)")
    props: dict[str, str] = {NAME_KEY: head}
    for tag in tags:
        if not tag:
            raise MetricNameError(f"metric name {text!r} has an empty tag: remove the doubled or trailing ';'")
        if tag.count("=") != 1:
            what = "has no '='" if "=" not in tag else "holds more than one '='"
            raise MetricNameError(
                f"metric name {text!r}: tag {tag!r} {what}; write tags as ;key=value, one per ';'"
                + (" (separate tags with ';', not ',')" if "," in tag else "")
            )
        key, value = tag.split("=")
        if value.startswith("~"):
            raise MetricNameError(f"metric name {text!r}: tag value {value!r} cannot start with '~' (Graphite rule)")
        _set(props, NAME_KEY if key == "name" else key, value)
    return props


def _parse_pairs(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    parts = [p for p in _PAIR_SPLIT.split(text) if p]
    for part in parts:
        n_eq = part.count("=")
        if n_eq == 1:
            key, value = part.split("=")
            _set(props, key, value)
        elif n_eq == 0:
            raise MetricNameError(
                f"metric name {text!r}: {part!r} is not one property=value pair; separate pairs by commas"
            )
        elif len(parts) > 1:
            raise MetricNameError(
                f"metric name {text!r}: {part!r} holds several pairs joined by dots while other pairs are "
                "separated by commas or spaces; use one separator (what=cpu,host=a or what=cpu.host=a)"
            )
        else:
            _parse_dotted_pairs(text, part, props)
    return props


def _parse_dotted_pairs(text: str, part: str, props: dict[str, str]) -> None:
    """``what=cpu.host=web.example.com.region=eu``: a piece without '=' continues the value before it."""
    pairs: list[list[str]] = []
    for seg in part.split("."):
        if not seg:
            raise MetricNameError(f"metric name {text!r} has an empty piece between dots: remove the extra dot")
        n_eq = seg.count("=")
        if n_eq == 1:
            pairs.append(seg.split("="))
        elif n_eq > 1:
            raise MetricNameError(f"metric name {text!r}: {seg!r} holds more than one '='; a value cannot contain '='")
        elif not pairs:
            raise MetricNameError(
                f"metric name {text!r} starts with {seg!r}, which is not key=value: write every property as "
                "key=value (what=cpu.host=a); keys that contain dots need commas between pairs "
                "(service.name=cpu,host.name=a); a Graphite path has no '='"
            )
        else:
            pairs[-1][1] += "." + seg
    for key, value in pairs:
        _set(props, key, value)


def canonical(props: Mapping[str, str]) -> str:
    """The canonical text of a metric: ``name{k="v",...}`` with labels sorted by key."""
    name = props.get(NAME_KEY, "")
    labels = sorted((k, v) for k, v in props.items() if k != NAME_KEY)
    if name and not _IDENT.fullmatch(name):  # e.g. a JSON name with spaces: keep it readable and parseable
        labels.insert(0, (NAME_KEY, name))
        name = ""
    if not labels:
        return name
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def normalize(
    name: str | Mapping[str, object], graphite: PathTemplates | None = None, limits: LabelLimits | None = None
) -> str:
    """Parse a name in any accepted form and return its canonical text."""
    return canonical(parse(name, graphite, limits))


class PathTemplates(Protocol):
    """What reads a dotted Graphite path into labels (``grouping.graphite.GraphiteTemplates``)."""

    def read(self, path: str, error: Callable[[str], Exception], name_key: str) -> list[tuple[str, str]]: ...


# -- vocabularies ------------------------------------------------------------------------------

#: labels that name the entity a metric is of, most specific first (a region is the broadest)
ENTITY_KEYS = ("host", "instance", "pod", "container", "node", "service", "job", "app", "region")

#: labels that name a machine: while one has an open incident, its other metrics join as symptoms
MACHINE_KEYS = ("host", "instance", "node", "pod", "container")

#: labels that name the service (or workload) a metric belongs to, most specific first
SERVICE_KEYS = (
    "service",
    "service_name",
    "workload",
    "deployment",
    "app",
    "job",
    "server",
    "destination_workload",
    "destination_service",
)

#: the entity labels that name a service (``service``, ``job``, ``app``): a root entity such as
#: ``job=checkout`` says the incident's service
SERVICE_ENTITY_KEYS = tuple(k for k in ENTITY_KEYS if k in SERVICE_KEYS)


# -- shared scope ------------------------------------------------------------------------------


def shared_labels(label_sets: Iterable[Mapping[str, str]], skip: Sequence[str] = (NAME_KEY,)) -> dict[str, str]:
    """The labels every one of ``label_sets`` has with the same value, in the first set's order.

    The metric name (``__name__``) is left out unless ``skip`` says otherwise; no sets share nothing.
    """
    sets = iter(label_sets)
    first = next(sets, None)
    if first is None:
        return {}
    common = {k: v for k, v in first.items() if k not in skip}
    for labels in sets:
        if not common:
            break
        common = {k: v for k, v in common.items() if labels.get(k) == v}
    return common


# -- matchers ----------------------------------------------------------------------------------

OPS = ("=", "!=", "=~", "!~")
#: the longest regex a matcher takes (a filter, not a program)
MAX_REGEX = 1024

_HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\s*', re.S)
_JSON_ESCAPE = re.compile(r'(?:\\u[0-9a-fA-F]{4})+|\\["\\/bfnrt]')
_FORMS = 'write label="value", label!="value", label=~"regex" or label!~"regex"'


class MatcherError(BadInput):
    """A label matcher cannot be read or its regex cannot be used; the message says what to write.

    ``label`` and ``reason``: the label of the matcher at fault (when known) and what is wrong with it,
    for callers that name the place themselves (``priority rule 3: match['host']: <reason>``).
    """

    def __init__(self, message: str, label: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.label = label
        self.reason = reason or message


@dataclass(frozen=True)
class Matcher:
    """One label matcher: ``name op value``, op ``=``, ``!=``, ``=~`` or ``!~`` (regexes match whole values).

    A label an object does not have is the empty string (Alertmanager's rule), unless ``required``:
    then the matcher needs the label present (the rules' map form ``{"label": "regex"}``).
    """

    name: str
    op: str
    value: str
    required: bool = False
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def make(cls, name: str, op: str, value: str, *, required: bool = False) -> Matcher:
        """A matcher from its parts; a regex is compiled and checked here, once."""
        if op not in OPS:
            raise MatcherError(f"{name}{op}{value!r}: {op!r} is not a matcher operator; use one of {', '.join(OPS)}")
        value = str(value)
        regex = None
        if op in ("=~", "!~"):
            try:
                regex = check_regex(value)
            except MatcherError as exc:
                raise MatcherError(f"{name}{op}{value!r}: {exc}", label=str(name), reason=str(exc)) from None
        return cls(str(name), op, value, required, regex)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """``service="checkout"`` → a matcher (see :func:`parse_matcher`)."""
        return parse_matcher(text)

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name)
        if got is None:
            if self.required:
                return False
            got = ""
        if self.op == "=":
            return got == self.value
        if self.op == "!=":
            return got != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(got) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value)}"


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when ``labels`` satisfy every matcher (no matchers: always)."""
    return all(m.matches(labels) for m in matchers)


def matchers_from_map(match: Mapping[str, Any]) -> tuple[Matcher, ...]:
    """The rules' map form ``{"label": "regex", ...}``: each label present and fully matching its regex."""
    return tuple(Matcher.make(str(k), "=~", str(v), required=True) for k, v in match.items())


def parse_matcher(text: str) -> Matcher:
    """One matcher as Alertmanager writes it: ``service="checkout"``, ``host!~"db.*"``, ``env!=prod``.

    A quoted value reads JSON's escapes (``\\"``, ``\\\\``, ``\\n``, ``\\uXXXX``, ...); any other
    backslash stays as written, so ``region=~"eu\\.west"`` needs no doubling. An unquoted value is the
    rest of the text, stripped.
    """
    if not isinstance(text, str):
        raise MatcherError(f"{text!r} is not a matcher: {_FORMS}")
    matcher, end = _scan(text, 0, to_comma=False)
    if text[end:].strip():
        raise MatcherError(f"{text!r}: {text[end:].strip()!r} follows the quoted value; {_FORMS}")
    return matcher


def parse_matchers(text: str) -> list[Matcher]:
    """Matchers separated by commas: ``service="checkout", region=~"eu.*",env!=prod``; empty text: none."""
    out: list[Matcher] = []
    text = text.strip()
    pos = 0
    while pos < len(text):
        if _HEAD.match(text, pos) is None:
            raise MatcherError(f"cannot read the label matchers at {text[pos:]!r}: {_FORMS}, separated by commas")
        matcher, pos = _scan(text, pos, to_comma=True)
        out.append(matcher)
        rest = text[pos:].lstrip()
        if rest and not rest.startswith(","):
            raise MatcherError(f"cannot read the label matchers at {rest!r}: separate matchers by commas")
        pos = len(text) - len(rest) + 1
    return out


def _scan(text: str, pos: int, to_comma: bool) -> tuple[Matcher, int]:
    head = _HEAD.match(text, pos)
    if head is None:
        raise MatcherError(f"{text!r} is not a matcher: {_FORMS}")
    name, op = head.groups()
    pos = head.end()
    if text.startswith('"', pos):
        quoted = _QUOTED.match(text, pos)
        if quoted is None:
            raise MatcherError(f"{text!r}: the value's quotes are not closed")
        return Matcher.make(name, op, _unquote(quoted.group(1))), quoted.end()
    stop = text.find(",", pos) if to_comma else -1
    stop = len(text) if stop < 0 else stop
    return Matcher.make(name, op, text[pos:stop].strip()), stop


def _unquote(body: str) -> str:
    """What is between the quotes, with JSON's escapes read and every other backslash kept."""
    if "\\" not in body:
        return body
    return _JSON_ESCAPE.sub(lambda m: str(json.loads(f'"{m.group(0)}"')), body)


# -- regexes that finish -------------------------------------------------------------------------


def check_regex(pattern: str) -> re.Pattern[str]:
    """Compile a matcher's regex, refusing one that could take exponential time on a label value.

    Python's regexes backtrack: ``(.|.)*Z`` tries 2^n ways on a value of n characters (a page filter
    once froze the server for 10 s that way). Refused, with what to change: a repeat inside a repeat
    (``(a+)+``, ``(.*x)*``) and alternatives that can start alike inside a repeat (``(a|ab)*``,
    ``(.|.)*``), and patterns longer than :data:`MAX_REGEX`. ``(foo|bar)+``, ``.*_revenue`` and
    ``(x.*)?`` stay fine.
    """
    if len(pattern) > MAX_REGEX:
        raise MatcherError(f"the regex is {len(pattern)} characters long; at most {MAX_REGEX} are taken")
    try:
        compiled = re.compile(pattern)
        tree = _sre_parse.parse(pattern)
    except re.error as exc:
        raise MatcherError(f"bad regular expression ({exc})") from None
    why = _risky(list(tree), inside=False)
    if why:
        raise MatcherError(
            f"the regular expression could take exponential time: it has {why}; "
            "write the repeated part so that each character can be matched one way only"
        )
    return compiled


_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT)


def _risky(items: list[Any], inside: bool) -> str | None:
    """Why the parsed pattern ``items`` may backtrack exponentially (``inside``: within a repeat), or None."""
    for op, av in items:
        found = None
        if op in _REPEATS:
            _lo, hi, body = av
            if inside and hi > 1:
                return "a repeat inside a repeat"
            found = _risky(list(body), inside or hi > 1)
        elif op is _sre.BRANCH:
            alts = [list(a) for a in av[1]]
            if inside and _overlap(alts):
                return "alternatives that can match the same text inside a repeat"
            found = next((w for a in alts if (w := _risky(a, inside))), None)
        elif op is _sre.SUBPATTERN:
            found = _risky(list(av[-1]), inside)
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            found = _risky(list(av[1]), inside)
        elif op is _sre.GROUPREF_EXISTS:
            found = _risky(list(av[1]), inside) or (_risky(list(av[2]), inside) if av[2] else None)
        if found:
            return found
    return None


def _overlap(alts: list[list[Any]]) -> bool:
    firsts = [_first(a) for a in alts]
    for i, a in enumerate(firsts):
        for b in firsts[i + 1 :]:
            if a is None or b is None or a & b:
                return True
    return False


def _first(items: list[Any]) -> frozenset[int] | None:
    """The characters a match of ``items`` can start with; None: any, or it can match nothing."""
    out: set[int] = set()
    for op, av in items:
        if op is _sre.AT:
            continue
        if op is _sre.LITERAL:
            return frozenset(out | {av})
        if op is _sre.IN:
            chars = _charset(av)
            return None if chars is None else frozenset(out | chars)
        if op is _sre.SUBPATTERN:
            inner = _first(list(av[-1]))
            return None if inner is None else frozenset(out | inner)
        if op in _REPEATS and av[0] >= 1:
            inner = _first(list(av[2]))
            return None if inner is None else frozenset(out | inner)
        return None
    return None


def _charset(items: list[Any]) -> set[int] | None:
    out: set[int] = set()
    for op, av in items:
        if op is _sre.LITERAL:
            out.add(av)
        elif op is _sre.RANGE and av[1] - av[0] < 512:
            out.update(range(av[0], av[1] + 1))
        else:
            return None
    return out
