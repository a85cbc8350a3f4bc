"""Business priority of an incident: KPIs first, then strength, breadth and duration.

Per-metric importance comes from rules that match labels (regular expressions over
property values, all given keys must match): a ``weight`` (default 1), a ``kpi`` flag and the
direction that is ``bad`` for that metric (``up``, ``down`` or ``both``). The first matching
rule wins, so list specific rules before general ones.

An incident's score is the product of five parts, all stored so a person can see why:

- ``importance``: the largest member weight, times 1.5 when a KPI member moved its bad way;
- ``strength``: mean of the three highest peak scores (0..1);
- ``badness``: 0.5 + the share of members that moved their bad way (0.5..1.5): a surge of
  sign-ups is less urgent than their collapse;
- ``breadth``: 1 + log2(number of members);
- ``duration``: 1 + log1p(minutes from first start to last activity) / 4.

Levels: P1 >= 40, P2 >= 15, P3 >= 6, P4 >= 2.5, else P5.

An alert's ``severity`` label multiplies its weight (:data:`SEVERITY_FACTOR`: ``page`` and
``critical`` x3, ``error`` x2, ``warning`` x0.5, ``info`` x0.25).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from stormeye.core.errors import BadInput
from stormeye.core.labels import Matcher, MatcherError, matchers_from_map, matches_all

LEVELS: tuple[tuple[float, int], ...] = ((40.0, 1), (15.0, 2), (6.0, 3), (2.5, 4))
#: an alert's ``severity`` label multiplies its metric's weight (the rule's, or the default): one
#: ``page`` or ``critical`` alert is enough to open an incident, ``warning`` alerts need company
SEVERITY_FACTOR = {"page": 3.0, "critical": 3.0, "error": 2.0, "high": 2.0, "warning": 0.5, "info": 0.25, "none": 0.25}
DIRECTIONS = ("up", "down", "both")


class PriorityConfigError(BadInput):
    """A priority rule is malformed; the message names the rule and the field."""


@dataclass(frozen=True)
class PriorityRule:
    """Importance of the metrics whose labels match ``match`` (label -> regex, full match, label present;
    ``core.labels.matchers_from_map``)."""

    match: Mapping[str, str]
    weight: float = 1.0
    kpi: bool = False
    bad: str = "both"
    name: str = ""
    _matchers: tuple[Matcher, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        label = self.name or str(dict(self.match))
        if not self.match:
            raise PriorityConfigError(f"priority rule {label}: 'match' needs at least one label")
        if not (isinstance(self.weight, (int, float)) and self.weight > 0 and math.isfinite(self.weight)):
            raise PriorityConfigError(f"priority rule {label}: 'weight' must be a positive number, got {self.weight!r}")
        if self.bad not in DIRECTIONS:
            raise PriorityConfigError(f"priority rule {label}: 'bad' must be one of {DIRECTIONS}, got {self.bad!r}")
        try:
            object.__setattr__(self, "_matchers", matchers_from_map(self.match))
        except MatcherError as exc:
            raise PriorityConfigError(f"priority rule {label}: match[{exc.label!r}]: {exc.reason}") from None

    def matches(self, props: Mapping[str, str]) -> bool:
        return matches_all(self._matchers, props)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], position: int = 0) -> PriorityRule:
        """Build a rule from configuration data, with errors that point at the rule."""
        if not isinstance(data, Mapping):
            raise PriorityConfigError(f"priority rule #{position}: must be an object, got {type(data).__name__}")
        unknown = set(data) - {"match", "weight", "kpi", "bad", "name"}
        if unknown:
            raise PriorityConfigError(
                f"priority rule #{position}: unknown field(s) {sorted(unknown)}; use match, weight, kpi, bad, name"
            )
        match = data.get("match")
        if not isinstance(match, Mapping):
            raise PriorityConfigError(f"priority rule #{position}: 'match' must be an object of label: regex")
        return cls(
            match=dict(match),
            weight=float(data.get("weight", 1.0)),
            kpi=bool(data.get("kpi", False)),
            bad=str(data.get("bad", "both")),
            name=str(data.get("name", f"rule {position}")),
        )


DEFAULT_RULES: tuple[PriorityRule, ...] = (
    PriorityRule({"__name__": "revenue|.*_revenue|gmv"}, weight=10, kpi=True, bad="down", name="revenue"),
    PriorityRule(
        {"__name__": "purchase_count|orders?|signups?|sign_ups|conversion_rate|checkouts?"},
        weight=6,
        kpi=True,
        bad="down",
        name="business KPI",
    ),
    PriorityRule(
        {"__name__": "checkout_errors|payment_failures?"}, weight=5, kpi=True, bad="up", name="business errors"
    ),
    PriorityRule({"__name__": ".*error.*|.*fail.*|.*5xx.*"}, weight=2, bad="up", name="errors"),
    PriorityRule({"__name__": "latency.*|.*_latency.*|.*_p9[59]"}, weight=2, bad="up", name="latency"),
    PriorityRule(
        {"__name__": "request_rate|requests?|page_views|sessions|cart_adds"}, weight=1.5, bad="down", name="traffic"
    ),
)


class MemberLike(Protocol):
    metric: str
    start: float
    end: float
    peak_score: float
    direction: int


@dataclass(frozen=True)
class MetricImportance:
    weight: float
    kpi: bool
    bad: str
    rule: str

    def moved_bad(self, direction: int) -> bool:
        if self.bad == "both":
            return direction != 0
        return (direction > 0) if self.bad == "up" else (direction < 0)


@dataclass(frozen=True)
class Priority:
    level: int
    score: float
    parts: dict[str, float]

    @property
    def label(self) -> str:
        return f"P{self.level}"


class PriorityModel:
    """Scores incidents from their members and the rules."""

    def __init__(self, rules: Sequence[PriorityRule] = DEFAULT_RULES, default_weight: float = 1.0) -> None:
        self.rules = tuple(rules)
        self.default_weight = default_weight
        self._cache: dict[str, MetricImportance] = {}
        # the rules read a few labels only: metrics that agree on them share their importance
        self._keys = tuple(sorted({"severity"} | {k for rule in self.rules for k in rule.match}))
        self._by_labels: dict[tuple[str | None, ...], MetricImportance] = {}

    @classmethod
    def from_config(cls, data: Iterable[Mapping[str, Any]]) -> PriorityModel:
        return cls([PriorityRule.from_dict(d, i) for i, d in enumerate(data)])

    def importance(self, metric: str, props: Mapping[str, str]) -> MetricImportance:
        got = self._cache.get(metric)
        if got is None:
            labels = tuple(props.get(k) for k in self._keys)
            got = self._by_labels.get(labels)
            if got is None:
                got = MetricImportance(self.default_weight, False, "both", "")
                for rule in self.rules:
                    if rule.matches(props):
                        got = MetricImportance(float(rule.weight), rule.kpi, rule.bad, rule.name)
                        break
                factor = SEVERITY_FACTOR.get(str(props.get("severity", "")).lower())
                if factor is not None:
                    got = replace(
                        got, weight=got.weight * factor, rule=f"{got.rule} severity={props['severity']}".strip()
                    )
                self._by_labels[labels] = got
            self._cache[metric] = got
        return got

    def score(
        self, members: Sequence[MemberLike], props: Mapping[str, Mapping[str, str]], last_activity: float
    ) -> Priority:
        if not members:
            return Priority(5, 0.0, {})
        imps = [self.importance(m.metric, props[m.metric]) for m in members]
        kpi_bad = any(i.kpi and i.moved_bad(m.direction) for i, m in zip(imps, members))
        importance = max(i.weight for i in imps) * (1.5 if kpi_bad else 1.0)
        peaks = sorted((m.peak_score for m in members), reverse=True)[:3]
        strength = sum(peaks) / len(peaks)
        bad_share = sum(i.moved_bad(m.direction) for i, m in zip(imps, members)) / len(members)
        badness = 0.5 + bad_share
        breadth = 1.0 + math.log2(len(members))
        first = min(m.start for m in members)
        minutes = max(0.0, last_activity - first) / 60.0
        duration = 1.0 + math.log1p(minutes) / 4.0
        score = importance * strength * badness * breadth * duration
        parts = {
            "importance": round(importance, 4),
            "strength": round(strength, 4),
            "badness": round(badness, 4),
            "breadth": round(breadth, 4),
            "duration": round(duration, 4),
            "kpi": float(kpi_bad),
        }
        return Priority(level_of(score), round(score, 4), parts)


def level_of(score: float) -> int:
    for bound, level in LEVELS:
        if score >= bound:
            return level
    return 5
