"""The consistency level of one task: at placement, and as its node's link changes.

Composes ``shared.consistency``: ``target_level`` (the weaker of what the node's
link and the system allow, within the task's bounds) and ``AdaptiveLevel`` (the
damped per-task machine). Levels adapt **per task**, each on its own node's link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.consistency import AdaptiveLevel, LevelChanged, level_bounds, target_level
from shared.health import SystemHealth
from shared.vocab import Level, LinkState

__all__ = ["adapt_level", "demand_level", "placement_level"]


def demand_level(spec: Mapping[str, Any], *, system: SystemHealth) -> Level:
    """The level placement filters by, before a node is chosen: what the system
    allows on a healthy link (the chosen node's own link is judged afterwards)."""
    lo, hi, _ = level_bounds(spec)
    return target_level(lo, hi, link=LinkState.HEALTHY, system=system).level


def placement_level(spec: Mapping[str, Any], *, link: LinkState, system: SystemHealth) -> Level:
    """The level a task is placed at on a node whose link is ``link`` (a fixed
    task's own level)."""
    lo, hi, _ = level_bounds(spec)
    return target_level(lo, hi, link=link, system=system).level


def adapt_level(
    machine: AdaptiveLevel, *, link: LinkState, system: SystemHealth, now: float
) -> LevelChanged | None:
    """One sample of a task's adaptive level on its node's ``link`` (``FAILED``
    for a node nobody knows); the change it causes, if any. The machine keeps the
    damping state, so it is the only mutable input."""
    if machine.fixed:
        return None
    return machine.observe(target_level(machine.lo, machine.hi, link=link, system=system), now)
