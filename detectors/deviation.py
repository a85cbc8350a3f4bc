"""Mean / percentage deviation with asymmetric up and down bounds.

Idea: the business states what size of move matters ("revenue 20% below its recent mean is an
incident, 30% above is not worth a page until it is"), the data states how unusual that move is.
The newest point is compared with the mean (or median) of the preceding ``history`` points:
``ratio = (x - reference) / |reference|``.

- Inside the bounds (``-down <= ratio <= up``) the score is 0, however unusual the point is:
  the bounds are a business filter, not a statistic.
- Outside them the score is the calibrated two-sided tail probability of the deviation under the
  history's own spread (``z = (x - reference) / scale``, scale = the history's standard deviation,
  floored at ``min_scale * |reference|``; ``score = -log10(p) / 10``). So a bound never inflates a
  score: a 40% jump on a metric that routinely swings 50% scores low, and on a flat metric it
  scores high. The bound only decides *whether* the move counts; the data decides *how much*.

A reference of 0 makes every move an infinite percentage: such rows are judged by the
probability alone (``zero_reference="probability"``) or not at all (``"ignore"``).
Parameters: ``history``, ``min_points``, ``up`` and ``down`` (fractions, ``None`` = that
direction never matters), ``reference`` ("mean" or "median"), ``min_scale``.
Cost: one pass for the mean and one for the spread (a row sort with ``reference="median"``).
"""

from __future__ import annotations

import warnings

import numpy as np

from stormeye.detectors.base import Detector, Scores, normal_two_sided_score
from stormeye.detectors.rowstats import nan_median


class PercentDeviation(Detector):
    """Newest point outside asymmetric percentage bounds of a rolling reference."""

    name = "deviation"

    def __init__(
        self,
        history: int = 60,
        min_points: int = 10,
        up: float | None = 0.3,
        down: float | None = 0.2,
        reference: str = "mean",
        min_scale: float = 0.01,
        zero_reference: str = "probability",
    ) -> None:
        self.history = history
        self.min_points = min_points
        self.up = up
        self.down = down
        self.reference = reference
        self.min_scale = min_scale
        self.zero_reference = zero_reference

    def _validate(self) -> None:
        for side in ("up", "down"):
            v = getattr(self, side)
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{side} must be a non-negative fraction (0.2 = 20%) or None, got {v!r}")
        if self.reference not in ("mean", "median"):
            raise ValueError(f"reference must be 'mean' or 'median', got {self.reference!r}")
        if self.zero_reference not in ("probability", "ignore"):
            raise ValueError(f"zero_reference must be 'probability' or 'ignore', got {self.zero_reference!r}")

    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        self._validate()
        hist = windows[:, :-1]
        newest = windows[:, -1]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: their status says so
            ref = nan_median(hist) if self.reference == "median" else np.nanmean(hist, axis=1)
            spread = np.nanstd(hist, axis=1, ddof=1)
            dev = newest - ref
            absref = np.abs(ref)
            ratio = np.where(absref > 0, dev / absref, np.sign(dev) * np.inf)
        scale = np.maximum(np.nan_to_num(spread, nan=0.0), self.min_scale * absref)
        scale = np.where(scale > 0, scale, np.maximum(self.min_scale * np.abs(newest), 1e-12))
        z = np.nan_to_num(dev / scale, nan=0.0)
        outside = np.zeros(len(windows), dtype=bool)
        if self.up is not None:
            outside |= ratio > self.up
        if self.down is not None:
            outside |= ratio < -self.down
        if self.zero_reference == "ignore":
            outside &= absref > 0
        score = np.where(outside, normal_two_sided_score(z), 0.0)
        direction = np.sign(np.nan_to_num(dev)).astype(np.int8)
        return Scores(
            score=score,
            direction=direction,
            status=status,
            raw={"ratio": ratio, "reference": ref, "z": z},
        )
