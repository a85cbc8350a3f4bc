import numpy as np
import pytest

from stormeye.workers.store import MemoryWindowStore


def test_windows_are_aligned_to_the_step_and_missing_is_nan() -> None:
    st = MemoryWindowStore(step=60, length=10)
    st.append(np.array([0, 0, 1]), np.array([600.0, 719.0, 660.0]), np.array([1.0, 2.0, 5.0]))
    w = st.windows(np.array([0, 1, 7]), end=719, points=4)
    np.testing.assert_array_equal(w[0], [np.nan, np.nan, 1.0, 2.0])
    np.testing.assert_array_equal(w[1], [np.nan, np.nan, np.nan, 5.0])
    assert np.isnan(w[2]).all()  # an unknown row is all missing
    assert st.newest() == 660.0


def test_retention_rejects_too_old_and_ring_wraps() -> None:
    st = MemoryWindowStore(step=1, length=5, capacity=1)
    res = st.append(np.zeros(8, dtype=int), np.arange(8.0), np.arange(8.0))
    assert res.accepted == 5 and res.too_old == 3
    np.testing.assert_array_equal(st.windows(np.array([0]), 7, 5)[0], [3, 4, 5, 6, 7])
    assert st.append(np.array([0]), np.array([1.0]), np.array([9.0])).too_old == 1
    st.append(np.array([3]), np.array([20.0]), np.array([1.0]))  # far ahead: everything older is gone
    assert np.isnan(st.windows(np.array([0]), 7, 5)).all()
    assert st.rows >= 4


def test_bulk_load_keeps_the_newest_length_columns() -> None:
    st = MemoryWindowStore(step=10, length=4)
    vals = np.arange(12.0).reshape(2, 6)
    st.load(np.array([0, 1]), np.arange(6) * 10.0, vals)
    np.testing.assert_array_equal(st.windows(np.array([0, 1]), 50, 4), vals[:, 2:])
    with pytest.raises(ValueError):
        MemoryWindowStore(step=0, length=4)


def test_a_row_first_written_late_has_no_past_and_only_written_rows_are_cleared() -> None:
    """Advancing the head clears the rows ever written; a row written for the first time later
    still reads NaN before its first point, and a written row's old columns are gone after a wrap."""
    st = MemoryWindowStore(step=1, length=6, capacity=8)
    for t in range(10):  # row 0 only, wrapping the ring
        st.append(np.array([0]), np.array([float(t)]), np.array([float(t)]))
    st.append(np.array([5]), np.array([10.0]), np.array([50.0]))  # a new metric, beyond the rows used
    w = st.windows(np.array([0, 5, 3]), 10, 6)
    np.testing.assert_array_equal(w[0], [5, 6, 7, 8, 9, np.nan])
    np.testing.assert_array_equal(w[1], [np.nan] * 5 + [50.0])
    assert np.isnan(w[2]).all()
    st.append(np.array([5]), np.array([13.0]), np.array([51.0]))  # skips 11 and 12: cleared for every row
    w = st.windows(np.array([0, 5]), 13, 6)
    np.testing.assert_array_equal(w[0], [8, 9, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(w[1], [np.nan, np.nan, 50.0, np.nan, np.nan, 51.0])
