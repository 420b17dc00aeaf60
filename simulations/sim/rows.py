"""A ``NodeTable``'s moving columns as Python lists, kept equal to the table.

The simulator's batch paths (``simulations.sim.placer``, ``simulations.sim.predicted``)
and the scheduler's table sync read a row's free cpu, memory and disk, running
count and backlog one row at a time, several times per placed task. Read from the
table's numpy columns each read is an ``item`` call (about 1.4 k instructions in
CPython 3.11, most of a row update's cost); a Python list index is a few dozen.
``Rows`` keeps those five columns as lists beside the table: the same floats
(``tolist`` and ``item`` give the same Python floats), read for nothing.

Contract: every write to the table's moving columns goes through ``Rows``
(``allocate``, ``set``), or the row is read back with ``reread`` before the lists
are read again. ``shared.placement`` code keeps reading the table's columns,
which stay the source of truth: ``Rows`` writes them first.
"""

from __future__ import annotations

from shared.placement import NodeTable

__all__ = ["Rows"]


class Rows:
    """``cpu``, ``memory``, ``disk``, ``running``, ``backlog``: the table's
    ``cpu_free``, ``memory_free``, ``disk_free``, ``running`` and ``backlog`` columns
    as lists (see the module docstring)."""

    __slots__ = ("backlog", "cpu", "disk", "memory", "running", "table")

    def __init__(self, table: NodeTable) -> None:
        self.table = table
        self.cpu: list[float] = table.cpu_free.tolist()
        self.memory: list[float] = table.memory_free.tolist()
        self.disk: list[float] = table.disk_free.tolist()
        self.running: list[float] = table.running.tolist()
        self.backlog: list[float] = table.backlog.tolist()

    def allocate(
        self, j: int, cpu: float, memory: float, disk: float, work: float
    ) -> tuple[float, float, float, float]:
        """``NodeTable.allocate`` on row ``j``, the lists kept equal: its free cpu and
        memory, running count and backlog after it (what ``allocate`` returns)."""
        free, left, running, backlog = self.table.allocate(j, cpu, memory, disk, work_s=work)
        self.cpu[j], self.memory[j], self.running[j], self.backlog[j] = free, left, running, backlog
        if disk:  # the table's ``disk_free.item(j) - disk``: the same value, the same double
            self.disk[j] -= disk
        return free, left, running, backlog

    def set(
        self, j: int, cpu: float, memory: float, running: float, backlog: float | None = None
    ) -> None:
        """Row ``j``'s free cpu and memory, running count and (unless None) backlog,
        in the table and here."""
        table = self.table
        table.cpu_free[j] = self.cpu[j] = cpu
        table.memory_free[j] = self.memory[j] = memory
        table.running[j] = self.running[j] = running
        if backlog is not None:
            table.backlog[j] = self.backlog[j] = backlog

    def set_running(self, j: int, running: float) -> None:
        """Row ``j``'s running count alone."""
        self.table.running[j] = self.running[j] = running

    def reread(self, j: int) -> None:
        """Row ``j`` from the table, after a write that did not go through ``Rows``."""
        t = self.table
        self.cpu[j], self.memory[j] = t.cpu_free.item(j), t.memory_free.item(j)
        self.disk[j], self.running[j] = t.disk_free.item(j), t.running.item(j)
        self.backlog[j] = t.backlog.item(j)
