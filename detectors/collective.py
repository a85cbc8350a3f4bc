"""Collective evidence: several metrics of one entity moving together say more than any one.

Thirty metrics of ``os=iOS`` each moving 3 sigma are, one by one, unremarkable; together they
are an incident. Each step, for every group of metrics (a property shared by its members: a
host, a service, a country), this layer counts the members whose score reached ``watch``
(a low level: by calibration, about 1% of points of any metric reach 0.2) and asks how unusual
that count is *for that group*: the count is compared with the group's own history, an
exponentially weighted mean and variance of its past counts, as a negative binomial tail
(variance at least the mean). Groups of correlated metrics (twelve CPU series of one server
that always move together) teach their history a large variance, so they need a bigger crowd.
Before any history exists the group's expected count is what calibration promises:
``size x 10^(-10 watch)``, Poisson.

Crowds are counted per direction (a crowd moves one way). When a group's count is surprising
enough (its score, ``-log10(p)/10`` like every detector score, reaches ``threshold``), its
watching members are raised to the group's score, and open anomalies together. Only ordinary
steps teach a group its usual count, so an incident is not learned as normal while it lasts;
and a group that has been surprising on more than ``max_rate`` of its recent steps (twelve
correlated CPU series that cross the watch level together every hour) crowds routinely and
is silenced until it calms down.

Cost per step: one sparse product (groups x metrics) over the watching metrics only, and
vector updates of the per-group state; groups are columns of a membership matrix the caller
builds once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import nbinom, poisson

from stormeye.detectors.base import Scores, pvalue_to_score


@dataclass
class GroupEvidence:
    """What the layer found at a step: groups whose crowd of watching members was surprising."""

    groups: np.ndarray  # group (column) indexes
    counts: np.ndarray  # watching members
    expected: np.ndarray  # the group's expected count
    score: np.ndarray  # the group's score
    raised: int  # metrics whose score was raised


#: up to this many groups :meth:`CollectiveEvidence.idle` works on Python floats, group by group
_SCALAR_GROUPS = 8

#: the default watch level: a member whose score reached it counts in its group's crowd (about 1% of
#: points by calibration)
WATCH = 0.2


class CollectiveEvidence:
    """Per-group counts of watching metrics, calibrated against each group's own history."""

    def __init__(
        self,
        watch: float = WATCH,
        threshold: float = 0.5,
        min_count: int = 3,
        halflife: float = 1440.0,
        min_share: float = 0.2,
        max_rate: float = 0.1,
    ) -> None:
        if not 0.0 < watch < threshold <= 1.0:
            raise ValueError(f"need 0 < watch < threshold <= 1, got watch={watch}, threshold={threshold}")
        if min_count < 2:
            raise ValueError(f"min_count must be at least 2, got {min_count}")
        if halflife <= 0:
            raise ValueError(f"halflife must be positive, got {halflife}")
        self.watch = watch
        self.threshold = threshold
        self.min_count = min_count
        self.halflife = halflife
        self.min_share = min_share
        self.max_rate = max_rate
        self.mean_: np.ndarray = np.zeros(0)
        self.var_: np.ndarray = np.zeros(0)
        self.seen_: np.ndarray = np.zeros(0)
        self.rate_: np.ndarray = np.zeros(0)
        self._sizes_cache: tuple[sp.csr_matrix, tuple[object, int], np.ndarray] | None = None
        self._entries_cache: tuple[sp.csr_matrix, tuple[object, int], tuple[np.ndarray, ...]] | None = None

    def _sizes(self, membership: sp.csr_matrix) -> np.ndarray:
        """Members per group; kept for the matrix last seen (the pipeline passes the same one step
        after step until metrics arrive, and a sparse column sum costs ~0.1 ms a call)."""
        cached = self._sizes_cache
        if cached is not None and cached[0] is membership and cached[1] == (membership.shape, membership.nnz):
            return cached[2]
        sizes = np.asarray(membership.sum(axis=0)).ravel()
        self._sizes_cache = (membership, (membership.shape, membership.nnz), sizes)
        return sizes

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the caches (a saved replay state need not carry the membership twice)."""
        state = dict(self.__dict__)
        state["_sizes_cache"] = state["_entries_cache"] = None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update({"_sizes_cache": None, "_entries_cache": None, **state})

    def _entries(self, membership: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, group, weight) of every membership entry, kept for the matrix last seen as :meth:`_sizes` is."""
        cached = self._entries_cache
        if cached is not None and cached[0] is membership and cached[1] == (membership.shape, membership.nnz):
            rows, cols, data = cached[2]
            return rows, cols, data
        csr = sp.csr_matrix(membership)
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        entries = (rows, csr.indices.astype(np.int64), csr.data.astype(np.float64))
        self._entries_cache = (membership, (membership.shape, membership.nnz), entries)
        return entries

    def _counts(self, membership: sp.csr_matrix, watching: np.ndarray) -> np.ndarray:
        """Per group, the summed membership of the ``watching`` rows (``membership[watching].sum(axis=0)``,
        without building the sub-matrix: a step's count costs a gather and a bincount)."""
        rows, cols, data = self._entries(membership)
        hit = watching[rows]
        return np.bincount(cols[hit], weights=data[hit], minlength=membership.shape[1])

    def _grow(self, sizes: np.ndarray) -> None:
        n = len(sizes)
        if n > len(self.mean_):
            prior = sizes[len(self.mean_) :] * 10.0 ** (-10.0 * self.watch)
            self.mean_ = np.r_[self.mean_, prior]
            self.var_ = np.r_[self.var_, prior]
            self.seen_ = np.r_[self.seen_, np.zeros(n - len(self.seen_))]
            self.rate_ = np.r_[self.rate_, np.zeros(n - len(self.rate_))]

    def _surprising(
        self, counts: np.ndarray, sizes: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Groups whose count reaches ``threshold`` as a score, and those scores."""
        candidate = np.flatnonzero((counts >= self.min_count) & (counts >= self.min_share * sizes))
        if not len(candidate):
            return candidate, np.zeros(0)
        k, mu = counts[candidate], np.maximum(mean[candidate], 1e-3)
        v = np.maximum(var[candidate], mu * (1 + 1e-6))
        # negative binomial with this mean and variance (Poisson when they are equal)
        p_nb = mu / v
        r = mu * p_nb / (1 - p_nb)
        log_p = np.where(v <= mu * (1 + 1e-5), poisson.logsf(k - 1, mu), nbinom.logsf(k - 1, r, p_nb))
        g_score = pvalue_to_score(log_p)
        keep = g_score >= self.threshold
        return candidate[keep], g_score[keep]

    def update(self, scores: Scores, membership: sp.csr_matrix) -> tuple[Scores, GroupEvidence]:
        """Raise the scores of watching members of surprising groups; learn the others' counts.

        ``membership`` is (metrics x groups), nonzero where a metric belongs to a group; its rows
        are the rows of ``scores``.
        """
        sizes = self._sizes(membership)
        self._grow(sizes)
        out = Scores(score=scores.score.copy(), direction=scores.direction, status=scores.status, raw=dict(scores.raw))
        mean, var = self.mean_[: len(sizes)], self.var_[: len(sizes)]
        counts = np.zeros(len(sizes))
        hot_all, score_all, raised = [], [], 0
        # a crowd moves one way: count each direction on its own
        for sign in (1, -1):
            watching = (scores.score >= self.watch) & (scores.direction == sign)
            if not watching.any():
                continue
            k_dir = self._counts(membership, watching)
            counts = np.maximum(counts, k_dir)
            hot, hot_score = self._surprising(k_dir, sizes, mean, var)
            routine = self.rate_[hot] > self.max_rate  # this group crowds all the time: silenced
            hot, hot_score = hot[~routine], hot_score[~routine]
            if not len(hot):
                continue
            best = np.zeros(len(out.score))
            rows, cols = membership[:, hot].nonzero()
            np.maximum.at(best, rows, hot_score[cols])
            lift = watching & (best > out.score)
            raised += int(lift.sum())
            out.score[lift] = best[lift]
            hot_all.append(hot)
            score_all.append(hot_score)
        hot = np.concatenate(hot_all) if hot_all else np.zeros(0, dtype=np.int64)
        hot_score = np.concatenate(score_all) if score_all else np.zeros(0)
        # ordinary steps teach the usual count; every step teaches how often the group surprises
        alpha = 1.0 - 0.5 ** (1.0 / self.halflife)
        learn = np.ones(len(sizes), bool)
        learn[hot] = False
        diff = counts - mean
        mean[learn] += alpha * diff[learn]
        var[learn] = (1 - alpha) * (var[learn] + alpha * diff[learn] ** 2)
        surprised = np.zeros(len(sizes))
        surprised[hot] = 1.0
        rate = self.rate_[: len(sizes)]
        rate += alpha * (surprised - rate)
        self.seen_[: len(sizes)] += 1
        return out, GroupEvidence(hot, counts[hot], mean[hot].copy(), hot_score, raised)

    def idle(self, membership: sp.csr_matrix, steps: int) -> None:
        """``steps`` calls of :meth:`update` in which no metric watched: no group counts anyone, so
        every group learns a count of 0 (the same arithmetic as :meth:`update`, without the
        scores; a replay skips the steps where nothing happens, see ``workers.pipeline``)."""
        if steps <= 0:
            return
        sizes = self._sizes(membership)
        self._grow(sizes)
        n = len(sizes)
        alpha = 1.0 - 0.5 ** (1.0 / self.halflife)
        mean, var, rate = self.mean_[:n], self.var_[:n], self.rate_[:n]
        if n <= _SCALAR_GROUPS:
            # few groups (a replay of one or a few metrics): the same float64 arithmetic, in the
            # same order, on Python floats; a numpy call per group and step costs ~1 µs of overhead
            keep = 1 - alpha
            for g in range(n):
                m, v, r = float(mean[g]), float(var[g]), float(rate[g])
                for _ in range(steps):
                    diff = 0.0 - m
                    m += alpha * diff
                    v = keep * (v + alpha * (diff * diff))
                    r += alpha * (0.0 - r)
                mean[g], var[g], rate[g] = m, v, r
        else:
            zero = np.zeros(n)
            for _ in range(steps):
                diff = zero - mean
                mean += alpha * diff
                var[:] = (1 - alpha) * (var + alpha * diff**2)
                rate += alpha * (zero - rate)
        self.seen_[:n] += steps

    def to_state(self) -> dict[str, list[float]]:
        """The learned per-group history, JSON-ready (for a runtime that restarts between steps)."""
        return {
            "mean": self.mean_.tolist(),
            "var": self.var_.tolist(),
            "seen": self.seen_.tolist(),
            "rate": self.rate_.tolist(),
        }

    def load_state(self, state: dict[str, list[float]]) -> None:
        self.mean_ = np.asarray(state.get("mean", []), dtype=np.float64)
        self.var_ = np.asarray(state.get("var", []), dtype=np.float64)
        self.seen_ = np.asarray(state.get("seen", []), dtype=np.float64)
        self.rate_ = np.asarray(state.get("rate", []), dtype=np.float64)
