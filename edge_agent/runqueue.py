"""The journal's queue held in memory: the rows of the ``queue`` table and their start order.

The journal (``edge_agent/journal.py``) stays the durable truth: it writes every change to the
table first and then here, and rebuilds this index from the table when it opens and when a
transaction rolls back. The scheduler's passes read the index, never the table, so a pass no
longer reads, decodes and sorts the whole queue (issue 14: the cost of a start grew with the
backlog).

The order is ``shared.autonomy.order_queue``'s, cached. A task's place in it changes only
when its waiting time crosses into another aging step (``effective_priority``, whole steps):
each placed task's step end waits in a heap, and a pass first moves the tasks whose step
ended (taken out, put back by a binary search whose comparisons are ``order_queue``'s own, of
two tasks), then puts the tasks added since in their places the same way. Many at once (or a
clock that went back) sort the whole queue again. Removing a task keeps the rest in order:
the removed entry is skipped, and dropped at the next compaction.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.autonomy import QueuedTask, QueuePolicy, effective_priority, order_queue

if TYPE_CHECKING:  # the journal imports this module
    from edge_agent.journal import QueuedRow

__all__ = ["RunQueue"]

# Re-sort this far before an aging step boundary: float rounding never shows a stale order.
_EDGE_S = 1e-3
_AGING_S = QueuePolicy().aging_s  # order_queue's default, as the scheduler calls it


@dataclass(slots=True)
class _Entry:
    row: QueuedRow
    task: QueuedTask  # what order_queue and select_for_shedding read


def _task(row: QueuedRow) -> QueuedTask:
    return QueuedTask(
        task_id=row.task_id,
        priority=row.priority,
        deadline=None if row.deadline_ms is None else row.deadline_ms / 1000.0,
        enqueued=row.enqueued_ms / 1000.0,
    )


class RunQueue:
    """The queued rows by task id, and their start order (see the module's docstring)."""

    def __init__(self, rows: Iterable[QueuedRow] = ()) -> None:
        self._entries: dict[str, _Entry] = {}
        self._order: list[_Entry] | None = None  # sorted, may hold removed entries
        self._ends: list[tuple[float, int, _Entry]] = []  # placed entries by their step's end
        self._start = math.inf  # the latest step start placed: the order is unknown before
        self._stale = 0  # removed entries still in _order
        self._pending: list[_Entry] = []  # added since: placed at the next ordered()
        self._seq = itertools.count()  # heap ties
        self.reset(rows)

    def reset(self, rows: Iterable[QueuedRow]) -> None:
        """Hold exactly ``rows`` (what the table holds)."""
        self._entries = {row.task_id: _Entry(row, _task(row)) for row in rows}
        self._order = None
        self._pending = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, task_id: str) -> QueuedRow | None:
        entry = self._entries.get(task_id)
        return None if entry is None else entry.row

    def rows(self) -> list[QueuedRow]:
        return [entry.row for entry in self._entries.values()]

    def tasks(self) -> list[QueuedTask]:
        return [entry.task for entry in self._entries.values()]

    def put(self, row: QueuedRow) -> None:
        """Add or replace the task's row (placed in the order at the next :meth:`ordered`)."""
        old = self._entries.get(row.task_id)
        task = _task(row)
        if old is not None and old.task == task:
            old.row = row  # same place in the order (a level change): updated in place
            return
        entry = _Entry(row, task)
        self._entries[row.task_id] = entry
        if old is not None:
            self._stale += 1
        if self._order is not None:
            self._pending.append(entry)  # its key needs ``now``: placed by _current

    def remove(self, task_id: str, *, epoch: int | None = None, up_to: int | None = None) -> None:
        """Drop the task's row: any, only for ``epoch``, or only for ``up_to`` or earlier."""
        entry = self._entries.get(task_id)
        if entry is None:
            return
        if (epoch is not None and entry.row.epoch != epoch) or (
            up_to is not None and entry.row.epoch > up_to
        ):
            return
        del self._entries[task_id]
        self._stale += 1

    def ordered(self, now: float) -> Iterator[QueuedRow]:
        """The rows in ``order_queue`` order at ``now`` (wall-clock seconds). Rows removed
        while iterating are skipped; rows added meanwhile wait for the next call (which must
        come after this iteration ended or was dropped)."""
        order = self._current(now)
        entries = self._entries
        for entry in order:
            if entries.get(entry.row.task_id) is entry:
                yield entry.row

    def _current(self, now: float) -> list[_Entry]:
        entries = self._entries
        pending, self._pending = self._pending, []
        if self._order is None or now < self._start:
            return self._sort(now)
        moved = []
        while self._ends and self._ends[0][0] <= now:
            entry = heapq.heappop(self._ends)[2]
            if entries.get(entry.row.task_id) is entry:
                moved.append(entry)
        if 16 * (len(moved) + len(pending)) > len(self):
            return self._sort(now)
        for entry in moved:  # taken out (the old entry is left stale), put back below
            fresh = _Entry(entry.row, entry.task)
            entries[entry.row.task_id] = fresh
            self._stale += 1
            pending.append(fresh)
        if self._stale > 32 and self._stale * 2 > len(self._order):
            self._order = [e for e in self._order if entries.get(e.row.task_id) is e]
            self._stale = 0
        for entry in pending:
            if entries.get(entry.row.task_id) is entry:
                self._insert(entry, now)
        return self._order

    def _sort(self, now: float) -> list[_Entry]:
        by_task = {id(entry.task): entry for entry in self._entries.values()}
        tasks = order_queue([entry.task for entry in self._entries.values()], now)
        self._order = [by_task[id(task)] for task in tasks]
        self._stale = 0
        self._ends, self._start = [], -math.inf
        for entry in self._order:
            self._placed(entry, now)
        return self._order

    def _insert(self, entry: _Entry, now: float) -> None:
        """Put ``entry`` in its place in the current order (valid at ``now``). A stale entry
        met on the way is dropped, never compared: its key may have changed in place."""
        assert self._order is not None
        order, task, entries = self._order, entry.task, self._entries
        low, high = 0, len(order)
        while low < high:
            mid = (low + high) // 2
            other = order[mid]
            if entries.get(other.row.task_id) is not other:
                del order[mid]
                self._stale -= 1
                high -= 1
                continue
            if order_queue((other.task, task), now)[0] is task:
                high = mid
            else:
                low = mid + 1
        order.insert(low, entry)
        self._placed(entry, now)

    def _placed(self, entry: _Entry, now: float) -> None:
        """Note when ``entry``'s task, placed at ``now``, leaves its aging step (its key, hence
        its place, is the same until then)."""
        task = entry.task
        step = effective_priority(task, now) - task.priority
        if step:
            self._start = max(self._start, task.enqueued + step * _AGING_S + _EDGE_S)
        ends = task.enqueued + (step + 1) * _AGING_S - _EDGE_S
        heapq.heappush(self._ends, (ends, next(self._seq), entry))
