"""``shared.autonomy.Failover``: a client's breaker over the controller (where a new submission
goes: the controller, or an agent of its site)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.autonomy import CONNECT_TIMEOUT_S, PROBE_S, Failover, Route
from shared.vocab import Level

WEAK = (Level.EVENTUAL, Level.CAUSAL)


def test_closed_until_an_attempt_fails_then_straight_to_the_agent() -> None:
    br = Failover()
    assert br.route(min_level=Level.CAUSAL, fallback=True) is Route.CONTROLLER
    br.failed(10.0)  # the first submission paid the connect timeout and failed at 10 s
    assert br.down_since == 10.0
    assert br.route(min_level=Level.CAUSAL, fallback=True) is Route.AGENT
    assert br.route(min_level=Level.EVENTUAL, fallback=True) is Route.AGENT


@pytest.mark.parametrize("fallback", [True, False])
def test_strong_only_work_never_fails_over(fallback: bool) -> None:
    br = Failover()
    br.failed(0.0)
    assert br.route(min_level=Level.STRONG, fallback=fallback) is Route.CONTROLLER


def test_no_fallback_agent_means_the_controller() -> None:
    br = Failover()
    br.failed(0.0)
    assert br.route(min_level=Level.EVENTUAL, fallback=False) is Route.CONTROLLER


def test_probes_every_period_from_the_failure_and_an_answer_closes() -> None:
    br = Failover(probe_s=5.0)
    assert not br.probe_due(1e9)  # closed: nothing to probe
    br.failed(2.0)
    assert not br.probe_due(6.9) and br.probe_due(7.0)
    br.probe_sent(7.0)
    assert br.next_probe == 12.0 and not br.probe_due(11.0)
    br.failed(12.5)  # the probe found it down again: the outage's start and schedule stay
    assert br.down_since == 2.0 and br.next_probe == 12.0
    br.reached(12.1)
    assert br.down_since is None and br.next_probe == math.inf
    assert br.route(min_level=Level.CAUSAL, fallback=True) is Route.CONTROLLER
    br.probe_sent(13.0)  # a late probe of a closed breaker schedules nothing
    assert not br.probe_due(1e9)


def test_defaults_are_the_documented_constants() -> None:
    assert Failover().probe_s == PROBE_S == 5.0
    assert CONNECT_TIMEOUT_S == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_probe_period_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="probe_s"):
        Failover(probe_s=bad)


events = st.lists(
    st.tuples(
        st.sampled_from(["failed", "reached", "probe"]),
        st.floats(min_value=0.0, max_value=1e4, allow_nan=False),
    ),
    max_size=40,
)


@given(events, st.sampled_from(list(Level)), st.booleans())
def test_the_route_is_the_agent_exactly_when_open_weak_and_with_a_fallback(
    seq: list[tuple[str, float]], lo: Level, fallback: bool
) -> None:
    """Over any history: the agent only while an unanswered failure is the latest news, the
    work may run without the controller and an agent is there; never a probe while closed;
    while open, a probe is due at most one period after the failure or the last probe."""
    br = Failover()
    open_since: float | None = None
    last: float | None = None
    for kind, t in sorted(seq, key=lambda e: e[1]):
        if kind == "failed":
            br.failed(t)
            open_since = t if open_since is None else open_since
            last = t if last is None else last
        elif kind == "reached":
            br.reached(t)
            open_since = last = None
        elif br.probe_due(t):
            br.probe_sent(t)
            last = t
        assert br.down_since == open_since
        expect = open_since is not None and fallback and lo in WEAK
        assert (br.route(min_level=lo, fallback=fallback) is Route.AGENT) == expect
        if open_since is None:
            assert br.next_probe == math.inf
        else:
            assert last is not None and br.next_probe == last + br.probe_s
