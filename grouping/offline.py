"""Grouping a whole period's anomalies at once: the reference the tick-by-tick tracker is held to.

The live tracker sees anomalies as they arrive and never moves a member except by a merge.
Given the whole period instead, :func:`group_all` builds one graph over every anomaly and
takes its (guarded) components. Differences between the two come from three places, which
the grouping bench measures:

- **order**: live, a cluster joins the incident it links to most strongly, and two incidents
  merge only when ``merge_min_links`` new anomalies bridge them; at once, any edge connects;
- **hotness**: live, a pair's storm lift is computed over the anomalies active at that tick;
  at once, over the whole period (a property hot in one burst is diluted by the rest);
- **time**: live, a new anomaly meets only members active within ``link_window_s``; at once,
  pairs whose activity lies within ``link_window_s`` of each other, compared on windows ending
  ``tail_steps`` after the later of the two starts.

The evidence an incident needs to open (``open_min_evidence``, ``confirm_points``, ``unconfirmed_weight``) is a
paging decision, not a grouping one: every anomaly given here is placed, lone ones as groups of one. The bench hands
it the anomalies of the live incidents, so both sides hold the same anomalies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from stormeye.grouping.correlation import shape_similarity_pairs
from stormeye.grouping.graph import (
    GroupingConfig,
    all_pairs,
    candidate_pairs,
    components,
    contrast_weights,
    passing_edges,
)
from stormeye.grouping.names import NameIndex


class Span(Protocol):
    metric: str
    start: float
    end: float


def group_all(
    anomalies: Sequence[Span],
    index: NameIndex,
    windows_at: Callable[[Sequence[str], float], np.ndarray],
    config: GroupingConfig,
    step: float,
    tail_steps: int = 5,
) -> list[list[int]]:
    """Incidents (lists of indexes into ``anomalies``) from one graph over all of them.

    ``windows_at(metrics, end)`` returns the windows of those metrics ending at time ``end``.
    """
    n = len(anomalies)
    if n == 0:
        return []
    names = [a.metric for a in anomalies]
    index.add(sorted({m for m in names if m not in index}))
    starts = np.array([a.start for a in anomalies], dtype=np.float64)
    ends = np.array([a.end for a in anomalies], dtype=np.float64)
    mat, hotness = contrast_weights(index, names, config)
    if config.use_names:
        left, right, name_sim = candidate_pairs(mat, hotness, starts, np.arange(n), config)
    else:
        left, right, name_sim = all_pairs(n, np.arange(n))
    gap_between = np.maximum(0.0, np.maximum(starts[left], starts[right]) - np.minimum(ends[left], ends[right]))
    near = gap_between <= config.link_window_s
    left, right, name_sim = left[near], right[near], name_sim[near]
    shape = np.full(len(left), -1.0)
    lag = np.zeros(len(left), dtype=np.int64)
    when = np.maximum(starts[left], starts[right]) + tail_steps * step
    for end in np.unique(when):
        sel = np.flatnonzero(when == end)
        involved = np.unique(np.concatenate([left[sel], right[sel]]))
        pos = {int(k): i for i, k in enumerate(involved)}
        win = windows_at([names[k] for k in involved], float(end))[:, -config.shape_points :]
        if not config.use_shapes:
            shape[sel] = 1.0
            continue
        s, lg = shape_similarity_pairs(
            win,
            np.array([pos[int(k)] for k in left[sel]]),
            np.array([pos[int(k)] for k in right[sel]]),
            config.max_lag_steps,
            config.shape_kinds,
            enough=config.min_shape,
            absolute=config.shape_absolute,
        )
        shape[sel], lag[sel] = s, lg
    gap = np.abs(starts[left] - starts[right])
    edges = passing_edges(left, right, name_sim, shape, lag, gap, config, step, hotness)
    return [sorted(int(i) for i in comp) for comp in components(n, edges, config)]
