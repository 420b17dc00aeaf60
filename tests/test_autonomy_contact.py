"""``shared.autonomy.ContactClock``: the node never believes the controller heard it later than
it did, whatever the network does to its messages and to the answers (loss, delay,
duplication, reordering, answers to messages the node forgot or never sent)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from shared.autonomy import ContactClock

# One step: (kind, key, delay). "send": the node sends ``key`` now, the controller receives it
# ``delay`` later (None: lost) and answers at once; "deliver": the oldest pending answer
# (or, with key >= 100, an answer to a key never sent) reaches the node; "tick": time passes.
_step = st.tuples(
    st.sampled_from(["send", "deliver", "deliver_dup", "tick"]),
    st.integers(min_value=0, max_value=120),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=20.0)),
)


@given(st.lists(_step, max_size=80), st.floats(min_value=-5.0, max_value=5.0))
def test_contact_is_never_later_than_the_controller_heard(
    steps: list[tuple[str, int, float | None]], start: float
) -> None:
    clock = ContactClock(start)
    now = 10.0
    received: list[float] = []  # when the controller received a copy of anything
    answers: list[tuple[float, int]] = []  # (arrival at the controller, key), answered then
    delivered: list[int] = []
    for kind, key, delay in steps:
        now += 0.1
        if kind == "send":
            clock.sent(key, now)
            if delay is not None:
                received.append(now + delay)
                answers.append((now + delay, key))
        elif kind == "tick":
            now += delay or 0.0
        else:
            ready = sorted(a for a in answers if a[0] <= now)
            if key >= 100:
                clock.answered(key * 1000)  # an answer to nothing this node sent
            elif ready:
                arrival, answered = ready[0]
                if kind == "deliver":
                    answers.remove((arrival, answered))
                clock.answered(answered)
                delivered.append(answered)
        heard = max((t for t in received if t <= now), default=-math.inf)
        # The node's count is never shorter than the controller's own.
        assert clock.heard_at <= max(heard, start)
        assert clock.out_of_contact_s(now) >= now - max(heard, start)


def test_an_answer_credits_the_first_send_and_only_once() -> None:
    clock = ContactClock(0.0)
    clock.sent("hb-1", 5.0)
    clock.sent("hb-1", 9.0)  # a resend: the answer may be to the first copy
    assert clock.out_of_contact_s(12.0) == 12.0
    assert clock.answered("hb-1")
    assert clock.out_of_contact_s(12.0) == 7.0
    assert not clock.answered("hb-1")  # a duplicate answer
    assert not clock.answered("never-sent")
    assert ContactClock().out_of_contact_s(1e9) == math.inf
