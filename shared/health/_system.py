"""System health (docs/consistency.md table) and the default consistency level it implies.

Its edge cases are decided: zero nodes does not divide by zero (no node available
is an emergency), ``available`` is clamped to ``[0, total]``, and an unknown p99 (no
samples yet, or NaN) reads as unknown health, which maps to the weakest level.
"""

from __future__ import annotations

import math
from enum import StrEnum

from shared.vocab import Level

__all__ = ["SystemHealth", "clamp_level", "default_level", "system_health"]


class SystemHealth(StrEnum):
    """Health of the whole continuum, best first."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"
    EMERGENCY = "emergency"


#: (health, minimum available/total ratio, exclusive p99 RTT bound in ms), best first.
HEALTH_TABLE: tuple[tuple[SystemHealth, float, float], ...] = (
    (SystemHealth.HEALTHY, 0.9, 100.0),
    (SystemHealth.DEGRADED, 0.7, 200.0),
    (SystemHealth.CRITICAL, 0.5, 500.0),
)


def system_health(available: int, total: int, p99_rtt_ms: float | None) -> SystemHealth:
    """Grade the continuum: the first row whose ratio *and* RTT bounds both hold.

    ``p99_rtt_ms`` is ``None`` (or NaN) when no round trip was measured yet: that is
    unknown health, graded ``emergency`` so nothing claims a guarantee it cannot back.
    Raises ``ValueError`` on negative counts (a caller bug, not a network input).
    """
    if available < 0 or total < 0:
        raise ValueError(f"node counts must be ≥ 0, got available={available} total={total}")
    if total == 0 or p99_rtt_ms is None or math.isnan(p99_rtt_ms):
        return SystemHealth.EMERGENCY
    ratio = min(available, total) / total
    for health, min_ratio, max_rtt_ms in HEALTH_TABLE:
        if ratio >= min_ratio and p99_rtt_ms < max_rtt_ms:
            return health
    return SystemHealth.EMERGENCY


def default_level(health: SystemHealth, *, lo: Level, hi: Level) -> Level:
    """The table's default level within the task's bounds ``lo ≤ level ≤ hi``.

    healthy → strongest allowed; degraded → one step below it; critical → causal;
    emergency → eventual; the result is then clamped into ``[lo, hi]``.
    """
    if lo.strength > hi.strength:
        raise ValueError(f"bounds inverted: min {lo} > max {hi}")
    wanted = {
        SystemHealth.HEALTHY: hi,
        SystemHealth.DEGRADED: hi.weaker(),
        SystemHealth.CRITICAL: Level.CAUSAL,
        SystemHealth.EMERGENCY: Level.EVENTUAL,
    }[health]
    return clamp_level(wanted, lo=lo, hi=hi)


def clamp_level(level: Level, *, lo: Level, hi: Level) -> Level:
    """``level`` forced into ``[lo, hi]`` by strength."""
    return Level.from_strength(max(lo.strength, min(level.strength, hi.strength)))
