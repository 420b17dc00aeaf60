"""``shared.decisions.place_resend_due``: a controller's ``place`` that a digest shows may
be lost is sent again at once after a reconnect, else after a doubling backoff from 30 s
to at most 8 minutes since the last send."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.decisions import PLACE_RESEND, place_resend_due

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
