"""The ``adaptive`` mode's batch placement for the simulator (``simulations.sim.placer``
has the weighted-sum modes' and describes the split of the pipeline both follow).

The ``adaptive`` mode ranks by predicted completion time (``shared.placement._predict``).
Its tasks of one kind, level and exclusion share the static half (``prepare``: the
filters and ``Timing``) and differ only in their deadline and id, so
``PredictedState`` keeps, per row, what ``_predict.score`` computes before the
deadline rule (queue wait, predicted finish, cost, room), caught up row by row as
resources and backlog move; ``place_predicted`` applies the deadline rule and
``_select.top_rows`` per task. Operation for operation the same arithmetic, so the
same node as ``shared.placement.place_batch``; ``tests/sim/test_sim_placer.py``
checks it on random tables. The predicted finish of the chosen node (what the
prediction error is learned from) is ``_predict.breakdown``'s, from the same parts
(``_predict.parts``, once per shape and table version) summed by the same
``_predict.finish_of``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from shared.placement import (
    COST_WEIGHT,
    SCALE,
    NodeTable,
    Shape,
    first_exhausted,
    quantise,
    tie_seed,
)
from shared.placement._predict import NodeFacts, finish_of, fixed, parts, queue_wait
from shared.placement._select import BOUND, top_rows
from simulations.sim.ranks import LOW, NONE, NONE_INT, SHIFT, first
from simulations.sim.rows import Rows

__all__ = ["PredictedState", "place_predicted"]

#: Rank bases kept per predicted shape for deadlines other than the current one.
_KEPT = 4


def _packed(finish: float, reach: float, keep: float, deadline: float) -> int | None:
    """The rank base of one row for ``deadline``: the rule of ``_predict.score`` for
    a finite finish >= 0 (no guard needed), quantised and packed as ``_rebase`` does
    for the whole column; ``None`` when the value is outside [-BOUND, BOUND]."""
    value = keep if reach <= deadline else -finish / (finish + max(deadline, 1.0))
    if -BOUND <= value <= BOUND:
        return round(value * SCALE) * (1 << 32) + 0xFFFFFFFF
    return None


class PredictedState:
    """One ``adaptive``-mode shape on one table version (see the module docstring).

    Per row, as ``_predict.score`` computes them: the predicted finish and whether
    the node passes the filters and has room; on rows that can take the task also
    ``finish * widen`` (the deadline test) and ``1 - cost`` (a safe node's score),
    elsewhere ``-inf`` and ``-BOUND`` (so the deadline rule gives them ``-BOUND``).
    They are kept as Python lists (a row update is a handful of scalar operations;
    the column forms are built only when a whole column is scored).

    The tasks of one tick mostly share a deadline, so the rank bases for the last
    deadline seen are kept too (``q * 2**32 + 0xFFFFFFFF``, ``NONE`` where the
    node cannot take the task, as ``ShapeState``): a task then costs one ``first``
    with its tie key, as in ``place_many``. The deadlines left recur from tick to
    tick (they are rounded), so the bases of the last ``_KEPT`` other deadlines are
    kept aside with the log position they were current at, and caught up row by
    row when their deadline comes back. Scores that are not finite or outside
    [-BOUND, BOUND] leave the bases unset and go through ``_select.top_rows``.
    ``demand`` is the shape's demand without a deadline. Rows off the shape's
    filters are never updated. A row's moving values are read from ``rows`` (the
    table's columns as lists, ``simulations.sim.rows``; one per table, shared by its
    shapes and by every writer of the table: the logged rows are not read back)."""

    __slots__ = (
        "_columns", "_cpu", "_keys", "_mask", "_parts", "_rows", "back", "base", "bases",
        "deadline", "demand", "facts", "finish", "hashes", "keep", "log", "need", "ok", "reach",
        "rows", "seen", "shape", "tame", "version",
    )  # fmt: skip

    def __init__(
        self,
        table: NodeTable,
        shape: Shape,
        facts: NodeFacts,
        version: int,
        log: list[int],
        rows: Rows,
    ) -> None:
        t = shape.timing
        assert t is not None, "a predicted mode's shape"
        self.demand, self.shape, self.facts, self.version = shape.demand, shape, facts, version
        self.need, self._cpu = shape.need, shape.demand.cpu
        free = (table.cpu_free, table.memory_free, table.disk_free)
        ok = shape.mask & (first_exhausted(shape.need, free) < 0)
        run = fixed(facts, table, self.demand)
        finish = run + queue_wait(
            table.backlog, facts.capacity, table.cpus, table.cpu_free, table.running,
            table.slots, self._cpu,
        )  # fmt: skip
        #: every finish finite and >= 0: a late node's score needs no guard
        self.tame = bool(finish.min(initial=math.inf) >= 0.0 and finish.max(initial=0.0) < math.inf)
        reach = np.where(ok, finish * facts.widen, -math.inf)
        keep = np.where(ok, 1.0 - self._cost(table), -BOUND)
        self.ok: list[bool] = ok.tolist()
        self.finish: list[float] = finish.tolist()
        self.reach: list[float] = reach.tolist()
        self.keep: list[float] = keep.tolist()
        #: the same as columns, until a row moves (the first rank bases read them)
        self._columns: tuple[np.ndarray, ...] | None = (ok, finish, reach, keep)
        self.hashes = table.hash
        self._keys = table.hash.astype(np.int64)  # int64: cheaper to mix with the bases
        self.log, self.seen = log, len(log)
        self.rows = rows
        #: per row, ``(dispatch, transfer, execution, return)`` once a decision is explained
        self._parts: list[tuple[float, float, float, float]] | None = None
        #: the deadline ``base`` is for (``base`` None: not usable for it)
        self.deadline: float | None = None
        self.base: np.ndarray | None = None
        self.back: np.ndarray | None = None  # ``base[::-1]`` while ``base`` is set (``first``)
        #: bases of other deadlines, with the log length they were current at
        self.bases: dict[float, tuple[np.ndarray, int]] = {}
        self._mask: list[bool] = shape.mask.tolist()
        # per row, the static values a row update reads, as one list of Python floats
        # (one index and an unpack per update rather than one index per value; all
        # float64 columns, so one stack and one ``tolist`` give them)
        self._rows: list[list[float]] = np.column_stack(
            (
                run, t.base_cost, facts.capacity, facts.inv_cpus, facts.widen, table.load,
                table.cpus, table.slots,
            )
        ).tolist()  # fmt: skip

    def catch_up(self, table: NodeTable) -> None:
        """Redo the rows the site's log names since the last call."""
        log = self.log
        if self.seen < len(log):
            mask, update, rows = self._mask, self.update, self.rows
            free, memory, running, backlog = rows.cpu, rows.memory, rows.running, rows.backlog
            for j in set(log[self.seen :]):
                if mask[j]:
                    update(table, j, free[j], memory[j], running[j], backlog[j])
            self.seen = len(log)

    def queue(self, table: NodeTable, j: int) -> float:
        """Row ``j``'s queue wait now (``_predict.queue_wait`` on its floats)."""
        _, _, capacity, _, _, _, cpus, slots = self._rows[j]
        rows = self.rows
        return queue_wait(  # type: ignore[no-any-return]
            rows.backlog[j], capacity, cpus, rows.cpu[j], rows.running[j], slots, self._cpu
        )

    def shown_finish(self, table: NodeTable, j: int, queue: float) -> float:
        """The predicted finish an explained decision on row ``j`` shows for a queue
        wait of ``queue`` (``_predict.breakdown``'s ``finish_s``): its parts are the
        same on every row of this table version, so they are computed once, for all
        rows, and summed here as ``breakdown`` sums them."""
        if self._parts is None:
            cols = parts(self.facts, table, self.demand)
            self._parts = list(zip(*(c.tolist() for c in cols), strict=True))
        dispatch, transfer, execute, back = self._parts[j]
        return finish_of(dispatch, transfer, queue, execute, back)  # type: ignore[no-any-return]

    def update(
        self, table: NodeTable, j: int, free: float, memory: float, running: float, backlog: float
    ) -> None:
        """Row ``j`` (on the shape's filters) with its current free cpu and memory,
        running count and backlog (the table's, as ``allocate`` returns them): the
        scalar form of ``_predict.score``'s columns, operation for operation. A row
        without room keeps its stale finish: no rule reads it."""
        self._columns = None
        n0, n1, n2 = self.need
        base = self.base
        if n0 > free or n1 > memory or n2 > self.rows.disk[j]:
            self.ok[j], self.reach[j], self.keep[j] = False, -math.inf, -BOUND
            if base is not None:
                base[j] = NONE_INT
            return
        self.ok[j] = True
        run, base_cost, capacity, inv_cpus, widen, load, cpus, slots = self._rows[j]
        cpu = self._cpu
        finish = self.finish[j] = run + queue_wait(
            backlog, capacity, cpus, free, running, slots, cpu
        )
        taken = 1.0 + (cpu - free) * inv_cpus
        # ``np.minimum(np.maximum(load, taken), 1.0)`` on floats: NaN wins, as in numpy
        # (spelled out: this runs for every row update)
        util = load if load >= taken else taken if taken > load else math.nan
        util = util if util <= 1.0 else 1.0 if util > 1.0 else math.nan
        keep = self.keep[j] = 1.0 - (base_cost + util / 4.0)
        reach = self.reach[j] = finish * widen
        if not 0.0 <= finish < math.inf:
            self.tame, self.base, self.bases = False, None, {}
        elif base is not None:
            packed = _packed(finish, reach, keep, self.deadline)  # type: ignore[arg-type]
            if packed is None:
                self.base = None
            else:
                base[j] = packed

    def _cost(self, table: NodeTable) -> np.ndarray:
        """The cost of every row now, as ``_predict.score`` computes it."""
        t, facts = self.shape.timing, self.facts
        taken = 1.0 + (self._cpu - table.cpu_free) * facts.inv_cpus
        return t.base_cost + np.minimum(np.maximum(table.load, taken), 1.0) / 4.0  # type: ignore[union-attr,no-any-return]

    def score(self, table: NodeTable, deadline: float | None) -> np.ndarray:
        """``_predict.score``'s value for a task with ``deadline`` on every row that
        can take it (``-BOUND`` elsewhere while the deadline is finite), under the
        caller's ``np.errstate``: inf and NaN as in the column form."""
        cols = self._columns
        if cols is None:
            finish, reach, keep = np.array(self.finish), np.array(self.reach), np.array(self.keep)
        else:
            _, finish, reach, keep = cols
        if deadline is None:
            cost = self._cost(table)
            return 1.0 / (1.0 + finish * (1.0 + COST_WEIGHT * cost))  # type: ignore[no-any-return]
        late = -finish / (finish + max(deadline, 1.0))
        if not (self.tame and math.isfinite(deadline)):
            late = np.where(np.isfinite(late), late, -1.0)
        return np.where(reach <= deadline, keep, late)

    def choose(
        self, table: NodeTable, deadline: float | None, task_id: str, epoch: int, seed: int
    ) -> int:
        """The row ``_select.top_rows`` ranks first for a task with ``deadline`` and
        the tie seed of ``(task_id, epoch, seed)``, or -1 when no node can take it."""
        if deadline != self.deadline or self.base is None:
            self._switch(table, deadline)
        base = self.base
        if base is not None:
            j = first(base, self.back, self._keys, task_id, epoch, seed)  # type: ignore[arg-type]
            return j if base.item(j) != NONE_INT else -1
        ok = np.array(self.ok) if self._columns is None else self._columns[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = self.score(table, deadline)
        top = top_rows(value, ok, self.hashes, tie_seed(task_id, epoch, seed), 1)
        return int(top[0]) if len(top) and ok[top[0]] else -1

    def _switch(self, table: NodeTable, deadline: float | None) -> None:
        """Rank bases for ``deadline``: the kept ones caught up with the rows the log
        names since they were current (every row on the shape's filters that moved
        since was updated here), else computed afresh (``_rebase``)."""
        bases, log = self.bases, self.log
        if self.base is not None and self.deadline is not None:
            bases[self.deadline] = (self.base, len(log))
            if len(bases) > _KEPT:
                del bases[next(iter(bases))]
        kept = bases.pop(deadline, None) if deadline is not None else None
        if kept is not None and self.tame:
            base, at = kept
            mask, ok = self._mask, self.ok
            finish, reach, keep = self.finish, self.reach, self.keep
            for j in set(log[at:]):
                if not mask[j]:
                    continue
                if not ok[j]:
                    base[j] = NONE_INT
                    continue
                packed = _packed(finish[j], reach[j], keep[j], deadline)  # type: ignore[arg-type]
                if packed is None:
                    break
                base[j] = packed
            else:
                self.deadline, self.base, self.back = deadline, base, base[::-1]
                return
        self._rebase(table, deadline)

    def _rebase(self, table: NodeTable, deadline: float | None) -> None:
        """Rank bases for ``deadline``, when its scores allow them."""
        self.deadline, self.base = deadline, None
        if deadline is None or not (self.tame and math.isfinite(deadline)):
            return
        # every finish finite and >= 0, the deadline finite: no invalid or zero division
        value = self.score(table, deadline)
        if not (value.min() >= -BOUND and value.max() <= BOUND):
            return
        ok = np.array(self.ok) if self._columns is None else self._columns[0]
        base = self.base = np.where(ok, quantise(value).astype(np.int64) * SHIFT + LOW, NONE)
        self.back = base[::-1]


def place_predicted(
    table: NodeTable,
    state: PredictedState,
    task_ids: Sequence[str],
    epochs: Sequence[int],
    deadlines: Sequence[float | None],
    *,
    seed: int = 0,
    explain: bool = False,
) -> list[tuple[int, float | None]]:
    """Place tasks of one predicted shape in order, each taking its node's resources
    and work (``table.allocate``) before the next is placed; ``(row, predicted
    finish)`` of the placed prefix (the finish only when ``explain``: what an
    explained ``place_batch`` decision's first candidate shows). Stops at the first
    task no node has room for, as ``place_many``. A task whose deadline has rank
    bases ranks with ``first`` here; the others go through ``choose``."""
    state.catch_up(table)
    cpu, memory, disk = state.shape.need
    work = state.demand.work
    out: list[tuple[int, float | None]] = []
    log, keys, update, choose = state.log, state._keys, state.update, state.choose
    allocate = state.rows.allocate
    for task_id, epoch, deadline in zip(task_ids, epochs, deadlines, strict=True):
        base = state.base
        if base is not None and deadline == state.deadline:
            j = first(base, state.back, keys, task_id, epoch, seed)  # type: ignore[arg-type]
            if base.item(j) == NONE_INT:
                break
        else:
            j = choose(table, deadline, task_id, epoch, seed)
            if j < 0:
                break
        # the queue wait as the task saw it, before its own allocation
        finish = state.shown_finish(table, j, state.queue(table, j)) if explain else None
        free, left, running, backlog = allocate(j, cpu, memory, disk, work)
        update(table, j, free, left, running, backlog)
        log.append(j)
        out.append((j, finish))
    state.seen = len(log)  # its own allocations are already applied
    return out
