from itertools import combinations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormeye.grouping.evaluation import pairwise_scores


def brute(pred: list[int], truth: list[int]) -> tuple[float, float]:
    tp = fp = fn = 0
    for i, j in combinations(range(len(pred)), 2):
        sp, stt = pred[i] == pred[j], truth[i] == truth[j]
        tp += sp and stt
        fp += sp and not stt
        fn += stt and not sp
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=2, max_size=40))
def test_pairwise_counts_match_brute_force(pairs: list[tuple[int, int]]) -> None:
    pred = [p for p, _ in pairs]
    truth = [t for _, t in pairs]
    got = pairwise_scores(pred, truth)
    p, r = brute(pred, truth)
    assert got.precision == pytest.approx(p) and got.recall == pytest.approx(r)


def test_perfect_and_compression() -> None:
    s = pairwise_scores(["a", "a", "b"], [1, 1, 2])
    assert (s.precision, s.recall, s.f1, s.ari) == (1.0, 1.0, 1.0, 1.0)
    assert s.compression == 1.5
    with pytest.raises(ValueError, match="same items"):
        pairwise_scores([1], [1, 2])
    assert np.isclose(pairwise_scores(["x"] * 4, [1, 1, 2, 2]).precision, 2 / 6)
