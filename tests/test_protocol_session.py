"""The agent's uplink session (``shared.protocol.UplinkSession``), driven without I/O: what
it asks the shell to do on a (re)connect, on acks, as time passes, and when the session goes
silent while connected."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.model import RetryPolicy, backoff_delay
from shared.protocol import Ack, SessionTiming, UplinkCommand, UplinkSession, reconnect_wait

C = UplinkCommand
T = 3.0
TIMING = SessionTiming(period_s=T, heartbeat_s=T / 6, telemetry_s=1.0, antientropy_s=2 * T)
#: The agent's defaults in units of T (edge_agent/config.py).
IDLE = SessionTiming(period_s=T, heartbeat_s=2 * T, telemetry_s=T / 3, antientropy_s=2 * T)


def _session(acked_seq: int = 0) -> UplinkSession:
    return UplinkSession(TIMING, acked_seq=acked_seq)


def test_every_connect_announces_and_resends_everything_from_the_last_ack() -> None:
    session = _session(acked_seq=7)
    assert session.tick(0.0, 10) == []  # nothing while the link is down
    assert session.link_changed(True, 1.0) == [C.ANNOUNCE, C.FLUSH, C.DIGEST, C.HEARTBEAT]
    assert session.sent_seq == 7
    session.flushed(10, 1.5)
    assert session.link_changed(False, 2.0) == []
    assert session.link_changed(True, 3.0)[:2] == [C.ANNOUNCE, C.FLUSH]
    assert session.sent_seq == 7  # rows not acknowledged go again on the new connection


def test_acks_are_cumulative_and_measure_round_trips() -> None:
    session = _session()
    session.link_changed(True, 0.0)
    session.heartbeat_sent("hb-1", 0.5)
    session.flushed(5, 0.5)
    assert session.ack(Ack(up_to_seq=3, heartbeat_id="hb-1"), 0.75) == 3
    assert session.ack_age(1.75) == 1.0  # rows 4-5 still owed, from the last answer
    assert session.ack(Ack(up_to_seq=2), 0.8) is None  # an old ack, redelivered
    assert session.ack(Ack(up_to_seq=5), 0.9) == 5  # the batch's ack times it too
    assert list(session.rtt_ms) == [250.0, 400.0] and session.last_rtt() == 400.0
    assert session.ack_age(2.9) == 0.0  # nothing owed: connected, however quiet


def test_unacknowledged_rows_are_resent_after_a_period_without_progress() -> None:
    session = _session()
    session.link_changed(True, 0.0)
    session.flushed(4, 0.1)
    session.ack(Ack(up_to_seq=1), 0.5)
    session.tick(0.6, 4)
    assert session.sent_seq == 4
    session.ack(Ack(heartbeat_id=None), T)  # heartbeats acked; the rows are not
    session.tick(T + 0.6, 4)
    assert session.sent_seq == 1  # sent again from the last ack
    assert C.FLUSH in session.tick(T + 0.7, 4)


def test_the_digest_repeats_only_once_the_outbox_is_acknowledged() -> None:
    session = _session()
    session.link_changed(True, 0.0)
    session.flushed(2, 0.1)
    session.ack(Ack(heartbeat_id=None), 2 * T)
    assert C.DIGEST_RECENT not in session.tick(2 * T + 0.1, 2)  # rows out, not yet acked
    session.ack(Ack(up_to_seq=2), 2 * T + 0.2)
    assert C.DIGEST_RECENT in session.tick(2 * T + 0.3, 2)  # the periodic one
    assert C.DIGEST_RECENT not in session.tick(2 * T + 0.4, 2)


def test_a_silent_session_resubscribes_then_reconnects_with_a_doubling_wait() -> None:
    session = _session()
    session.link_changed(True, 0.0)
    assert not any(c in (C.RESUBSCRIBE, C.RECONNECT) for c in session.tick(T - 0.01, 0))
    assert session.tick(T, 0)[-4:] == [C.RESUBSCRIBE, C.FLUSH, C.DIGEST, C.HEARTBEAT]
    assert C.RECONNECT not in session.tick(2 * T - 0.01, 0)
    assert C.RECONNECT in session.tick(2 * T, 0)
    # Reconnected (the link went down and up): still silent, so again after 2 T, 4 T, ...
    session.link_changed(False, 2 * T + 0.1)
    session.link_changed(True, 2 * T + 0.2)
    reconnects = [
        t for t in (2 * T + 0.2 + i * 0.25 for i in range(400)) if C.RECONNECT in session.tick(t, 0)
    ]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(reconnects)]
    assert reconnects[0] - (2 * T + 0.2) >= 2 * T - 1e-9
    assert gaps == sorted(gaps) and max(gaps) <= 8 * T + 0.25


def test_any_ack_ends_the_silence() -> None:
    session = _session()
    session.link_changed(True, 0.0)
    session.tick(T, 0)  # resubscribed
    session.ack(Ack(heartbeat_id=None), T + 0.5)
    assert session.recoveries == 0
    commands = [c for t in (T + 1.0, 2 * T, 2 * T + 0.4) for c in session.tick(t, 0)]
    assert C.RECONNECT not in commands and C.RESUBSCRIBE not in commands


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0.01, 2 * T), st.sampled_from(["ack", "tick", "down", "up"])),
        max_size=80,
    )
)
def test_a_connected_session_is_never_silent_for_long_without_acting(
    steps: list[tuple[float, str]],
) -> None:
    """Law: while connected, the time since the last ack or recovery action never exceeds
    the current silence bound (at most 8 T) plus one tick."""
    session = _session()
    now, last_action = 0.0, 0.0
    session.link_changed(True, now)
    for dt, what in steps:
        for t in (now + dt * i / 4 for i in range(1, 5)):  # ticks between inputs
            if any(c in (C.RESUBSCRIBE, C.RECONNECT) for c in session.tick(t, 0)):
                last_action = t
            if session.link_up:
                assert t - last_action <= 8 * T + dt / 4 + 1e-9
        now += dt
        if what == "ack" and session.link_up:
            session.ack(Ack(heartbeat_id=None), now)
            last_action = now
        elif what in ("down", "up"):
            session.link_changed(what == "up", now)
            last_action = now


def test_an_idle_session_heartbeats_only_when_the_controller_is_quiet() -> None:
    """Issue 14: no heartbeat while the controller answers digests; a heartbeat T after a
    digest nobody answered; none at all while acks of batches keep coming."""
    session = UplinkSession(IDLE)
    session.link_changed(True, 0.0)
    session.ack(Ack(heartbeat_id=None), 0.0)  # digest and heartbeat due at the same time
    sent: list[tuple[float, UplinkCommand]] = []
    t = 0.1
    while t < 20 * T:
        t = round(t + 0.05, 2)
        sent += [(t, c) for c in session.tick(t, 0) if c in (C.HEARTBEAT, C.DIGEST_RECENT)]
        if sent and sent[-1] == (t, C.DIGEST_RECENT):
            session.heard(t + 0.05)  # the controller's digest comes back
    assert {c for _, c in sent} == {C.DIGEST_RECENT}
    assert session.ack_age(t) == 0.0
    # The controller stops answering: a heartbeat T after the next digest, then owed.
    digest_at = next(
        t2
        for t2 in (t + i * 0.05 for i in range(1, 2000))
        if C.DIGEST_RECENT in session.tick(t2, 0)
    )
    assert C.HEARTBEAT not in session.tick(digest_at + T - 0.05, 0)
    assert C.HEARTBEAT in session.tick(digest_at + T, 0)
    assert session.ack_age(digest_at + T + 1.0) == 1.0


def test_acks_of_batches_are_the_heartbeat_of_a_busy_session() -> None:
    session = UplinkSession(IDLE)
    session.link_changed(True, 0.0)
    session.ack(Ack(heartbeat_id=None), 0.1)
    t = 0.1
    for seq in range(1, 200):
        t += T / 12
        commands = session.tick(t, seq)
        assert C.HEARTBEAT not in commands
        assert C.FLUSH in commands
        session.flushed(seq, t)
        session.ack(Ack(up_to_seq=seq), t + 0.01)
    assert len(session.rtt_ms) > 0 and session.ack_age(t + 0.02) == 0.0


@settings(max_examples=300)
@given(
    st.floats(0.01, 5.0),
    st.floats(1.0, 60.0),
    st.integers(1, 40),
    st.floats(0.0, 120.0),
    st.integers(0, 2**32),
)
def test_reconnect_probes_are_paced_from_their_starts(
    min_s: float, max_s: float, failures: int, probing_s: float, seed: int
) -> None:
    """The next probe starts a jittered backoff after the failed one *started*: a
    probe that hung longer than that is followed at once (one is always out on a cut
    link), a refused one waits it out (no storm on a broker that is down)."""
    policy = RetryPolicy(
        max_attempts=1, backoff_s=min_s, multiplier=2.0, backoff_max_s=max_s, jitter=0.5
    )
    backoff = backoff_delay(policy, failures, random.Random(seed))
    wait = reconnect_wait(policy, failures, probing_s, random.Random(seed))
    assert wait >= 0.0
    assert probing_s + wait == pytest.approx(max(probing_s, backoff))
