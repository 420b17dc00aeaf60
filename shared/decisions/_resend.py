"""When the controller sends a ``place`` again that a node's digest says it may lack.

A node's anti-entropy digest cannot tell a placement it holds queued (behind busy
executors) from one whose record reached it without the ``place`` (a message the broker
dropped, a session it lost): both show the controller's own record and no attempt of the
epoch. Re-sending on every digest kept the second case live, but cost every queued task
a ``place`` (and the node an event row) once per anti-entropy period for as long as it
waited. The two ways a ``place`` is lost are not alike, and neither needs that:

- a lost session ends in a reconnect, and the node's ``hello`` follows it: the caller
  forgets when it last sent (``sent_at = None``), so the next digest re-sends at once;
- a message dropped inside a live session (a broker's queue limit under a burst) is rare
  and not tied to any signal: re-sent on a digest after ``PLACE_RESEND``'s backoff since
  the last send (the placement itself counts), 30 s doubling to at most 8 minutes. A
  task queued for an hour costs 8 re-sends instead of one per period.

The agent recognises an epoch it queued or ran (``duplicate_placement``), so a re-send
never runs anything twice; the backoff only bounds how long a lost ``place`` waits.
"""

from __future__ import annotations

from typing import Final

from shared.model import RetryPolicy, base_delay

__all__ = ["PLACE_RESEND", "place_resend_due"]

#: Backoff between sends of one placement's ``place`` (no jitter: the digests that ask
#: are already spread by the nodes' own periods).
PLACE_RESEND: Final = RetryPolicy(backoff_s=30.0, multiplier=2.0, backoff_max_s=480.0, jitter=0.0)


def place_resend_due(sent_at: float | None, resends: int, now: float) -> bool:
    """Whether a digest at ``now`` should bring the ``place`` again: ``sent_at`` is when it
    was last sent for the current epoch (``None``: unknown, or a reconnect since), and
    ``resends`` how many times it was sent again since the placement."""
    return sent_at is None or now - sent_at >= base_delay(PLACE_RESEND, resends + 1)
