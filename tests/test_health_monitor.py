"""LinkMonitor: grading, suspicion and confirmation, partition history and rate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.health import LinkMonitor, LinkPolicy, percentile
from shared.vocab import LinkState

POLICY = LinkPolicy()  # 3 s heartbeats, suspect after 9 s, failed 30 s later


def fed(rtts: list[float], *, every: float = 1.0) -> tuple[LinkMonitor, float]:
    mon = LinkMonitor("n1", now=0.0)
    t = 0.0
    for rtt in rtts:
        t += every
        mon.rtt(rtt, t)
    return mon, t


def test_percentile_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_fresh_node_is_healthy() -> None:
    mon = LinkMonitor("n1", now=100.0)
    assert mon.poll(100.0) is None
    assert mon.state is LinkState.HEALTHY


@pytest.mark.parametrize(
    ("rtt", "expected"),
    [
        (99.9, LinkState.HEALTHY),
        (100.0, LinkState.DEGRADED),
        (199.9, LinkState.DEGRADED),
        (200.0, LinkState.CRITICAL),
    ],
)
def test_rtt_edges(rtt: float, expected: LinkState) -> None:
    mon, _ = fed([rtt] * 10)
    assert mon.state is expected


def test_p99_and_p50_reported() -> None:
    mon, t = fed([10.0] * 99 + [500.0])
    stats = mon.stats(t)
    assert stats.rtt_p50_ms == 10.0
    assert stats.rtt_p99_ms == 10.0  # one outlier in 100 is the 100th, not p99
    assert stats.state is LinkState.HEALTHY
    mon.rtt(500.0, t + 1)
    assert mon.stats(t + 1).rtt_p99_ms == 500.0
    assert mon.state is LinkState.CRITICAL


def test_loss_edges() -> None:
    mon, t = fed([10.0] * 98)
    mon.lost(t, count=2)  # 2 of 100 = 2 %: not healthy (< 2 % needed)
    assert mon.state is LinkState.DEGRADED
    mon, t = fed([10.0] * 99)
    mon.lost(t)  # 1 %
    assert mon.state is LinkState.HEALTHY
    mon, t = fed([10.0] * 90)
    change = mon.lost(t, count=10)  # 10 %
    assert mon.state is LinkState.CRITICAL
    assert change is not None and "loss" in change.reason


def test_window_forgets_old_samples() -> None:
    mon, t = fed([400.0] * 5)
    assert mon.state is LinkState.CRITICAL
    for i in range(1, 400):
        mon.rtt(10.0, t + i)
    assert mon.state is LinkState.HEALTHY
    assert mon.stats(t + 399).rtt_samples <= POLICY.window_s + 1


def test_suspicion_edge_and_confirmation_edge() -> None:
    mon = LinkMonitor("n1", now=0.0)
    mon.rtt(10.0, 1.0)
    assert mon.poll(1.0 + 8.99) is None
    change = mon.poll(1.0 + 9.0)
    assert change is not None and change.new is LinkState.PARTITIONED
    assert change.old is LinkState.HEALTHY
    assert mon.poll(1.0 + 9.0 + 29.99) is None
    change = mon.poll(1.0 + 9.0 + 30.0)
    assert change is not None and change.new is LinkState.FAILED
    assert mon.out_of_contact_for(50.0) == pytest.approx(49.0)


def test_heartbeat_clears_suspicion_and_records_partition() -> None:
    mon = LinkMonitor("n1", now=0.0)
    mon.poll(20.0)
    assert mon.state is LinkState.PARTITIONED
    change = mon.rtt(10.0, 25.0)
    assert change is not None and change.new is LinkState.DEGRADED  # one disconnect in window
    stats = mon.stats(25.0)
    assert stats.partition_lengths_s == (25.0,)
    assert stats.partitioned_since is None
    assert mon.out_of_contact_for(25.0) is None


def test_unpolled_silence_still_counts_as_partition() -> None:
    mon = LinkMonitor("n1", now=0.0)
    mon.rtt(10.0, 1.0)
    mon.rtt(10.0, 15.0)  # 14 s silence, nobody polled
    assert mon.stats(15.0).partition_lengths_s == (14.0,)


def test_reported_disconnect_is_immediate_and_confirmed_later() -> None:
    mon = LinkMonitor("n1", now=0.0)
    change = mon.disconnected(2.0)
    assert change is not None and change.new is LinkState.PARTITIONED
    assert "disconnect" in change.reason
    assert mon.poll(31.9) is None
    assert mon.poll(32.0) is not None and mon.state is LinkState.FAILED
    mon.reconnected(40.0)
    assert mon.state is LinkState.DEGRADED
    assert mon.stats(40.0).partition_lengths_s == (38.0,)


def test_two_disconnects_in_window_is_critical_then_heals() -> None:
    mon = LinkMonitor("n1", now=0.0)
    for start in (10.0, 30.0):
        mon.disconnected(start)
        mon.reconnected(start + 1)
    assert mon.state is LinkState.CRITICAL
    t = 31.0
    while t < 31.0 + POLICY.window_s + 1:
        t += 2.0
        mon.rtt(10.0, t)
    assert mon.state is LinkState.HEALTHY


def test_partition_rate_per_hour() -> None:
    mon = LinkMonitor("n1", now=0.0)
    assert mon.partition_rate_per_h(0.0) == 0.0
    mon.disconnected(5.0)
    mon.reconnected(6.0)
    # one partition over a 10-minute floor, not over 6 s
    assert mon.partition_rate_per_h(6.0) == pytest.approx(6.0)
    for k in range(1, 4):
        mon.disconnected(1000.0 * k)
        mon.reconnected(1000.0 * k + 1)
    assert mon.partition_rate_per_h(3600.0) == pytest.approx(4.0)
    assert mon.partition_rate_per_h(3600.0 + 1000.0) == pytest.approx(3.0)  # first one aged out


def test_time_running_backwards_stands_still() -> None:
    mon = LinkMonitor("n1", now=10.0)
    mon.rtt(10.0, 5.0)
    assert mon.stats(5.0).silent_for_s == 0.0


def test_bad_rtt_rejected() -> None:
    with pytest.raises(ValueError):
        LinkMonitor("n1", now=0.0).rtt(-1.0, 1.0)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        LinkPolicy(heartbeat_interval_s=0)
    assert LinkPolicy(heartbeat_interval_s=2.0, suspect_missed=4).suspect_after_s == 8.0


feeds = st.lists(
    st.tuples(
        st.sampled_from(["rtt", "lost", "heard", "disconnected", "reconnected", "poll"]),
        st.floats(0, 50),
        st.floats(0, 1000),
    ),
    max_size=40,
)


@settings(max_examples=60)
@given(feeds)
def test_any_feed_keeps_invariants(ops: list[tuple[str, float, float]]) -> None:
    mon = LinkMonitor("n1", now=0.0)
    t = 0.0
    for op, dt, value in ops:
        t += dt
        change = mon.rtt(value, t) if op == "rtt" else getattr(mon, op)(t)
        if change is not None:
            assert change.old is not change.new
        stats = mon.stats(t)
        assert 0.0 <= stats.loss_rate <= 1.0
        assert all(length >= 0 for length in stats.partition_lengths_s)
        assert stats.partition_rate_per_h >= 0
        if op in ("rtt", "heard", "reconnected"):
            assert stats.state not in (LinkState.PARTITIONED, LinkState.FAILED)
            assert stats.silent_for_s == 0.0


_feeds = st.lists(
    st.tuples(
        st.sampled_from(["rtt", "lost", "heard", "disconnected", "poll"]),
        st.floats(0.0, 400.0),  # seconds since the last feed
        st.floats(0.0, 300.0),  # an RTT in ms
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(_feeds, st.floats(0.0, 50.0))
def test_grade_gives_the_figures_of_stats(
    feeds: list[tuple[str, float, float]], later: float
) -> None:
    """``grade`` (a periodic pass's read) says what ``stats`` says, to the bit, with the
    mean partition length, whatever came before and however long after."""
    mon = LinkMonitor("n", now=0.0, policy=LinkPolicy(window_s=120.0))
    twin = LinkMonitor("n", now=0.0, policy=LinkPolicy(window_s=120.0))
    now = 0.0
    for kind, step, rtt in feeds:
        now += step
        for m in (mon, twin):
            m.rtt(rtt, now) if kind == "rtt" else getattr(m, kind)(now)
    now += later
    grade, stats = mon.grade(now), twin.stats(now)
    lengths = stats.partition_lengths_s
    assert grade == (
        stats.state,
        stats.rtt_p50_ms,
        stats.rtt_p99_ms,
        sum(lengths) / len(lengths) if lengths else 0.0,
        stats.partition_rate_per_h,
    )
    assert mon.state is twin.state
