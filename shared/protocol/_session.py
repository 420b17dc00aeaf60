"""The agent's uplink session as a pure state machine, in the h11 style: the shell feeds it
what happened (the link went up or down, an ``ack`` arrived, time passed) and carries out
the :class:`UplinkCommand` values it returns; the session never reads a clock or touches I/O.

What it keeps: the durable outbox's send and ack cursors (rows are sent in ``seq`` order and
deleted only on a cumulative ack), the heartbeats in flight (their round trips), and the
cadences of heartbeats, telemetry and anti-entropy digests.

What it promises:

- **Every (re)connect** announces the node (presence and ``hello``), sends the outbox from
  the last ack, a full digest and a heartbeat.
- **Resend.** Rows sent but not acknowledged for a period ``T`` (lost, or nobody subscribed
  yet; heartbeats may be acked meanwhile) are sent again from the last ack.
- **Silence is recovered, not trusted.** A broker can keep a connection open while
  delivering nothing to it (amqtt ended a session on a take-over while the new connection
  stayed up; a subscription can be lost). A connected session that hears no ``ack`` for ``T``
  is *silent*: it first resubscribes and resends everything (outbox from the last ack, full
  digest, heartbeat); still silent ``T`` later, it reconnects, and keeps reconnecting with a
  doubling wait (at most ``8 T``) until an ack arrives.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from shared.protocol._bodies import Ack

__all__ = ["SessionTiming", "UplinkCommand", "UplinkSession"]

_MAX_HEARTBEATS = 32
_RTT_SAMPLES = 64
_MAX_SILENCE_FACTOR = 8


class UplinkCommand(StrEnum):
    """What the shell must do now."""

    ANNOUNCE = "announce"  # retained presence ``online`` and ``hello``
    FLUSH = "flush"  # publish outbox rows after ``sent_seq``, then call ``flushed``
    DIGEST = "digest"  # the anti-entropy digest of every record
    HEARTBEAT = "heartbeat"  # publish one, then call ``heartbeat_sent``
    TELEMETRY = "telemetry"
    RESUBSCRIBE = "resubscribe"  # subscribe to the node's ``down`` topic again
    RECONNECT = "reconnect"  # drop the connection and connect again


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionTiming:
    """Seconds. ``period_s`` is the autonomy period ``T``: the resend and silence bound."""

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
        self.recoveries = 0  # silent periods in a row (reset by any ack)
        self.rtt_ms: deque[float] = deque(maxlen=_RTT_SAMPLES)
        self._heartbeats: dict[str, float] = {}
        self._progress_at = 0.0  # link up, an ack advancing the outbox, or a resend
        self._recover_at = math.inf
        self._heartbeat_at = math.inf
        self._telemetry_at = math.inf
        self._antientropy_at = math.inf

    # -- inputs --------------------------------------------------------------------
    def link_changed(self, up: bool, now: float) -> list[UplinkCommand]:
        self.link_up = up
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
        self.recoveries = 0
        self._recover_at = now + self._silence_bound()
        if body.heartbeat_id is not None:
            sent = self._heartbeats.pop(body.heartbeat_id, None)
            if sent is not None:
                self.rtt_ms.append((now - sent) * 1000.0)
        if body.up_to_seq is None or body.up_to_seq <= self.acked_seq:
            return None
        self.acked_seq = body.up_to_seq
        self.sent_seq = max(self.sent_seq, self.acked_seq)
        self._progress_at = now
        return self.acked_seq

    def flushed(self, up_to_seq: int) -> None:
        """The shell published outbox rows up to ``up_to_seq``."""
        self.sent_seq = max(self.sent_seq, up_to_seq)

    def heartbeat_sent(self, heartbeat_id: str, now: float) -> None:
        self._heartbeats[heartbeat_id] = now
        while len(self._heartbeats) > _MAX_HEARTBEATS:
            del self._heartbeats[next(iter(self._heartbeats))]

    def tick(self, now: float, last_seq: int) -> list[UplinkCommand]:
        """Time passed; ``last_seq`` is the outbox's highest ``seq`` (0 when empty)."""
        if not self.link_up:
            return []
        commands: list[UplinkCommand] = []
        if now >= self._heartbeat_at:
            self._heartbeat_at = now + self.timing.heartbeat_s
            commands.append(UplinkCommand.HEARTBEAT)
        if now >= self._telemetry_at:
            self._telemetry_at = now + self.timing.telemetry_s
            commands.append(UplinkCommand.TELEMETRY)
        if self.sent_seq < last_seq:
            commands.append(UplinkCommand.FLUSH)
        elif self.acked_seq >= self.sent_seq and now >= self._antientropy_at:
            self._antientropy_at = now + self.timing.antientropy_s
            commands.append(UplinkCommand.DIGEST)
        if self.acked_seq < self.sent_seq and now - self._progress_at > self.timing.period_s:
            self._progress_at, self.sent_seq = now, self.acked_seq
        if now >= self._recover_at:
            commands += self._recover(now)
        return commands

    # -- views ---------------------------------------------------------------------
    def ack_age(self, now: float) -> float:
        """Seconds since the last ack (infinite before the first)."""
        return math.inf if self.last_ack is None else now - self.last_ack

    def rtt_p50(self) -> float | None:
        rtts = sorted(self.rtt_ms)
        return rtts[len(rtts) // 2] if rtts else None

    # -- internals -----------------------------------------------------------------
    def _silence_bound(self) -> float:
        factor = min(2 ** max(self.recoveries - 1, 0), _MAX_SILENCE_FACTOR)
        return self.timing.period_s * factor

    def _resend_all(self, now: float, first: UplinkCommand) -> list[UplinkCommand]:
        self.sent_seq = self.acked_seq
        self._progress_at = now
        self._antientropy_at = now + self.timing.antientropy_s
        self._heartbeat_at = now + self.timing.heartbeat_s
        return [first, UplinkCommand.FLUSH, UplinkCommand.DIGEST, UplinkCommand.HEARTBEAT]

    def _recover(self, now: float) -> list[UplinkCommand]:
        self.recoveries += 1
        self._recover_at = now + self._silence_bound()
        if self.recoveries == 1:
            return self._resend_all(now, UplinkCommand.RESUBSCRIBE)
        return [UplinkCommand.RECONNECT]
