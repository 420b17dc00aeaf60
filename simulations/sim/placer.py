"""Batch placement for the simulator, built from ``shared.placement``'s own stages.

The controller places one task at a time with ``shared.placement.place``. The
simulator places thousands per second, so it splits the same pipeline the way
``shared.placement._pipeline`` documents: the *static* half (every feasibility
filter but exhaustion, every score term but ``fit``) is ``prepare``'d once per
task shape and table version and cached; the *dynamic* half (exhaustion, best
fit, the quantised rank with the per-task tie seed) is evaluated for all nodes
at once and then kept current one row at a time as tasks of the batch take
resources. The arithmetic is the same functions in the same order
(``first_exhausted``, ``fit_term``, ``quantise``, ``tie_seed`` and the rank
packing of ``_select``), so each choice is the node ``place`` would return on
the same table; ``tests/sim/test_sim_placer.py`` checks that on random tables.
Explanations are not built.

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
    PREDICTED_MODES,
    SCALE,
    TINY,
    NodeTable,
    Shape,
    TaskDemand,
    Weights,
    first_exhausted,
    fit_term,
    prepare,
    quantise,
    resolve_mode,
    tie_seed,
)
from shared.placement._predict import NodeFacts, finish_of, fixed, parts, queue_wait
from shared.placement._select import BOUND, top_rows
from shared.vocab import PlacementMode

__all__ = ["PredictedState", "ShapeCache", "ShapeState", "place_many", "place_predicted"]

_LOW = np.int64(0xFFFFFFFF)
_SHIFT = np.int64(1 << 32)
#: Rank of an infeasible row: below any feasible rank (|q| ≤ 1e9, so ≥ -2**62) even
#: after the tie key (< 2**32) is subtracted.
_NONE = np.int64(np.iinfo(np.int64).min + (1 << 33))
_NONE_INT = int(_NONE)
#: Rank bases kept per predicted shape for deadlines other than the current one.
_KEPT = 4


def _first(base: np.ndarray, keys: np.ndarray, tie: int) -> int:
    """The row that ranks first: the argmax of ``base - (keys ^ tie)`` (int64 xor of
    two 32-bit values = the uint32 xor of ``_select.ranks``).

    Distinct rank bases differ by at least 2**32 and a tie key is below it, so a row
    alone with the highest base is first whatever the key; it is alone when the
    first and the last argmax (of the reversed view) name it, the common case: two
    argmaxes and none of the key's arithmetic. Otherwise (equal quantised scores)
    the bases with the keys."""
    j = int(base.argmax())
    if int(base[::-1].argmax()) + j != len(base) - 1:
        j = int((base - (keys ^ tie)).argmax())
    return j


class ShapeState:
    """One shape on one table: the static half (``Shape``) and the dynamic half as
    packed rank bases (``q * 2**32 + 0xFFFFFFFF``, or ``_NONE`` when infeasible).

    Later calls redo only the rows whose free resources moved since: either the
    rows the caller logged (``log``: every row whose free columns it changed, in a
    list shared by the shapes of one table and version, cheapest) or, without a
    log, the rows that differ from a snapshot of the free columns."""

    __slots__ = (
        "base", "free", "hashes", "log", "mask", "need", "seen", "shape", "static", "version",
    )  # fmt: skip

    def __init__(self, table: NodeTable, shape: Shape, version: int, log: list[int] | None) -> None:
        self.shape = shape
        self.version = version
        free = (table.cpu_free, table.memory_free, table.disk_free)
        dims = first_exhausted(shape.need, free)
        feasible = shape.mask & (dims < 0)
        fit = fit_term(shape.need, shape.count, free)
        total = shape.static + shape.wfit * fit
        q = quantise(np.where(feasible, total, 0.0)).astype(np.int64)
        self.base = np.where(feasible, q * _SHIFT + _LOW, _NONE)
        self.hashes = table.hash.astype(np.int64)
        self.mask: list[bool] = shape.mask.tolist()
        self.static: list[float] = shape.static.tolist()
        self.need = shape.need
        self.log = log
        self.seen = 0 if log is None else len(log)
        self.free = None if log is not None else tuple(c.copy() for c in free)

    def catch_up(self, table: NodeTable) -> None:
        """Recompute the rows whose free resources changed since the last call."""
        if self.log is not None:
            log = self.log
            if self.seen < len(log):
                base, rank = self.base, self.rank
                for j in set(log[self.seen :]):
                    base[j] = rank(table, j)
                self.seen = len(log)
            return
        c0, c1, c2 = table.cpu_free, table.memory_free, table.disk_free
        s0, s1, s2 = self.free  # type: ignore[misc]
        moved = np.flatnonzero((c0 != s0) | (c1 != s1) | (c2 != s2))
        if len(moved):
            for j in moved.tolist():
                self.base[j] = self.rank(table, j)
            s0[moved], s1[moved], s2[moved] = c0[moved], c1[moved], c2[moved]

    def rank(self, table: NodeTable, j: int) -> int:
        """Rank base (before the tie key) of row ``j`` with its current free
        resources: the scalar form of ``first_exhausted``, ``fit_term`` and
        ``quantise``, operation for operation (as ``shared.placement._batch`` does)."""
        if not self.mask[j]:
            return _NONE_INT
        n0, n1, n2 = self.need
        f0 = table.cpu_free.item(j)
        if n0 > f0:
            return _NONE_INT
        f1 = table.memory_free.item(j)
        if n1 > f1:
            return _NONE_INT
        f2 = table.disk_free.item(j)
        if n2 > f2:
            return _NONE_INT
        # ``max(f, TINY)`` spelled out, as ``max`` evaluates it
        fit = (
            n0 / (TINY if f0 < TINY else f0)
            + n1 / (TINY if f1 < TINY else f1)
            + n2 / (TINY if f2 < TINY else f2)
        ) / self.shape.count
        total = self.static[j] + self.shape.wfit * fit
        return round(total * SCALE) * (1 << 32) + 0xFFFFFFFF


class ShapeCache:
    """``ShapeState`` per (table key, task shape, mode), valid while the table's
    version stands (the simulator bumps it when telemetry columns change)."""

    def __init__(self, weights: Weights | None = None) -> None:
        self.weights = weights or Weights()
        self._cache: dict[tuple[object, ...], ShapeState] = {}
        self.prepared = 0

    def get(
        self,
        key: object,
        version: int,
        table: NodeTable,
        demand: TaskDemand,
        mode: PlacementMode,
        log: list[int] | None = None,
    ) -> ShapeState:
        """The state for ``demand``'s shape, caught up with the table. With a
        ``log``, the caller appends every row whose free resources it changes
        outside ``place_many`` and starts a new list when ``version`` changes."""
        if resolve_mode(demand, mode) in PREDICTED_MODES:
            raise ValueError(f"{mode.value}: ranked by prediction, use place_batch")
        ck = (key, demand.shape, mode)
        state = self._cache.get(ck)
        if state is not None and state.version == version and state.log is log:
            state.catch_up(table)
            return state
        shape = prepare(table, demand, resolve_mode(demand, mode), self.weights)
        self.prepared += 1
        state = self._cache[ck] = ShapeState(table, shape, version, log)
        return state


def place_many(
    table: NodeTable,
    state: ShapeState,
    task_ids: Sequence[str],
    epochs: Sequence[int],
    *,
    seed: int = 0,
) -> list[int]:
    """Place tasks of one shape in order; each takes its node's resources
    (``table.allocate``) before the next is placed. Returns the chosen rows of the
    placed prefix: it stops at the first task no node has room for (every later
    task of the same shape would be refused too)."""
    shape, base = state.shape, state.base
    hashes = state.hashes
    cpu, memory, disk = shape.need
    free, log = state.free, state.log
    out: list[int] = []
    for task_id, epoch in zip(task_ids, epochs, strict=True):
        j = _first(base, hashes, tie_seed(task_id, epoch, seed))
        if base[j] == _NONE:
            break
        table.allocate(j, cpu, memory, disk)
        base[j] = state.rank(table, j)
        if log is not None:
            log.append(j)
        else:
            s0, s1, s2 = free  # type: ignore[misc]
            s0[j], s1[j], s2[j] = table.cpu_free[j], table.memory_free[j], table.disk_free[j]
        out.append(j)
    if log is not None:
        state.seen = len(log)  # its own allocations are already applied
    return out


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
    deadline seen are kept too (``q * 2**32 + 0xFFFFFFFF``, ``_NONE`` where the
    node cannot take the task, as ``ShapeState``): a task then costs one ``_first``
    with its tie key, as in ``place_many``. The deadlines left recur from tick to
    tick (they are rounded), so the bases of the last ``_KEPT`` other deadlines are
    kept aside with the log position they were current at, and caught up row by
    row when their deadline comes back. Scores that are not finite or outside
    [-BOUND, BOUND] leave the bases unset and go through ``_select.top_rows``.
    ``demand`` is the shape's demand without a deadline. Rows off the shape's
    filters are never updated."""

    __slots__ = (
        "_keys", "_mask", "_parts", "_rows", "base", "bases", "deadline", "demand", "facts",
        "finish", "hashes", "keep", "log", "need", "ok", "reach", "seen", "shape", "tame",
        "version",
    )  # fmt: skip

    def __init__(
        self, table: NodeTable, shape: Shape, facts: NodeFacts, version: int, log: list[int]
    ) -> None:
        t = shape.timing
        assert t is not None, "a predicted mode's shape"
        self.demand, self.shape, self.facts, self.version = shape.demand, shape, facts, version
        self.need = shape.need
        free = (table.cpu_free, table.memory_free, table.disk_free)
        ok = shape.mask & (first_exhausted(shape.need, free) < 0)
        run = fixed(facts, table, self.demand)
        finish = run + queue_wait(
            table.backlog, facts.capacity, table.cpus, table.cpu_free, table.running,
            table.slots, self.demand.cpu,
        )  # fmt: skip
        #: every finish finite and >= 0: a late node's score needs no guard
        self.tame = bool(np.all((finish >= 0) & (finish < math.inf)))
        self.ok: list[bool] = ok.tolist()
        self.finish: list[float] = finish.tolist()
        self.reach: list[float] = np.where(ok, finish * facts.widen, -math.inf).tolist()
        self.keep: list[float] = np.where(ok, 1.0 - self._cost(table), -BOUND).tolist()
        self.hashes = table.hash
        self._keys = table.hash.astype(np.int64)  # int64: cheaper to mix with the bases
        self.log, self.seen = log, len(log)
        #: per row, ``(dispatch, transfer, execution, return)`` once a decision is explained
        self._parts: list[tuple[float, float, float, float]] | None = None
        #: the deadline ``base`` is for (``base`` None: not usable for it)
        self.deadline: float | None = None
        self.base: np.ndarray | None = None
        #: bases of other deadlines, with the log length they were current at
        self.bases: dict[float, tuple[np.ndarray, int]] = {}
        self._mask: list[bool] = shape.mask.tolist()
        # per row, the static values a row update reads, as one tuple of Python floats
        # (one index and an unpack per update rather than one index per value)
        self._rows: list[tuple[float, ...]] = list(
            zip(
                *(
                    c.tolist()
                    for c in (
                        run, t.base_cost, facts.capacity, facts.inv_cpus, facts.widen,
                        table.load, table.cpus, table.slots,
                    )
                ),
                strict=True,
            )
        )  # fmt: skip

    def catch_up(self, table: NodeTable) -> None:
        """Redo the rows the site's log names since the last call."""
        log = self.log
        if self.seen < len(log):
            mask, update = self._mask, self.update
            for j in set(log[self.seen :]):
                if mask[j]:
                    update(table, j)
            self.seen = len(log)

    def row(self, table: NodeTable, j: int) -> tuple[float, float, float]:
        """``(queue, finish, cost)`` of row ``j`` now: the scalar form of
        ``_predict.score``'s columns, operation for operation."""
        run, base_cost, capacity, inv_cpus, _, load, cpus, slots = self._rows[j]
        cpu, free = self.demand.cpu, table.cpu_free.item(j)
        queue = queue_wait(
            table.backlog.item(j), capacity, cpus, free, table.running.item(j), slots, cpu
        )
        taken = 1.0 + (cpu - free) * inv_cpus
        # ``np.minimum(np.maximum(load, taken), 1.0)`` on floats: NaN wins, as in numpy
        # (spelled out: this runs for every row update)
        util = load if load >= taken else taken if taken > load else math.nan
        util = util if util <= 1.0 else 1.0 if util > 1.0 else math.nan
        return queue, run + queue, base_cost + util / 4.0

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

    def update(self, table: NodeTable, j: int) -> None:
        """Row ``j`` (on the shape's filters) with its current free resources and
        backlog. A row without room keeps its stale finish: no rule reads it."""
        n0, n1, n2 = self.need
        base = self.base
        if (
            n0 > table.cpu_free.item(j)
            or n1 > table.memory_free.item(j)
            or n2 > table.disk_free.item(j)
        ):
            self.ok[j], self.reach[j], self.keep[j] = False, -math.inf, -BOUND
            if base is not None:
                base[j] = _NONE_INT
            return
        self.ok[j] = True
        _, finish, cost = self.row(table, j)
        self.finish[j] = finish
        reach = self.reach[j] = finish * self._rows[j][4]
        keep = self.keep[j] = 1.0 - cost
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
        taken = 1.0 + (self.demand.cpu - table.cpu_free) * facts.inv_cpus
        return t.base_cost + np.minimum(np.maximum(table.load, taken), 1.0) / 4.0  # type: ignore[union-attr,no-any-return]

    def score(self, table: NodeTable, deadline: float | None) -> np.ndarray:
        """``_predict.score``'s value for a task with ``deadline`` on every row that
        can take it (``-BOUND`` elsewhere while the deadline is finite), under the
        caller's ``np.errstate``: inf and NaN as in the column form."""
        finish = np.array(self.finish)
        if deadline is None:
            cost = self._cost(table)
            return 1.0 / (1.0 + finish * (1.0 + COST_WEIGHT * cost))  # type: ignore[no-any-return]
        late = -finish / (finish + max(deadline, 1.0))
        if not (self.tame and math.isfinite(deadline)):
            late = np.where(np.isfinite(late), late, -1.0)
        return np.where(np.array(self.reach) <= deadline, np.array(self.keep), late)

    def choose(self, table: NodeTable, deadline: float | None, tie: int) -> int:
        """The row ``_select.top_rows`` ranks first for a task with ``deadline`` and
        tie seed ``tie``, or -1 when no node can take it."""
        if deadline != self.deadline or self.base is None:
            self._switch(table, deadline)
        base = self.base
        if base is not None:
            j = _first(base, self._keys, tie)
            return j if base.item(j) != _NONE_INT else -1
        ok = np.array(self.ok)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = self.score(table, deadline)
        top = top_rows(value, ok, self.hashes, tie, 1)
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
                    base[j] = _NONE_INT
                    continue
                packed = _packed(finish[j], reach[j], keep[j], deadline)  # type: ignore[arg-type]
                if packed is None:
                    break
                base[j] = packed
            else:
                self.deadline, self.base = deadline, base
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
        self.base = np.where(
            np.array(self.ok), quantise(value).astype(np.int64) * _SHIFT + _LOW, _NONE
        )


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
    task no node has room for, as ``place_many``."""
    state.catch_up(table)
    cpu, memory, disk = state.shape.need
    work = state.demand.work
    out: list[tuple[int, float | None]] = []
    log = state.log
    for task_id, epoch, deadline in zip(task_ids, epochs, deadlines, strict=True):
        j = state.choose(table, deadline, tie_seed(task_id, epoch, seed))
        if j < 0:
            break
        # the queue wait as the task saw it, before its own allocation
        finish = state.shown_finish(table, j, state.row(table, j)[0]) if explain else None
        table.allocate(j, cpu, memory, disk, work_s=work)
        state.update(table, j)
        log.append(j)
        out.append((j, finish))
    state.seen = len(log)  # its own allocations are already applied
    return out
