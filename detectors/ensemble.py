"""The decider and the ensemble: per metric, pick the strategies the data calls for, combine them.

**Decider** (:func:`decide`): every call classifies each metric from its own window (nothing is
remembered, so the distributed mode needs no state):

- ``sparse``: fewer than half the window's points are present, or the history holds at most
  ``max_levels`` distinct values (a flag, a plateau gauge): only the robust z-score, whose
  recurrence rule and MAD fallbacks handle those;
- ``seasonal``: the seasonal strategies could run (the window covers their periods) and the
  seasonal residual's scale is at most ``seasonal_ratio`` of the plain robust scale (the season
  explains at least ~1 - ratio^2 of the variance): the seasonal reference and Holt-Winters,
  half each; the robust z-score is left out, because on a strong cycle its lagging median
  turns every ramp into an anomaly;
- ``counts``: integer values with a small median (<= ``max_count_median``): the robust z-score
  (its mean-absolute-deviation fallback keeps a quantized series from exploding);
- ``plain``: everything else: the robust z-score, plus any extra members given to the ensemble
  (distribution tests, level shift) at their weights.

**Ensemble rule**: each member's calibrated score is a tail probability ``p_i = 10^(-10 s_i)``.
For ``plain``, ``counts`` and ``sparse`` metrics they are combined with the weighted Cauchy
combination (Liu & Xie 2020): ``T = sum_i w_i tan((1/2 - p_i) pi)``, ``p = 1/2 - arctan(T) /
pi``, with the metric's weights ``w_i`` summing to 1. It stays valid whatever the dependence
between members (they look at the same window) and behaves like a weighted harmonic mean of the
``p_i`` for small ones: one strong member carries the score (down-weighted by its weight), two
agreeing members reinforce each other. The direction is that of the member contributing most to
``T``. The combined score is again ``-log10(p) / 10``, so the ensemble is calibrated like its
members.

For ``seasonal`` metrics the default rule is **lead**: the seasonal reference leads and
Holt-Winters corroborates. The Cauchy combination of the two replaces the reference's score only
where the reference already reached the watch level (0.2, a one-in-a-hundred point for that
metric); elsewhere the reference's score stands. Holt-Winters alone, which adapts and bends,
cannot open an anomaly, but it strengthens and sustains one the reference sees (trends: it
keeps seeing a ramp the reference has started to absorb). Measured against plain Cauchy on the
simulator (2 seeds, 400 metrics) and ASD (metric-level onsets): event score 0.711 vs 0.705,
false onsets 42 vs 58; ASD recall 0.794 vs 0.804 with 160 vs 186 false onsets a day.

**Consensus** (``DeciderConfig(rules={"seasonal": "consensus"})``, ``STORMEYE_SEASONAL_RULE``):
the combined score of a kind is the smallest of its members' scores (every member must find
the point unusual). The seasonal reference and Holt-Winters make different mistakes (a noisy
reference day; a forecast bent by a recent excursion), so consensus halves false onsets on
ASD, but it also drops level shifts and trends that the two see at different times: on the
simulator it scores below the seasonal reference alone, so it is not the default
(docs/detectors.md has both sets of figures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from stormeye.detectors.base import Detector, Scores, Status, pvalue_to_level
from stormeye.detectors.calibration import QUANTUM_POINTS, value_quantum
from stormeye.detectors.robust_z import RobustZScore
from stormeye.detectors.rowstats import nan_median
from stormeye.detectors.seasonal import CoarseSeasonalReference, HoltWinters, SeasonalReference

KINDS = ("plain", "seasonal", "counts", "sparse")
KIND_CODE = {k: i for i, k in enumerate(KINDS)}
RULES = ("cauchy", "lead", "consensus")


@dataclass(frozen=True)
class DeciderConfig:
    """Thresholds of :func:`decide` (see the module docstring)."""

    seasonal_ratio: float = 0.8
    max_levels: int = 3
    min_present: float = 0.5
    max_count_median: float = 30.0
    #: weights of the members for each kind of metric, by member name; a kind's weights are
    #: normalised over the members that could score the row
    weights: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {
            "plain": {"robust_z": 1.0},
            "seasonal": {"seasonal": 0.5, "holt_winters": 0.5},
            "counts": {"robust_z": 1.0},
            "sparse": {"robust_z": 1.0},
        }
    )

    #: score a lead member must reach before the others may raise it (rule ``lead``)
    watch: float = 0.2
    #: how each kind combines its members: ``cauchy`` (any strong member carries the score),
    #: ``lead`` (the kind's first member leads; the others corroborate: the Cauchy combination
    #: replaces the lead's score only where the lead reached ``watch``) or ``consensus`` (every
    #: member must see it: the combined score is the members' minimum)
    rules: Mapping[str, str] = field(
        default_factory=lambda: {"plain": "cauchy", "seasonal": "lead", "counts": "cauchy", "sparse": "cauchy"}
    )

    def __post_init__(self) -> None:
        for kind, rule in self.rules.items():
            if kind not in KINDS or rule not in RULES:
                raise ValueError(f"rules maps a metric kind {KINDS} to one of {RULES}, got {kind!r}: {rule!r}")
        if not 0.0 < self.watch < 1.0:
            raise ValueError(f"watch must be in (0, 1), got {self.watch}")
        if not 0.0 < self.seasonal_ratio <= 1.0:
            raise ValueError(f"seasonal_ratio must be in (0, 1], got {self.seasonal_ratio}")
        if self.max_levels < 1:
            raise ValueError(f"max_levels must be at least 1, got {self.max_levels}")
        if not 0.0 <= self.min_present <= 1.0:
            raise ValueError(f"min_present must be in [0, 1], got {self.min_present}")
        unknown = set(self.weights) - set(KINDS)
        if unknown:
            raise ValueError(f"weights name unknown metric kinds {sorted(unknown)}; kinds are {KINDS}")
        for kind, ws in self.weights.items():
            for member, w in ws.items():
                if not (w >= 0 and np.isfinite(w)):
                    raise ValueError(f"weight of {member!r} for {kind!r} metrics must be >= 0, got {w}")


def _distinct_at_most(hist: np.ndarray, k: int) -> np.ndarray:
    """Rows whose finite values take at most ``k`` distinct values (vectorized: one row sort)."""
    s = np.sort(hist, axis=1)
    fin = np.isfinite(s)
    new = fin[:, 1:] & (s[:, 1:] != s[:, :-1])
    distinct = fin[:, 0].astype(np.int64) + new.sum(axis=1)
    return distinct <= k


#: newest history points the decider classifies a metric by
DECIDE_POINTS = 240


def decide(
    windows: np.ndarray,
    plain_scale: np.ndarray,
    seasonal_scale: np.ndarray | None,
    cfg: DeciderConfig,
    median: np.ndarray | None = None,
) -> np.ndarray:
    """The kind of every row (codes of :data:`KINDS`), from its window and the members' scales
    (``median``: of the newest :data:`DECIDE_POINTS` history points, when the caller has it)."""
    hist = windows[:, :-1]
    recent = hist[:, -min(hist.shape[1], DECIDE_POINTS) :]
    m = windows.shape[0]
    kind = np.full(m, KIND_CODE["plain"], dtype=np.int8)
    finite = np.isfinite(recent)
    with np.errstate(invalid="ignore"):
        integer = np.all(~finite | (recent == np.round(recent)), axis=1)
        med = median
        if med is None:
            med = nan_median(recent) if recent.size else np.zeros(m)
    counts = integer & (np.abs(np.nan_to_num(med, nan=0.0)) <= cfg.max_count_median)
    kind[counts] = KIND_CODE["counts"]
    if seasonal_scale is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = seasonal_scale / plain_scale
        seasonal = np.isfinite(ratio) & (ratio <= cfg.seasonal_ratio)
        kind[seasonal] = KIND_CODE["seasonal"]
    sparse = (finite.mean(axis=1) < cfg.min_present) | _distinct_at_most(recent, cfg.max_levels)
    kind[sparse] = KIND_CODE["sparse"]
    return kind


def cauchy_combine(scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Cauchy combination of calibrated levels (members x rows) → (level, top member).

    Levels are scores not clipped at 1 (:func:`~stormeye.detectors.base.pvalue_to_level`)."""
    p = np.clip(10.0 ** (-10.0 * scores), 1e-300, 0.5)
    # tan((1/2 - p) pi) = 1 / tan(p pi); for p <= 1/2 it is >= 0
    terms = weights / np.tan(np.pi * p)
    t = terms.sum(axis=0)
    with np.errstate(divide="ignore"):
        p_comb = np.where(t > 1e6, 1.0 / (np.pi * np.maximum(t, 1e-300)), 0.5 - np.arctan(t) / np.pi)
    return pvalue_to_level(np.log(np.maximum(p_comb, 1e-300))), np.argmax(terms, axis=0)


