"""The anomaly graph: why two anomalies belong together, and the components that become incidents.

Evidence for an edge between two anomalies:

- **name**: cosine of their property vectors, weighted for *this storm*. Each pair's weight is
  its IDF times how over-represented it is among the anomalies now active (its lift: the share
  of its metrics that are anomalous, over the share of all metrics that are). ``country=England``
  with 30 of its 80 metrics anomalous dominates; ``device=mobile``, anomalous no more often
  than anything else, hardly counts. Without this, two metrics that differ only in the
  property that explains the storm (England vs France) would look alike. ``key_weights``
  scales whole keys (the metric name ``__name__`` says what is measured, not where, so it
  counts half by default).
- **scope**: the hotness (key weight x log lift, no IDF) of the hottest pair the two share,
  over the hotness of the hottest pair of either one. Hierarchical labels (``host`` inside ``service``) make the
  cosine undersell a service-wide problem: each member's own host outweighs the shared
  service. Scope says "they share the property that explains them". The name evidence of an
  edge is the larger of the two.
- **shape**: best lagged Pearson correlation of their recent windows over the raw and the
  envelope views (:mod:`grouping.correlation`), and its lag;
- **time**: how far apart the two anomalies started.

An edge exists when ``name >= min_name`` and either ``shape >= min_shape`` or the two started
at most ``co_onset_s`` apart (0, the default: in the same step; negative turns this path off).
Its weight is ``name * (0.5 + 0.5 * max(shape, 0))``.

Weak chains must not glue unrelated anomalies into one giant component: every component of
at least ``guard_min_size`` nodes is split by Louvain community detection (networkx, seeded,
weighted) when the split's modularity reaches ``guard_modularity``. A dense clique has
modularity near 0 under any split and stays whole; two groups joined by a few bridging edges
have high modularity and come apart. We chose modularity over a plain strong-edge cut because
it looks at the whole component, not at single edges, and it is parameter-light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

from grouping.correlation import shape_similarity_pairs
from grouping.names import NAME_KEY, NameIndex


@dataclass(frozen=True)
class GroupingConfig:
    """Thresholds of the anomaly graph and of incident lifecycle (seconds for times)."""

    min_name: float = 0.5
    min_shape: float = 0.7
    co_onset_s: float = 0.0
    max_lag_steps: int = 3
    shape_points: int = 60
    shape_kinds: tuple[str, ...] = ("raw", "envelope")
    key_weights: dict[str, float] = field(default_factory=lambda: {NAME_KEY: 0.5})
    hot_min_count: int = 2
    cold_weight: float = 0.05
    link_window_s: float = 900.0
    resolve_after_s: float = 1800.0
    guard_min_size: int = 8
    guard_modularity: float = 0.3
    merge_min_links: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_name", "min_shape", "cold_weight"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"grouping {name} must be within [0, 1], got {v}")
        for name in ("link_window_s", "resolve_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"grouping {name} must not be negative, got {getattr(self, name)}")
        if self.shape_points < 8:
            raise ValueError(f"grouping shape_points must be at least 8, got {self.shape_points}")
        if self.merge_min_links < 1:
            raise ValueError(f"grouping merge_min_links must be at least 1, got {self.merge_min_links}")
        if self.max_lag_steps < 0:
            raise ValueError(f"grouping max_lag_steps must not be negative, got {self.max_lag_steps}")


@dataclass
class Node:
    """An anomaly as the graph sees it."""

    key: tuple[str, float]
    metric: str
    start: float
    incident: str | None = None  # the open incident it already belongs to, if any


def contrast_vectors(index: NameIndex, names: Sequence[str], config: GroupingConfig) -> sp.csr_matrix:
    """L2-normalized name vectors of ``names`` weighted by IDF, key weight and storm lift."""
    mat, _ = contrast_weights(index, names, config)
    return _normalize(mat)


def _normalize(mat: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms) @ mat)


SCOPE_POWER = 32  # a power mean this high is the max within 5% for up to five shared pairs


def scope_similarity(hotness: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``rows`` x all: hottest shared pair over the larger of the two hottest pairs.

    ``hotness`` holds, per anomaly, the hotness of its hot pairs only. The max over shared
    pairs is taken as a high power mean through one sparse product (an exact max is not a
    matrix product); values are normalized first so the power cannot overflow.
    """
    if hotness.nnz == 0:
        return sp.csr_matrix((len(rows), hotness.shape[0]))
    top = float(hotness.data.max())
    powered = hotness.copy()
    powered.data = (powered.data / top) ** SCOPE_POWER
    shared = sp.csr_matrix(powered[rows] @ powered.T)
    shared.data = shared.data ** (1.0 / SCOPE_POWER) * top
    best = np.asarray(hotness.max(axis=1).todense()).ravel()
    coo = shared.tocoo()
    denom = np.maximum(best[rows][coo.row], best[coo.col])
    vals = np.minimum(coo.data / np.maximum(denom, 1e-12), 1.0)
    return sp.csr_matrix((vals, (coo.row, coo.col)), shape=shared.shape)


