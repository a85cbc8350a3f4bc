"""People's feedback on grouping: metric pairs a person split apart are not linked again.

A manual split records every (split-off metric, remaining metric) pair as *apart*. The tracker
(:class:`grouping.incidents.IncidentTracker`, its ``apart`` set) then drops the edges between
such pairs before it groups a tick (:func:`drop_apart`), and refuses a join or merge that would put
such a pair in one incident again (:func:`allowed_targets`): the same evidence that grouped them
once does not group them again. New evidence through a third metric still can (a person can merge
by hand, which records the pair as *together*).

Pure: the pairs come in as plain data (the runtime reads them from its database).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from stormeye.grouping.graph import Edges

Pair = frozenset[str]


def pair(a: str, b: str) -> Pair:
    return frozenset((a, b))


def cross_pairs(left: Iterable[str], right: Iterable[str]) -> set[Pair]:
    """Every pair of one metric of ``left`` and a different one of ``right``."""
    rs = set(right)
    return {pair(a, b) for a in set(left) for b in rs if a != b}


def apart_edges(edges: Edges, names: Sequence[str], apart: set[Pair]) -> np.ndarray:
    """A mask of the edges (``names[node]``: a node's metric) that join an apart pair."""
    out = np.zeros(len(edges), dtype=bool)
    if not apart or not len(edges):
        return out
    involved = {m for p in apart for m in p}
    flagged = np.fromiter((n in involved for n in names), dtype=bool, count=len(names))
    for k in np.flatnonzero(flagged[edges.left] & flagged[edges.right]).tolist():
        out[k] = pair(names[int(edges.left[k])], names[int(edges.right[k])]) in apart
    return out


def drop_apart(edges: Edges, names: Sequence[str], apart: set[Pair]) -> Edges:
    """The edges without those between an apart pair."""
    gone = apart_edges(edges, names, apart)
    return edges.subset(~gone) if gone.any() else edges


def allowed_targets(
    targets: dict[int, list[str]],
    cluster_metrics: Callable[[int], Iterable[str]],
    incident_metrics: Callable[[str], Iterable[str]],
    apart: set[Pair],
) -> dict[int, list[str]]:
    """The incidents each cluster joins (``targets``: cluster -> [chosen, merged in...]) without any
    that would hold an apart pair with the cluster or with an incident kept before it."""
    if not apart:
        return targets
    involved = {m for p in apart for m in p}
    out: dict[int, list[str]] = {}
    for k, tg in targets.items():
        held = set(cluster_metrics(k))
        kept: list[str] = []
        for iid in tg:
            mets = set(incident_metrics(iid))
            a, b = held & involved, mets & involved
            if a and b and any(pair(x, y) in apart for x in a for y in b if x != y):
                continue
            kept.append(iid)
            held |= mets
        if kept:
            out[k] = kept
    return out


def separate_apart(comps: list[np.ndarray], edges: Edges, names: Sequence[str], apart: set[Pair]) -> list[np.ndarray]:
    """Clusters of new anomalies (``comps``, linked by ``edges``) cut so that none holds an apart pair.

    A cluster that would hold one is rebuilt from its own edges, strongest first (single linkage
    with cannot-link pairs): two groups join unless that would put an apart pair together. So a
    third metric related to both sides of a split does not bring them back into one incident.
    """
    if not apart:
        return comps
    involved = {m for p in apart for m in p}
    out: list[np.ndarray] = []
    for comp in comps:
        held = sorted({names[int(i)] for i in comp} & involved)
        if any(pair(a, b) in apart for k, a in enumerate(held) for b in held[k + 1 :]):
            out.extend(_cut(comp, edges, names, involved, apart))
        else:
            out.append(comp)
    return out


def _cut(
    comp: np.ndarray, edges: Edges, names: Sequence[str], involved: set[str], apart: set[Pair]
) -> list[np.ndarray]:
    parent = {int(i): int(i) for i in comp}
    flagged = {int(i): {names[int(i)]} & involved for i in comp}
    inside = np.flatnonzero(np.isin(edges.left, comp) & np.isin(edges.right, comp))
    for k in inside[np.argsort(-edges.weight[inside], kind="stable")].tolist():
        a, b = _find(parent, int(edges.left[k])), _find(parent, int(edges.right[k]))
        if a == b or any(pair(x, y) in apart for x in flagged[a] for y in flagged[b] if x != y):
            continue
        parent[b] = a
        flagged[a] |= flagged[b]
    groups: dict[int, list[int]] = {}
    for i in sorted(parent):
        groups.setdefault(_find(parent, i), []).append(i)
    return [np.array(g, dtype=np.int64) for g in groups.values()]


def _find(parent: dict[int, int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i
