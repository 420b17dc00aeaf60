"""When the controller last certainly heard this node: the clock of the causal start gate.

The controller may re-place a causal task once it has not heard its node for the task's
``max_disconnect_s`` (``shared.consistency.replacement_allowed``, counted from the node's last
message *it received*). A message *from* the controller proves nothing about that: it keeps
sending (pings, digests, placements) to a node it cannot hear, a one-way cut or a frozen
(SIGSTOPped) process. What bounds the controller's count is an *answer* to something the node
sent: an ack of a heartbeat or of an outbox batch means the controller received that message,
so it heard the node no earlier than the message was first sent. ``ContactClock`` keeps those
send times and credits one when its answer arrives; ``out_of_contact_s`` is then an upper
bound of the controller's own count for this node (same rate of time assumed), never below it.

Pure and clock-free: times are the caller's monotonic seconds.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

__all__ = ["ContactClock"]

#: Sends remembered while unanswered (the oldest are forgotten first: an answer to one of them
#: then credits nothing, the safe side).
_REMEMBER = 256


class ContactClock:
    """The send times of the node's answerable messages, and the latest one answered.

    ``start`` is when contact is first assumed (a fresh process: its start; ``-inf``: never).
    """

    def __init__(self, start: float = -math.inf) -> None:
        self.heard_at = start
        self._sent: dict[Hashable, float] = {}
        #: first send times of keys already answered: a duplicate of that answer may still
        #: come, after the same key is sent again
        self._answered: dict[Hashable, float] = {}

    def sent(self, key: Hashable, now: float) -> None:
        """A message the controller answers by ``key`` was sent at ``now``. A resend keeps
        the first time: the answer may be to the first copy, even one already answered
        (a duplicated answer is indistinguishable from the answer to the resend)."""
        self._sent.setdefault(key, self._answered.get(key, now))
        _bound(self._sent)

    def answered(self, key: Hashable) -> bool:
        """The answer to ``key`` arrived: the controller heard the node no earlier than the
        message's first send. An unknown key (never sent, forgotten, answered twice) credits
        nothing. Returns whether it credited anything."""
        sent = self._sent.pop(key, None)
        if sent is None:
            return False
        self._answered[key] = sent
        _bound(self._answered)
        self.heard_at = max(self.heard_at, sent)
        return True

    def out_of_contact_s(self, now: float) -> float:
        """Seconds since the controller last certainly heard the node (``inf``: never)."""
        return max(0.0, now - self.heard_at)


def _bound(times: dict[Hashable, float]) -> None:
    """Forget the oldest entries past ``_REMEMBER``. For unanswered sends the safe side (see
    ``_REMEMBER``); for answered ones it re-opens the duplicate case only for a key sent
    again after 256 later answers (the agent's keys do not recur: heartbeat ids are unique,
    batches are keyed by increasing outbox sequence numbers)."""
    while len(times) > _REMEMBER:
        del times[next(iter(times))]
