"""Service topology: which service calls which, so that a failure spreading along dependencies is one incident.

When a service fails, its callers fail a minute or two later, hop after hop: errors on the
checkout service, then latency on the frontend that calls it. Their metrics share no name
property but the region (or nothing), so name similarity cannot link them, and at the same
minute an unrelated service elsewhere may fail too. What tells the two situations apart is a
path between the services. The topology is a directed graph of ``caller -> callee`` edges,
learnt three ways:

- **declared** by the operator: a file of ``caller,callee`` lines
  (:func:`parse_dependencies`, ``STORMEYE_DEPENDENCIES_FILE``; Nezha's ``dependency.csv`` with its
  ``Source,Target,Weight`` header is that format);
- **read from service-graph metrics** when they are ingested (:meth:`Topology.learn_names`):
  ``istio_requests_total{source_workload="a",destination_workload="b"}``,
  ``traces_service_graph_request_total{client="a",server="b"}`` and the like;
- **learnt from history** (:meth:`Topology.observe`): services whose anomalies keep starting
  together, far more often than their rates of anomalies would make them meet by chance.

A metric belongs to the service its entity labels name (:data:`SERVICE_KEYS`, most specific
first: the first whose value is a node of the graph). Two anomalies are *related* when their
services are adjacent in the graph, either direction. The root of a cascade is the failing
service that calls no other failing service (the callee, where the failure came from), the
earliest to start when several do.

Pure: no file or clock. The caller reads the file and hands over its text.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from stormeye.core.errors import BadInput
from stormeye.core.labels import SERVICE_KEYS

#: labels that say where a service instance runs: a dependency links callers in the same place
LOCATION_KEYS = ("region", "zone", "availability_zone", "cluster", "datacenter", "dc", "site")

#: label pairs of service-graph metrics: (caller label, callee label)
EDGE_LABELS = (
    ("source_workload", "destination_workload"),
    ("source_service", "destination_service"),
    ("source_app", "destination_app"),
    ("client", "server"),
)

_HEADER_WORDS = {"source", "target", "caller", "callee", "client", "server", "from", "to", "parent", "child"}


class DependencyError(BadInput):
    """A dependency file line that is not ``caller,callee``; the message names the line."""


def parse_dependencies(text: str, source: str = "dependencies") -> list[tuple[str, str]]:
    """``caller,callee`` edges of a dependency file (CSV; a header line, blank lines and ``#``
    comments are skipped; a third column, such as a weight, must be a number and is ignored).

    Raises :class:`DependencyError` naming ``source`` and the line number of the first bad line.
    """
    edges: list[tuple[str, str]] = []
    seen_data = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            row = next(csv.reader(io.StringIO(stripped)))
        except csv.Error as exc:
            raise DependencyError(f"{source}, line {lineno}: not CSV ({exc}); expected 'caller,callee'") from None
        row = [c.strip() for c in row]
        if not seen_data and len(row) >= 2 and row[0].lower() in _HEADER_WORDS and row[1].lower() in _HEADER_WORDS:
            seen_data = True  # the header
            continue
        seen_data = True
        if len(row) < 2 or not row[0] or not row[1]:
            raise DependencyError(
                f"{source}, line {lineno}: {stripped!r} names no callee; expected 'caller,callee' "
                "(the service that calls, then the service it calls)"
            )
        if len(row) > 3:
            raise DependencyError(
                f"{source}, line {lineno}: {len(row)} columns; expected 'caller,callee' or 'caller,callee,weight'"
            )
        if len(row) == 3 and row[2]:
            try:
                w = float(row[2])
            except ValueError:
                raise DependencyError(
                    f"{source}, line {lineno}: weight {row[2]!r} is not a number; "
                    "expected 'caller,callee' or 'caller,callee,weight'"
                ) from None
            if not math.isfinite(w) or w < 0:
                raise DependencyError(f"{source}, line {lineno}: weight {row[2]!r} must be a finite number >= 0")
        if row[0] == row[1]:
            raise DependencyError(f"{source}, line {lineno}: {row[0]!r} calls itself; a dependency joins two services")
        edges.append((row[0], row[1]))
    return edges


@dataclass
class Topology:
    """The service dependency graph (declared, read from metric names, learnt from history).

    ``cooccur_min``: how many times two services' anomalies must have started together (within
    the grouping's cascade window) before history links them; ``cooccur_lift``: how much more
    often than chance (their separate onset rates) that must be. 0 turns learning off.
    """

    edges: Iterable[tuple[str, str]] = ()
    cooccur_min: int = 4
    cooccur_lift: float = 20.0
    graph: nx.DiGraph = field(init=False, repr=False)
    _adj: dict[str, set[str]] = field(init=False, repr=False)
    _onsets: dict[str, int] = field(init=False, repr=False)
    _together: dict[tuple[str, str], int] = field(init=False, repr=False)
    _episodes: int = field(init=False, repr=False, default=0)
    _learnt: set[tuple[str, str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.graph = nx.DiGraph()
        self._adj = {}
        self._onsets = {}
        self._together = {}
        self._learnt = set()
        for caller, callee in self.edges:
            self.add(caller, callee, "declared")
        self.edges = ()

    def __len__(self) -> int:
        return self.graph.number_of_edges()

    def __contains__(self, service: object) -> bool:
        return service in self._adj

    def add(self, caller: str, callee: str, source: str = "declared") -> bool:
        """Add ``caller -> callee``; returns whether the edge is new."""
        if caller == callee or self.graph.has_edge(caller, callee):
            return False
        self.graph.add_edge(caller, callee, source=source)
        self._adj.setdefault(caller, set()).add(callee)
        self._adj.setdefault(callee, set()).add(caller)
        return True

    def copy(self) -> Topology:
        """The same edges, whatever taught them, and the same history counts."""
        out = Topology(cooccur_min=self.cooccur_min, cooccur_lift=self.cooccur_lift)
        for a, b, d in self.graph.edges(data=True):
            out.add(a, b, d.get("source", "declared"))
        out.load_state(self.to_state())
        return out

    def adjacent(self, a: str, b: str) -> bool:
        return b in self._adj.get(a, ())

    def neighbours(self, service: str) -> set[str]:
        return self._adj.get(service, set())

    def learn_names(self, props: Iterable[Mapping[str, str]]) -> int:
        """Edges named by service-graph metrics (:data:`EDGE_LABELS`); returns how many were new."""
        added = 0
        for p in props:
            for src, dst in EDGE_LABELS:
                a, b = p.get(src), p.get(dst)
                if a and b and a != b:
                    added += self.add(a, b, "metrics")
                    break
        return added

    @staticmethod
    def may_name_edge(metric: str) -> bool:
        """A cheap look at a metric's text: could it be a service-graph metric? (Parsing a million names
        to find the few that are costs seconds at start.)"""
        return any(src in metric for src, _ in EDGE_LABELS)

    def service_of(self, props: Mapping[str, str]) -> str | None:
        """The service a metric belongs to: the first :data:`SERVICE_KEYS` value that is a node."""
        for key in SERVICE_KEYS:
            v = props.get(key)
            if v is not None and v in self._adj:
                return v
        return None

    @staticmethod
    def entity_of(props: Mapping[str, str]) -> str | None:
        """The service a metric names, whether or not the graph knows it (for learning from history)."""
        for key in SERVICE_KEYS:
            v = props.get(key)
            if v:
                return v
        return None

    def service_key(self, props: Mapping[str, str]) -> str | None:
        """The label that names the metric's service (for ``key=value`` root entities)."""
        for key in SERVICE_KEYS:
            v = props.get(key)
            if v is not None and v in self._adj:
                return key
        return None

    # -- learning from history -----------------------------------------------------------

    def observe(self, services: Sequence[str]) -> list[tuple[str, str]]:
        """One episode of onsets: the services whose anomalies started together. Returns the pairs
        that this episode made related (history now says they fail together far beyond chance).

        Chance is judged against the services' own onset rates over all episodes: two services that
        are each anomalous in half of the episodes meet often and mean nothing; two that are rarely
        anomalous but nearly always together are related.
        """
        if self.cooccur_min <= 0:
            return []
        uniq = sorted(set(services))
        self._episodes += 1
        for s in uniq:
            self._onsets[s] = self._onsets.get(s, 0) + 1
        made: list[tuple[str, str]] = []
        if len(uniq) > 12:  # a fleet-wide moment says nothing about which two services depend on each other
            return made
        for i, a in enumerate(uniq):
            for b in uniq[i + 1 :]:
                n = self._together[(a, b)] = self._together.get((a, b), 0) + 1
                if n < self.cooccur_min or self.adjacent(a, b) or (a, b) in self._learnt:
                    continue
                expected = self._onsets[a] * self._onsets[b] / max(self._episodes, 1)
                if n >= self.cooccur_lift * expected:
                    self._learnt.add((a, b))
                    self.add(a, b, "history")
                    made.append((a, b))
        return made

    # -- roots ---------------------------------------------------------------------------

    def root(self, onsets: Mapping[str, float], within_s: float = math.inf) -> str | None:
        """The failing service where a cascade came from: among the services of ``onsets`` (service ->
        its first onset), the earliest of those that call no other failing service, provided it
        started at most ``within_s`` after the first onset of all (a callee that began failing long
        after its callers did is not where their trouble came from); else the earliest to start.
        None when fewer than two of them are in the graph."""
        failing = sorted((s for s in onsets if s in self._adj), key=lambda s: (onsets[s], s))
        if len(failing) < 2:
            return None
        fail = set(failing)
        first = onsets[failing[0]]
        for s in failing:
            if onsets[s] - first > within_s:
                break
            if not any(c in fail for c in self.graph.successors(s)):
                return s
        return failing[0]

    # -- state ---------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """What history taught (declared and metric-named edges are rebuilt from their sources)."""
        return {
            "episodes": self._episodes,
            "onsets": dict(self._onsets),
            "together": [[a, b, n] for (a, b), n in sorted(self._together.items())],
            "learnt": sorted([a, b] for a, b in self._learnt),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self._episodes = int(state.get("episodes", 0))
        self._onsets = {str(k): int(v) for k, v in state.get("onsets", {}).items()}
        self._together = {(str(a), str(b)): int(n) for a, b, n in state.get("together", [])}
        for a, b in state.get("learnt", []):
            self._learnt.add((str(a), str(b)))
            self.add(str(a), str(b), "history")
