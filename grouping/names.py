"""Metric names as sets of property/value pairs, and their IDF-weighted similarity.

A metric name such as ``purchase_count{country="England",device="mobile"}`` is the set of
pairs ``__name__=purchase_count, country=England, device=mobile``. Pairs that few metrics
share say more about a metric than pairs that most share, so each pair is weighted by its
inverse document frequency ``log(N / n_pair)`` and a name becomes a sparse vector; two
names are as similar as the cosine of their vectors (Anodot's name similarity).

The metric name itself is the property ``__name__`` (Prometheus' convention); the Anodot
spelling ``what=...`` is read as ``__name__`` too.

Reading a name into its labels (:func:`parse`, every form in ``docs/names.md``) and writing the
canonical text (:func:`canonical`, :func:`normalize`) live in ``core/labels.py``; they are imported
here too, so ``from stormeye.grouping.names import parse`` keeps working.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

from stormeye.core.errors import BadInput
from stormeye.core.labels import NAME_ALIASES
from stormeye.core.labels import NAME_KEY as NAME_KEY
from stormeye.core.labels import MetricNameError as MetricNameError
from stormeye.core.labels import canonical as canonical
from stormeye.core.labels import normalize as normalize
from stormeye.core.labels import parse as parse
from stormeye.grouping.graphite import GraphiteTemplateError, GraphiteTemplates
from stormeye.grouping.lsh import (
    BandingParams,
    BandTables,
    GrowableArray,
    LSHError,
    SignatureFilter,
    candidate_pairs,
    hamming_cutoff,
    ranges,
    rarest_column_order,
    signatures,
    split_codes,
)

_CANONICAL_FAST = re.compile(
    r'([A-Za-z_:][A-Za-z0-9_:.\-/]*)\{((?:[A-Za-z_][A-Za-z0-9_.\-]*="[^"\\\n]+",)*[A-Za-z_][A-Za-z0-9_.\-]*="[^"\\\n]+")\}'
)

Method = Literal["auto", "lsh", "exact"]


class IndexFormatError(BadInput):
    """Bytes that are not a serialized :class:`NameIndex` (or one of an unknown version)."""


def _canonical_tokens(text: str) -> list[str] | None:
    """The tokens of ``text`` if it is already canonical (``name{a="x",b="y"}``, keys ascending,
    nothing to escape); ``None`` otherwise. The fast path of :meth:`NameIndex.add`: it gives
    exactly what ``pairs_of(parse(text))`` gives, with ``canonical(...) == text``.
    """
    m = _CANONICAL_FAST.fullmatch(text)
    if m is None:
        return None
    # every pair holds exactly two '"'. '",' ends a pair, or opens a value that starts with ','
    # (then the pieces outnumber the pairs and the full parser takes over); keys hold no '=' or
    # '"', so a piece's first '="' joins its key to its value (a value may itself end with '=')
    body = m.group(2)
    pieces = body[:-1].split('",')
    if 2 * len(pieces) != body.count('"'):
        return None
    tokens = [piece.replace('="', "=", 1) for piece in pieces]
    keys = [t[: t.index("=")] for t in tokens]
    if keys != sorted(set(keys)) or NAME_KEY in keys or any(a in keys for a in NAME_ALIASES):
        return None
    tokens.append(f"{NAME_KEY}={m.group(1)}")
    return tokens


def pairs_of(props: Mapping[str, str]) -> list[str]:
    """The property/value pairs of a metric as tokens (``key=value``), the vocabulary's units."""
    return [f"{k}={v}" for k, v in props.items()]


def token_key(token: str) -> int:
    """The stable 64-bit key of a ``key=value`` token (its hyperplane entries derive from it)."""
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"similarity threshold must be within (0, 1], got {threshold}")
    return t


