"""Per-task consistency (docs/consistency.md): adaptive levels, leases with epoch fencing, and
the rules for re-placing a task whose node is unreachable.

Used by the controller's consistency manager, the agent (``AgentLease``) and the
simulator alike; pure, with ``now`` (seconds on the caller's monotonic or virtual
clock) passed in. See ``docs/consistency.md``.
"""

from shared.consistency._adaptive import (
    DUPLICATE_HARM,
    AdaptationPolicy,
    AdaptiveLevel,
    LevelChanged,
    LevelTarget,
    cost_target,
    level_bounds,
    level_costs,
    target_level,
)
from shared.consistency._lease import (
    AgentLease,
    Lease,
    LeaseBook,
    LeaseDecision,
    LeasePolicy,
    restart_deadline,
)
from shared.consistency._replacement import Replacement, replacement_allowed

__all__ = [
    "DUPLICATE_HARM",
    "AdaptationPolicy",
    "AdaptiveLevel",
    "AgentLease",
    "Lease",
    "LeaseBook",
    "LeaseDecision",
    "LeasePolicy",
    "LevelChanged",
    "LevelTarget",
    "Replacement",
    "cost_target",
    "level_bounds",
    "level_costs",
    "replacement_allowed",
    "restart_deadline",
    "target_level",
]
