"""docs/consistency.md system-health table and its default levels, at every edge."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.health import SystemHealth, clamp_level, default_level, system_health
from shared.vocab import Level

H = SystemHealth


@pytest.mark.parametrize(
    ("available", "total", "p99", "expected"),
    [
        (9, 10, 99.9, H.HEALTHY),
        (9, 10, 100.0, H.DEGRADED),  # RTT bound is exclusive
        (89, 100, 50.0, H.DEGRADED),  # ratio bound is inclusive: 0.89 < 0.9
        (7, 10, 199.9, H.DEGRADED),
        (7, 10, 200.0, H.CRITICAL),
        (69, 100, 10.0, H.CRITICAL),
        (5, 10, 499.9, H.CRITICAL),
        (5, 10, 500.0, H.EMERGENCY),
        (49, 100, 1.0, H.EMERGENCY),
        (10, 10, 0.0, H.HEALTHY),
    ],
)
def test_table_edges(available: int, total: int, p99: float, expected: SystemHealth) -> None:
    assert system_health(available, total, p99) is expected


def test_no_nodes_or_unknown_rtt_is_emergency() -> None:
    assert system_health(0, 0, 1.0) is H.EMERGENCY  # the seed divided by zero here
    assert system_health(10, 10, None) is H.EMERGENCY
    assert system_health(10, 10, math.nan) is H.EMERGENCY


def test_available_above_total_is_clamped_and_negative_rejected() -> None:
    assert system_health(12, 10, 1.0) is H.HEALTHY
    with pytest.raises(ValueError):
        system_health(-1, 10, 1.0)


@pytest.mark.parametrize(
    ("health", "lo", "hi", "expected"),
    [
        (H.HEALTHY, Level.EVENTUAL, Level.STRONG, Level.STRONG),
        (H.HEALTHY, Level.EVENTUAL, Level.CAUSAL, Level.CAUSAL),
        (H.DEGRADED, Level.EVENTUAL, Level.STRONG, Level.CAUSAL),
        (H.DEGRADED, Level.EVENTUAL, Level.CAUSAL, Level.EVENTUAL),
        (H.DEGRADED, Level.STRONG, Level.STRONG, Level.STRONG),
        (H.CRITICAL, Level.EVENTUAL, Level.STRONG, Level.CAUSAL),
        (H.CRITICAL, Level.EVENTUAL, Level.EVENTUAL, Level.EVENTUAL),
        (H.EMERGENCY, Level.EVENTUAL, Level.STRONG, Level.EVENTUAL),
        (H.EMERGENCY, Level.CAUSAL, Level.STRONG, Level.CAUSAL),
    ],
)
def test_default_level(health: SystemHealth, lo: Level, hi: Level, expected: Level) -> None:
    assert default_level(health, lo=lo, hi=hi) is expected


def test_inverted_bounds_rejected() -> None:
    with pytest.raises(ValueError):
        default_level(H.HEALTHY, lo=Level.STRONG, hi=Level.EVENTUAL)


levels = st.sampled_from(list(Level))


@given(levels, levels, levels)
def test_clamp_stays_within_bounds(level: Level, a: Level, b: Level) -> None:
    lo, hi = sorted((a, b), key=lambda x: x.strength)
    got = clamp_level(level, lo=lo, hi=hi)
    assert lo.strength <= got.strength <= hi.strength
    if lo.strength <= level.strength <= hi.strength:
        assert got is level


@given(st.integers(0, 200), st.integers(0, 200), st.floats(0, 2000), st.floats(0, 2000))
def test_health_monotone_in_rtt(available: int, total: int, r1: float, r2: float) -> None:
    order = list(SystemHealth)
    lo, hi = sorted((r1, r2))
    assert order.index(system_health(available, total, lo)) <= order.index(
        system_health(available, total, hi)
    )
