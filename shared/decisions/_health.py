"""System health of the continuum from what is known of each node's link.

One grading for every caller: the controller's registry, the API's node listing
and the simulator feed the link state and RTT p99 of each node they know, and the
table in ``shared.health.system_health`` decides. The system's p99 is the 99th
percentile of the nodes' own p99s (nodes with no RTT sample yet are left out of
it, not counted as fast). A node that has *departed* (out of contact longer than the
controller's ``departed_after_s``) is left out altogether: a device taken away for
good must not keep the continuum's health down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shared.health import SystemHealth, percentile, system_health
from shared.vocab import LinkState

__all__ = ["AVAILABLE", "HealthReport", "LinkSample", "assess_health"]

#: Link states in which a node counts as available.
AVAILABLE = frozenset({LinkState.HEALTHY, LinkState.DEGRADED, LinkState.CRITICAL})


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkSample:
    """One node's link as its monitor grades it now."""

    state: LinkState
    rtt_p99_ms: float | None = None
    departed: bool = False  # gone for good: not counted at all


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    health: SystemHealth
    available: int
    total: int
    p99_rtt_ms: float | None
    reason: str
    departed: int = 0  # nodes left out as departed

    def detail(self) -> dict[str, Any]:
        """The counts as the API shows them beside the state."""
        return {
            "available": self.available,
            "total": self.total,
            "departed": self.departed,
            "p99_rtt_ms": self.p99_rtt_ms,
        }


def assess_health(links: Iterable[LinkSample]) -> HealthReport:
    """Grade the whole continuum from every known node's link."""
    total = available = departed = 0
    p99s: list[float] = []
    for link in links:
        if link.departed:
            departed += 1
            continue
        total += 1
        if link.state in AVAILABLE:
            available += 1
        if link.rtt_p99_ms is not None:
            p99s.append(link.rtt_p99_ms)
    p99 = percentile(sorted(p99s), 0.99) if p99s else None
    health = system_health(available, total, p99)
    shown = "unknown" if p99 is None else f"{p99:.3g} ms"
    return HealthReport(
        health=health,
        available=available,
        total=total,
        p99_rtt_ms=p99,
        reason=f"{available}/{total} nodes available, p99 RTT {shown}",
        departed=departed,
    )
