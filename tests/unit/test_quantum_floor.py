"""The quantum floor: a one-quantum step of a rounded series is never a rare event."""

from dataclasses import replace

import numpy as np
import pytest

from stormeye.detectors import HoltWinters, RobustZScore, SeasonalReference
from stormeye.detectors.calibration import CalibrationConfig, calibrated_log_p, value_quantum
from stormeye.detectors.robust_z import ROBUST_Z_CALIBRATION
from stormeye.detectors.seasonal import SEASONAL_CALIBRATION

P = 288


def test_value_quantum_is_the_smallest_gap_between_distinct_values() -> None:
    x = np.array(
        [
            [0.49, 0.50, 0.51, np.nan, 0.50, 0.49],  # rounded to two decimals
            [3.0, 3.0, 3.0, 3.0, 3.0, 3.0],  # constant: no evidence of a resolution
            [1.0, 4.0, 2.0, 7.0, 2.0, 1.0],  # a count
            [np.nan] * 6,
        ]
    )
    q = value_quantum(x)
    assert q[0] == pytest.approx(0.01)
    assert q[1] == 0.0
    assert q[2] == 1.0
    assert q[3] == 0.0
    # float noise is not a resolution
    y = np.array([[0.3, 0.1 + 0.2, 0.7, 0.3]])
    assert value_quantum(y)[0] == pytest.approx(0.4)  # 0.1 + 0.2 - 0.3 = 5.6e-17 is ignored
    # only the newest points count
    z = np.concatenate([np.linspace(0, 1, 1000), np.round(np.linspace(0, 1, 240), 1)])[None, :]
    assert value_quantum(z, points=240)[0] == pytest.approx(0.1)


def test_one_quantum_step_of_a_quiet_rounded_series_is_not_an_anomaly() -> None:
    rng = np.random.default_rng(0)
    # a gauge reported with two decimals that sat on 0.05 for hours, with a rare 0.04 / 0.06
    x = np.full(241, 0.05)
    x[rng.choice(240, 12, replace=False)] = rng.choice([0.04, 0.06], 12)
    x[-1] = 0.07  # two quanta up
    floor = RobustZScore().score(x[None, :])
    bare = RobustZScore(calibration=replace(ROBUST_Z_CALIBRATION, quantum_floor=None)).score(x[None, :])
    assert bare.score[0] >= 0.5  # without the floor: a one-in-100,000 event
    assert floor.score[0] < 0.2  # with it: two quanta is a 2-sigma move at most
    # a real move of the same series still scores
    x[-1] = 0.30
    assert RobustZScore().score(x[None, :]).score[0] >= 0.5


def test_quantum_floor_leaves_continuous_series_alone() -> None:
    rng = np.random.default_rng(1)
    x = 100 + rng.normal(0, 1, (50, 241))
    x[:, -1] += 6
    a = RobustZScore().score(x).score
    b = RobustZScore(calibration=replace(ROBUST_Z_CALIBRATION, quantum_floor=None)).score(x).score
    np.testing.assert_array_equal(a, b)


def test_seasonal_members_use_the_floor() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(3 * P + 200)
    x = np.round(0.5 + 0.2 * np.sin(2 * np.pi * t / P) + rng.normal(0, 0.0005, len(t)), 2)
    x[-1] = np.round(x[-1] + 0.02, 2)  # two quanta: within the rounding, not news
    no_floor = replace(SEASONAL_CALIBRATION, quantum_floor=None)
    for det, bare in (
        (SeasonalReference(period=P), SeasonalReference(period=P, calibration=no_floor)),
        (HoltWinters(period=P), HoltWinters(period=P, calibration=no_floor)),
    ):
        assert det.score(x[None, :]).score[0] < 0.5, det.name
        assert det.score(x[None, :]).score[0] <= bare.score(x[None, :]).score[0], det.name


def test_calibrated_log_p_floors_the_scale_at_the_quantum() -> None:
    cfg = CalibrationConfig(tail_quantile=None, recurrence=None, evt_share=None)
    hist = np.zeros((1, 100))
    _, z = calibrated_log_p(hist, np.array([0.01]), np.array([1e-6]), cfg, quantum=np.array([0.01]))
    assert z[0] == pytest.approx(1.0)
    _, z2 = calibrated_log_p(hist, np.array([0.01]), np.array([1e-6]), cfg)
    assert z2[0] == pytest.approx(1e4)


def test_bad_quantum_floor_says_what_to_fix() -> None:
    with pytest.raises(ValueError, match="quantum_floor"):
        CalibrationConfig(quantum_floor=0.0)
    with pytest.raises(ValueError, match="quantum_floor"):
        CalibrationConfig(quantum_floor=float("nan"))
