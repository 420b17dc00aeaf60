"""``shared.decisions.place_resend_due``: a controller's ``place`` that a digest shows may
be lost is sent again at once after a reconnect, else after a doubling backoff from 30 s
to at most 8 minutes since the last send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.clocks import HybridClock
from shared.crdt import merge, new_record, place, start_attempt
from shared.decisions import (
    PLACE_IN_FLIGHT_MIN_S,
    PLACE_RESEND,
    place_in_flight_s,
    place_not_taken,
    place_resend_due,
)

times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
resends = st.integers(min_value=0, max_value=10_000)


def test_the_schedule() -> None:
    waits = []
    sent, n = 0.0, 0
    for now in range(0, 3_000):
        if place_resend_due(sent, n, float(now)):
            waits.append(now - sent)
            sent, n = float(now), n + 1
    assert waits[:6] == [30, 60, 120, 240, 480, 480]


@given(now=times, n=resends)
def test_due_at_once_when_the_last_send_is_unknown(now: float, n: int) -> None:
    assert place_resend_due(None, n, now)


@given(sent=times, n=resends, dt=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_never_before_the_first_wait_always_after_the_longest(
    sent: float, n: int, dt: float
) -> None:
    now = sent + dt
    due = place_resend_due(sent, n, now)
    if now - sent < PLACE_RESEND.backoff_s:
        assert not due
    if now - sent >= PLACE_RESEND.backoff_max_s:
        assert due


@given(sent=times, n=resends, a=st.floats(0, 1e4), b=st.floats(0, 1e4))
def test_once_due_it_stays_due(sent: float, n: int, a: float, b: float) -> None:
    early, late = sorted((a, b))
    if place_resend_due(sent, n, sent + early):
        assert place_resend_due(sent, n, sent + late)


@given(sent=times, n=resends, dt=st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_a_place_the_node_holds_no_record_of_is_due_once_it_cannot_be_in_flight(
    sent: float, n: int, dt: float
) -> None:
    """No record of the task at the node: the ``place`` (which carries it) was lost, unless
    the digest may have left before it arrived; no backoff either way."""
    now = sent + dt
    due = place_resend_due(sent, n, now, held=False, in_flight_s=2.5)
    assert due == (now - sent > 2.5)
    assert place_resend_due(sent, n, now, held=False) == (now - sent > PLACE_IN_FLIGHT_MIN_S)
    assert place_resend_due(None, n, now, held=False)


def test_in_flight_is_twice_the_p99_round_trip_at_least_the_floor() -> None:
    assert place_in_flight_s(None) == PLACE_IN_FLIGHT_MIN_S
    assert place_in_flight_s(20.0) == PLACE_IN_FLIGHT_MIN_S
    assert place_in_flight_s(900.0) == 1.8


def test_a_record_placing_the_task_here_under_an_epoch_never_taken_up_is_a_lost_place() -> None:
    clock = HybridClock("cloud")
    made = new_record("t1", {"id": "t1", "command": ["true"]}, writer="cloud", hlc=clock.now(1))
    rec = merge(made, place(made, epoch=1, node="n1", level="causal", lease_s=None,
                            writer="cloud", hlc=clock.now(2)))  # fmt: skip
    assert place_not_taken(rec, "n1", ())
    assert not place_not_taken(rec, "n1", {1})  # queued or running here
    assert not place_not_taken(rec, "n2", ())  # placed elsewhere
    assert not place_not_taken(made, "n1", ())  # not placed
    _, started = start_attempt(rec, node="n1", epoch=1, writer="n1", hlc=clock.now(3))
    assert not place_not_taken(merge(rec, started), "n1", ())  # an attempt of the epoch
    _, earlier = start_attempt(rec, node="n1", epoch=0, writer="n1", hlc=clock.now(3))
    assert place_not_taken(merge(rec, earlier), "n1", ())  # an older epoch's attempt only
    local = merge(made, place(made, epoch=0, node="n1", level="causal", lease_s=None,
                              writer="n1", hlc=clock.now(2)))  # fmt: skip
    assert not place_not_taken(local, "n1", ())  # the node's own, never sent a place
