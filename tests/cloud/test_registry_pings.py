"""Round trips measured by the controller's pings (cloud.registry.Registry).

Found by the testbed (``random`` with seed 8): a ping sent just before a node went
silent was answered when the partition healed, and its "round trip" (the partition's
length, 2-2.5 s) became a link RTT sample; p99 over the window then graded the link
critical for 300 s, so strong tasks had no feasible node long after every fault healed.
"""

from __future__ import annotations

from cloud.registry import Registry
from shared.health import LinkPolicy
from shared.vocab import LinkState

POLICY = LinkPolicy(heartbeat_interval_s=1.0, suspect_missed=3, confirm_after_s=10.0)


def _ping(reg: Registry, node: str, now: float) -> str:
    (sent,) = [p for n, p in reg.due_pings(now) if n == node]
    return sent


def test_a_pong_spanning_a_partition_is_proof_of_life_not_a_round_trip() -> None:
    reg = Registry(POLICY)
    entry = reg.ensure("n1", 0.0, 0)
    ping = _ping(reg, "n1", 2.9)  # due just before the node is suspected
    reg.poll(3.0)
    assert entry.monitor.state is LinkState.PARTITIONED
    reg.pong("n1", ping, 5.0)  # the partition heals; the queued ping is answered
    stats = entry.monitor.stats(5.0)
    assert stats.rtt_samples == 0
    assert stats.state is LinkState.DEGRADED  # one disconnect in the window, no bad RTT
    assert stats.partition_lengths_s  # the outage itself is still recorded


def test_an_outage_noticed_only_when_the_pong_arrives_is_not_a_round_trip() -> None:
    """Nobody polled during the silence: the pong itself reveals it."""
    reg = Registry(POLICY)
    entry = reg.ensure("n1", 0.0, 0)
    ping = _ping(reg, "n1", 1.0)
    reg.pong("n1", ping, 4.0)
    stats = entry.monitor.stats(4.0)
    assert stats.rtt_samples == 0
    assert stats.state is not LinkState.CRITICAL


def test_round_trips_before_and_after_a_partition_still_count() -> None:
    reg = Registry(POLICY)
    entry = reg.ensure("n1", 0.0, 0)
    reg.pong("n1", _ping(reg, "n1", 1.0), 1.05)
    reg.poll(4.5)
    assert entry.monitor.state is LinkState.PARTITIONED
    entry.monitor.heard(6.0)
    reg.pong("n1", _ping(reg, "n1", 6.0), 6.3)  # a slow link after the heal is measured
    stats = entry.monitor.stats(6.3)
    assert stats.rtt_samples == 2
    assert stats.rtt_p99_ms is not None and stats.rtt_p99_ms > 250
    assert stats.state is LinkState.CRITICAL


def test_only_a_node_unheard_for_an_interval_is_pinged() -> None:
    """A node that talks and reports its round trips needs no probe (issue 14: one quiet
    liveness loop); one that never measured its link is pinged once an interval."""
    reg = Registry(POLICY)
    talker = reg.ensure("talker", 0.0, 0)
    quiet = reg.ensure("quiet", 0.0, 0)  # measured once, then says nothing
    reg.ensure("mute", 0.0, 0)  # talks, but reports no round trip
    reg.round_trip(talker, 20.0, 0.0)
    reg.round_trip(quiet, 20.0, 0.0)
    reg.contact(quiet, 0.0, 0)
    pinged = []
    for t in (0.0, 0.5, 1.2, 1.9, 2.6):
        reg.contact(talker, t, 0)
        reg.contact(reg.nodes["mute"], t, 0)
        reg.contact(quiet, t, 0, unasked=False)  # answering pings is not talking
        pinged += [(n, t + 0.1) for n, _ in reg.due_pings(t + 0.1)]
    # The quiet node once an interval (heard at 0); the mute one as soon as it is known.
    assert pinged == [("mute", 0.1), ("quiet", 1.3), ("mute", 1.3), ("quiet", 2.7), ("mute", 2.7)]


def test_a_reported_round_trip_grades_the_link() -> None:
    reg = Registry(POLICY)
    entry = reg.ensure("n1", 0.0, 0)
    reg.round_trip(entry, 450.0, 0.5)
    stats = entry.monitor.stats(0.5)
    assert stats.rtt_samples == 1 and stats.state is LinkState.CRITICAL
