"""Which unplaced tasks placement looks at in a pass: blocked work waits for a reason.

A task waiting for its dependencies, or that no node can take now, is *parked* and
costs nothing per pass. It is woken (looked at again) by what could unblock it:

- ``deps``: a change to the task or to one of its dependencies (``TaskTable.changed``
  and ``TaskTable.dependents``);
- ``nodes``: a change to what placement's filters read of the nodes
  (``Registry.generation``: a node joined or said hello, a link changed state, a drain);
- ``resources``: the same, or resources freed (``TaskTable.freed``: a reservation ended);
- any: ``RECHECK_S`` after it was parked (round trips and telemetry drift without an
  event), oldest first and at most ``RECHECK_PER_S`` a second: with more than
  ``RECHECK_S * RECHECK_PER_S`` parked, each waits longer for its recheck, so an idle
  controller's cost stays flat however large the backlog.

A task no node can take is parked with its *kind* (``shared.placement.feasibility_key``:
what the filters and exhaustion read of it). Tasks of one kind are placeable on the
same nodes or on none, so only one of them, the kind's *head* (the first in placement
order), is parked; the others queue behind it and are neither woken nor rechecked.
Each task of a kind that is placed wakes the next ``FOLLOWERS`` of its kind (so a
freed slot costs a few decisions, a large new node a few passes), and so does a head
that leaves the backlog another way (cancelled).

Every pass costs in proportion to what changed, what is awake and the number of
kinds, never to the size of the parked backlog.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable

from .registry import Registry
from .tasks import TaskTable

__all__ = ["FOLLOWERS", "RECHECK_PER_S", "RECHECK_S", "Backlog", "Order"]

#: A parked task is looked at again after this long (seconds) ...
RECHECK_S = 30.0
#: ... but no more parked tasks a second than this are (a budget, banked up to one second).
RECHECK_PER_S = 20.0
#: Tasks of its kind that a placed task wakes, next in placement order.
FOLLOWERS = 8
_WHY = ("deps", "nodes", "resources")
#: Placement order of a task: ``(-priority, submitted_ms, task_id)`` (smaller first).
Order = tuple[int, int, str]


class Backlog:
    def __init__(self, registry: Registry, tasks: TaskTable) -> None:
        self.registry = registry
        self.tasks = tasks
        self._awake: set[str] = set()
        self._parked: dict[str, tuple[str, float]] = {}  # task -> (why, parked at)
        self._by_why: dict[str, set[str]] = {why: set() for why in _WHY}
        self._recheck: deque[tuple[float, str]] = deque()  # (parked at, task), oldest first
        self._nodes_seen = registry.generation
        self._freed_seen = tasks.freed
        self._budget, self._budget_at = RECHECK_PER_S, float("-inf")
        self._heads: dict[Hashable, tuple[Order, str]] = {}  # kind -> its head
        self._kind_of: dict[str, Hashable] = {}  # heads, queued tasks, woken followers
        self._queued: set[str] = set()
        self._queues: dict[Hashable, list[tuple[Order, str]]] = {}  # kind -> heap (lazy)

    def forget(self) -> None:
        """Look at every unplaced task again (memory was reloaded from the store)."""
        self._parked.clear()
        for members in self._by_why.values():
            members.clear()
        self._recheck.clear()
        self._heads.clear()
        self._kind_of.clear()
        self._queued.clear()
        self._queues.clear()
        self.tasks.changed.clear()
        self._awake = set(self.tasks.unplaced)

    def due(self, now: float) -> list[str]:
        """The unplaced tasks to look at now (awake, or woken by what changed)."""
        changed, self.tasks.changed = self.tasks.changed, set()
        for task_id in changed:
            self._wake(task_id)
            for dependent in self.tasks.dependents.get(task_id, ()):
                self._wake(dependent)
        if self.registry.generation != self._nodes_seen:
            self._nodes_seen = self.registry.generation
            self._wake_all("nodes")
            self._wake_all("resources")
        if self.tasks.freed != self._freed_seen:
            self._freed_seen = self.tasks.freed
            self._wake_all("resources")
        self._budget = min(
            RECHECK_PER_S, self._budget + max(now - self._budget_at, 0.0) * RECHECK_PER_S
        )
        self._budget_at = now
        while self._recheck and self._budget >= 1.0 and now - self._recheck[0][0] >= RECHECK_S:
            at, task_id = self._recheck.popleft()
            parked = self._parked.get(task_id)
            if parked is not None and parked[1] == at:  # else woken or parked again since
                self._wake(task_id)
                self._budget -= 1.0
        unplaced = self.tasks.unplaced
        for _, head in list(self._heads.values()):
            if head not in unplaced:  # cancelled (a placed head already woke its kind)
                self.placed(head)
        gone = self._awake - unplaced
        self._awake -= gone
        for task_id in gone:  # left another way (cancelled): the next of its kind goes on
            self.placed(task_id)
        return list(self._awake)

    def park(
        self, task_id: str, why: str, now: float, *, kind: Hashable = None, order: Order = ()
    ) -> None:
        """Look at ``task_id`` again only when ``why`` says (see the module doc); with
        a ``kind`` (and the task's placement ``order``), only as its kind's head."""
        self._wake(task_id)  # drop an older parking
        self._awake.discard(task_id)
        if kind is not None:
            self._kind_of[task_id] = kind
            head = self._heads.get(kind)
            if head is not None and head[1] != task_id:
                if head[0] <= order:
                    self._queue(kind, order, task_id)
                    return
                self._queue(kind, *head)  # it goes first: the head queues behind it
            self._heads[kind] = (order, task_id)
        self._parked[task_id] = (why, now)
        self._by_why[why].add(task_id)
        self._recheck.append((now, task_id))

    def parked_head(self, kind: Hashable) -> tuple[str, str] | None:
        """``(head, why)`` when ``kind`` has a head that is parked (found blocked, and
        not woken since by anything that could unblock it); ``None`` otherwise."""
        _, head = self._heads.get(kind, ((), ""))
        parked = self._parked.get(head)
        return None if parked is None else (head, parked[0])

    def placed(self, task_id: str) -> int:
        """``task_id`` left the backlog (placed, or a head cancelled): wake the next
        ``FOLLOWERS`` of its kind. Returns how many were woken."""
        kind = self._kind_of.pop(task_id, None)
        if kind is None:
            return 0
        head = self._heads.get(kind)
        if head is not None and head[1] == task_id:
            del self._heads[kind]
            self._unpark(task_id)
        queue = self._queues.get(kind, [])
        woken = 0
        while queue and woken < FOLLOWERS:
            _, follower = heapq.heappop(queue)
            if follower in self._queued and self._kind_of.get(follower) == kind:
                self._queued.discard(follower)
                self._awake.add(follower)
                woken += 1
        if not queue:
            self._queues.pop(kind, None)
        return woken

    def _queue(self, kind: Hashable, order: Order, task_id: str) -> None:
        self._unpark(task_id)
        self._awake.discard(task_id)
        self._kind_of[task_id] = kind
        self._queued.add(task_id)
        heapq.heappush(self._queues.setdefault(kind, []), (order, task_id))

    def _unpark(self, task_id: str) -> None:
        parked = self._parked.pop(task_id, None)
        if parked is not None:
            self._by_why[parked[0]].discard(task_id)

    def _wake(self, task_id: str) -> None:
        self._unpark(task_id)
        self._queued.discard(task_id)  # its heap entry goes stale
        self._awake.add(task_id)

    def _wake_all(self, why: str) -> None:
        members = self._by_why[why]
        for task_id in members:
            del self._parked[task_id]
        self._awake |= members
        self._by_why[why] = set()
