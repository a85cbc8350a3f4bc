"""How good a grouping is against ground truth: pairwise precision/recall/F1, ARI, compression.

Inputs are two labelings of the same items (detected anomalies): the predicted incident of
each and its true incident. Items that belong to no true incident (false-positive anomalies)
should carry a unique true label each, so that putting them into an incident costs precision.

Pairwise scores count pairs of items: a true positive pair is in the same predicted and the
same true incident. Counting is done from the contingency table, not over all pairs, so it is
linear in the number of items.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix


@dataclass(frozen=True)
class PairwiseScores:
    precision: float
    recall: float
    f1: float
    ari: float
    items: int
    predicted_groups: int
    true_groups: int

    @property
    def compression(self) -> float:
        """Items per predicted group: how many pages one incident replaces."""
        return self.items / self.predicted_groups if self.predicted_groups else 0.0


def _pairs(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) / 2).sum())


def pairwise_scores(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> PairwiseScores:
    """Pairwise precision, recall, F1 and adjusted Rand index of ``predicted`` against ``truth``."""
    if len(predicted) != len(truth):
        raise ValueError(f"predicted and truth must label the same items ({len(predicted)} != {len(truth)})")
    if not len(predicted):
        return PairwiseScores(0.0, 0.0, 0.0, 0.0, 0, 0, 0)
    p_codes = np.unique(np.asarray([str(x) for x in predicted]), return_inverse=True)[1]
    t_codes = np.unique(np.asarray([str(x) for x in truth]), return_inverse=True)[1]
    table = contingency_matrix(t_codes, p_codes, sparse=True)
    tp = _pairs(np.asarray(table.data, dtype=np.float64))
    pred_pairs = _pairs(np.bincount(p_codes).astype(np.float64))
    true_pairs = _pairs(np.bincount(t_codes).astype(np.float64))
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    ari = float(adjusted_rand_score(t_codes, p_codes))
    return PairwiseScores(precision, recall, f1, ari, len(predicted), int(p_codes.max()) + 1, int(t_codes.max()) + 1)


def time_to_detect(true_starts: dict[Hashable, float], first_seen: dict[Hashable, float]) -> dict[Hashable, float]:
    """Seconds from each true incident's start to the first detection of any of its members."""
    return {k: max(0.0, first_seen[k] - s) for k, s in true_starts.items() if k in first_seen}
