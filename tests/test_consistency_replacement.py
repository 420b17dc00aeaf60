"""Re-placement rules per level (docs/consistency.md), at each threshold edge."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.consistency import Lease, replacement_allowed
from shared.vocab import Level

LEASE = Lease(task_id="t", epoch=1, node="a", duration_s=30.0, granted_at=0.0, replace_after=35.3)


def test_strong_waits_for_lease_deadline_plus_margin() -> None:
    early = replacement_allowed(Level.STRONG, now=35.29, lease=LEASE, out_of_contact_s=1000.0)
    assert not early.allowed and early.reason == "lease_live" and early.not_before == 35.3
    late = replacement_allowed(Level.STRONG, now=35.3, lease=LEASE, out_of_contact_s=1.0)
    assert late.allowed and late.reason == "lease_expired"
    assert replacement_allowed(Level.STRONG, now=0.0).reason == "no_lease_granted"


def test_causal_waits_for_max_disconnect() -> None:
    in_contact = replacement_allowed(Level.CAUSAL, now=10.0)
    assert not in_contact.allowed and in_contact.not_before is None
    short = replacement_allowed(Level.CAUSAL, now=100.0, out_of_contact_s=299.9)
    assert not short.allowed and short.reason == "partition_shorter_than_max_disconnect"
    assert short.not_before == pytest.approx(100.1)
    edge = replacement_allowed(Level.CAUSAL, now=100.0, out_of_contact_s=300.0)
    assert edge.allowed and edge.reason == "disconnected_beyond_max"
    custom = replacement_allowed(
        Level.CAUSAL, now=0.0, out_of_contact_s=10.0, max_disconnect_s=10.0
    )
    assert custom.allowed


def test_eventual_hedges_at_once() -> None:
    d = replacement_allowed(Level.EVENTUAL, now=0.0)
    assert d.allowed and d.reason == "hedge"


@given(st.sampled_from(list(Level)), st.floats(0, 35.29), st.none() | st.floats(0, 1e6))
def test_a_live_lease_is_never_cut_short_whatever_the_level(
    level: Level, now: float, out: float | None
) -> None:
    """A downgrade the partitioned agent cannot hear must not let a second attempt start."""
    d = replacement_allowed(level, now=now, lease=LEASE, out_of_contact_s=out)
    assert not d.allowed and d.not_before == LEASE.replace_after


@given(st.floats(0, 1e5), st.floats(0, 1e5), st.floats(1, 1e4))
def test_causal_monotone_in_disconnection(a: float, b: float, limit: float) -> None:
    lo, hi = sorted((a, b))
    first = replacement_allowed(Level.CAUSAL, now=0.0, out_of_contact_s=lo, max_disconnect_s=limit)
    second = replacement_allowed(Level.CAUSAL, now=0.0, out_of_contact_s=hi, max_disconnect_s=limit)
    assert first.allowed <= second.allowed
