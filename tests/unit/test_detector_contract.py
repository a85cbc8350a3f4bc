"""The shared checks every detector passes (like scikit-learn's check_estimator)."""

import numpy as np
import pytest

from stormeye import detectors
from stormeye.detectors import Status

ALL = sorted(detectors.available().items())


@pytest.fixture(params=[name for name, _ in ALL])
def det(request):  # type: ignore[no-untyped-def]
    cls = detectors.available()[request.param]
    # seasonal strategies at a short period, so the contract's series cover their seasons
    return cls(period=24) if request.param in ("seasonal", "holt_winters", "ensemble") else cls()


def _noise(rows: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 + rng.normal(0, 1, (rows, n))


def test_shapes_range_and_types(det) -> None:  # type: ignore[no-untyped-def]
    w = _noise(7, det.history + 1)
    out = det.score(w)
    assert out.score.shape == (7,) and out.direction.shape == (7,) and out.status.shape == (7,)
    assert np.all((out.score >= 0) & (out.score <= 1))
    assert set(np.unique(out.direction)) <= {-1, 0, 1}


def test_single_window_is_one_row(det) -> None:  # type: ignore[no-untyped-def]
    assert len(det.score(_noise(1, det.history + 1)[0])) == 1


def test_bad_rows_get_a_status_not_an_exception(det) -> None:  # type: ignore[no-untyped-def]
    n = det.history + 1
    w = _noise(5, n)
    w[0, :] = np.nan
    w[1, -1] = np.nan
    w[2, :-1] = 5.0
    w[3, 3] = np.inf
    w[4, : n - 3] = np.nan
    out = det.score(w)
    assert out.status[0] == Status.ALL_MISSING
    assert out.status[1] == Status.NEWEST_MISSING
    assert out.status[2] == Status.CONSTANT
    assert out.status[3] == Status.NON_FINITE
    assert out.status[4] == Status.TOO_FEW_POINTS
    assert np.all(out.score[[0, 1, 3, 4]] == 0)
    assert np.all(np.isfinite(out.score))


def test_a_huge_jump_scores_high_with_its_direction(det) -> None:  # type: ignore[no-untyped-def]
    w = _noise(2, det.history + 1)
    # window-change strategies (point_outliers = False) see a jump that lasted the last 30 points
    last = 1 if det.point_outliers else 30
    w[0, -last:] += 50
    w[1, -last:] -= 50
    out = det.score(w)
    assert out.score[0] >= 0.5 and out.direction[0] == 1
    assert out.score[1] >= 0.5 and out.direction[1] == -1


def test_streaming_is_causal_and_appending_changes_nothing(det) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    x = 10 + rng.normal(0, 1, 400)
    if det.point_outliers:
        x[300] += 12
    else:
        x[300:] += 12  # a level shift: a window-change strategy must see it within 30 points
    full = det.score_series(x)
    head = det.score_series(x[:320])
    np.testing.assert_array_equal(full[:320], head)
    changed = x.copy()
    changed[350:] += 100  # the future must not change the past
    np.testing.assert_array_equal(det.score_series(changed)[:350], full[:350])
    assert (full[300] if det.point_outliers else full[300:330].max()) >= 0.5


def test_score_series_entry_point() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, 500)
    x[450] = 15
    s = detectors.score_series(x)
    assert s.shape == (500,) and s[450] >= 0.5 and s[:440].max() < 0.5
    with pytest.raises(ValueError, match="unknown detector"):
        detectors.score_series(x, detector="nope")
