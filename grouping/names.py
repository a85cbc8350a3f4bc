"""Metric names as sets of property/value pairs, and their IDF-weighted similarity.

A metric name such as ``purchase_count{country="England",device="mobile"}`` is the set of
pairs ``__name__=purchase_count, country=England, device=mobile``. Pairs that few metrics
share say more about a metric than pairs that most share, so each pair is weighted by its
inverse document frequency ``log(N / n_pair)`` and a name becomes a sparse vector; two
names are as similar as the cosine of their vectors (Anodot's name similarity).

The metric name itself is the property ``__name__`` (Prometheus' convention); the Anodot
spelling ``what=...`` is read as ``__name__`` too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

NAME_KEY = "__name__"
_NAME_ALIASES = ("what",)

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:.\-/]*")
_LABEL_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_PROM = re.compile(r"^\s*([A-Za-z_:][A-Za-z0-9_:.\-/]*)?\s*\{(.*)\}\s*$", re.S)
_PROM_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)', re.S)


class MetricNameError(ValueError):
    """A metric name could not be read; the message says what is wrong and how to write it."""


def parse(name: str | Mapping[str, object]) -> dict[str, str]:
    """Read a metric name into its properties.

    Accepted forms:

    - Prometheus: ``purchase_count{country="England",device="mobile"}`` or a bare
      ``purchase_count``;
    - property lists: ``what=purchase_count,country=England`` (commas or spaces);
    - a JSON object of labels, as text or as a mapping: ``{"__name__": "cpu", "host": "a"}``.

    Raises :class:`MetricNameError` with a message that says what to fix.
    """
    if isinstance(name, Mapping):
        return _from_mapping(name)
    if not isinstance(name, str):
        raise MetricNameError(f"a metric name must be text or a label object, got {type(name).__name__}")
    text = name.strip()
    if not text:
        raise MetricNameError('empty metric name: give a name like cpu_usage{host="a"}')
    if text.startswith("{") and text[1:].lstrip().startswith('"'):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MetricNameError(f"metric name {text!r} looks like JSON but is not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise MetricNameError(f"metric name {text!r}: a JSON name must be an object of labels")
        return _from_mapping(obj)
    if "{" in text or "}" in text:
        return _parse_prometheus(text)
    if "=" in text:
        return _parse_pairs(text)
    if _IDENT.fullmatch(text):
        return {NAME_KEY: text}
    raise MetricNameError(
        f'metric name {text!r} is not a name we can read: use name{{label="value",...}}, '
        "label=value pairs separated by commas, or a JSON object of labels"
    )


def _from_mapping(obj: Mapping[str, object]) -> dict[str, str]:
    props: dict[str, str] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not key:
            raise MetricNameError(f"label keys must be non-empty text, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise MetricNameError(f"label {key!r} must have a text or number value, got {type(value).__name__}")
        _set(props, key, str(value))
    if not props:
        raise MetricNameError("a label object must hold at least one label")
    return props


def _set(props: dict[str, str], key: str, value: str) -> None:
    key = NAME_KEY if key in _NAME_ALIASES else key
    if key != NAME_KEY and not _LABEL_KEY.fullmatch(key):
        raise MetricNameError(f"label key {key!r} must start with a letter or _ and hold letters, digits, _ . -")
    if value == "":
        raise MetricNameError(f"label {key!r} has an empty value: drop the label or give it a value")
    if key in props and props[key] != value:
        raise MetricNameError(f"label {key!r} is given twice with different values ({props[key]!r}, {value!r})")
    props[key] = value


def _parse_prometheus(text: str) -> dict[str, str]:
    m = _PROM.match(text)
    if not m:
        raise MetricNameError(f'metric name {text!r}: braces must enclose labels at the end, as in cpu{{host="a"}}')
    props: dict[str, str] = {}
    if m.group(1):
        props[NAME_KEY] = m.group(1)
    body = m.group(2).strip()
    pos = 0
    while pos < len(body):
        pm = _PROM_PAIR.match(body, pos)
        if not pm:
            rest = body[pos:].strip()
            raise MetricNameError(
                f'metric name {text!r}: cannot read labels at {rest[:30]!r}; write label="value" pairs '
                "separated by commas, values in double quotes"
            )
        value = re.sub(r"\\(.)", lambda g: {"n": "\n"}.get(g.group(1), g.group(1)), pm.group(2))
        _set(props, pm.group(1), value)
        pos = pm.end()
    if not props:
        raise MetricNameError(f"metric name {text!r} has neither a name nor labels")
    return props


def _parse_pairs(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        if part.count("=") != 1:
            raise MetricNameError(
                f"metric name {text!r}: {part!r} is not one property=value pair; separate pairs by commas"
            )
        key, value = part.split("=")
        _set(props, key.strip(), value.strip())
    return props


def canonical(props: Mapping[str, str]) -> str:
    """The canonical text of a metric: ``name{k="v",...}`` with labels sorted by key."""
    name = props.get(NAME_KEY, "")
    labels = sorted((k, v) for k, v in props.items() if k != NAME_KEY)
    if not labels:
        return name
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return f"{name}{{{body}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def normalize(name: str | Mapping[str, object]) -> str:
    """Parse a name in any accepted form and return its canonical text."""
    return canonical(parse(name))


def pairs_of(props: Mapping[str, str]) -> list[str]:
    """The property/value pairs of a metric as tokens (``key=value``), the vocabulary's units."""
    return [f"{k}={v}" for k, v in props.items()]


