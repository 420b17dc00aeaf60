"""May the controller start another attempt of a task elsewhere? (docs/consistency.md)

The question is asked when the node running the current attempt is unreachable or
the placement policy wants the task moved. The answer depends on the level *in
force on the current placement* (what the agent was told), not on a level the
manager may have chosen since: the agent cannot hear a downgrade while partitioned.
Hence the first rule, for every level: **a granted lease is never cut short** —
while a lease is live the holder may be running, so nothing else may start.

- ``strong``: after the lease's ``replace_after`` (grant + duration + margin), or at
  once when no lease was ever granted (the agent cannot have started: it needs one,
  and a request for the old epoch is refused once a new epoch is placed).
- ``causal``: only after the node has been out of contact for ``max_disconnect_s``;
  never while it is merely partitioned for less, nor while it is in contact (cancel
  the running attempt first).
- ``eventual``: at once (hedging; the merge keeps every attempt, first success wins).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.consistency._lease import Lease
from shared.vocab import Level

__all__ = ["Replacement", "replacement_allowed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Replacement:
    """The decision; ``not_before`` is when asking again can change it (``None``: no time will)."""

    allowed: bool
    reason: str
    not_before: float | None = None


def replacement_allowed(
    level: Level,
    *,
    now: float,
    lease: Lease | None = None,
    out_of_contact_s: float | None = None,
    max_disconnect_s: float = 300.0,
) -> Replacement:
    """Decide for the current attempt at ``level`` (see module doc for the rules).

    ``lease`` is the controller's lease for the task (any epoch; ``None`` if none was
    granted or it was released); ``out_of_contact_s`` comes from
    ``LinkMonitor.out_of_contact_for`` (``None`` while the node is in contact).
    """
    if lease is not None and lease.live(now):
        return Replacement(allowed=False, reason="lease_live", not_before=lease.replace_after)
    if level is Level.STRONG:
        return Replacement(allowed=True, reason="lease_expired" if lease else "no_lease_granted")
    if level is Level.CAUSAL:
        if out_of_contact_s is None:
            return Replacement(allowed=False, reason="node_in_contact")
        if out_of_contact_s < max_disconnect_s:
            return Replacement(
                allowed=False,
                reason="partition_shorter_than_max_disconnect",
                not_before=now + (max_disconnect_s - out_of_contact_s),
            )
        return Replacement(allowed=True, reason="disconnected_beyond_max")
    return Replacement(allowed=True, reason="hedge")
