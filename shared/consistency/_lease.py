"""Leases and fencing for ``strong`` tasks, safe without synchronized clocks.

Each side only ever reads its **own monotonic clock** and only ever errs short:

- The **agent** measures its deadline from the moment it *sent* the request:
  ``deadline = t_send + duration - drift_margin(duration)``. The grant was issued
  after the request was sent, so the agent's deadline falls before the controller's
  view of the end of the lease, even if the agent's clock runs up to ``drift_rate``
  slow. It renews a third into the lease (two more tries fit before the deadline)
  and stops the process at the deadline when no renewal came (fencing).
- The **controller** re-places only after ``grant_time + duration + margin`` on its
  own clock, with ``margin = controller_margin_s + drift_rate · duration`` (process
  stop time plus rate error). After a controller restart the monotonic clock is
  gone: every stored lease is treated as if granted at the restart
  (``restart_deadline``), which is later than the truth, hence safe. Wall-clock
  timestamps are kept for display only; a stepped wall clock must not shorten a lease.
- **Fencing token = epoch.** One live lease per task; a request for an older epoch
  than the task's current placement is refused, so a node that was re-placed away
  from can never extend its lease.

A grant is matched to the request it answers by request id when the grant carries
one; otherwise to the *oldest* outstanding request (FIFO, as MQTT delivers per topic).
FIFO errs short when requests or grants are lost, but a *duplicated* grant would be
credited to a later request: agents must drop duplicate envelopes by id (they do —
the journal keeps seen message ids) or the protocol must echo the request id.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AgentLease",
    "Lease",
    "LeaseBook",
    "LeaseDecision",
    "LeasePolicy",
    "restart_deadline",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class LeasePolicy:
    """Lease durations and safety margins (seconds; ``drift_rate`` a fraction)."""

    duration_s: float = 30.0
    min_duration_s: float = 3.0
    max_duration_s: float = 300.0
    renew_fraction: float = 1.0 / 3.0
    drift_rate: float = 0.01
    agent_margin_s: float = 0.5
    controller_margin_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.min_duration_s <= self.duration_s <= self.max_duration_s:
            raise ValueError("need 0 < min_duration_s ≤ duration_s ≤ max_duration_s")
        if not 0 < self.renew_fraction < 1 or not 0 <= self.drift_rate < 0.5:
            raise ValueError("renew_fraction in (0, 1) and drift_rate in [0, 0.5) required")
        if self.agent_margin_s < 0 or self.controller_margin_s < 0:
            raise ValueError("margins must be ≥ 0")

    def clamp(self, duration_s: float) -> float:
        """A requested duration forced into ``[min_duration_s, max_duration_s]``."""
        return min(max(duration_s, self.min_duration_s), self.max_duration_s)

    def agent_deadline(self, t_send: float, duration_s: float) -> float:
        """The agent's deadline on its clock: ``t_send + duration - drift margin``."""
        return t_send + duration_s - (self.agent_margin_s + self.drift_rate * duration_s)

    def controller_deadline(self, granted_at: float, duration_s: float) -> float:
        """When the controller may re-place: ``grant + duration + margin`` on its clock."""
        return granted_at + duration_s + self.controller_margin_s + self.drift_rate * duration_s


def restart_deadline(duration_s: float, *, now: float, policy: LeasePolicy | None = None) -> float:
    """Safe re-placement deadline for a lease found in the store after a controller restart.

    The real grant happened before the restart, so pretending it happened at ``now``
    (the new process's monotonic clock) only lengthens the wait.
    """
    return (policy or LeasePolicy()).controller_deadline(now, duration_s)


