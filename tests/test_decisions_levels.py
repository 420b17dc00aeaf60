"""Per-task consistency levels (shared.decisions, composing shared.consistency)."""

from __future__ import annotations

from shared.consistency import AdaptationPolicy, AdaptiveLevel
from shared.decisions import adapt_level, demand_level, placement_level
from shared.health import SystemHealth as H
from shared.vocab import Level, LinkState

ADAPTIVE = {"id": "t", "consistency": {"level": "adaptive", "min": "eventual", "max": "strong"}}
FIXED = {"id": "t", "consistency": {"level": "causal"}}


def test_demand_level_reads_only_the_system() -> None:
    assert demand_level(ADAPTIVE, system=H.HEALTHY) is Level.STRONG
    assert demand_level(ADAPTIVE, system=H.CRITICAL) is Level.CAUSAL
    assert demand_level(FIXED, system=H.EMERGENCY) is Level.CAUSAL


def test_placement_level_is_the_weaker_of_link_and_system() -> None:
    assert placement_level(ADAPTIVE, link=LinkState.DEGRADED, system=H.HEALTHY) is Level.CAUSAL
    assert placement_level(ADAPTIVE, link=LinkState.HEALTHY, system=H.EMERGENCY) is Level.EVENTUAL
    assert placement_level(FIXED, link=LinkState.FAILED, system=H.EMERGENCY) is Level.CAUSAL


def test_adapt_level_downgrades_after_two_bad_samples_and_upgrades_after_dwell() -> None:
    m = AdaptiveLevel.from_spec(ADAPTIVE, policy=AdaptationPolicy(dwell_s=10.0))
    bad = {"link": LinkState.PARTITIONED, "system": H.HEALTHY}
    assert adapt_level(m, now=0.0, **bad) is None
    change = adapt_level(m, now=1.0, **bad)
    assert change is not None and change.new is Level.EVENTUAL and change.downgrade
    good = {"link": LinkState.HEALTHY, "system": H.HEALTHY}
    assert adapt_level(m, now=2.0, **good) is None
    up = adapt_level(m, now=12.0, **good)
    assert up is not None and up.new is Level.STRONG


def test_a_fixed_task_never_changes() -> None:
    m = AdaptiveLevel.from_spec(FIXED)
    for t in range(5):
        assert adapt_level(m, link=LinkState.FAILED, system=H.EMERGENCY, now=float(t)) is None
