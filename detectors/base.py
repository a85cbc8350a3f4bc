"""The detector contract: one interface, many strategies, two ways to call each.

A detector scores the newest point of many metric windows at once. ``windows`` is a 2-D
float array, one row per metric, oldest point first and the point to score last; NaN marks a
missing point. :meth:`Detector.score` returns, per row, a score in [0, 1], a direction
(+1 up, -1 down, 0 none) and a :class:`Status` saying whether the row could be analysed.

Streaming over one series (:meth:`Detector.score_series`) reuses the same batch code on the
series' trailing windows, so the score at ``t`` uses only points ``<= t`` and appending points
never changes an earlier score.

Scores are calibrated so that one threshold means the same on every metric: a score is
``-log10(p) / 10`` (clipped to [0, 1]) of the detector's tail probability ``p`` for what it
saw, so 0.5 is a one-in-100,000 event for that metric under the detector's model of normal.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import log_ndtr

LOG10 = float(np.log(10.0))
SCORE_DECADES = 10.0  # a score of 1 is a tail probability of 1e-10 or less


class Status(IntEnum):
    """Why a row was or was not analysed (initial checks run before any statistic)."""

    OK = 0
    TOO_FEW_POINTS = 1
    ALL_MISSING = 2
    NEWEST_MISSING = 3
    CONSTANT = 4
    NON_FINITE = 5

    @property
    def message(self) -> str:
        return _STATUS_TEXT[self]


_STATUS_TEXT = {
    Status.OK: "analysed",
    Status.TOO_FEW_POINTS: "too few points in the window to judge it yet (warming up)",
    Status.ALL_MISSING: "every point of the window is missing",
    Status.NEWEST_MISSING: "the newest point is missing",
    Status.CONSTANT: "the history is constant; a change is scored by its size only",
    Status.NON_FINITE: "the window holds an infinite value",
}


@dataclass
class Scores:
    """Per-row result of a batch call."""

    score: np.ndarray  # (m,) float64 in [0, 1]
    direction: np.ndarray  # (m,) int8 in {-1, 0, 1}
    status: np.ndarray  # (m,) uint8, values of Status
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # detector statistics, for evidence

    def __len__(self) -> int:
        return len(self.score)


def pvalue_to_score(log_p: np.ndarray) -> np.ndarray:
    """Map natural-log tail probabilities to calibrated scores in [0, 1]."""
    return np.clip(-log_p / (LOG10 * SCORE_DECADES), 0.0, 1.0)


#: the most decades a level carries (1e-300: float64's floor)
MAX_LEVEL = 30.0


def pvalue_to_level(log_p: np.ndarray) -> np.ndarray:
    """Natural-log tail probabilities as *levels*: ``-log10(p) / 10`` not clipped at 1 (at most 30).

    A strategy returns levels as its scores; :meth:`Detector._finish` keeps them in
    ``raw["level"]`` and clips the score to [0, 1]. Beyond a score of 1 (p below 1e-10) the level
    still orders moves by how rare the strategy's model says they are, which is what the tail
    ledger (:class:`~stormeye.detectors.calibration.TailLedger`) calibrates per metric.
    """
    return np.clip(-log_p / (LOG10 * SCORE_DECADES), 0.0, MAX_LEVEL)


def normal_two_sided_score(z: np.ndarray) -> np.ndarray:
    """Calibrated score of a z statistic under a standard normal null, two-sided."""
    return pvalue_to_score(np.log(2.0) + log_ndtr(-np.abs(z)))


def as_windows(windows: np.ndarray) -> np.ndarray:
    """Validate a batch input: a 2-D float array (a single 1-D window becomes one row)."""
    arr = np.asarray(windows, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"windows must be a 2-D array (metrics x points), got {arr.ndim} dimensions")
    if arr.shape[1] < 2:
        raise ValueError("windows need at least 2 points: history and the newest point")
    return arr


def initial_checks(windows: np.ndarray, min_points: int) -> np.ndarray:
    """Status of every row before analysis: missing newest point, too few points, constant, inf."""
    finite = np.isfinite(windows)
    n_finite = finite.sum(axis=1)
    status = np.full(windows.shape[0], Status.OK, dtype=np.uint8)
    hist = windows[:, :-1]
    # fmin/fmax skip NaN in one pass (an infinite value is NON_FINITE below, whatever these say)
    lo = np.fmin.reduce(hist, axis=1, initial=np.inf)
    hi = np.fmax.reduce(hist, axis=1, initial=-np.inf)
    status[lo == hi] = Status.CONSTANT
    status[n_finite - finite[:, -1] < min_points] = Status.TOO_FEW_POINTS
    status[~finite[:, -1]] = Status.NEWEST_MISSING
    status[np.isinf(windows).any(axis=1)] = Status.NON_FINITE
    status[n_finite == 0] = Status.ALL_MISSING
    return status


class Detector(ABC):
    """A scoring strategy. Settings live in ``__init__`` (no logic there); scoring is vectorized."""

    name: ClassVar[str] = "detector"
    #: False for strategies that judge a change of a window (distribution, level) and by design do
    #: not score one isolated point highly; the contract test then checks a sustained change instead
    point_outliers: ClassVar[bool] = True
    #: how many points of history, before the newest one, this detector looks at
    history: int = 60
    #: fewest finite history points needed before a row is analysed
    min_points: int = 10

    @abstractmethod
    def _score(self, windows: np.ndarray, status: np.ndarray) -> Scores:
        """Score rows whose status is OK (others may hold anything and are zeroed afterwards)."""

    def score(self, windows: np.ndarray) -> Scores:
        """Score the newest point of every row. Never raises on bad data: the status says."""
        arr, status, clean = self._prepare(windows)
        return self._finish(arr, status, self._score(clean, status))

    def _prepare(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the windows cut to ``history + 1`` points, their initial status, the same with inf as NaN)."""
        arr = as_windows(windows)
        arr = arr[:, -(self.history + 1) :]
        status = initial_checks(arr, self.min_points)
        return arr, status, np.where(np.isinf(arr), np.nan, arr)

    def _finish(self, arr: np.ndarray, status: np.ndarray, out: Scores) -> Scores:
        """Zero the rows a status rules out, and record how many points each row had."""
        if out.status is not status and len(out.status) == len(status):
            status = np.maximum(status, np.asarray(out.status, dtype=np.uint8))  # a strategy's own warm-up
        bad = (status != Status.OK) & (status != Status.CONSTANT)
        level = np.where(bad, 0.0, np.nan_to_num(out.score, nan=0.0))
        out.raw["level"] = level
        out.score = np.minimum(level, 1.0)
        out.direction = np.where(out.score > 0, out.direction, 0).astype(np.int8)
        out.status = status
        out.raw.setdefault("present", np.isfinite(arr).sum(axis=1).astype(np.float64))
        return out

    def score_series(self, values: np.ndarray, chunk: int | None = None) -> np.ndarray:
        """Per-point scores of a whole series with streaming semantics (strictly causal).

        The score at ``t`` is the batch score of the window ending at ``t``; the first points,
        before a full window exists, see a NaN-padded window and warm up as the status says.
        """
        return self.series(values, chunk).score

    def series(self, values: np.ndarray, chunk: int | None = None) -> Scores:
        """:meth:`score_series` with each point's level (``raw["level"]``) and status."""
        x = np.asarray(values, dtype=np.float64).ravel()
        pad = np.full(self.history, np.nan)
        view = sliding_window_view(np.concatenate([pad, x]), self.history + 1)
        score, level = np.empty(len(x)), np.empty(len(x))
        status = np.empty(len(x), dtype=np.uint8)
        if chunk is None:  # bound the sliding windows' copies to about 32 MB
            chunk = max(1, 4_000_000 // (self.history + 1))
        for lo in range(0, len(x), chunk):
            out = self.score(view[lo : lo + chunk])
            score[lo : lo + chunk] = out.score
            level[lo : lo + chunk] = out.raw.get("level", out.score)
            status[lo : lo + chunk] = out.status
        return Scores(score=score, direction=np.zeros(len(x), dtype=np.int8), status=status, raw={"level": level})

    def get_params(self) -> dict[str, object]:
        """The constructor settings, for reports and evidence."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
