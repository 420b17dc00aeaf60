"""``shared.autonomy.Failover``: a client's breaker over the controller (where a new submission
goes: the controller, or an agent of its site)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.autonomy import (
    CONNECT_TIMEOUT_S,
    PROBE_S,
    RTO_MAX_S,
    RTO_MIN_S,
    ConnectWait,
    Failover,
    Route,
)
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


# -- how long a connection attempt may go unanswered (RFC 6298, and the deadline) --------------


def test_no_round_trip_sample_waits_the_initial_second() -> None:
    br = Failover()
    assert br.srtt is None and br.rto_s == CONNECT_TIMEOUT_S == 1.0
    assert br.connect_wait() == ConnectWait(1.0, True)


def test_rfc6298_estimator_first_sample_then_smoothing() -> None:
    br = Failover()
    br.observe_rtt(0.1)  # (2.2): SRTT = R, RTTVAR = R/2, RTO = SRTT + 4·RTTVAR = 3R
    assert br.srtt == 0.1 and br.rttvar == 0.05 and br.rto_s == pytest.approx(0.3)
    br.observe_rtt(0.2)  # (2.3): RTTVAR first, from the old SRTT
    assert br.rttvar == pytest.approx(0.75 * 0.05 + 0.25 * 0.1)
    assert br.srtt == pytest.approx(0.875 * 0.1 + 0.125 * 0.2)


def test_a_steady_path_converges_to_the_lower_bound_and_a_slow_one_above_it() -> None:
    fast, slow, huge = Failover(), Failover(), Failover()
    for _ in range(50):
        fast.observe_rtt(0.01)
        slow.observe_rtt(0.4)
        huge.observe_rtt(100.0)
    assert fast.rto_s == RTO_MIN_S
    assert 0.4 <= slow.rto_s < 0.41
    assert huge.rto_s == RTO_MAX_S


@pytest.mark.parametrize("bad", [-0.1, math.inf, math.nan])
def test_an_invalid_sample_is_ignored(bad: float) -> None:
    br = Failover()
    br.observe_rtt(bad)
    assert br.srtt is None and br.rto_s == CONNECT_TIMEOUT_S


def _measured(rtt: float, n: int = 50) -> Failover:
    br = Failover()
    for _ in range(n):
        br.observe_rtt(rtt)
    return br


def test_the_deadline_gives_up_early_without_opening_the_breaker() -> None:
    br = _measured(0.05)  # RTO 0.2 s
    # 0.25 s left, the fallback needs 0.1: waiting past 0.15 s forfeits it
    assert br.connect_wait(deadline_left_s=0.25, fallback_s=0.1) == ConnectWait(
        pytest.approx(0.15), False
    )
    # enough slack: the RTT-based timeout, which opens the breaker
    assert br.connect_wait(deadline_left_s=0.5, fallback_s=0.1) == ConnectWait(br.rto_s, True)
    # the fallback cannot meet it at all: nothing gained by giving up early
    assert br.connect_wait(deadline_left_s=0.1, fallback_s=0.2) == ConnectWait(br.rto_s, True)
    # never before the expected answer (SRTT): that would bypass a healthy controller
    assert br.connect_wait(deadline_left_s=0.12, fallback_s=0.1).timeout_s == pytest.approx(0.05)


def test_no_sample_the_deadline_alone_bounds_the_initial_second() -> None:
    """The operator's one-shot ``continuum submit``: no round trip measured, the agent's
    finish unknown (0): it waits no longer than the deadline."""
    br = Failover()
    assert br.connect_wait(deadline_left_s=0.3) == ConnectWait(0.3, False)
    assert br.connect_wait(deadline_left_s=5.0) == ConnectWait(CONNECT_TIMEOUT_S, True)


samples = st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=20)
maybe = st.one_of(st.none(), st.floats(min_value=-1.0, max_value=100.0))


@given(samples, maybe, st.floats(min_value=0.0, max_value=10.0))
def test_the_wait_never_exceeds_the_rto_and_opens_exactly_at_it(
    rtts: list[float], deadline: float | None, fallback: float
) -> None:
    """Whatever was measured: the wait is within RTO_MIN_S … RTO_MAX_S (1 s with no sample)
    or an early give-up; only the RTT-based timeout opens the breaker; an early give-up
    leaves the fallback its expected time before the deadline (or waits the expected
    round trip), and comes only when the fallback can meet the deadline."""
    br = Failover()
    for r in rtts:
        br.observe_rtt(r)
    rto = br.rto_s
    assert (rto == CONNECT_TIMEOUT_S) if not rtts else (RTO_MIN_S <= rto <= RTO_MAX_S)
    wait = br.connect_wait(deadline_left_s=deadline, fallback_s=fallback)
    assert wait.timeout_s <= rto
    assert wait.opens == (wait.timeout_s == rto)
    if not wait.opens:
        assert deadline is not None and deadline - fallback > 0
        slack = deadline - fallback
        assert wait.timeout_s == max(slack, br.srtt or 0.0)


@given(
    st.lists(st.floats(0.0, 200.0, allow_nan=False), min_size=1, max_size=30),
)
def test_the_rto_is_the_clamped_rfc6298_timeout_after_any_samples(samples: list[float]) -> None:
    """``rto_s`` is ``SRTT + 4·RTTVAR`` clamped into ``[RTO_MIN_S, RTO_MAX_S]``, to the bit."""
    br = Failover()
    for rtt in samples:
        br.observe_rtt(rtt)
        assert br.srtt is not None
        assert br.rto_s == min(RTO_MAX_S, max(RTO_MIN_S, br.srtt + 4 * br.rttvar))
