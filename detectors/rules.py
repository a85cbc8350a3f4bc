"""Per-metric detection settings, chosen by label matchers (the style of ``grouping/priority.py``).

A rule matches metrics whose labels all fully match its regular expressions (``__name__`` is the
metric name; ``core.labels.matchers_from_map``: the one matcher of priority rules and routes). The
first matching rule wins, so list specific rules before general ones. Fields:

- ``threshold``: the score at which this metric's anomalies open (default: the global one).
  Applied by rescaling the metric's score by ``global / threshold``, so the anomaly tracker and
  collective evidence keep one threshold;
- ``bad``: ``up``, ``down`` or ``both`` (default): moves the other way score 0 (a surge of
  sign-ups is no incident; asymmetric bounds in the MyHeritage sense);
- ``ignore``: true to never open anomalies on the metric (a whitelist in reverse);
- ``min_points``: fewest present points in the window before the metric is judged (warm-up
  for new or sparse metrics).

``DetectorRules.from_config(list_of_dicts)`` validates with errors that name the rule and the
field. :meth:`DetectorRules.compile` resolves the rule of each metric once (a Python pass per
*new* metric); :meth:`CompiledRules.apply` is vectorized over a step's scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stormeye.core.errors import BadInput
from stormeye.core.labels import Matcher, MatcherError, matchers_from_map, matches_all
from stormeye.detectors.base import Scores

DIRECTIONS = ("up", "down", "both")
FIELDS = ("match", "threshold", "bad", "ignore", "min_points", "name")


class DetectorRuleError(BadInput):
    """A detector rule is malformed; the message names the rule and the field."""


@dataclass(frozen=True)
class DetectorRule:
    match: Mapping[str, str]
    threshold: float | None = None
    bad: str = "both"
    ignore: bool = False
    min_points: int = 0
    name: str = ""
    _matchers: tuple[Matcher, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        label = self.name or str(dict(self.match))
        if not self.match:
            raise DetectorRuleError(f"detector rule {label}: 'match' needs at least one label")
        t = self.threshold
        if t is not None and not (isinstance(t, (int, float)) and math.isfinite(t) and 0 < t <= 1):
            raise DetectorRuleError(f"detector rule {label}: 'threshold' must be a number in (0, 1], got {t!r}")
        if self.bad not in DIRECTIONS:
            raise DetectorRuleError(f"detector rule {label}: 'bad' must be one of {DIRECTIONS}, got {self.bad!r}")
        if not isinstance(self.min_points, int) or self.min_points < 0:
            raise DetectorRuleError(
                f"detector rule {label}: 'min_points' must be a whole number >= 0, got {self.min_points!r}"
            )
        try:
            object.__setattr__(self, "_matchers", matchers_from_map(self.match))
        except MatcherError as exc:
            raise DetectorRuleError(f"detector rule {label}: match[{exc.label!r}]: {exc.reason}") from None

    def matches(self, props: Mapping[str, str]) -> bool:
        return matches_all(self._matchers, props)

    @classmethod
    def from_dict(cls, data: Any, position: int = 0) -> DetectorRule:
        if not isinstance(data, Mapping):
            raise DetectorRuleError(f"detector rule #{position}: must be an object, got {type(data).__name__}")
        unknown = set(data) - set(FIELDS)
        if unknown:
            raise DetectorRuleError(
                f"detector rule #{position}: unknown field(s) {sorted(unknown)}; use {', '.join(FIELDS)}"
            )
        match = data.get("match")
        if not isinstance(match, Mapping):
            raise DetectorRuleError(f"detector rule #{position}: 'match' must be an object of label: regex")
        ignore = data.get("ignore", False)
        if not isinstance(ignore, bool):
            raise DetectorRuleError(f"detector rule #{position}: 'ignore' must be true or false, got {ignore!r}")
        threshold = data.get("threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise DetectorRuleError(f"detector rule #{position}: 'threshold' must be a number, got {threshold!r}")
        return cls(
            match=dict(match),
            threshold=None if threshold is None else float(threshold),
            bad=str(data.get("bad", "both")),
            ignore=ignore,
            min_points=data.get("min_points", 0),
            name=str(data.get("name", f"rule {position}")),
        )


@dataclass
class CompiledRules:
    """Per-row arrays of the rules, for vectorized application."""

    factor: np.ndarray  # score multiplier: global threshold / rule threshold
    allow: np.ndarray  # int8: 0 both, 1 only up, -1 only down
    ignore: np.ndarray  # bool
    min_points: np.ndarray  # int

    def apply(self, scores: Scores, rows: np.ndarray, present: np.ndarray | None = None) -> Scores:
        """The scores of ``rows`` after the rules (a new :class:`Scores`; the input is not changed)."""
        rows = np.asarray(rows, dtype=np.int64)
        f = self.factor[rows]
        allow = self.allow[rows]
        s = np.clip(scores.score * f, 0.0, 1.0)
        wrong_way = (allow != 0) & (scores.direction != allow)
        drop = self.ignore[rows] | wrong_way
        if present is not None:
            drop |= present < self.min_points[rows]
        s = np.where(drop, 0.0, s)
        direction = np.where(s > 0, scores.direction, 0).astype(np.int8)
        raw = scores.raw
        if "level" in raw:  # the uncapped level follows the score: a quieted metric is quieter at every depth
            raw = {**raw, "level": np.where(drop, 0.0, np.asarray(raw["level"]) * f)}
        return Scores(score=s, direction=direction, status=scores.status, raw=raw)


class DetectorRules:
    """An ordered list of :class:`DetectorRule`; the first match wins, no match keeps the defaults."""

    def __init__(self, rules: Sequence[DetectorRule] = ()) -> None:
        self.rules = tuple(rules)

    def __len__(self) -> int:
        return len(self.rules)

    @classmethod
    def from_config(cls, data: Any) -> DetectorRules:
        if isinstance(data, Mapping):
            data = data.get("rules")
        if not isinstance(data, list):
            raise DetectorRuleError("detector rules: expected a list of rules or an object with a 'rules' list")
        return cls([DetectorRule.from_dict(d, i) for i, d in enumerate(data)])

    def rule_for(self, props: Mapping[str, str]) -> DetectorRule | None:
        for r in self.rules:
            if r.matches(props):
                return r
        return None

    def compile(self, props: Sequence[Mapping[str, str]], threshold: float) -> CompiledRules:
        n = len(props)
        out = CompiledRules(np.ones(n), np.zeros(n, np.int8), np.zeros(n, bool), np.zeros(n, np.int64))
        if not self.rules:
            return out
        for i, p in enumerate(props):
            r = self.rule_for(p)
            if r is None:
                continue
            if r.threshold is not None:
                out.factor[i] = threshold / r.threshold
            out.allow[i] = {"both": 0, "up": 1, "down": -1}[r.bad]
            out.ignore[i] = r.ignore
            out.min_points[i] = r.min_points
        return out
