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

Every pass costs in proportion to what changed and what is awake, never to the size
of the parked backlog.
"""

from __future__ import annotations

from collections import deque

from .registry import Registry
from .tasks import TaskTable

__all__ = ["RECHECK_PER_S", "RECHECK_S", "Backlog"]

#: A parked task is looked at again after this long (seconds) ...
RECHECK_S = 30.0
#: ... but no more parked tasks a second than this are (a budget, banked up to one second).
RECHECK_PER_S = 20.0
_WHY = ("deps", "nodes", "resources")


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

    def forget(self) -> None:
        """Look at every unplaced task again (memory was reloaded from the store)."""
        self._parked.clear()
        for members in self._by_why.values():
            members.clear()
        self._recheck.clear()
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
        self._awake &= unplaced
        return list(self._awake)

    def park(self, task_id: str, why: str, now: float) -> None:
        """Look at ``task_id`` again only when ``why`` says (see the module doc)."""
        self._wake(task_id)  # drop an older parking
        self._awake.discard(task_id)
        self._parked[task_id] = (why, now)
        self._by_why[why].add(task_id)
        self._recheck.append((now, task_id))

    def _wake(self, task_id: str) -> None:
        parked = self._parked.pop(task_id, None)
        if parked is not None:
            self._by_why[parked[0]].discard(task_id)
        self._awake.add(task_id)

    def _wake_all(self, why: str) -> None:
        members = self._by_why[why]
        for task_id in members:
            del self._parked[task_id]
        self._awake |= members
        self._by_why[why] = set()