class NameIndex:
    """The metrics we know, their IDF weights and their name vectors.

    Add names as they are seen; similarity queries use the IDF of everything added so far.
    Exact in this version: cosine over sparse vectors, all pairs of a query set at once
    (a sparse matrix product), which is fast for the few hundred anomalies of one tick.
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._vocab: dict[str, int] = {}
        self._doc_freq: list[int] = []
        self._tokens: list[str] = []
        self._rows: list[np.ndarray] = []
        self._idf_cache: np.ndarray | None = None
        self._df_cache: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._ids

    @property
    def names(self) -> Sequence[str]:
        return self._names

    def add(self, names: Iterable[str]) -> list[str]:
        """Add metrics (any accepted form); returns their canonical names in order."""
        out = []
        for raw in names:
            props = parse(raw)
            key = canonical(props)
            out.append(key)
            if key in self._ids:
                continue
            self._ids[key] = len(self._names)
            self._names.append(key)
            cols = []
            for token in pairs_of(props):
                col = self._vocab.get(token)
                if col is None:
                    col = self._vocab[token] = len(self._doc_freq)
                    self._doc_freq.append(0)
                    self._tokens.append(token)
                self._doc_freq[col] += 1
                cols.append(col)
            self._rows.append(np.asarray(sorted(cols), dtype=np.int64))
            self._idf_cache = None
            self._df_cache = None
        return out

    def idf(self) -> np.ndarray:
        """IDF weight of every pair in the vocabulary: ``log(N / n_pair)``."""
        if self._idf_cache is None:
            n = max(len(self._names), 1)
            df = np.asarray(self._doc_freq, dtype=np.float64)
            self._idf_cache = np.log(n / np.maximum(df, 1.0))
        return self._idf_cache

    def tokens(self, name: str) -> list[str]:
        """The ``key=value`` pairs of a known metric."""
        return [self._tokens[c] for c in self._rows[self._id(name)]]

    def token_columns(self, name: str) -> np.ndarray:
        """Vocabulary columns of a known metric's pairs."""
        return self._rows[self._id(name)]

    def doc_freq(self) -> np.ndarray:
        """How many known metrics hold each vocabulary pair."""
        if self._df_cache is None:
            self._df_cache = np.asarray(self._doc_freq, dtype=np.int64)
        return self._df_cache

    def column_token(self, col: int) -> str:
        """The ``key=value`` pair of a vocabulary column."""
        return self._tokens[col]

    def pair_weight(self, token: str) -> float:
        """IDF of one ``key=value`` pair (0 for an unknown pair)."""
        col = self._vocab.get(token)
        return 0.0 if col is None else float(self.idf()[col])

    def vectors(self, names: Sequence[str]) -> sp.csr_matrix:
        """L2-normalized IDF vectors of known metrics, one CSR row each."""
        idf = self.idf()
        rows = [self._rows[self._id(n)] for n in names]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(r) for r in rows])
        indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        data = idf[indices] if len(indices) else np.zeros(0)
        mat = sp.csr_matrix((data, indices, indptr), shape=(len(rows), len(idf)))
        norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms) @ mat)

    def _id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            key = normalize(name)
            if key not in self._ids:
                raise KeyError(f"metric {name!r} is not in the index; add it first") from None
            return self._ids[key]

    def cosine(self, name_a: str, name_b: str) -> float:
        """Cosine similarity of two known metrics' IDF vectors."""
        v = self.vectors([name_a, name_b])
        return float(v[0].multiply(v[1]).sum())

    def similarity_matrix(self, names: Sequence[str]) -> np.ndarray:
        """Dense cosine matrix of a small set of known metrics (the anomalies of one tick)."""
        v = self.vectors(names)
        return np.asarray((v @ v.T).todense())

    def similar_pairs(self, names: Sequence[str], threshold: float) -> list[tuple[int, int, float]]:
        """Pairs ``(i, j, cosine)`` with ``i < j`` among ``names`` whose cosine is at least ``threshold``."""
        v = self.vectors(names)
        sims = sp.triu(v @ v.T, k=1).tocoo()
        keep = sims.data >= threshold - 1e-12
        return [(int(i), int(j), float(s)) for i, j, s in zip(sims.row[keep], sims.col[keep], sims.data[keep])]

    def neighbours(self, name: str, threshold: float) -> list[tuple[str, float]]:
        """Known metrics whose cosine with ``name`` is at least ``threshold``, most similar first."""
        me = self.vectors([name])
        allv = self.vectors(self._names)
        sims = np.asarray((allv @ me.T).todense()).ravel()
        own = self._id(name)
        idx = np.flatnonzero(sims >= threshold - 1e-12)
        idx = idx[idx != own]
        idx = idx[np.argsort(-sims[idx], kind="stable")]
        return [(self._names[i], float(sims[i])) for i in idx]


def shared_properties(props_list: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The property/value pairs that every one of the given metrics has."""
    if not props_list:
        return {}
    common = dict(props_list[0])
    for props in props_list[1:]:
        common = {k: v for k, v in common.items() if props.get(k) == v}
    return common


def idf_weight(n_total: int, n_with_pair: int) -> float:
    """``log(N / n)``: the weight of a pair that ``n`` of ``N`` metrics have."""
    return math.log(max(n_total, 1) / max(n_with_pair, 1))