class Ensemble(Detector):
    """The default detector: the decider picks members per metric, Cauchy combination joins them.

    ``period`` (points) sets the seasonal members; ``extra`` adds members (with weights per
    metric kind via ``decider.weights``, e.g. ``{"plain": {"robust_z": 0.7, "level_shift": 0.3}}``).
    """

    name = "ensemble"

    def __init__(
        self,
        period: int = 288,
        members: Sequence[Detector] | None = None,
        decider: DeciderConfig | None = None,
    ) -> None:
        self.period = period
        self.members = list(members) if members is not None else default_members(period)
        self.decider = decider or DeciderConfig()
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble members must have distinct names, got {names}")
        if "robust_z" not in names:
            raise ValueError("the ensemble needs a robust_z member: it is the fallback of every kind of metric")
        # weights may name members this ensemble lacks (the seasonal ones at a fine step): they count 0
        self.history = max(m.history for m in self.members)
        self.min_points = min(m.min_points for m in self.members)

    def get_params(self) -> dict[str, object]:
        return {"period": self.period, "members": [m.name for m in self.members]}

    @property
    def season(self) -> CoarseSeasonalReference | None:
        """The member that reads a coarse seasonal history (:meth:`score_season`), if any."""
        return next((m for m in self.members if isinstance(m, CoarseSeasonalReference)), None)

    def score(self, windows: np.ndarray) -> Scores:
        if len(self.members) == 1:  # nothing to decide or combine: no second check pass
            return self.members[0].score(windows)
        return super().score(windows)

    def score_season(
        self, windows: np.ndarray, coarse: Sequence[np.ndarray] | None, end_slot: int | np.ndarray
    ) -> Scores:
        """:meth:`score`, with the coarse seasonal history of every row (see :attr:`season`).

        ``coarse``: the bucket means of each span of ``season.spans(end_slot)`` (rows x buckets),
        ``end_slot`` being the windows' newest fine slot (or one per row: a block of steps scored
        in one call, see ``workers.pipeline.detect_block``); None: not kept.
        """
        season = self.season
        others = [m for m in self.members if m is not season]
        if season is not None and len(others) == 1 and (coarse is None or not season.ready(coarse).any()):
            # no metric has its earlier days yet (a new deployment): the other member alone, as
            # the combination would give it, without the combination's work
            return others[0].score(windows)
        arr, status, clean = self._prepare(windows)
        return self._finish(arr, status, self._score(clean, status, (coarse, end_slot)))

    def _score(
        self,
        windows: np.ndarray,
        status: np.ndarray,
        season: tuple[Sequence[np.ndarray] | None, int | np.ndarray] | None = None,
    ) -> Scores:
        outs = {}
        n_hist = windows.shape[1] - 1
        rz = next(m for m in self.members if m.name == "robust_z")
        # the robust z-score looks at the same newest points as the resolution check and the
        # decider (240 by default): what it computes of them is not computed twice
        same_quantum = same_median = False
        quantum = None
        if isinstance(rz, RobustZScore):
            same_quantum = min(n_hist, rz.recent) == min(n_hist, QUANTUM_POINTS)
            same_median = min(n_hist, rz.recent) == min(n_hist, DECIDE_POINTS)
            if same_quantum and rz.calibration.quantum_floor is not None:
                quantum = value_quantum(windows[:, :-1])
        for m in self.members:
            if isinstance(m, CoarseSeasonalReference):
                outs[m.name] = m.score_coarse(windows, *season, quantum) if season is not None else m.score(windows)
            elif m.history == self.history and m.min_points == self.min_points:
                # the same cut and checks as the ensemble's own (the robust z-score, usually): not twice
                st = status.copy()
                if isinstance(m, RobustZScore) and m is rz and quantum is not None:
                    res = m._score(windows, st, quantum)
                else:
                    res = m._score(windows, st)
                outs[m.name] = m._finish(windows, st, res)
            else:
                outs[m.name] = m.score(windows)
        base = outs["robust_z"]
        shared_median = base.raw["median"] if same_median else None
        seasonal_scale = None
        if "seasonal" in outs:
            s = outs["seasonal"]
            seasonal_scale = np.where(s.status == Status.OK, s.raw.get("seasonal_scale", np.nan), np.nan)
        kind = decide(windows, base.raw["scale"], seasonal_scale, self.decider, shared_median)
        names = list(outs)
        w = np.zeros((len(names), windows.shape[0]))
        for kname, code in KIND_CODE.items():
            rows = kind == code
            if not rows.any():
                continue
            for j, n in enumerate(names):
                w[j, rows] = self.decider.weights.get(kname, {}).get(n, 0.0)
        # members that could not score a row (warming up, short window) give their weight away
        usable = np.stack([(o.status == Status.OK) | (o.status == Status.CONSTANT) for o in outs.values()])
        w = np.where(usable, w, 0.0)
        total = w.sum(axis=0)
        fallback = total <= 0
        w[names.index("robust_z"), fallback] = 1.0
        w /= np.maximum(w.sum(axis=0), 1e-12)
        sc = np.stack([o.raw.get("level", o.score) for o in outs.values()])
        score, top = cauchy_combine(sc, w)
        # one member alone: its own score (the combination would floor a zero at p = 1/2, score 0.03)
        alone = (w > 0).sum(axis=0) == 1
        if alone.any():
            only = np.argmax(w[:, alone], axis=0)
            score[alone] = sc[only, np.flatnonzero(alone)]
            top[alone] = only
        for kname, rule in self.decider.rules.items():
            ws = self.decider.weights.get(kname, {})
            lead_name = next((n for n in ws if n in names and ws[n] > 0), None)
            if rule != "lead" or lead_name is None:
                continue
            lead = names.index(lead_name)
            rows = (kind == KIND_CODE[kname]) & (w[lead] > 0)
            lead_score = sc[lead, rows]
            score[rows] = np.where(lead_score >= self.decider.watch, np.maximum(score[rows], lead_score), lead_score)
            top[rows] = np.where(lead_score >= self.decider.watch, top[rows], lead)
        consensus = np.isin(kind, [KIND_CODE[k] for k, r in self.decider.rules.items() if r == "consensus"])
        if consensus.any():
            masked = np.where(w > 0, sc, np.inf)[:, consensus]
            score[consensus] = np.min(masked, axis=0)
            top[consensus] = np.argmin(masked, axis=0)
        dirs = np.stack([o.direction for o in outs.values()])
        direction = dirs[top, np.arange(len(top))].astype(np.int8)
        raw: dict[str, np.ndarray] = {"kind": kind.astype(np.float64)}
        for n, o in outs.items():
            raw[f"{n}_score"] = o.score
        for key in ("z", "median", "scale"):
            raw[key] = base.raw[key]
        # the z of the yardstick the row was judged by: the seasonal reference's on seasonal rows
        # (the robust z-score is left out of their score), the robust z elsewhere
        move_z = base.raw["z"]
        if "seasonal" in outs and "seasonal_z" in outs["seasonal"].raw:
            sz = outs["seasonal"].raw["seasonal_z"]
            move_z = np.where((kind == KIND_CODE["seasonal"]) & np.isfinite(sz), sz, move_z)
        raw["move_z"] = move_z
        for o in outs.values():
            for key, v in o.raw.items():
                if key != "level":  # the ensemble's own level is set by _finish
                    raw.setdefault(key, v)
        return Scores(score=score, direction=direction, status=base.status, raw=raw)


def default_members(period: int, split: float | None = 4.0, memory: int | None = None) -> list[Detector]:
    """Robust z-score (``memory``: its recurrence look-back, see :class:`RobustZScore`), seasonal
    reference (``split``: see :class:`SeasonalReference`) and Holt-Winters at ``period``."""
    return [RobustZScore(memory=memory), SeasonalReference(period=period, split=split), HoltWinters(period=period)]