# -- controller side ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A lease as the controller holds it. ``replace_after`` is on the controller's clock."""

    task_id: str
    epoch: int
    node: str
    duration_s: float
    granted_at: float
    replace_after: float
    granted_wall_ms: int | None = None

    def live(self, now: float) -> bool:
        """True while the holder may still be running (``now < replace_after``)."""
        return now < self.replace_after

    def to_dict(self) -> dict[str, Any]:
        """What to persist: no monotonic times (meaningless after a restart)."""
        return {
            "task_id": self.task_id,
            "epoch": self.epoch,
            "node": self.node,
            "duration_s": self.duration_s,
            "granted_wall_ms": self.granted_wall_ms,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseDecision:
    """Answer to a lease request: maps onto the protocol's ``LeaseGrant`` body."""

    task_id: str
    epoch: int
    granted: bool
    reason: str
    duration_s: float
    lease: Lease | None = None


def _refused(task_id: str, epoch: int, reason: str) -> LeaseDecision:
    """A refusal (a module function: a closure built per request cost more than most
    grants' own arithmetic)."""
    return LeaseDecision(task_id=task_id, epoch=epoch, granted=False, reason=reason, duration_s=0.0)


class LeaseBook:
    """The controller's leases, one live lease per task, fenced by epoch."""

    def __init__(self, policy: LeasePolicy | None = None) -> None:
        self.policy = policy or LeasePolicy()
        self._leases: dict[str, Lease] = {}

    def get(self, task_id: str) -> Lease | None:
        """The task's latest lease, live or not."""
        return self._leases.get(task_id)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))

    def request(
        self,
        *,
        task_id: str,
        node: str,
        epoch: int,
        duration_s: float,
        now: float,
        placed_epoch: int,
        placed_node: str,
        wall_ms: int | None = None,
    ) -> LeaseDecision:
        """Grant, renew or refuse a request from ``node`` for ``(task_id, epoch)``.

        ``placed_epoch``/``placed_node`` are the task's current placement. Refusal
        reasons: ``stale_epoch`` (fencing), ``unknown_epoch``, ``not_placed_here``,
        ``lease_held`` (another epoch's lease is still live).
        """
        if epoch < placed_epoch:
            return _refused(task_id, epoch, "stale_epoch")
        if epoch > placed_epoch:
            return _refused(task_id, epoch, "unknown_epoch")
        if node != placed_node:
            return _refused(task_id, epoch, "not_placed_here")
        held = self._leases.get(task_id)
        renewal = held is not None and held.epoch == epoch and held.node == node
        if held is not None and not renewal and held.live(now):
            return _refused(task_id, epoch, "lease_held")
        duration = self.policy.clamp(duration_s)
        replace_after = self.policy.controller_deadline(now, duration)
        if renewal and held is not None:
            # Never shorten: the agent may hold a deadline from the earlier grant.
            replace_after = max(replace_after, held.replace_after)
        lease = Lease(
            task_id=task_id,
            epoch=epoch,
            node=node,
            duration_s=duration,
            granted_at=now,
            replace_after=replace_after,
            granted_wall_ms=wall_ms,
        )
        self._leases[task_id] = lease
        return LeaseDecision(
            task_id=task_id,
            epoch=epoch,
            granted=True,
            reason="renewed" if renewal else "granted",
            duration_s=duration,
            lease=lease,
        )

    def release(self, task_id: str, epoch: int) -> Lease | None:
        """Drop the lease once the holder reported the attempt of ``epoch`` terminal."""
        held = self._leases.get(task_id)
        if held is None or held.epoch != epoch:
            return None
        return self._leases.pop(task_id)

    @classmethod
    def restore(
        cls,
        stored: Iterable[Lease | Mapping[str, Any]],
        *,
        now: float,
        policy: LeasePolicy | None = None,
    ) -> LeaseBook:
        """Rebuild after a controller restart, every deadline from ``restart_deadline``."""
        book = cls(policy)
        for item in stored:
            data = item.to_dict() if isinstance(item, Lease) else dict(item)
            duration = float(data["duration_s"])
            book._leases[str(data["task_id"])] = Lease(
                task_id=str(data["task_id"]),
                epoch=int(data["epoch"]),
                node=str(data["node"]),
                duration_s=duration,
                granted_at=now,
                replace_after=restart_deadline(duration, now=now, policy=book.policy),
                granted_wall_ms=data.get("granted_wall_ms"),
            )
        return book


# -- agent side --------------------------------------------------------------


class AgentLease:
    """The agent's view of its lease on ``(task_id, epoch)``, on its monotonic clock.

    ``request(now)`` before sending a ``lease_request``; ``granted``/``refused`` when
    the answer comes; ``valid(now)`` gates starting (see ``shared.autonomy.may_start``);
    ``must_stop(now)`` is the fence; ``renew_due(now)`` says when to ask again.
    """

    def __init__(self, task_id: str, epoch: int, *, policy: LeasePolicy | None = None) -> None:
        self.task_id = task_id
        self.epoch = epoch
        self.policy = policy or LeasePolicy()
        self.deadline: float | None = None
        self.renew_at: float | None = None
        self.refused_reason: str | None = None
        self._pending: deque[tuple[str | None, float]] = deque()
        self._last_sent: float | None = None
        self._duration = self.policy.duration_s

    def request(self, now: float, *, request_id: str | None = None) -> float:
        """Record that a request is being sent at ``now``; returns the duration to ask for."""
        self._pending.append((request_id, now))
        self._last_sent = now
        return self._duration

    def granted(
        self, now: float, *, epoch: int, duration_s: float, request_id: str | None = None
    ) -> float | None:
        """Apply a grant; returns the (possibly extended) deadline, or ``None`` if ignored.

        Ignored: another epoch's grant, a grant naming an unknown request id, a grant
        with nothing outstanding (a duplicate), or a refused lease (no resurrection).
        """
        if epoch != self.epoch or self.refused_reason is not None:
            return None
        t_send = self._match(request_id)
        if t_send is None:
            return None
        self._duration = duration_s
        deadline = self.policy.agent_deadline(t_send, duration_s)
        self.deadline = deadline if self.deadline is None else max(self.deadline, deadline)
        self.renew_at = t_send + duration_s * self.policy.renew_fraction
        return self.deadline

    def refused(self, *, epoch: int, reason: str) -> None:
        """The controller refused (e.g. ``stale_epoch``): keep the deadline, never renew."""
        if epoch == self.epoch:
            self.refused_reason = reason
            self._pending.clear()

    def valid(self, now: float) -> bool:
        """True while a granted deadline lies ahead."""
        return self.deadline is not None and now < self.deadline

    def must_stop(self, now: float) -> bool:
        """The fence: a strong attempt must be stopped once this is true."""
        return not self.valid(now)

    def renew_due(self, now: float) -> bool:
        """Send a (re)newal now? At a third into the lease, then every sixth while unanswered."""
        if self.refused_reason is not None:
            return False
        if self.deadline is None:
            return self._last_sent is None or self._retry_elapsed(now)
        if self.renew_at is None or now < self.renew_at or not self.valid(now):
            return False
        return not self._pending or self._retry_elapsed(now)

    def _retry_elapsed(self, now: float) -> bool:
        return self._last_sent is None or now - self._last_sent >= self._duration / 6.0

    def _match(self, request_id: str | None) -> float | None:
        if request_id is None:
            return self._pending.popleft()[1] if self._pending else None
        for index, (rid, t_send) in enumerate(self._pending):
            if rid == request_id:
                # Older requests are answered or lost; a late answer to one is stale.
                for _ in range(index + 1):
                    self._pending.popleft()
                return t_send
        return None
