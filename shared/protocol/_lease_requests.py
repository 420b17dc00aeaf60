"""The agent's side of the lease protocol: which lease requests it has out, and which
answers it accepts. Pure: time and randomness are passed in.

**Exact matching.** Every request carries a ``request_id`` ``<incarnation>-<n>``: the
incarnation is fresh for every agent process (the shell draws it at start), ``n`` counts up.
An answer counts only when its ``request_id`` names a request *this* object issued, for the
same task and epoch. So a grant queued at the broker for a killed process, a grant for an
earlier epoch, a duplicated grant (its request was already answered) or a grant from a
controller that does not echo ids (``""``) is ignored: it can never be credited to a later
request, whose send time would place the deadline after the controller's view of the
lease's end. The deadline is measured from the matched request's send time
(:meth:`shared.consistency.AgentLease.granted`).

**Liveness.** The refusals in :data:`FINAL_REFUSALS` are final for the epoch (fencing, or a
task with nothing left to run); any other (``lease_held`` after a controller restart,
``unknown_epoch``) is retried with backoff. A queued task whose lease lapsed before it could
start (no free slot) starts over with a fresh lease (:meth:`AgentLeases.for_start`): a lapsed
lease is never renewed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from shared.consistency import AgentLease, LeasePolicy
from shared.model import RetryPolicy, UniformSource, backoff_delay
from shared.protocol._bodies import LeaseGrant, LeaseRequest

__all__ = ["FINAL_REFUSALS", "AgentLeases", "GrantAnswer", "GrantOutcome"]

#: Refusals that end the epoch's lease on this node (fencing, or nothing left to run); any
#: other (``lease_held``, ``unknown_epoch``, a reason this agent does not know) is retried.
FINAL_REFUSALS: Final = frozenset(
    {"stale_epoch", "not_placed_here", "cancelled", "terminal", "unknown_task"}
)
#: Request ids kept for matching; the oldest go first (an answer that late is lost anyway).
_MAX_OUTSTANDING = 4_096
#: Backoff after a refusal that is not final: 1 s, doubling, at most half the lease.
_RETRY_FIRST_S = 1.0


class GrantOutcome(StrEnum):
    """What an answer did."""

    GRANTED = "granted"  # accepted: the lease runs to ``deadline``
    REFUSED = "refused"  # final refusal: never renewed for this epoch
    RETRY = "retry"  # refusal that is not final: asked again from ``retry_at``
    IGNORED = "ignored"  # not an answer to an outstanding request of ours (``reason``)


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantAnswer:
    task_id: str
    epoch: int
    outcome: GrantOutcome
    reason: str | None = None
    deadline: float | None = None
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Sent:
    task_id: str
    epoch: int


class AgentLeases:
    """One :class:`AgentLease` per strong task, and the requests issued for them."""

    def __init__(
        self, incarnation: str, *, period_s: float, margin_s: float, rng: UniformSource
    ) -> None:
        self.incarnation = incarnation
        self._period_s = period_s
        self._margin_s = margin_s
        self._rng = rng
        self._leases: dict[str, AgentLease] = {}
        self._sent: dict[str, _Sent] = {}
        self._count = 0
        self._refusals: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}

    def get(self, task_id: str) -> AgentLease | None:
        return self._leases.get(task_id)

    def _new(self, task_id: str, epoch: int, lease_s: float | None) -> AgentLease:
        duration = lease_s or self._period_s
        policy = LeasePolicy(
            duration_s=duration,
            min_duration_s=min(duration, 3.0),
            max_duration_s=max(duration, 300.0),
            agent_margin_s=self._margin_s,
        )
        self.drop(task_id)
        lease = self._leases[task_id] = AgentLease(task_id, epoch, policy=policy)
        return lease

    def for_running(self, task_id: str, epoch: int) -> AgentLease:
        """The lease of a running attempt of ``epoch`` (a fresh one for another epoch)."""
        lease = self._leases.get(task_id)
        if lease is None or lease.epoch != epoch:
            return self._new(task_id, epoch, None)
        return lease

    def for_start(self, task_id: str, epoch: int, lease_s: float | None, now: float) -> AgentLease:
        """The lease a queued attempt of ``epoch`` would start under. One granted earlier
        that lapsed while the task waited for a slot is replaced by a fresh one (asked for
        again): a lapsed lease is never renewed, and starting needs a live one."""
        lease = self._leases.get(task_id)
        lapsed = (
            lease is not None
            and lease.deadline is not None
            and not lease.valid(now)
            and lease.refused_reason is None
        )
        if lease is None or lease.epoch != epoch or lapsed:
            return self._new(task_id, epoch, lease_s)
        return lease

    def adopt(self, task_id: str, epoch: int, deadline: float, now: float) -> AgentLease:
        """After a restart: an attempt still runs under ``deadline`` (its watchdog fences
        there); renew it from ``now`` on."""
        lease = self._new(task_id, epoch, None)
        lease.deadline = deadline
        lease.renew_at = now
        return lease

    def backing_off(self, task_id: str, now: float) -> bool:
        """Whether a refusal's backoff holds the task's next request back at ``now``."""
        return now < self._retry_at.get(task_id, -math.inf)

    def drop(self, task_id: str) -> None:
        """Forget the task's lease and its outstanding requests (no longer strong, fenced)."""
        self._leases.pop(task_id, None)
        self._refusals.pop(task_id, None)
        self._retry_at.pop(task_id, None)
        for rid in [rid for rid, sent in self._sent.items() if sent.task_id == task_id]:
            del self._sent[rid]

    def due(self, lease: AgentLease, now: float) -> LeaseRequest | None:
        """The request to send now for ``lease``, or ``None`` when none is due (the shared
        renewal rule, paced by the backoff after a refusal that was not final)."""
        if self._leases.get(lease.task_id) is not lease:
            return None
        if self.backing_off(lease.task_id, now) or not lease.renew_due(now):
            return None
        self._count += 1
        request_id = f"{self.incarnation}-{self._count}"
        duration = lease.request(now, request_id=request_id)
        self._sent[request_id] = _Sent(lease.task_id, lease.epoch)
        while len(self._sent) > _MAX_OUTSTANDING:
            del self._sent[next(iter(self._sent))]
        return LeaseRequest(
            task_id=lease.task_id, epoch=lease.epoch, duration_s=duration, request_id=request_id
        )

    def answer(self, grant: LeaseGrant, now: float) -> GrantAnswer:
        """Apply a ``lease_grant``: accepted only as the answer to an outstanding request
        of this incarnation with the same request id, task and epoch."""

        def outcome(kind: GrantOutcome, reason: str | None = None, **kw: float) -> GrantAnswer:
            return GrantAnswer(
                task_id=grant.task_id, epoch=grant.epoch, outcome=kind, reason=reason, **kw
            )

        sent = self._sent.get(grant.request_id)
        if sent is None:
            return outcome(GrantOutcome.IGNORED, "unknown_request")
        if sent != _Sent(grant.task_id, grant.epoch):
            return outcome(GrantOutcome.IGNORED, "request_mismatch")
        del self._sent[grant.request_id]
        lease = self._leases.get(grant.task_id)
        if lease is None or lease.epoch != grant.epoch:
            return outcome(GrantOutcome.IGNORED, "no_lease")
        if grant.granted:
            deadline = lease.granted(
                now, epoch=grant.epoch, duration_s=grant.duration_s, request_id=grant.request_id
            )
            if deadline is None:
                return outcome(GrantOutcome.IGNORED, "not_pending")
            self._refusals.pop(grant.task_id, None)
            self._retry_at.pop(grant.task_id, None)
            return outcome(GrantOutcome.GRANTED, deadline=deadline)
        reason = grant.reason or "refused"
        if reason in FINAL_REFUSALS:
            lease.refused(epoch=grant.epoch, reason=reason)
            return outcome(GrantOutcome.REFUSED, reason)
        refusals = self._refusals[grant.task_id] = self._refusals.get(grant.task_id, 0) + 1
        retry = RetryPolicy(
            max_attempts=1,
            backoff_s=_RETRY_FIRST_S,
            multiplier=2.0,
            backoff_max_s=max(_RETRY_FIRST_S, lease.policy.duration_s / 2),
            jitter=0.5,
        )
        retry_at = now + backoff_delay(retry, refusals, self._rng)
        self._retry_at[grant.task_id] = retry_at
        return outcome(GrantOutcome.RETRY, reason, retry_at=retry_at)
