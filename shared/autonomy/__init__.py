"""Agent autonomy (docs/agent.md): how connected the agent is, how much it decides alone, which
queued task runs next, whether it fits, what to drop under pressure, and whether a task may
start at all under its consistency level.

Pure and clock-free: every ``now``/age is passed in, in seconds on the caller's clock (the
agent's monotonic or wall clock, the simulator's virtual one). The agent (``edge_agent``) and
the simulator call the same functions, so an experiment in the simulator exercises the very
decisions a device takes. Reference: ``docs/agent.md``.
"""

from shared.autonomy._admission import (
    Admission,
    admit,
    may_start,
    select_for_shedding,
    shortage,
)
from shared.autonomy._connectivity import AutonomyLevel, autonomy_level, connectivity
from shared.autonomy._contact import ContactClock
from shared.autonomy._deadline import DeadlineJob, EdfPlan, edf_finish, plan_edf
from shared.autonomy._failover import (
    CONNECT_TIMEOUT_S,
    PROBE_S,
    RTO_MAX_S,
    RTO_MIN_S,
    ConnectWait,
    Failover,
    Route,
)
from shared.autonomy._queue import QueuedTask, QueuePolicy, effective_priority, order_queue

__all__ = [
    "CONNECT_TIMEOUT_S",
    "PROBE_S",
    "RTO_MAX_S",
    "RTO_MIN_S",
    "Admission",
    "AutonomyLevel",
    "ConnectWait",
    "ContactClock",
    "DeadlineJob",
    "EdfPlan",
    "Failover",
    "QueuePolicy",
    "QueuedTask",
    "Route",
    "admit",
    "autonomy_level",
    "connectivity",
    "edf_finish",
    "effective_priority",
    "may_start",
    "order_queue",
    "plan_edf",
    "select_for_shedding",
    "shortage",
]
