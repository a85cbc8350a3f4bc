"""Grouping: metric names, shape correlation, the anomaly graph, incidents, priority and reports.

Pure computation on plain data: no sockets, files or clocks.
"""

from stormeye.grouping.graph import GroupingConfig
from stormeye.grouping.incidents import Incident, IncidentChange, IncidentTracker, Member
from stormeye.grouping.names import MetricNameError, NameIndex, canonical, normalize, parse
from stormeye.grouping.priority import PriorityModel, PriorityRule

__all__ = [
    "GroupingConfig",
    "Incident",
    "IncidentChange",
    "IncidentTracker",
    "Member",
    "MetricNameError",
    "NameIndex",
    "PriorityModel",
    "PriorityRule",
    "canonical",
    "normalize",
    "parse",
]
