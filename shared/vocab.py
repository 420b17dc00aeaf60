"""The closed vocabularies of the task spec, consistency, placement and autonomy (docs/), as
string enums.

They live in one small module because every layer speaks them: the codec
validates them, the CRDT stores them, the placement and consistency policies
branch on them, the API prints them. Values are the lowercase wire spellings.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "Connectivity",
    "Level",
    "LinkState",
    "PlacementMode",
    "TaskStatus",
    "Tier",
]


class Tier(StrEnum):
    """Where a node sits, nearest the data first. ``rank`` orders them device → cloud."""

    DEVICE = "device"
    EDGE = "edge"
    REGIONAL = "regional"
    CLOUD = "cloud"

    @property
    def rank(self) -> int:
        return _TIER_RANK[self]


_TIER_RANK = {Tier.DEVICE: 0, Tier.EDGE: 1, Tier.REGIONAL: 2, Tier.CLOUD: 3}


class Level(StrEnum):
    """Consistency level of a task (docs/consistency.md).

    ``strength``: eventual 0 < causal 1 < strong 2."""

    EVENTUAL = "eventual"
    CAUSAL = "causal"
    STRONG = "strong"

    @property
    def strength(self) -> int:
        return _LEVEL_STRENGTH[self]

    @classmethod
    def from_strength(cls, strength: int) -> Level:
        return _LEVELS_BY_STRENGTH[max(0, min(strength, len(_LEVELS_BY_STRENGTH) - 1))]

    def weaker(self) -> Level:
        """One step down (eventual stays eventual)."""
        return Level.from_strength(self.strength - 1)

    def stronger(self) -> Level:
        """One step up (strong stays strong)."""
        return Level.from_strength(self.strength + 1)


_LEVEL_STRENGTH = {Level.EVENTUAL: 0, Level.CAUSAL: 1, Level.STRONG: 2}
_LEVELS_BY_STRENGTH = (Level.EVENTUAL, Level.CAUSAL, Level.STRONG)


class LinkState(StrEnum):
    """A node's link as the controller sees it: ``partitioned`` suspected, ``failed`` confirmed."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"
    PARTITIONED = "partitioned"
    FAILED = "failed"

    @property
    def severity(self) -> int:
        """0 (healthy) … 4 (failed): the declaration order, worst last."""
        return _LINK_SEVERITY[self]


_LINK_SEVERITY: dict[LinkState, int] = {state: rank for rank, state in enumerate(LinkState)}


class Connectivity(StrEnum):
    """The uplink as the agent sees it, from the age of the last controller ack (docs/agent.md)."""

    CONNECTED = "connected"
    DEGRADED = "degraded"
    INTERMITTENT = "intermittent"
    DISCONNECTED = "disconnected"


class TaskStatus(StrEnum):
    """A task's visible status, always *derived* from its CRDT record, never stored."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class PlacementMode(StrEnum):
    """Placement modes of docs/placement.md."""

    CLOUD_ONLY = "cloud_only"
    EDGE_ONLY = "edge_only"
    HYBRID_STATIC = "hybrid_static"
    HYBRID_DYNAMIC = "hybrid_dynamic"
    ADAPTIVE = "adaptive"
