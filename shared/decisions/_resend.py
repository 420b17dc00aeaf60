"""When the controller sends a ``place`` again that a node's digest says it may lack.

A node's anti-entropy digest cannot tell a placement it holds queued (behind busy
executors) from one whose record reached it without the ``place`` (a message the broker
dropped, a session it lost): both show the controller's own record and no attempt of the
epoch. Re-sending on every digest kept the second case live, but cost every queued task
a ``place`` (and the node an event row) once per anti-entropy period for as long as it
waited. The two ways a ``place`` is lost are not alike, and neither needs that:

- a lost session ends in a reconnect, and the node's ``hello`` follows it: the caller
  forgets when it last sent (``sent_at = None``), so the next digest re-sends at once;
- a message dropped inside a live session (a broker's queue limit under a burst, a lossy
  link) shows in the node's digest when the node holds *no record* of the task: the
  ``place`` carries the record, and a node that queued the task keeps it. Unless the
  ``place`` may still be in flight (sent within ``in_flight_s``: the digest may have left
  the node before the ``place`` reached it), it is sent again at once — before, it waited
  out the backoff below, 30-40 s of a task's life on a lossy link;
- the record can reach the node without the ``place`` (the controller sends it first, in
  a message of its own; anti-entropy sends it on a digest that showed it missing). The
  node knows then what the controller cannot (a lost ``place`` and a task queued behind
  busy executors show it the same record): its digest leaves out a record that places the
  task on it at an epoch it never took up (``place_not_taken``), so the controller sees no
  record and sends the ``place`` again as above;
- a record the node holds exactly as ours, with no attempt of its epoch, is a queued task
  (or an agent from before that rule): re-sent on a digest after ``PLACE_RESEND``'s backoff
  since the last send (the placement itself counts), 30 s doubling to at most 8 minutes. A
  task queued for an hour costs 8 re-sends instead of one per period.

The agent recognises an epoch it queued or ran (``duplicate_placement``), so a re-send
never runs anything twice; the backoff only bounds how long a lost ``place`` waits.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from shared.crdt import TaskRecord
from shared.model import RetryPolicy, base_delay

__all__ = [
    "PLACE_IN_FLIGHT_MIN_S",
    "PLACE_RESEND",
    "place_in_flight_s",
    "place_not_taken",
    "place_resend_due",
]

#: Backoff between sends of one placement's ``place`` (no jitter: the digests that ask
#: are already spread by the nodes' own periods).
PLACE_RESEND: Final = RetryPolicy(backoff_s=30.0, multiplier=2.0, backoff_max_s=480.0, jitter=0.0)


#: The least time a ``place`` is taken to be in flight: the broker's and both ends'
#: queues on top of the link's round trip (``place_in_flight_s``).
PLACE_IN_FLIGHT_MIN_S: Final = 1.0


def place_in_flight_s(rtt_p99_ms: float | None) -> float:
    """How long after its send a ``place`` may still be on its way, as far as a digest can
    tell: the digest left the node half a round trip before it arrived, the ``place``
    reaches the node half a round trip after its send, so a digest that arrives more than
    a round trip after the send was written after the ``place`` arrived, if it did. Twice
    the link's p99 round trip for the queues on the way, at least ``PLACE_IN_FLIGHT_MIN_S``
    (no sample: the floor)."""
    rtt_s = 0.0 if rtt_p99_ms is None else rtt_p99_ms / 1000.0
    return max(PLACE_IN_FLIGHT_MIN_S, 2.0 * rtt_s)


def place_resend_due(
    sent_at: float | None,
    resends: int,
    now: float,
    *,
    held: bool = True,
    in_flight_s: float | None = None,
) -> bool:
    """Whether a digest at ``now`` should bring the ``place`` again: ``sent_at`` is when it
    was last sent for the current epoch (``None``: unknown, or a reconnect since),
    ``resends`` how many times it was sent again since the placement, ``held`` whether the
    digest names the task (the node holds a record of it), ``in_flight_s`` how long a
    ``place`` may be on its way (``place_in_flight_s``; ``None``: its floor)."""
    if sent_at is None:
        return True
    if not held:
        return now - sent_at > (PLACE_IN_FLIGHT_MIN_S if in_flight_s is None else in_flight_s)
    return now - sent_at >= base_delay(PLACE_RESEND, resends + 1)


def place_not_taken(rec: TaskRecord, node: str, taken: Collection[int]) -> bool:
    """Whether ``rec`` places its task on ``node`` under a controller's epoch (> 0) that
    ``node`` never took up: no attempt of that epoch by ``node`` in the record, and the
    epoch not in ``taken`` (the epochs ``node`` holds queued or running for the task). Such a
    record came without its ``place``; the node leaves it out of its digests so that the
    controller sends the ``place`` again (the module's docstring)."""
    placement = rec.placement
    if placement is None or placement.node != node or placement.epoch <= 0:
        return False
    epoch = placement.epoch
    if epoch in taken:
        return False
    return not any(a.node == node and a.epoch == epoch for a in rec.attempts.values())
