"""Adaptive level machine: bounds, two-bad-sample downgrades, dwell before upgrades."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.consistency import (
    AdaptationPolicy,
    AdaptiveLevel,
    LevelTarget,
    cost_target,
    level_bounds,
    level_costs,
    target_level,
)
from shared.health import SystemHealth
from shared.vocab import Level, LinkState

E, C, S = Level.EVENTUAL, Level.CAUSAL, Level.STRONG


def t(level: Level) -> LevelTarget:
    return LevelTarget(level=level, reason="test")


def spec(level: str, lo: str = "causal", hi: str = "causal") -> dict[str, object]:
    return {"id": "t-1", "consistency": {"level": level, "min": lo, "max": hi}}


def test_bounds_from_spec() -> None:
    assert level_bounds(spec("strong", "strong", "strong")) == (S, S, True)
    assert level_bounds(spec("adaptive", "eventual", "strong")) == (E, S, False)
    assert level_bounds(spec("adaptive", "causal", "causal")) == (C, C, True)
    with pytest.raises(ValueError):
        level_bounds(spec("adaptive", "strong", "eventual"))
    with pytest.raises(ValueError):
        level_bounds(spec("linearizable"))


def test_starts_at_strongest_allowed_or_initial() -> None:
    assert AdaptiveLevel.from_spec(spec("adaptive", "eventual", "strong")).level is S
    assert AdaptiveLevel("t", lo=E, hi=C, initial=S).level is C


def test_one_bad_sample_is_noise_two_downgrade_at_once() -> None:
    m = AdaptiveLevel("t", lo=E, hi=S)
    assert m.observe(t(C), 0.0) is None
    assert m.observe(t(S), 1.0) is None  # streak broken
    assert m.observe(t(C), 2.0) is None
    change = m.observe(t(E), 3.0)
    assert change is not None and change.downgrade
    assert (change.old, change.new, change.at) == (S, C, 3.0)  # strongest both samples allow
    assert "2 bad samples" in change.reason and change.task_id == "t"


def test_upgrade_waits_for_dwell_edge() -> None:
    m = AdaptiveLevel("t", lo=E, hi=S, initial=E)
    assert m.observe(t(S), 0.0) is None
    assert m.observe(t(S), 59.99) is None
    change = m.observe(t(S), 60.0)
    assert change is not None and (change.old, change.new) == (E, S)
    assert not change.downgrade


def test_upgrade_goes_to_weakest_good_target_and_needs_fresh_dwell() -> None:
    m = AdaptiveLevel("t", lo=E, hi=S, initial=E)
    m.observe(t(S), 0.0)
    m.observe(t(C), 30.0)
    change = m.observe(t(S), 60.0)
    assert change is not None and change.new is C
    assert m.observe(t(S), 61.0) is None
    assert m.observe(t(S), 120.0) is None  # dwell restarts at 61
    change = m.observe(t(S), 121.0)
    assert change is not None and change.new is S


def test_neutral_or_bad_sample_restarts_dwell() -> None:
    m = AdaptiveLevel("t", lo=E, hi=S, initial=C)
    m.observe(t(S), 0.0)
    m.observe(t(C), 50.0)  # neutral
    assert m.observe(t(S), 60.0) is None
    assert m.observe(t(S), 119.0) is None
    assert m.observe(t(S), 120.0) is not None


def test_fixed_never_changes() -> None:
    m = AdaptiveLevel.from_spec(spec("strong", "strong", "strong"))
    for i in range(10):
        assert m.observe(t(E), float(i)) is None
    assert m.level is S


def test_targets_are_clamped() -> None:
    m = AdaptiveLevel("t", lo=C, hi=S)
    m.observe(t(E), 0.0)
    change = m.observe(t(E), 1.0)
    assert change is not None and change.new is C


def test_policy_knobs() -> None:
    m = AdaptiveLevel("t", lo=E, hi=S, policy=AdaptationPolicy(bad_samples=3, dwell_s=5.0))
    m.observe(t(E), 0.0)
    assert m.observe(t(E), 1.0) is None
    assert m.observe(t(E), 2.0) is not None
    with pytest.raises(ValueError):
        AdaptationPolicy(bad_samples=0)


@pytest.mark.parametrize(
    ("link", "system", "expected"),
    [
        (LinkState.HEALTHY, SystemHealth.HEALTHY, S),
        (LinkState.DEGRADED, SystemHealth.HEALTHY, C),
        (LinkState.HEALTHY, SystemHealth.DEGRADED, C),
        (LinkState.CRITICAL, SystemHealth.HEALTHY, C),
        (LinkState.PARTITIONED, SystemHealth.HEALTHY, E),
        (LinkState.FAILED, SystemHealth.HEALTHY, E),
        (LinkState.HEALTHY, SystemHealth.EMERGENCY, E),
    ],
)
def test_target_is_weaker_of_link_and_system(
    link: LinkState, system: SystemHealth, expected: Level
) -> None:
    target = target_level(E, S, link=link, system=system)
    assert target.level is expected
    assert str(link) in target.reason and str(system) in target.reason


levels = st.sampled_from(list(Level))
samples = st.lists(st.tuples(st.floats(0, 40), levels), max_size=60)


@settings(max_examples=150)
@given(levels, levels, st.booleans(), samples)
def test_laws(a: Level, b: Level, fixed: bool, seq: list[tuple[float, Level]]) -> None:
    lo, hi = sorted((a, b), key=lambda x: x.strength)
    dwell = 60.0
    m = AdaptiveLevel("t", lo=lo, hi=hi, fixed=fixed)
    now = 0.0
    history: list[tuple[float, Level, Level]] = []  # (time, level before, clamped target)
    last_change: float | None = None
    for dt, target in seq:
        now += dt
        before = m.level
        want = Level.from_strength(max(lo.strength, min(target.strength, hi.strength)))
        history.append((now, before, want))
        change = m.observe(t(target), now)
        assert lo.strength <= m.level.strength <= hi.strength  # always within bounds
        if change is None:
            assert m.level is before
            continue
        assert not m.fixed and lo is not hi  # fixed tasks never change
        assert change.old is before and change.new is m.level and change.new is not before
        if change.downgrade:
            # the two latest samples were both bad against the level then in force
            assert len(history) >= 2
            (_, lvl1, w1), (_, lvl2, w2) = history[-2], history[-1]
            assert lvl1 is before and lvl2 is before
            assert w1.strength < before.strength and w2.strength < before.strength
        else:
            # no upgrade within a dwell of the previous change (no flapping)
            assert last_change is None or now - last_change >= dwell
            # all samples of the last dwell were good and allow the new level
            window = [h for h in history if h[0] >= now - dwell]
            earlier = [h for h in history if h[0] < now - dwell]
            covered = any(h[0] <= now - dwell for h in window)
            run = window if covered or not earlier else [*window, earlier[-1]]
            assert any(h[0] <= now - dwell for h in run)
            assert all(h[1] is before and h[2].strength >= change.new.strength for h in run)
        last_change = now


# -- the level by cost ---------------------------------------------------------------
levels = st.sampled_from(list(Level))
links = st.one_of(st.none(), st.sampled_from(list(LinkState)))


@settings(max_examples=200, deadline=None)
@given(
    levels,
    levels,
    links,
    st.floats(0, 1e4),
    st.floats(0, 100),
    st.one_of(st.none(), st.floats(0, 1e4)),
    st.floats(0, 1e4),
)
def test_non_idempotent_work_is_never_hedged(
    a: Level,
    b: Level,
    link: LinkState | None,
    run_s: float,
    rate: float,
    slack: float | None,
    rtt: float,
) -> None:
    lo, hi = (a, b) if a.strength <= b.strength else (b, a)
    target = cost_target(
        lo, hi, link=link, idempotent=False, run_s=run_s,
        partition_rate_per_h=rate, slack_s=slack, rtt_ms=rtt,
    )  # fmt: skip
    assert lo.strength <= target.level.strength <= hi.strength
    if hi is not E:
        assert target.level is not E


def test_a_steady_link_keeps_the_strongest_level() -> None:
    for idempotent in (True, False):
        target = cost_target(E, S, link=LinkState.HEALTHY, idempotent=idempotent, run_s=60.0)
        assert target.level is S


def test_idempotent_work_on_a_flaky_link_is_hedged_and_other_work_stays_causal() -> None:
    kw = {"link": LinkState.DEGRADED, "run_s": 60.0, "partition_rate_per_h": 2.0}
    assert cost_target(E, S, idempotent=True, **kw).level is E  # type: ignore[arg-type]
    target = cost_target(E, S, idempotent=False, **kw)  # type: ignore[arg-type]
    assert target.level is C
    assert "link degraded" in target.reason and "not idempotent" in target.reason


def test_costs_grow_with_the_outage_risk() -> None:
    calm = level_costs(link=LinkState.HEALTHY, idempotent=False, run_s=60.0)
    rough = level_costs(link=LinkState.CRITICAL, idempotent=False, run_s=60.0)
    assert calm == {S: 0.0, C: 0.0, E: 0.0}
    assert all(rough[lv] > calm[lv] for lv in Level)


def test_strong_is_too_slow_when_its_round_trips_do_not_fit_the_slack() -> None:
    kw = {"link": LinkState.HEALTHY, "idempotent": False, "run_s": 1.0, "rtt_ms": 400.0}
    assert cost_target(C, S, slack_s=0.5, **kw).level is C  # type: ignore[arg-type]
    assert cost_target(C, S, slack_s=5.0, **kw).level is S  # type: ignore[arg-type]


def test_a_node_without_a_round_trip_sample_starts_from_the_prior_not_emergency() -> None:
    target = cost_target(E, S, link=None, idempotent=True, run_s=60.0)
    assert target.level is S and "no sample yet" in target.reason
    cautious = AdaptationPolicy(prior_link=LinkState.CRITICAL)
    target = cost_target(E, S, link=None, idempotent=True, run_s=60.0, policy=cautious)
    assert target.level is E


def test_long_outages_make_causal_risky_for_non_idempotent_work() -> None:
    kw = {"link": LinkState.DEGRADED, "run_s": 600.0, "partition_rate_per_h": 2.0}
    short = cost_target(E, S, idempotent=False, outage_s=10.0, **kw)  # type: ignore[arg-type]
    assert short.level is C
    # outages that usually outlast max_disconnect_s: causal would re-run it; strong never does
    long = cost_target(E, S, idempotent=False, outage_s=3000.0, max_disconnect_s=60.0, **kw)  # type: ignore[arg-type]
    assert long.level is S


@settings(max_examples=300, deadline=None)
@given(
    levels,
    levels,
    links,
    st.booleans(),
    st.floats(0, 1e4),
    st.floats(0, 100),
    st.one_of(st.none(), st.floats(0, 1e4)),
    st.floats(0, 1e4),
    st.floats(0, 1e4),
)
def test_cost_target_is_the_cheapest_allowed_level_of_level_costs(
    a: Level,
    b: Level,
    link: LinkState | None,
    idempotent: bool,
    run_s: float,
    rate: float,
    slack: float | None,
    rtt: float,
    outage: float,
) -> None:
    """The module doc's rule, written out with ``level_costs``: within the bounds
    (eventual out for non-idempotent work while a stronger level is allowed), the
    lowest cost, ties to the stronger; the reason lists exactly those levels."""
    lo, hi = (a, b) if a.strength <= b.strength else (b, a)
    kw = {
        "idempotent": idempotent, "run_s": run_s, "partition_rate_per_h": rate,
        "slack_s": slack, "rtt_ms": rtt, "outage_s": outage,
    }  # fmt: skip
    target = cost_target(lo, hi, link=link, **kw)  # type: ignore[arg-type]
    costs = level_costs(link=link or LinkState.HEALTHY, **kw)  # type: ignore[arg-type]
    allowed = [lv for lv in costs if lo.strength <= lv.strength <= hi.strength]
    if not idempotent and hi is not E:
        allowed = [lv for lv in allowed if lv is not E]
    assert target.level is min(allowed, key=lambda lv: (costs[lv], -lv.strength))
    shown = ", ".join(f"{lv} {costs[lv]:.3g}" for lv in allowed)
    assert target.reason.startswith(f"cost {shown}: link ")


def test_level_bounds_reads_names_and_levels_and_refuses_unknown_ones() -> None:
    assert level_bounds(spec("adaptive", "eventual", "strong")) == (E, S, False)
    assert level_bounds(spec("adaptive", E, S)) == (E, S, False)  # type: ignore[arg-type]
    assert level_bounds(spec("strong")) == (S, S, True)
    for bad in (spec("adaptive", "weak", "strong"), spec("firm"), spec("adaptive", 1, "strong")):  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            level_bounds(bad)
