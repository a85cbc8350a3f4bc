"""Signals: the metrics that are one measurement, so that the evidence to page counts it once.

One latency is often exported several ways: at several quantiles (``request_latency_p90``,
``_p95``, ``_p99``; a summary's ``quantile="0.9"`` label) or as the buckets of one histogram
(``_bucket{le="0.1"}``, ``{le="0.5"}``, ...). When the latency moves, all of them move, and
counted as independent metrics they give three or ten times the evidence of one measurement:
an ordinary latency wobble then pages as if three metrics had broken. :func:`signal_key` maps
each metric to its measurement; :meth:`grouping.incidents.IncidentTracker.evidence` counts one
signal once, by its strongest member. The members stay in the incident as they are.

Only the name says what is one measurement here: metrics that merely moved together (a CPU
gauge in millicores and in percent) are not merged, because on Nezha-OB two faults were carried
by exactly such pairs (docs/quality.md, issue 28).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from stormeye.core.labels import NAME_KEY

#: label keys that name one point of a distribution, not another measurement
DISTRIBUTION_KEYS = frozenset({"quantile", "le", "percentile"})

# a quantile in a metric name: ``_p99``, ``p95_``, ``_p999``, ``_p99_9`` (as a whole word part)
_QUANTILE = re.compile(r"(?:^|_)p(?:50|75|90|95|99|999|9999|99_9|99_99)(?=_|$)")
# a histogram's bucket series is one measurement with its ``le`` label
_BUCKET = re.compile(r"_bucket$")


def signal_key(props: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The measurement a metric (its properties, :func:`core.labels.parse`) is one view of.

    The metric name without its quantile part or histogram ``_bucket`` suffix, and the labels
    without the keys that pick a point of the distribution (:data:`DISTRIBUTION_KEYS`). Two
    metrics with the same key are one signal.
    """
    name = _BUCKET.sub("", _QUANTILE.sub("", props.get(NAME_KEY, "")))
    labels = tuple(sorted((k, v) for k, v in props.items() if k != NAME_KEY and k not in DISTRIBUTION_KEYS))
    return name, labels
