"""The agent's uplink session as a pure state machine, in the h11 style: the shell feeds it
what happened (the link went up or down, an ``ack`` arrived, time passed) and carries out
the :class:`UplinkCommand` values it returns; the session never reads a clock or touches I/O.

What it keeps: the durable outbox's send and ack cursors (rows are sent in ``seq`` order and
deleted only on a cumulative ack), what the controller owes us an answer for, the round
trips of heartbeats and outbox batches, and the cadences of heartbeats, telemetry and
anti-entropy digests.

What it promises:

- **Every (re)connect** announces the node (presence and ``hello``), sends the outbox from
  the last ack, a full digest and a heartbeat.
- **One quiet liveness loop.** Presence is the broker's (MQTT keep-alive and the last will).
  A heartbeat goes only when the controller has sent nothing for ``heartbeat_s``, or for
  ``T`` after a periodic digest (which the controller answers with its own): acks of outbox
  batches, digests and any other message count (:meth:`UplinkSession.heard`), and the round
  trips of batches are measured on their acks like a heartbeat's. The
  session is *owed* an answer from the moment it asks for one (a heartbeat, outbox rows, a
  lost link) until an ack answers everything it sent; :meth:`UplinkSession.ack_age` is how
  long it has been owed (0 while nothing is), which grades connectivity.
- **Resend.** Rows sent but not acknowledged for a period ``T`` (lost, or nobody subscribed
  yet; heartbeats may be acked meanwhile) are sent again from the last ack.
- **Silence is recovered, not trusted.** A broker can keep a connection open while
  delivering nothing to it (amqtt ended a session on a take-over while the new connection
  stayed up; a subscription can be lost). A connected session owed an answer for ``T`` is
  *silent*: it first resubscribes and resends everything (outbox from the last ack, full
  digest, heartbeat); still silent ``T`` later, it reconnects, and keeps reconnecting with
  a doubling wait (at most ``8 T``) until an ack arrives.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from shared.model import RetryPolicy, UniformSource, backoff_delay
from shared.protocol._bodies import Ack

__all__ = ["SessionTiming", "UplinkCommand", "UplinkSession", "reconnect_wait"]

_MAX_HEARTBEATS = 32
_RTT_SAMPLES = 64
_MAX_SILENCE_FACTOR = 8


class UplinkCommand(StrEnum):
    """What the shell must do now."""

    ANNOUNCE = "announce"  # retained presence ``online`` and ``hello``
    FLUSH = "flush"  # publish outbox rows after ``sent_seq``, then call ``flushed``
    DIGEST = "digest"  # the anti-entropy digest of every record (after a (re)connect)
    DIGEST_RECENT = "digest_recent"  # the periodic one (``shared.crdt.Replica.periodic_digest``)
    HEARTBEAT = "heartbeat"  # publish one, then call ``heartbeat_sent``
    TELEMETRY = "telemetry"
    RESUBSCRIBE = "resubscribe"  # subscribe to the node's ``down`` topic again
    RECONNECT = "reconnect"  # drop the connection and connect again


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTiming:
    """Seconds. ``period_s`` is the autonomy period ``T``: the resend and silence bound;
    ``heartbeat_s`` how long the controller may stay quiet before a heartbeat asks it."""

    period_s: float
    heartbeat_s: float
    telemetry_s: float
    antientropy_s: float


class UplinkSession:
    def __init__(self, timing: SessionTiming, *, acked_seq: int = 0) -> None:
        self.timing = timing
        self.link_up = False
        self.acked_seq = acked_seq  # highest ``seq`` the controller acknowledged
        self.sent_seq = acked_seq  # highest ``seq`` published on this connection
        self.last_ack: float | None = None
        self.recoveries = 0  # silent periods in a row (reset by an ack answering all)
        self.rtt_ms: deque[float] = deque(maxlen=_RTT_SAMPLES)
        self._heartbeats: dict[str, float] = {}
        self._flushes: dict[int, float] = {}  # last ``seq`` of a batch -> when it was sent
        self._owed_since: float | None = None  # asked and not yet fully answered
        self._progress_at = 0.0  # link up, an ack advancing the outbox, or a resend
        self._recover_at = math.inf
        self._heartbeat_at = math.inf
        self._telemetry_at = math.inf
        self._antientropy_at = math.inf

    # -- inputs --------------------------------------------------------------------
    def link_changed(self, up: bool, now: float) -> list[UplinkCommand]:
        self.link_up = up
        self._owe(now)
        if not up:
            return []
        self._progress_at = now
        self._recover_at = now + self._silence_bound()
        self._telemetry_at = now
        return self._resend_all(now, UplinkCommand.ANNOUNCE)

    def ack(self, body: Ack, now: float) -> int | None:
        """An ``ack`` arrived: returns the ``seq`` up to which outbox rows may now be
        deleted (``None`` if the outbox cursor did not advance)."""
        self.last_ack = now
        self._heartbeat_at = now + self.timing.heartbeat_s
        if body.heartbeat_id is not None:
            self._sample(self._heartbeats.pop(body.heartbeat_id, None), now)
        if body.up_to_seq is not None:
            self._sample(self._flushes.pop(body.up_to_seq, None), now)
        advanced = body.up_to_seq is not None and body.up_to_seq > self.acked_seq
        if advanced:
            assert body.up_to_seq is not None
            self.acked_seq = body.up_to_seq
            self.sent_seq = max(self.sent_seq, self.acked_seq)
            self._progress_at = now
            self._flushes = {s: t for s, t in self._flushes.items() if s > self.acked_seq}
        if self.acked_seq >= self.sent_seq:
            self._answered()
        else:  # the controller answers; rows still out wait from now (resent after T)
            self.recoveries = 0
            self._owed_since, self._recover_at = now, now + self.timing.period_s
        return self.acked_seq if advanced else None

    def heard(self, now: float) -> None:
        """The controller sent something (a digest, a placement, a ping, an ack): it is
        alive, so the next heartbeat waits ``heartbeat_s`` from now."""
        self._heartbeat_at = now + self.timing.heartbeat_s

    def flushed(self, up_to_seq: int, now: float) -> None:
        """The shell published outbox rows up to ``up_to_seq``."""
        if up_to_seq > self.sent_seq:
            self._flushes[up_to_seq] = now
            while len(self._flushes) > _MAX_HEARTBEATS:
                del self._flushes[next(iter(self._flushes))]
        self.sent_seq = max(self.sent_seq, up_to_seq)
        self._owe(now)

    def heartbeat_sent(self, heartbeat_id: str, now: float) -> None:
        self._heartbeats[heartbeat_id] = now
        while len(self._heartbeats) > _MAX_HEARTBEATS:
            del self._heartbeats[next(iter(self._heartbeats))]

    def tick(self, now: float, last_seq: int) -> list[UplinkCommand]:
        """Time passed; ``last_seq`` is the outbox's highest ``seq`` (0 when empty)."""
        if not self.link_up:
            return []
        commands: list[UplinkCommand] = []
        if now >= self._telemetry_at:
            self._telemetry_at = now + self.timing.telemetry_s
            commands.append(UplinkCommand.TELEMETRY)
        if self.sent_seq < last_seq:
            commands.append(UplinkCommand.FLUSH)
        elif self.acked_seq >= self.sent_seq and now >= self._antientropy_at:
            self._antientropy_at = now + self.timing.antientropy_s
            # The controller answers a digest with its own: the probe of this period (so
            # decided before the heartbeat). Heard from within T, no heartbeat is needed;
            # not heard, a heartbeat asks.
            self._heartbeat_at = now + self.timing.period_s
            commands.append(UplinkCommand.DIGEST_RECENT)
        if now >= self._heartbeat_at and self._owed_since is None:
            self._heartbeat_at = now + self.timing.heartbeat_s
            self._owe(now)
            commands.append(UplinkCommand.HEARTBEAT)
        if self.acked_seq < self.sent_seq and now - self._progress_at > self.timing.period_s:
            self._progress_at, self.sent_seq = now, self.acked_seq
            self._flushes.clear()  # a resent batch's ack would not time one send
        if now >= self._recover_at:
            commands += self._recover(now)
        return commands

    # -- views ---------------------------------------------------------------------
    def ack_age(self, now: float) -> float:
        """Seconds the controller has owed us an answer: 0 while it owes none (everything
        sent is acknowledged and the link is up), infinite before its first ack."""
        if self.last_ack is None:
            return math.inf
        return 0.0 if self._owed_since is None else max(0.0, now - self._owed_since)

    def rtt_p50(self) -> float | None:
        rtts = sorted(self.rtt_ms)
        return rtts[len(rtts) // 2] if rtts else None

    def last_rtt(self) -> float | None:
        """The latest round trip measured (a heartbeat reports it to the controller)."""
        return self.rtt_ms[-1] if self.rtt_ms else None

    # -- internals -----------------------------------------------------------------
    def _sample(self, sent: float | None, now: float) -> None:
        if sent is not None:
            self.rtt_ms.append((now - sent) * 1000.0)

    def _owe(self, now: float) -> None:
        """We asked (or lost the link): an answer is owed from now, unless it already was."""
        if self._owed_since is None:
            self._owed_since = now
            self._recover_at = now + self._silence_bound()

    def _answered(self) -> None:
        self._owed_since = None
        self.recoveries = 0
        self._recover_at = math.inf

    def _silence_bound(self) -> float:
        factor = min(2 ** max(self.recoveries - 1, 0), _MAX_SILENCE_FACTOR)
        return self.timing.period_s * factor

    def _resend_all(self, now: float, first: UplinkCommand) -> list[UplinkCommand]:
        self.sent_seq = self.acked_seq
        self._flushes.clear()
        self._progress_at = now
        self._antientropy_at = now + self.timing.antientropy_s
        self._heartbeat_at = now + self.timing.heartbeat_s
        self._owe(now)
        return [first, UplinkCommand.FLUSH, UplinkCommand.DIGEST, UplinkCommand.HEARTBEAT]

    def _recover(self, now: float) -> list[UplinkCommand]:
        self.recoveries += 1
        self._recover_at = now + self._silence_bound()
        if self.recoveries == 1:
            return self._resend_all(now, UplinkCommand.RESUBSCRIBE)
        return [UplinkCommand.RECONNECT]


def reconnect_wait(
    policy: RetryPolicy, failures: int, probing_s: float, rng: UniformSource
) -> float:
    """Seconds until the next connect probe after ``failures`` failed ones in a row, the
    last of which was out for ``probing_s`` (from its start until it failed; 0 for a
    connection that had been up). Probes are paced from their starts: a refused connect
    (the broker down or restarting) waits out the jittered backoff, so a fleet does not
    come back in lock-step; a connect that hung unanswered longer than that (a cut link
    holds it) is followed at once. While a link is cut one probe is therefore always
    out, and the heal finds it within a round trip, still with at most one connect per
    node per backoff period."""
    return max(0.0, backoff_delay(policy, failures, rng) - probing_s)
