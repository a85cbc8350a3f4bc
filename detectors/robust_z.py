"""Robust z-score: how far the newest point is from the recent median, in MAD units.

Idea: median and median absolute deviation of the last ``history`` points describe normal
without being dragged by the outliers we look for. ``z = (x - median) / (1.4826 * MAD)``.
Real metrics have heavier tails than a normal: when the ``tail_quantile`` of the history's own
``|z|`` is larger than a normal's, the scale is stretched by that ratio, so a latency series
with routine 5-sigma blips needs a proportionally bigger excursion to score the same.
Parameters: ``history`` (points of context), ``min_points`` (warm-up), ``min_scale`` (relative
floor of the scale, so quantized or near-constant series do not explode), ``calibration`` (one
:class:`~stormeye.detectors.calibration.CalibrationConfig`, the same for every residual strategy:
its ``tail_quantile`` — None turns the tail stretch off; ``recurrence`` and ``min_recurrences`` —
when the older history holds at least that many separate episodes that deviated by
``recurrence`` times the newest deviation or more, the score is their empirical rate instead: a
cron job's hourly spike is not news, but one earlier failure does not make the next one routine;
with ``recurrence_by_length`` only episodes that lasted as long as the newest run of such
deviations count, so the cron job's output doubling for ten minutes is news; ``lag``, the newest
points left out of the tail estimate, so an ongoing anomaly does not teach the detector that it
is normal; ``max_stretch``, the most heavy tails earn: an earlier incident in the history would
otherwise pass for a heavy tail and hide the next one; ``quantum_floor``; ``evt_share``, off
here; :data:`ROBUST_Z_CALIBRATION` by default), and ``memory`` (when longer than ``history``,
how many points back the recurrence rule looks while the median, scale and tail stay those of
the newest ``history`` points: a burst that recurs every few hours is routine when a day is
remembered).
Cost: one partial sort per row for the median and MAD and one for the tail quantile, ``O(n)``
each, vectorized over all rows.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from stormeye.detectors.base import Detector, Scores, pvalue_to_level
from stormeye.detectors.calibration import CalibrationConfig, calibrated_log_p, robust_location_scale, value_quantum

__all__ = ["RobustZScore", "robust_location_scale"]


#: the robust z-score's calibration (:class:`CalibrationConfig`): no exponential tail (on light tails
#: it asks about 6 sigma for a score of 0.5), a lag of 30 points
ROBUST_Z_CALIBRATION = CalibrationConfig(evt_share=None, lag=30)


class RobustZScore(Detector):
    """Newest point against the median/MAD of the preceding ``history`` points."""

    name = "robust_z"

    def __init__(
        self,
        history: int = 240,
        min_points: int = 30,
        min_scale: float = 0.01,
        calibration: CalibrationConfig | None = None,
        memory: int | None = None,
    ) -> None:
        if memory is not None and memory < 1:
            raise ValueError(f"memory must be a positive number of points or None, got {memory}")
        self.recent = history
        self.memory = memory
        self.history = max(history, memory or 0)
        self.min_points = min_points
        self.min_scale = min_scale
        self.calibration = ROBUST_Z_CALIBRATION if calibration is None else calibration

    def get_params(self) -> dict[str, object]:
        params = {k: v for k, v in vars(self).items() if k not in ("recent", "history")}
        return {"history": self.recent, **params}

    def _score(self, windows: np.ndarray, status: np.ndarray, quantum: np.ndarray | None = None) -> Scores:
        """``quantum``: :func:`value_quantum` of the windows' history when the caller has it (the
        ensemble shares it between members); else computed here."""
        full = windows[:, :-1]
        hist = full[:, -self.recent :]
        newest = windows[:, -1]
        med, scale = robust_location_scale(hist, self.min_scale)
        cfg = replace(self.calibration, min_points=self.min_points)
        if cfg.quantum_floor is None:
            quantum = None
        elif quantum is None:
            quantum = value_quantum(hist)
        memory = full - med[:, None] if full.shape[1] > hist.shape[1] else None
        log_p, z = calibrated_log_p(hist - med[:, None], newest - med, scale, cfg, quantum, memory)
        score = pvalue_to_level(log_p)
        direction = np.sign(z).astype(np.int8)
        return Scores(score=score, direction=direction, status=status, raw={"z": z, "median": med, "scale": scale})
