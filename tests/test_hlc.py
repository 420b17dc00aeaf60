"""Laws of the hybrid logical clock: monotone, receive orders after the message,
bounded skew, exact encoding round-trip, total order with node tie-break."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.clocks import HybridClock, Timestamp
from shared.errors import ClockSkewError

NODES = st.sampled_from(["a", "b", "edge-1", "cloud.0", "z_9"])
WALL = st.integers(min_value=0, max_value=2**48)
STAMPS = st.builds(Timestamp, WALL, st.integers(min_value=0, max_value=2**20), NODES)
DRIFT = 1_000

# One step of a clock: a local event at some physical time, or a receive of a
# remote stamp expressed as an offset from physical time (within the bound).
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["now", "send", "receive"]),
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=-5_000, max_value=DRIFT),
        st.integers(min_value=0, max_value=50),
        NODES,
    ),
    max_size=60,
)


@given(STEPS)
def test_monotone_and_receive_orders_after_the_message(steps: list) -> None:
    clock = HybridClock("me", max_drift_ms=DRIFT)
    previous = None
    for op, physical, offset, logical, node in steps:
        if op == "receive":
            remote = Timestamp(max(0, physical + offset), logical, node)
            stamp = clock.receive(remote, physical)
            assert stamp > remote
        else:
            stamp = getattr(clock, op)(physical)
        assert stamp.wall_ms >= physical
        assert previous is None or stamp > previous
        assert clock.last == stamp
        previous = stamp


@given(WALL, st.integers(min_value=1, max_value=10**6))
def test_skew_bound_is_enforced_and_leaves_the_clock_untouched(physical: int, extra: int) -> None:
    clock = HybridClock("me", max_drift_ms=DRIFT)
    before = clock.now(physical)
    with pytest.raises(ClockSkewError) as info:
        clock.receive(Timestamp(physical + DRIFT + extra, 0, "far"), physical)
    assert info.value.max_drift_ms == DRIFT
    assert clock.last == before
    # Exactly at the bound is accepted.
    assert (
        clock.receive(Timestamp(physical + DRIFT, 0, "edge"), physical).wall_ms == physical + DRIFT
    )


@given(STAMPS)
def test_encoding_round_trips(stamp: Timestamp) -> None:
    text = stamp.encode()
    assert Timestamp.decode(text) == stamp
    assert Timestamp.decode(text).encode() == text


@given(STAMPS, STAMPS)
def test_total_order_with_node_tie_break(a: Timestamp, b: Timestamp) -> None:
    assert (a < b) + (a == b) + (a > b) == 1
    assert (a < b) == ((a.wall_ms, a.logical, a.node) < (b.wall_ms, b.logical, b.node))


def test_string_order_is_not_the_order() -> None:
    # Why comparisons must go through Timestamp: hex digit counts differ.
    small, big = Timestamp(0xF, 0, "a"), Timestamp(0x10, 0, "a")
    assert small < big and small.encode() > big.encode()


@given(st.text(max_size=40) | st.binary(max_size=10) | st.integers() | st.none())
def test_decode_garbage_raises_value_error(garbage: object) -> None:
    try:
        stamp = Timestamp.decode(garbage)  # type: ignore[arg-type]
    except ValueError:
        return
    assert stamp.encode() == garbage


@pytest.mark.parametrize(
    "text", ["", "1.2", "01.0.a", "1.00.a", "1.0.a/b", "1.0.+", "G.0.a", "1.0."]
)
def test_decode_rejects_non_canonical_and_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        Timestamp.decode(text)


def test_restart_from_last_stays_monotone() -> None:
    before = HybridClock("n").now(10_000)
    clock = HybridClock("n", last=before)
    assert clock.now(5) > before  # physical clock stepped back across the restart


@given(STAMPS)
def test_decoded_and_issued_stamps_are_ordinary_frozen_timestamps(stamp: Timestamp) -> None:
    """Stamps made without the dataclass ``__init__`` (decoding, the clock) are equal,
    equally hashed, ordered and as frozen as constructed ones."""
    decoded = Timestamp.decode(stamp.encode())
    assert type(decoded) is Timestamp
    assert decoded == stamp and hash(decoded) == hash(stamp) and not decoded < stamp
    assert repr(decoded) == repr(stamp)
    issued = HybridClock(stamp.node).receive(stamp, stamp.wall_ms)
    assert issued == Timestamp(stamp.wall_ms, stamp.logical + 1, stamp.node)
    for made in (decoded, issued, HybridClock("me").now(stamp.wall_ms)):
        with pytest.raises(AttributeError):
            made.wall_ms = 0  # type: ignore[misc]
