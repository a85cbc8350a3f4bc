"""The grouping graph's small-matrix shortcuts (issue 33) give what the scipy operations they
replace give: components by label propagation, rows normalized on the CSR arrays, and the
collective layer's counts by a bincount over the membership's entries."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

from stormeye.detectors import Scores
from stormeye.detectors.collective import CollectiveEvidence
from stormeye.grouping.graph import SMALL_GRAPH, Edges, GroupingConfig, _normalize, component_labels, components

graphs = st.integers(1, SMALL_GRAPH + 40).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
    )
)


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    return {frozenset(np.flatnonzero(labels == v).tolist()) for v in np.unique(labels)}


@settings(max_examples=200, deadline=None)
@given(graphs)
def test_component_labels_partition_the_nodes_as_scipy_does(graph: tuple[int, list[tuple[int, int]]]) -> None:
    n, pairs = graph
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    got = component_labels(n, left, right)
    ref = connected_components(sp.csr_matrix((np.ones(len(pairs)), (left, right)), shape=(n, n)), directed=False)[1]
    assert _partition(got) == _partition(ref)


def test_a_long_chain_is_one_component() -> None:
    """The worst case of propagation: a path whose smallest node is at one end, edges given backwards."""
    n = SMALL_GRAPH
    left = np.arange(n - 1)[::-1]
    assert set(component_labels(n, left, left + 1).tolist()) == {0}


@settings(max_examples=100, deadline=None)
@given(graphs, st.integers(0, 2**31))
def test_components_are_the_connected_components_sorted_by_their_smallest_node(
    graph: tuple[int, list[tuple[int, int]]], seed: int
) -> None:
    n, pairs = graph
    pairs = [(min(a, b), max(a, b)) for a, b in pairs if a != b]
    left = np.array([a for a, _ in pairs], dtype=np.int64)
    right = np.array([b for _, b in pairs], dtype=np.int64)
    w = np.random.default_rng(seed).uniform(0.1, 1.0, len(pairs))
    edges = Edges(left, right, w, w, w, np.zeros(len(pairs), dtype=np.int64), w, 60.0, None, None)
    # no guard: every component is returned whole
    got = components(n, edges, GroupingConfig(guard_min_size=10**6))
    ref = connected_components(sp.csr_matrix((w, (left, right)), shape=(n, n)), directed=False)[1]
    assert [c.tolist() for c in got] == sorted((sorted(c) for c in _partition(ref)), key=min)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 30), st.floats(0.0, 0.5), st.integers(0, 2**31))
def test_rows_are_normalized_as_the_diagonal_product_normalizes_them(
    rows: int, cols: int, density: float, seed: int
) -> None:
    mat = sp.random(rows, cols, density=density, format="csr", random_state=seed)
    mat.data[np.random.default_rng(seed).random(len(mat.data)) < 0.1] = 0.0  # stored zeros are dropped
    got = _normalize(mat)
    norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    ref = sp.csr_matrix(sp.diags(1.0 / norms) @ mat)
    assert got.nnz == ref.nnz
    np.testing.assert_allclose(got.toarray(), ref.toarray(), rtol=1e-15, atol=0)
    lengths = np.sqrt(np.asarray(got.multiply(got).sum(axis=1)).ravel())
    np.testing.assert_allclose(lengths[np.diff(got.indptr) > 0], 1.0, rtol=1e-12)


def test_collective_counts_are_the_watching_rows_summed_per_group() -> None:
    rng = np.random.default_rng(3)
    membership = sp.random(300, 40, density=0.05, format="csr", random_state=3)
    membership.data[:] = 1.0
    col = CollectiveEvidence()
    for _ in range(5):
        watching = rng.random(300) < 0.3
        np.testing.assert_array_equal(
            col._counts(membership, watching), np.asarray(membership[watching].sum(axis=0)).ravel()
        )
    # a new membership matrix (metrics arrived) is read afresh, not taken from the cache
    bigger = sp.vstack([membership, sp.csr_matrix(np.ones((5, 40)))]).tocsr()
    watching = np.ones(305, dtype=bool)
    np.testing.assert_array_equal(col._counts(bigger, watching), np.asarray(bigger.sum(axis=0)).ravel())
    s = Scores(score=np.full(305, 0.3), direction=np.ones(305, np.int8), status=np.zeros(305, np.uint8))
    out, _ = col.update(s, bigger)
    assert len(out.score) == 305


def test_a_pickled_collective_layer_leaves_its_caches_behind_and_counts_the_same() -> None:
    import pickle

    membership = sp.csr_matrix(np.ones((50, 4)))
    col = CollectiveEvidence()
    s = Scores(score=np.full(50, 0.3), direction=np.ones(50, np.int8), status=np.zeros(50, np.uint8))
    col.update(s, membership)
    back = pickle.loads(pickle.dumps(col))
    assert back._sizes_cache is None and back._entries_cache is None
    np.testing.assert_array_equal(back.mean_, col.mean_)
    a, _ = col.update(s, membership)
    b, _ = back.update(s, membership)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(back.mean_, col.mean_)