class NameIndex:
    """The metrics we know, their IDF weights, their name vectors and an LSH over them.

    - **Storage**: one CSR matrix held as growable arrays (``indptr``, ``indices`` of vocabulary
      columns), document frequencies per pair, names in a list and a dict; about 100 bytes
      per metric (mostly the names' strings) plus 6-8 bytes per metric and LSH band.
    - **IDF**: always current (``log(N / n_pair)`` over everything added); exact cosines use it.
    - **LSH** (:mod:`grouping.lsh`): signatures are hashed with the IDF *frozen* at the last
      :meth:`rebuild`; metrics added later are hashed with that frozen IDF (a pair unseen at
      the freeze weighs as a pair held by one metric), so adds never re-hash old rows.
      When the index has grown by ``rebuild_growth`` (default: doubled) since the freeze, or
      its IDF has drifted by more than ``rebuild_drift`` (a family of names unseen at the
      freeze arrived, :meth:`idf_drift`), :attr:`rebuild_due` turns true; queries keep
      answering with the frozen IDF and never rebuild (seconds at a million names), the caller
      runs :meth:`rebuild_if_due` off its hot path: amortized O(1) per metric. Nothing is
      hashed until an LSH query (or :meth:`rebuild`) needs it.
    - **Two stages before the exact cosine**: LSH banding proposes candidates, then a Hamming
      filter on the first ``filter_bits`` signature bits drops those whose estimated angle is
      clearly too wide (:class:`grouping.lsh.SignatureFilter`; a pair at the threshold is
      dropped with probability at most ``filter_miss``). The banding is derived for recall
      ``recall / (1 - filter_miss)``, so both stages together still keep a pair at the
      threshold with probability at least ``recall``. ``filter_bits=0`` turns the filter off.
    - **Queries** (:meth:`neighbours`, :meth:`similar_pairs`) use LSH when ``method="lsh"``, or
      with ``method="auto"`` when the set is large (an index of more than ``exact_below``
      metrics; more than ``exact_pairs_below`` names to pair) and the threshold is at least the
      LSH threshold; otherwise they are exact. Candidates are always checked with the exact cosine.
    """

    FORMAT_VERSION = 2

    def __init__(
        self,
        threshold: float = 0.6,
        recall: float = 0.95,
        *,
        max_bands: int = 160,
        max_probes: int = 4096,
        seed: int = 0,
        rebuild_growth: float = 1.0,
        rebuild_drift: float = 0.1,
        exact_below: int = 5000,
        exact_pairs_below: int = 20_000,
        graphite: GraphiteTemplates | None = None,
        workers: int = 1,
        filter_bits: int = 512,
        filter_miss: float = 0.002,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if rebuild_growth < 0:
            raise ValueError(f"rebuild_growth must not be negative (0 = never rebuild on growth), got {rebuild_growth}")
        if not rebuild_drift >= 0:
            raise ValueError(f"rebuild_drift must not be negative (0 = never rebuild on drift), got {rebuild_drift}")
        if exact_below < 0 or exact_pairs_below < 0:
            raise ValueError(
                f"exact_below and exact_pairs_below must not be negative, got {exact_below}, {exact_pairs_below}"
            )
        if not 0.0 < recall < 1.0:
            raise ValueError(f"recall must be strictly between 0 and 1, got {recall}")
        if filter_bits < 0:
            raise ValueError(f"filter_bits must not be negative (0 = no Hamming filter), got {filter_bits}")
        if filter_bits and not (0.0 < filter_miss < 1.0 and recall / (1.0 - filter_miss) < 1.0):
            raise ValueError(
                f"filter_miss must be above 0 and below 1 - recall = {1.0 - recall:.6g} (the filter's share of the "
                f"pairs at the threshold that may be lost), got {filter_miss}; filter_bits=0 turns the filter off"
            )
        self.recall = float(recall)
        self.filter_miss = float(filter_miss) if filter_bits else 0.0
        lsh_recall = self.recall / (1.0 - self.filter_miss)
        self.params = BandingParams.derive(threshold, lsh_recall, max_bands, max_probes)
        #: bits the Hamming filter reads (at most the signature's bits; 0: no filter)
        self.filter_bits = min(int(filter_bits), self.params.bits)
        self.max_bands = max_bands
        self.max_probes = max_probes
        self.seed = int(seed)
        self.rebuild_growth = float(rebuild_growth)
        self.rebuild_drift = float(rebuild_drift)
        self.exact_below = int(exact_below)
        self.exact_pairs_below = int(exact_pairs_below)
        self.graphite = graphite
        self.workers = workers
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._vocab: dict[str, int] = {}
        self._tokens: list[str] = []
        self._df = GrowableArray(np.int64)
        self._col_keys = GrowableArray(np.uint64)
        self._indptr = GrowableArray(np.int64)
        self._indptr.extend(np.zeros(1, dtype=np.int64))
        self._indices = GrowableArray(np.int32)
        self._idf_cache: np.ndarray | None = None
        self._df_cache: np.ndarray | None = None
        self._norms_cache: np.ndarray | None = None
        self._tables: BandTables | None = None
        self._filter: SignatureFilter | None = None
        self._frozen_n = 0
        self._frozen_df = np.zeros(0, dtype=np.int64)

    # -- contents -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._ids

    @property
    def names(self) -> Sequence[str]:
        return self._names

    @property
    def vocabulary_size(self) -> int:
        return len(self._tokens)

    def add(self, names: Iterable[str | Mapping[str, object]]) -> list[str]:
        """Add metrics (any accepted form); returns their canonical names in order.

        All or nothing: a name that cannot be read raises :class:`MetricNameError` (saying
        which position) before anything is added.
        """
        out: list[str] = []
        fresh: dict[str, list[str]] = {}
        for i, raw in enumerate(names):
            if isinstance(raw, str):
                if raw in self._ids:
                    out.append(raw)
                    continue
                fast = _canonical_tokens(raw)
                if fast is not None:
                    out.append(raw)
                    if raw not in fresh:
                        fresh[raw] = fast
                    continue
            try:
                props = parse(raw, self.graphite)
            except MetricNameError as exc:
                raise MetricNameError(f"names[{i}]: {exc}") from None
            key = canonical(props)
            out.append(key)
            if key not in self._ids and key not in fresh:
                fresh[key] = pairs_of(props)
        if fresh:
            self._append(fresh)
        return out

    def _append(self, fresh: dict[str, list[str]]) -> None:
        vocab = self._vocab
        get = vocab.get
        first_new = len(self._tokens)
        lens: list[int] = []
        flat: list[int] = []
        for tokens in fresh.values():
            cols = list(map(get, tokens))
            if None in cols:
                for k, token in enumerate(tokens):
                    if cols[k] is None:
                        col = get(token)
                        if col is None:
                            col = vocab[token] = len(self._tokens)
                            self._tokens.append(token)
                        cols[k] = col
            flat.extend(cols)  # type: ignore[arg-type]
            lens.append(len(cols))
        first_row = len(self._names)
        self._names.extend(fresh)
        self._ids.update(zip(fresh, range(first_row, first_row + len(fresh))))
        new_tokens = self._tokens[first_new:]
        if new_tokens:
            self._df.extend(np.zeros(len(new_tokens), dtype=np.int64))
            self._col_keys.extend(np.fromiter((token_key(t) for t in new_tokens), np.uint64, len(new_tokens)))
        counts = np.asarray(lens, dtype=np.int64)
        indices = np.asarray(flat, dtype=np.int32)
        row_of = np.repeat(np.arange(len(counts)), counts)
        indices = indices[np.lexsort((indices, row_of))]  # columns ascending within each row
        self._indices.extend(indices, owned=True)
        self._indptr.extend(self._indptr.buf[self._indptr.n - 1] + np.cumsum(counts), owned=True)
        self._df.view()[:] += np.bincount(indices, minlength=len(self._tokens))
        self._idf_cache = None
        self._df_cache = None
        self._norms_cache = None

    def idf(self) -> np.ndarray:
        """IDF weight of every pair in the vocabulary: ``log(N / n_pair)``."""
        if self._idf_cache is None:
            n = max(len(self._names), 1)
            df = self._df.view().astype(np.float64)
            self._idf_cache = np.log(n / np.maximum(df, 1.0))
        return self._idf_cache

    def doc_freq(self) -> np.ndarray:
        """How many known metrics hold each vocabulary pair."""
        if self._df_cache is None:  # callers read it per incident refresh: copy once per change
            self._df_cache = self._df.view().copy()
        return self._df_cache

    def tokens(self, name: str) -> list[str]:
        """The ``key=value`` pairs of a known metric."""
        return [self._tokens[c] for c in self.token_columns(name)]

    def token_columns(self, name: str) -> np.ndarray:
        """Vocabulary columns of a known metric's pairs: a new sorted int64 array (callers may keep or change it)."""
        row = self._id(name)
        ptr = self._indptr.buf
        return self._indices.buf[ptr[row] : ptr[row + 1]].astype(np.int64)

    def column_token(self, col: int) -> str:
        """The ``key=value`` pair of a vocabulary column."""
        return self._tokens[col]

    def pair_weight(self, token: str) -> float:
        """IDF of one ``key=value`` pair (0 for an unknown pair)."""
        col = self._vocab.get(token)
        return 0.0 if col is None else float(self.idf()[col])

    def _id(self, name: str) -> int:
        try:
            return self._ids[name]
        except (KeyError, TypeError):
            try:
                key = normalize(name, self.graphite)
            except MetricNameError as exc:
                raise KeyError(f"metric {name!r} is not in the index ({exc})") from None
            if key not in self._ids:
                raise KeyError(f"metric {name!r} is not in the index; add it first") from None
            return self._ids[key]

    def _rows_of(self, names: Sequence[str]) -> np.ndarray:
        try:  # canonical names, the usual case: one dict lookup each
            return np.fromiter(map(self._ids.__getitem__, names), dtype=np.int64, count=len(names))
        except (KeyError, TypeError):
            return np.fromiter((self._id(n) for n in names), dtype=np.int64, count=len(names))

    # -- vectors and exact similarity ----------------------------------------------------

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The given rows' pairs in CSR layout: ``(indptr, columns, lengths)``, int64."""
        ptr = self._indptr.buf
        starts = ptr[rows]
        lens = (ptr[rows + 1] - starts).astype(np.int64)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        return indptr, self._indices.buf[ranges(starts, lens)].astype(np.int64), lens

    def columns(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)``: the vocabulary columns of each known metric's pairs, CSR layout
        (what :meth:`vectors` holds, without building the matrix)."""
        indptr, cols, _ = self._gather(self._rows_of(names))
        return indptr, cols

    def _csr(self, rows: np.ndarray, weights: np.ndarray, normalized: bool = True) -> sp.csr_matrix:
        """The given rows as a CSR matrix over the vocabulary, each pair weighted by ``weights``."""
        indptr, cols, lens = self._gather(rows)
        total = int(indptr[-1])
        data = weights[cols].astype(np.float64)
        if normalized and total:
            sq = np.add.reduceat(data * data, indptr[:-1][lens > 0]) if (lens > 0).any() else np.zeros(0)
            norms = np.zeros(len(rows))
            norms[lens > 0] = np.sqrt(sq)
            scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            data *= np.repeat(scale, lens)
        return sp.csr_matrix((data, cols, indptr), shape=(len(rows), len(self._tokens)))

    def incidence(self, names: Sequence[str], skip_keys: Sequence[str] = ()) -> sp.csr_matrix:
        """0/1 matrix (names x vocabulary): which ``key=value`` pairs each known metric has.

        Columns of pairs whose key is in ``skip_keys`` are left empty (the shape stays the
        vocabulary's, so column ``c`` is always :meth:`column_token` ``(c)``).
        """
        weights = np.ones(len(self._tokens))
        if skip_keys:
            prefixes = tuple(f"{k}=" for k in skip_keys)
            skip = np.fromiter((t.startswith(prefixes) for t in self._tokens), bool, len(self._tokens))
            weights[skip] = 0.0
        mat = self._csr(self._rows_of(names), weights, normalized=False)
        mat.eliminate_zeros()
        return mat

    def vectors(self, names: Sequence[str]) -> sp.csr_matrix:
        """L2-normalized IDF vectors of known metrics, one CSR row each."""
        return self._csr(self._rows_of(names), self.idf())

    def cosine(self, name_a: str, name_b: str) -> float:
        """Cosine similarity of two known metrics' IDF vectors."""
        v = self.vectors([name_a, name_b])
        return float(v[0].multiply(v[1]).sum())

    def similarity_matrix(self, names: Sequence[str]) -> np.ndarray:
        """Dense cosine matrix of a small set of known metrics (the anomalies of one tick)."""
        v = self.vectors(names)
        return np.asarray((v @ v.T).todense())

    def _row_norms(self) -> np.ndarray:
        """L2 norm of every metric's IDF vector, cached until the next add (the IDF changes then)."""
        if self._norms_cache is None:
            w = self.idf()[self._indices.view()]
            ptr = self._indptr.view()
            norms = np.zeros(len(self))
            nonempty = np.diff(ptr) > 0
            if nonempty.any():
                norms[nonempty] = np.sqrt(np.add.reduceat(w * w, ptr[:-1][nonempty]))
            self._norms_cache = norms
        return self._norms_cache

    def _cosines(self, row: int, cand: np.ndarray) -> np.ndarray:
        """Cosine of metric ``row`` with each metric in ``cand``, straight from the CSR arrays."""
        idf = self.idf()
        norms = self._row_norms()
        ptr, ind = self._indptr.buf, self._indices.buf
        qcols = ind[ptr[row] : ptr[row + 1]]
        out = np.zeros(len(cand))
        if norms[row] == 0.0 or not len(cand):
            return out
        # the query's weights, already multiplied by the other side's IDF: one gather per pair entry
        qw = np.zeros(len(self._tokens))
        qw[qcols] = idf[qcols] ** 2 / norms[row]
        starts = ptr[cand]
        lens = ptr[cand + 1] - starts
        offs = np.cumsum(lens) - lens
        cols = ind[ranges(starts, lens)]
        dots = np.add.reduceat(qw[cols], offs)
        np.divide(dots, norms[cand], out=out, where=norms[cand] > 0)
        return out

    # -- LSH -----------------------------------------------------------------------------

    def _use_lsh(self, method: Method, size: int, threshold: float, exact_below: int) -> bool:
        if method not in ("auto", "lsh", "exact"):
            raise ValueError(f"method must be 'auto', 'lsh' or 'exact', got {method!r}")
        if method == "lsh":
            if threshold < self.params.threshold - 1e-12:
                raise ValueError(
                    f"the LSH was built for cosine >= {self.params.threshold}; a query at {threshold} would miss "
                    "pairs: use method='exact' (or 'auto'), or build the index with a lower threshold"
                )
            return True
        return method == "auto" and size > exact_below and threshold >= self.params.threshold - 1e-12

    def frozen_idf(self) -> np.ndarray:
        """The IDF the LSH hashes with: frozen at the last rebuild (pairs new since then: ``log(N_frozen)``)."""
        df = np.zeros(len(self._tokens), dtype=np.float64)
        df[: len(self._frozen_df)] = self._frozen_df
        return np.log(max(self._frozen_n, 1) / np.maximum(df, 1.0))

    def idf_drift(self) -> float:
        """How far the frozen IDF the LSH hashes with has drifted from the current one (0: not at all).

        The relative L1 error of the weights over every metric's pairs:
        ``sum_pairs df * |w_frozen - w_now| / sum_pairs df * w_now``. Growth that keeps the mix of
        names changes little (document frequencies and ``N`` grow together); a family of names
        unseen at the freeze changes much (its common pairs weigh ``log(N_frozen)`` to the hash).
        0 when no LSH has been built.
        """
        if self._tables is None or not len(self):
            return 0.0
        df = self._df.view().astype(np.float64)
        now = self.idf()
        total = float(df @ now)
        if total <= 0.0:
            return 0.0
        return float(df @ np.abs(self.frozen_idf() - now)) / total

    @property
    def frozen_size(self) -> int:
        """How many metrics the frozen IDF was computed over (0: no LSH built yet)."""
        return self._frozen_n

    def rebuild(self, frozen: tuple[int, Mapping[str, int]] | None = None) -> None:
        """Freeze the IDF and hash every metric again (the bucket tables are rebuilt too).

        ``frozen`` = ``(n, {pair: doc_freq})`` hashes with that IDF snapshot instead of the
        current one (pairs it does not hold count as unseen): what an index that froze at
        ``n`` metrics and then grew uses. Snapshots are keyed by pair text, so they carry over
        between indexes that saw pairs in different orders. See :meth:`idf_snapshot`.
        """
        if frozen is None:
            self._frozen_n, self._frozen_df = len(self), self._df.view().copy()
        else:
            n, by_token = frozen
            if n < 0 or any(v < 0 for v in by_token.values()):
                raise ValueError("an IDF snapshot holds non-negative counts")
            df = np.zeros(len(self._tokens), dtype=np.int64)
            for token, count in by_token.items():
                col = self._vocab.get(token)
                if col is not None:
                    df[col] = count
            self._frozen_n, self._frozen_df = int(n), df
        self._tables = BandTables(self.params, workers=self.workers)
        self._filter = self._new_filter()
        self._hash_tail()
        self._tables.compact()

    def _new_filter(self) -> SignatureFilter | None:
        return SignatureFilter(self.params, self.filter_bits, self.filter_miss) if self.filter_bits else None

    def filter_cutoff(self, threshold: float | None = None) -> int | None:
        """The most signature bits (of :attr:`filter_bits`) in which a candidate may differ from the query and
        still reach the exact cosine, for a query at ``threshold`` (default: the LSH threshold); None without
        a filter."""
        if not self.filter_bits:
            return None
        t = self.params.threshold if threshold is None else _check_threshold(threshold)
        if t < self.params.threshold - 1e-12:
            raise ValueError(f"the filter serves LSH queries at cosine >= {self.params.threshold}, got {t}")
        return hamming_cutoff(t, self.filter_bits, self.filter_miss)

    @property
    def rebuild_due(self) -> bool:
        """Whether the LSH should be re-frozen (see :meth:`rebuild_if_due`): the index has grown by
        ``rebuild_growth`` since the IDF was frozen, or the IDF has drifted by more than
        ``rebuild_drift`` (:meth:`idf_drift`, O(vocabulary))."""
        if self._tables is None:
            return False
        if self.rebuild_growth > 0 and len(self) >= (1.0 + self.rebuild_growth) * self._frozen_n:
            return True
        return self.rebuild_drift > 0 and self.idf_drift() > self.rebuild_drift

    def rebuild_if_due(self) -> bool:
        """Re-freeze the IDF and re-hash everything if :attr:`rebuild_due`; returns whether it did.

        Queries never rebuild (at a million names a rebuild takes about 20 seconds): call this
        where a pause is acceptable, for example after adding a batch of new metrics in a
        background task. An index whose LSH was never built has nothing to re-freeze (its first
        LSH query, or :meth:`rebuild`, builds it).
        """
        if not self.rebuild_due:
            return False
        self.rebuild()
        return True

    def idf_snapshot(self) -> tuple[int, dict[str, int]]:
        """The frozen IDF the LSH hashes with, as ``(n, {pair: doc_freq})`` (pass it to :meth:`rebuild`)."""
        held = np.flatnonzero(self._frozen_df)
        return self._frozen_n, {self._tokens[c]: int(self._frozen_df[c]) for c in held}

    def _hash_tail(self) -> None:
        assert self._tables is not None
        lo, hi = len(self._tables), len(self)
        if hi <= lo:
            return
        weights = self.frozen_idf()
        rows = np.arange(lo, hi)
        mat = self._csr(rows, weights, normalized=False)
        order = rarest_column_order(mat.indptr, mat.indices, self._df.view())
        keys = signatures(mat, self._col_keys.view(), self.params, self.seed, order=order, workers=self.workers)
        norms = np.asarray(abs(mat).sum(axis=1)).ravel()
        if self._filter is not None:
            self._filter.append(keys)
        self._tables.append(keys, norms > 0, owned=True)

    def _lsh(self) -> BandTables:
        """The LSH, brought up to date: built if it never was, else new rows hashed with the frozen IDF
        (never rebuilt here, even when :attr:`rebuild_due`: that is :meth:`rebuild_if_due`'s job)."""
        if self._tables is None:
            self.rebuild()
        else:
            self._hash_tail()
        assert self._tables is not None
        return self._tables

    def signatures(self) -> np.ndarray:
        """``(bands, len(self))`` LSH band keys of every metric, brought up to date (hashes if needed)."""
        return self._lsh().keys

    def bucket_pairs(self) -> int:
        """Pairs whose band keys are within the probe radius, summed over bands: an upper bound on the
        distinct pairs an all-pairs LSH join over the whole index would compare exactly."""
        return self._lsh().bucket_pairs()

    def candidates(self, name: str, threshold: float | None = None, filtered: bool = True) -> np.ndarray:
        """Rows (positions in :attr:`names`, ascending) compared exactly with ``name`` by an LSH query
        at ``threshold`` (default: the LSH threshold), itself excluded. ``filtered=False``: the
        banding's candidates before the Hamming filter."""
        t = self.params.threshold if threshold is None else _check_threshold(threshold)
        row = self._id(name)
        tables = self._lsh()
        cand = tables.candidates(tables.keys[:, row])
        cand = cand[cand != row]
        if filtered and self._filter is not None:
            cand = self._filter.keep_neighbours(row, cand, t)
        return cand

    def candidate_pairs(
        self, names: Sequence[str], threshold: float | None = None, filtered: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Position pairs ``(i, j)``, ``i < j``, of ``names`` that an LSH ``similar_pairs`` at ``threshold``
        (default: the LSH threshold) compares exactly. ``filtered=False``: the banding's candidates
        before the Hamming filter."""
        t = self.params.threshold if threshold is None else _check_threshold(threshold)
        rows = self._rows_of(names)
        tables = self._lsh()
        codes = candidate_pairs(tables.keys[:, rows], tables.valid[rows], self.params.radius, self.params.rows)
        i, j = split_codes(codes, len(rows))
        if filtered and self._filter is not None and len(i):
            keep = self._filter.keep_pairs(rows[i], rows[j], t)
            i, j = i[keep], j[keep]
        return i, j

    # -- queries -------------------------------------------------------------------------

    def neighbours(self, name: str, threshold: float, method: Method = "auto") -> list[tuple[str, float]]:
        """Known metrics whose cosine with ``name`` is at least ``threshold``, most similar first."""
        threshold = _check_threshold(threshold)
        row = self._id(name)
        if self._use_lsh(method, len(self), threshold, self.exact_below):
            cand = self.candidates(name, threshold)
        else:
            cand = np.arange(len(self))
            cand = cand[cand != row]
        sims = self._cosines(row, cand)
        keep = np.flatnonzero(sims >= threshold - 1e-12)
        keep = keep[np.argsort(-sims[keep], kind="stable")]
        return [(self._names[cand[k]], float(sims[k])) for k in keep]

    def similar_pairs(
        self, names: Sequence[str], threshold: float, method: Method = "auto"
    ) -> list[tuple[int, int, float]]:
        """Pairs ``(i, j, cosine)`` with ``i < j`` among ``names`` whose cosine is at least ``threshold``.

        Sorted by ``(i, j)``. With ``method="auto"``: exact up to ``exact_pairs_below`` names (sparse
        products, a block of rows at a time, are faster than LSH there); above, LSH candidates
        checked exactly.
        """
        threshold = _check_threshold(threshold)
        rows = self._rows_of(names)
        vec = self._csr(rows, self.idf())
        if self._use_lsh(method, len(rows), threshold, self.exact_pairs_below):
            i, j = self.candidate_pairs(names, threshold)
            sims = _rowwise_dots(vec, i, j)
            keep = sims >= threshold - 1e-12
            i, j, sims = i[keep], j[keep], sims[keep]
        else:
            i, j, sims = _exact_pairs(vec, threshold)
        order = np.lexsort((j, i))
        return [(int(a), int(b), float(s)) for a, b, s in zip(i[order], j[order], sims[order])]

    # -- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Everything needed to restore the index, including its LSH signatures (not the bucket tables)."""
        meta = {
            "format": "stormeye.NameIndex",
            "version": self.FORMAT_VERSION,
            "threshold": self.params.threshold,
            "recall": self.recall,
            "filter_bits": self.filter_bits,
            "filter_miss": self.filter_miss,
            "bands": self.params.bands,
            "rows": self.params.rows,
            "radius": self.params.radius,
            "max_bands": self.max_bands,
            "max_probes": self.max_probes,
            "seed": self.seed,
            "rebuild_growth": self.rebuild_growth,
            "rebuild_drift": self.rebuild_drift,
            "exact_below": self.exact_below,
            "exact_pairs_below": self.exact_pairs_below,
            "graphite": None if self.graphite is None else self.graphite.to_config(),
            "frozen_n": self._frozen_n,
            "hashed": 0 if self._tables is None else len(self._tables),
        }
        names_blob, names_off = _pack_texts(self._names)
        tok_blob, tok_off = _pack_texts(self._tokens)
        arrays = {
            "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            "names": names_blob,
            "names_offsets": names_off,
            "tokens": tok_blob,
            "tokens_offsets": tok_off,
            "indptr": self._indptr.view(),
            "indices": self._indices.view(),
            "frozen_df": self._frozen_df,
        }
        if self._tables is not None:
            arrays["keys"] = self._tables.keys
            arrays["valid"] = self._tables.valid
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, workers: int = 1) -> NameIndex:
        """Restore an index written by :meth:`to_bytes` (``workers``: threads for LSH work, not stored)."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(arrays["meta"].tobytes().decode())
        except Exception as exc:  # any failure to read means: not our format
            raise IndexFormatError(f"not a serialized NameIndex ({type(exc).__name__}: {exc})") from None
        if meta.get("format") != "stormeye.NameIndex" or meta.get("version") not in (1, cls.FORMAT_VERSION):
            raise IndexFormatError(
                f"serialized index has format {meta.get('format')!r} version {meta.get('version')!r}; "
                f"this stormeye reads versions 1 and {cls.FORMAT_VERSION}: rebuild the index from its names"
            )
        try:
            graphite = None if meta["graphite"] is None else GraphiteTemplates.from_config(meta["graphite"])
            idx = cls(
                meta["threshold"],
                meta["recall"],
                max_bands=meta["max_bands"],
                max_probes=meta["max_probes"],
                seed=meta["seed"],
                rebuild_growth=meta["rebuild_growth"],
                rebuild_drift=meta.get("rebuild_drift", 0.1),
                exact_below=meta["exact_below"],
                exact_pairs_below=meta["exact_pairs_below"],
                graphite=graphite,
                workers=workers,
                # version 1 had no Hamming filter: its signatures were banded for ``recall`` alone
                filter_bits=meta.get("filter_bits", 0),
                filter_miss=meta.get("filter_miss", 0.0),
            )
            if (idx.params.bands, idx.params.rows, idx.params.radius) != (meta["bands"], meta["rows"], meta["radius"]):
                raise IndexFormatError("stored bands/rows/radius differ from those derived from the stored threshold")
            names = _unpack_texts(arrays["names"], arrays["names_offsets"])
            tokens = _unpack_texts(arrays["tokens"], arrays["tokens_offsets"])
            indptr = arrays["indptr"].astype(np.int64)
            indices = arrays["indices"].astype(np.int32)
            if (
                len(indptr) != len(names) + 1
                or indptr[-1] != len(indices)
                or (len(indices) and indices.max() >= len(tokens))
            ):
                raise IndexFormatError("stored vectors do not match the stored names and vocabulary")
        except (KeyError, TypeError, ValueError, LSHError, GraphiteTemplateError) as exc:
            if isinstance(exc, IndexFormatError):
                raise
            raise IndexFormatError(f"serialized NameIndex is damaged ({type(exc).__name__}: {exc})") from None
        idx._names = names
        idx._ids = {n: i for i, n in enumerate(names)}
        idx._tokens = tokens
        idx._vocab = {t: i for i, t in enumerate(tokens)}
        idx._indptr = GrowableArray(np.int64, capacity=len(indptr))
        idx._indptr.extend(indptr, owned=True)
        idx._indices = GrowableArray(np.int32, capacity=max(len(indices), 1))
        idx._indices.extend(indices, owned=True)
        idx._df = GrowableArray(np.int64, capacity=max(len(tokens), 1))
        idx._df.extend(np.bincount(indices, minlength=len(tokens)).astype(np.int64))
        idx._col_keys = GrowableArray(np.uint64, capacity=max(len(tokens), 1))
        idx._col_keys.extend(np.fromiter((token_key(t) for t in tokens), np.uint64, len(tokens)))
        idx._frozen_n = int(meta["frozen_n"])
        idx._frozen_df = arrays["frozen_df"].astype(np.int64)
        if "keys" in arrays:
            keys, valid = arrays["keys"], arrays["valid"]
            if keys.shape != (idx.params.bands, meta["hashed"]) or len(valid) != meta["hashed"]:
                raise IndexFormatError("stored LSH signatures do not match the stored parameters")
            idx._tables = BandTables(idx.params, workers=idx.workers)
            idx._filter = idx._new_filter()
            if idx._filter is not None:
                idx._filter.append(keys)
            idx._tables.append(keys, valid, owned=True)
            idx._tables.compact()
        return idx

    def memory_bytes(self) -> int:
        """Bytes held in numpy arrays (vectors, frequencies, LSH keys and tables); Python strings not included."""
        arrays = (self._df, self._col_keys, self._indptr, self._indices)
        total = sum(a.buf.nbytes for a in arrays) + self._frozen_df.nbytes
        total += self._tables.nbytes() if self._tables is not None else 0
        return total + (self._filter.nbytes() if self._filter is not None else 0)


def _rowwise_dots(vec: sp.csr_matrix, i: np.ndarray, j: np.ndarray, block: int = 1_000_000) -> np.ndarray:
    """``vec[i[k]] · vec[j[k]]`` for every k, in blocks (never a dense matrix)."""
    out = np.empty(len(i))
    for lo in range(0, len(i), block):
        a, b = i[lo : lo + block], j[lo : lo + block]
        out[lo : lo + len(a)] = np.asarray(vec[a].multiply(vec[b]).sum(axis=1)).ravel()
    return out


def _exact_pairs(vec: sp.csr_matrix, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of rows with cosine >= threshold, one sparse product per block of rows
    (blocks of about 20 million row-by-row entries, so memory stays bounded for large sets)."""
    n = vec.shape[0]
    block = max(16, 20_000_000 // max(n, 1))
    vt = sp.csr_matrix(vec.T)
    out_i, out_j, out_s = [], [], []
    for lo in range(0, n, block):
        prod = sp.coo_matrix(vec[lo : lo + block] @ vt)
        r = prod.row.astype(np.int64) + lo
        keep = (prod.col > r) & (prod.data >= threshold - 1e-12)
        out_i.append(r[keep])
        out_j.append(prod.col[keep].astype(np.int64))
        out_s.append(prod.data[keep])
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def _pack_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [t.encode() for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unpack_texts(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    off = offsets.tolist()
    return [raw[off[k] : off[k + 1]].decode() for k in range(len(off) - 1)]


def idf_weight(n_total: int, n_with_pair: int) -> float:
    """``log(N / n)``: the weight of a pair that ``n`` of ``N`` metrics have."""
    return math.log(max(n_total, 1) / max(n_with_pair, 1))
