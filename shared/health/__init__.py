"""Link and system health: the measurements the consistency manager and placement use.

``LinkMonitor`` grades one node's link (healthy … failed) and keeps its RTT
percentiles, loss, partition history and partition rate (``stats`` in full, ``grade``
for a periodic pass over many nodes); ``system_health`` grades
the whole continuum with the system-health table of docs/consistency.md and
``default_level`` gives that
table's consistency level within a task's bounds. Pure: ``now`` is passed in.
"""

from shared.health._monitor import (
    LinkGrade,
    LinkMonitor,
    LinkPolicy,
    LinkStateChanged,
    LinkStats,
    percentile,
)
from shared.health._system import SystemHealth, clamp_level, default_level, system_health

__all__ = [
    "LinkGrade",
    "LinkMonitor",
    "LinkPolicy",
    "LinkStateChanged",
    "LinkStats",
    "SystemHealth",
    "clamp_level",
    "default_level",
    "percentile",
    "system_health",
]
