"""Per-task consistency levels by cost (shared.decisions, composing shared.consistency)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.consistency import AdaptationPolicy, AdaptiveLevel
from shared.decisions import LevelFacts, adapt_level, demand_level, level_target, placement_level
from shared.vocab import Level, LinkState

ADAPTIVE = {"id": "t", "consistency": {"level": "adaptive", "min": "eventual", "max": "strong"}}
IDEMPOTENT = {**ADAPTIVE, "idempotent": True}
FIXED = {"id": "t", "consistency": {"level": "causal"}}
OUT = LevelFacts(link=LinkState.PARTITIONED, run_s=60.0)
HEALTHY = LevelFacts(link=LinkState.HEALTHY, run_s=60.0)


def test_demand_level_is_the_level_on_a_node_nothing_is_known_of() -> None:
    assert demand_level(ADAPTIVE) is Level.STRONG
    assert demand_level(FIXED) is Level.CAUSAL
    cautious = AdaptationPolicy(prior_link=LinkState.CRITICAL)
    assert demand_level(ADAPTIVE, policy=cautious) is Level.CAUSAL


def test_a_fresh_node_without_a_round_trip_gets_the_prior_not_emergency() -> None:
    target = level_target(ADAPTIVE, LevelFacts(link=None, run_s=60.0))
    assert target.level is Level.STRONG
    assert "no sample yet" in target.reason


def test_placement_level_prices_the_node_link() -> None:
    degraded = LevelFacts(link=LinkState.DEGRADED, run_s=60.0)
    assert placement_level(ADAPTIVE, degraded) is Level.CAUSAL
    assert placement_level(IDEMPOTENT, degraded) is Level.EVENTUAL
    assert placement_level(FIXED, LevelFacts(link=LinkState.FAILED)) is Level.CAUSAL


def test_strong_gives_way_when_its_round_trips_do_not_fit_the_slack() -> None:
    tight = LevelFacts(link=LinkState.HEALTHY, run_s=1.0, slack_s=0.1, rtt_ms=100.0)
    assert placement_level(ADAPTIVE, tight) is Level.CAUSAL
    roomy = LevelFacts(link=LinkState.HEALTHY, run_s=1.0, slack_s=5.0, rtt_ms=100.0)
    assert placement_level(ADAPTIVE, roomy) is Level.STRONG


def _never_hedged(facts: LevelFacts) -> None:
    assert placement_level(ADAPTIVE, facts) is not Level.EVENTUAL
    machine = AdaptiveLevel.from_spec(ADAPTIVE)
    for t in range(3):
        change = adapt_level(machine, ADAPTIVE, facts, now=float(t))
        assert change is None or change.new is not Level.EVENTUAL


@given(
    link=st.sampled_from([None, *LinkState]),
    run_s=st.floats(0.0, 1e5),
    slack_s=st.none() | st.floats(-1e4, 1e4),
    rtt_ms=st.floats(0.0, 1e4),
    rate=st.floats(0.0, 100.0),
)
def test_non_idempotent_work_is_never_hedged(
    link: LinkState | None, run_s: float, slack_s: float | None, rtt_ms: float, rate: float
) -> None:
    _never_hedged(
        LevelFacts(
            link=link, run_s=run_s, slack_s=slack_s, rtt_ms=rtt_ms, partition_rate_per_h=rate
        )
    )


def test_non_idempotent_work_is_never_hedged_even_when_outages_outlast_causal() -> None:
    _never_hedged(
        LevelFacts(link=None, run_s=1.0, slack_s=-1.0, partition_rate_per_h=1.0, outage_s=6000.0)
    )


def test_adapt_level_downgrades_after_two_bad_samples_and_upgrades_after_dwell() -> None:
    m = AdaptiveLevel.from_spec(IDEMPOTENT, policy=AdaptationPolicy(dwell_s=10.0))
    assert adapt_level(m, IDEMPOTENT, OUT, now=0.0) is None
    change = adapt_level(m, IDEMPOTENT, OUT, now=1.0)
    assert change is not None and change.new is Level.EVENTUAL and change.downgrade
    assert change.reason.startswith("downgrade after 2 bad samples: cost")
    assert adapt_level(m, IDEMPOTENT, HEALTHY, now=2.0) is None
    up = adapt_level(m, IDEMPOTENT, HEALTHY, now=12.0)
    assert up is not None and up.new is Level.STRONG


def test_a_non_idempotent_task_out_of_reach_steps_down_to_causal_only() -> None:
    m = AdaptiveLevel.from_spec(ADAPTIVE)
    adapt_level(m, ADAPTIVE, OUT, now=0.0)
    change = adapt_level(m, ADAPTIVE, OUT, now=1.0)
    assert change is not None and change.new is Level.CAUSAL


def test_a_fixed_task_never_changes() -> None:
    m = AdaptiveLevel.from_spec(FIXED)
    for t in range(5):
        assert adapt_level(m, FIXED, LevelFacts(link=LinkState.FAILED), now=float(t)) is None