def contrast_weights(
    index: NameIndex, names: Sequence[str], config: GroupingConfig
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Per anomaly: its pairs weighted by IDF x (cold weight + hotness), and by hotness alone.

    Hotness of a pair is ``key weight x log(lift)`` when at least ``hot_min_count`` anomalies
    hold it and it is over-represented (lift > 1), else 0.
    """
    cols = [index.token_columns(n) for n in names]
    indptr = np.zeros(len(cols) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(c) for c in cols])
    indices = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    n_vocab = len(index.idf())
    shape = (len(names), n_vocab)
    if len(indices) == 0:
        return sp.csr_matrix(shape), sp.csr_matrix(shape)
    idf = index.idf()
    df = index.doc_freq().astype(np.float64)
    active = np.bincount(indices, minlength=n_vocab).astype(np.float64)
    base_rate = len(names) / max(len(index), 1)
    used = np.unique(indices)
    lift = np.zeros(n_vocab)
    lift[used] = (active[used] / np.maximum(df[used], 1.0)) / max(base_rate, 1e-12)
    hot = np.where((active >= config.hot_min_count) & (lift > 1.0), np.log(np.maximum(lift, 1.0)), 0.0)
    key_w = np.ones(n_vocab)
    if config.key_weights:
        for col in used:
            key = index.column_token(int(col)).split("=", 1)[0]
            key_w[col] = config.key_weights.get(key, 1.0)
    cos_w = idf * (config.cold_weight + hot) * key_w
    hot_w = hot * key_w
    cos_mat = sp.csr_matrix((cos_w[indices], indices, indptr), shape=shape)
    hot_mat = sp.csr_matrix((hot_w[indices], indices, indptr), shape=shape)
    hot_mat.eliminate_zeros()
    return cos_mat, hot_mat


def hot_properties(
    index: NameIndex, names: Sequence[str], config: GroupingConfig, top: int = 5
) -> list[tuple[str, int, int, float]]:
    """The pairs most over-represented among ``names``: ``(pair, anomalous, total, lift)``."""
    if not names:
        return []
    cols = np.concatenate([index.token_columns(n) for n in names])
    df = index.doc_freq()
    counts = np.bincount(cols, minlength=len(df))
    used = np.flatnonzero(counts)
    base = len(names) / max(len(index), 1)
    lift = (counts[used] / np.maximum(df[used], 1)) / max(base, 1e-12)
    order = np.lexsort((-counts[used], -lift))
    out = []
    for i in order[:top]:
        col = int(used[i])
        if counts[col] >= min(config.hot_min_count, len(names)):
            out.append((index.column_token(col), int(counts[col]), int(df[col]), float(lift[i])))
    return out


def build_graph(
    nodes: Sequence[Node],
    new: Sequence[int],
    index: NameIndex,
    windows: Callable[[Sequence[str]], np.ndarray],
    config: GroupingConfig,
    step: float,
) -> nx.Graph:
    """Graph over ``nodes`` with an edge wherever the evidence passes the thresholds.

    Only pairs that involve a ``new`` node are examined: existing members were linked (or
    not) when they arrived. ``windows(metrics)`` returns the recent windows of those metrics
    (rows in order, last column = now).
    """
    g = nx.Graph()
    for i, nd in enumerate(nodes):
        g.add_node(i, key=nd.key, incident=nd.incident)
    if not len(new) or len(nodes) < 2:
        return g
    names = [nd.metric for nd in nodes]
    mat, hotness = contrast_weights(index, names, config)
    vec = _normalize(mat)
    new_idx = np.asarray(new, dtype=np.int64)
    sims = sp.csr_matrix(vec[new_idx] @ vec.T).maximum(scope_similarity(hotness, new_idx)).tocoo()
    left = new_idx[sims.row]
    right = sims.col.astype(np.int64)
    name_sim = sims.data
    is_new = np.zeros(len(nodes), bool)
    is_new[new_idx] = True
    # each pair once: new-old pairs, and new-new pairs with left < right
    keep = (left != right) & (name_sim >= config.min_name - 1e-12) & (~is_new[right] | (left < right))
    left, right, name_sim = left[keep], right[keep], name_sim[keep]
    if not len(left):
        return g
    involved = np.unique(np.concatenate([left, right]))
    pos = np.full(len(nodes), -1, dtype=np.int64)
    pos[involved] = np.arange(len(involved))
    win = windows([names[i] for i in involved])[:, -config.shape_points :]
    shape, lag = shape_similarity_pairs(win, pos[left], pos[right], config.max_lag_steps, config.shape_kinds)
    starts = np.array([nd.start for nd in nodes])
    gap = np.abs(starts[left] - starts[right])
    ok = (shape >= config.min_shape) | (gap <= config.co_onset_s)
    for a, b, n_s, s_s, lg, gp in zip(left[ok], right[ok], name_sim[ok], shape[ok], lag[ok], gap[ok]):
        weight = float(n_s) * (0.5 + 0.5 * max(float(s_s), 0.0))
        g.add_edge(
            int(a),
            int(b),
            weight=weight,
            name=round(float(n_s), 4),
            shape=round(float(s_s), 4),
            lag_s=int(lg) * step,
            onset_gap_s=float(gp),
        )
    return g


def guarded_components(g: nx.Graph, config: GroupingConfig) -> list[set[int]]:
    """Connected components, with large loosely-knit ones split into communities."""
    out: list[set[int]] = []
    for comp in nx.connected_components(g):
        if len(comp) < config.guard_min_size:
            out.append(set(comp))
            continue
        sub = g.subgraph(comp)
        parts = nx.community.louvain_communities(sub, weight="weight", seed=config.seed)
        if len(parts) > 1 and nx.community.modularity(sub, parts, weight="weight") >= config.guard_modularity:
            out.extend(set(p) for p in parts)
        else:
            out.append(set(comp))
    return out


def edge_evidence(g: nx.Graph, node: int, within: set[int] | None = None) -> dict[str, Any]:
    """The strongest edge of ``node`` (optionally only to nodes in ``within``), as evidence."""
    best: tuple[float, int, dict[str, Any]] | None = None
    for other, data in g[node].items():
        if within is not None and other not in within:
            continue
        if best is None or data["weight"] > best[0]:
            best = (data["weight"], other, data)
    if best is None:
        return {}
    _, other, data = best
    return {"to": g.nodes[other]["key"][0], **{k: data[k] for k in ("weight", "name", "shape", "lag_s", "onset_gap_s")}}
