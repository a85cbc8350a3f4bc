"""Graphite dotted paths as properties: positional nodes, or templates as InfluxDB reads them.

A Graphite path such as ``eu.web-3.cpu.load`` carries its properties by position. Without
configuration every node becomes a positional property (``node0=eu``, ``node1=web-3``, …),
which is enough for similarity: two paths that differ in one node share the others.
Templates name the nodes, in the syntax of InfluxDB's and Telegraf's Graphite input::

    [filter] template [tag=value,...]

- ``template``: dot-separated parts, one per node: ``measurement`` (joined, in order, into
  the metric name ``__name__``), ``field`` (appended to the metric name after the measurement
  nodes), any other word (a property of that name; a word used twice joins its nodes), or
  nothing (skip the node, as in ``.host.measurement``). The last part may end with ``*``
  (``measurement*``) to take all remaining nodes.
- ``filter``: dot-separated glob patterns (``servers.*``, ``stats.web*``) matched against the
  first nodes of the path; the most specific matching filter wins (more nodes, then more
  nodes without wildcards, then the earlier template). A template without a filter is the
  default for paths no filter matches.
- ``tag=value,...``: properties added to every path the template reads (path values win).

A path with more nodes than a template without ``*`` reads is an error rather than silently
dropping the extra nodes: two different paths must not become one metric.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import translate
from typing import Literal

from stormeye.core.errors import BadInput

NODE = re.compile(r"[^\s.{}=;,\"]+")
_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_TAG_PAIR = re.compile(r"([A-Za-z_][A-Za-z0-9_.\-]*)=([^,=\s]+)")

Unmatched = Literal["positional", "name", "error"]


class GraphiteTemplateError(BadInput):
    """A Graphite template that cannot be used; the message says what to change."""


@dataclass(frozen=True)
class _Template:
    text: str
    filter: tuple[re.Pattern[str], ...]
    literal_nodes: int
    parts: tuple[str, ...]
    greedy: bool
    tags: tuple[tuple[str, str], ...]


def _compile(text: str) -> _Template:
    fields = text.split()
    if not 1 <= len(fields) <= 3:
        raise GraphiteTemplateError(f"Graphite template {text!r}: write '[filter] template [tag=value,...]'")
    filt: str | None = None
    tags = ""
    if len(fields) == 3:
        filt, tmpl, tags = fields
    elif len(fields) == 2:
        if "=" in fields[1]:
            tmpl, tags = fields
        else:
            filt, tmpl = fields
    else:
        tmpl = fields[0]
    parts = tmpl.split(".")
    greedy = parts[-1].endswith("*")
    if greedy:
        parts[-1] = parts[-1][:-1]
        if not parts[-1]:
            raise GraphiteTemplateError(
                f"Graphite template {text!r}: '*' must follow a part name, as in measurement* or host*"
            )
    for i, part in enumerate(parts):
        if "*" in part:
            raise GraphiteTemplateError(f"Graphite template {text!r}: only the last part may end with '*'")
        if part and not _PART.fullmatch(part):
            raise GraphiteTemplateError(
                f"Graphite template {text!r}: part {i} ({part!r}) must be measurement, field, a property "
                "name (letters, digits, _ -) or empty to skip the node"
            )
    if not any(parts):
        raise GraphiteTemplateError(f"Graphite template {text!r} names no node: give at least one part")
    pattern: tuple[re.Pattern[str], ...] = ()
    literal = 0
    if filt is not None:
        nodes = filt.split(".")
        if any(not n for n in nodes):
            raise GraphiteTemplateError(f"Graphite template {text!r}: the filter {filt!r} has an empty node")
        pattern = tuple(re.compile(translate(n)) for n in nodes)
        literal = sum(1 for n in nodes if not any(c in n for c in "*?["))
    extra: list[tuple[str, str]] = []
    if tags:
        for item in tags.split(","):
            m = _TAG_PAIR.fullmatch(item)
            if not m:
                raise GraphiteTemplateError(
                    f"Graphite template {text!r}: extra tags must be key=value pairs separated by commas, got {item!r}"
                )
            extra.append((m.group(1), m.group(2)))
    return _Template(text, pattern, literal, tuple(parts), greedy, tuple(extra))


class GraphiteTemplates:
    """How dotted Graphite paths become properties (see the module docstring for the syntax).

    ``unmatched`` says what happens to a path that no template matches when there is no
    default template: ``"positional"`` (``node0``, ``node1``, …), ``"name"`` (the whole path
    is the metric name) or ``"error"``. ``separator`` joins the nodes of one property.
    """

    def __init__(
        self, templates: Iterable[str] = (), *, separator: str = ".", unmatched: Unmatched = "positional"
    ) -> None:
        if unmatched not in ("positional", "name", "error"):
            raise GraphiteTemplateError(f"unmatched must be 'positional', 'name' or 'error', got {unmatched!r}")
        if not separator or any(c in separator for c in '{}=;,"') or separator.isspace():
            raise GraphiteTemplateError(f'separator {separator!r} must be a non-empty text without {{}}=;,"')
        self.templates = tuple(templates)
        self.separator = separator
        self.unmatched: Unmatched = unmatched
        compiled = [_compile(t) for t in self.templates]
        defaults = [t for t in compiled if not t.filter]
        if len(defaults) > 1:
            raise GraphiteTemplateError(
                f"Graphite templates {[t.text for t in defaults]} have no filter: keep one default template"
            )
        self._default = defaults[0] if defaults else None
        # most specific first: more filter nodes, then more literal nodes, then list order
        filtered = [(i, t) for i, t in enumerate(compiled) if t.filter]
        filtered.sort(key=lambda it: (-len(it[1].filter), -it[1].literal_nodes, it[0]))
        self._filtered = [t for _, t in filtered]

    def to_config(self) -> dict[str, object]:
        """Plain data that :meth:`from_config` turns back into the same reader."""
        return {"templates": list(self.templates), "separator": self.separator, "unmatched": self.unmatched}

    @classmethod
    def from_config(cls, config: dict[str, object]) -> GraphiteTemplates:
        templates = config.get("templates", [])
        if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
            raise GraphiteTemplateError("Graphite config 'templates' must be a list of texts")
        sep = config.get("separator", ".")
        unmatched = config.get("unmatched", "positional")
        if not isinstance(sep, str) or unmatched not in ("positional", "name", "error"):
            raise GraphiteTemplateError(
                "Graphite config needs a text 'separator' and 'unmatched' in positional/name/error"
            )
        return cls(templates, separator=sep, unmatched=unmatched)

    def template_for(self, nodes: list[str]) -> str | None:
        """The template text that reads these nodes (``None``: the unmatched rule applies)."""
        t = self._match(nodes)
        return None if t is None else t.text

    def _match(self, nodes: list[str]) -> _Template | None:
        for t in self._filtered:
            if len(nodes) >= len(t.filter) and all(p.match(n) for p, n in zip(t.filter, nodes)):
                return t
        return self._default

    def read(self, path: str, error: Callable[[str], Exception], name_key: str) -> list[tuple[str, str]]:
        """The ``(property, value)`` pairs of a dotted path, in node order; ``error(msg)`` builds the exception."""
        nodes = path.split(".")
        for i, node in enumerate(nodes):
            if not node:
                raise error(f"Graphite path {path!r} has an empty node at position {i}: remove the extra dot")
            if not NODE.fullmatch(node):
                raise error(
                    f'Graphite path {path!r}: node {node!r} holds a character a path cannot have (space {{}}=;,")'
                )
        tmpl = self._match(nodes)
        if tmpl is None:
            if self.unmatched == "positional":
                return [(f"node{i}", n) for i, n in enumerate(nodes)]
            if self.unmatched == "name":
                return [(name_key, path)]
            raise error(
                f"Graphite path {path!r} matches no template: add a template whose filter matches it "
                "(or a default template without filter)"
            )
        parts = tmpl.parts
        if len(nodes) > len(parts) and not tmpl.greedy:
            raise error(
                f"Graphite path {path!r} has {len(nodes)} nodes but template {tmpl.text!r} reads {len(parts)}: "
                "end the template with '*' (measurement*) to keep the rest, or write a template for this path"
            )
        values: dict[str, list[str]] = {}
        for i, node in enumerate(nodes):
            part = parts[i] if i < len(parts) else parts[-1]
            if part:
                values.setdefault(part, []).append(node)
        out: list[tuple[str, str]] = []
        what = values.pop("measurement", []) + values.pop("field", [])
        if what:
            out.append((name_key, self.separator.join(what)))
        out.extend((k, self.separator.join(v)) for k, v in values.items())
        have = {k for k, _ in out}
        out.extend((k, v) for k, v in tmpl.tags if k not in have)
        if not out:
            raise error(f"Graphite path {path!r}: template {tmpl.text!r} skips every node; name at least one")
        return out
