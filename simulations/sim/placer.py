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

The ``adaptive`` mode's batch path is ``simulations.sim.predicted``'s
(``PredictedState``, ``place_predicted``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared.placement import (
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
)
from shared.vocab import PlacementMode
from simulations.sim.ranks import LOW, NONE, NONE_INT, SHIFT, alone, ranked
from simulations.sim.rows import Rows

__all__ = ["ShapeCache", "ShapeState", "place_many"]

#: After a choice among rows tying for the highest rank base, the next this many
#: choices of the shape skip ``first``'s test for a tie and rank with the keys at
#: once (``ranks.ranked``: the same row either way). In the weighted-sum modes ties
#: persist (identical idle computing devices score alike: 55 % of
#: ``hybrid_dynamic``'s choices on ``pureedgesim-10k``), so the test mostly costs
#: two argmaxes for nothing there.
TIE_RUN = 8


class ShapeState:
    """One shape on one table: the static half (``Shape``) and the dynamic half as
    packed rank bases (``q * 2**32 + 0xFFFFFFFF``, or ``NONE`` when infeasible).

    Later calls redo only the rows whose free resources moved since: either the
    rows the caller logged (``log``: every row whose free columns it changed, in a
    list shared by the shapes of one table and version, cheapest) or, without a
    log, the rows that differ from a snapshot of the free columns. A row's free
    resources are read from ``rows`` (``simulations.sim.rows``: the table's columns as
    lists, one per table, shared by its shapes and required with a ``log``; without a
    log a fresh one will do: every allocation here goes through it, and a row the
    snapshot finds moved is read back into it)."""

    __slots__ = (
        "back", "base", "free", "hashes", "log", "mask", "need", "rows", "seen", "shape",
        "static", "tied", "version",
    )  # fmt: skip

    def __init__(
        self,
        table: NodeTable,
        shape: Shape,
        version: int,
        log: list[int] | None,
        rows: Rows | None = None,
    ) -> None:
        self.shape = shape
        self.version = version
        free = (table.cpu_free, table.memory_free, table.disk_free)
        dims = first_exhausted(shape.need, free)
        feasible = shape.mask & (dims < 0)
        fit = fit_term(shape.need, shape.count, free)
        total = shape.static + shape.wfit * fit
        q = quantise(np.where(feasible, total, 0.0)).astype(np.int64)
        self.base = np.where(feasible, q * SHIFT + LOW, NONE)
        self.back = self.base[::-1]
        self.hashes = table.hash.astype(np.int64)
        self.mask: list[bool] = shape.mask.tolist()
        self.static: list[float] = shape.static.tolist()
        self.need = shape.need
        self.log = log
        self.seen = 0 if log is None else len(log)
        self.free = None if log is not None else tuple(c.copy() for c in free)
        if rows is None and log is not None:
            # a logged row is ranked from the lists without reading the table back:
            # they must be the ones every writer of the table writes through
            raise ValueError("a logged ShapeState needs its table's shared Rows")
        self.rows = rows if rows is not None else Rows(table)
        #: choices left that rank with the keys at once (``TIE_RUN``)
        self.tied = 0

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
                self.rows.reread(j)
                self.base[j] = self.rank(table, j)
            s0[moved], s1[moved], s2[moved] = c0[moved], c1[moved], c2[moved]

    def rank(self, table: NodeTable, j: int) -> int:
        """Rank base (before the tie key) of row ``j`` with its current free
        resources: the scalar form of ``first_exhausted``, ``fit_term`` and
        ``quantise``, operation for operation (as ``shared.placement._batch`` does)."""
        if not self.mask[j]:
            return NONE_INT
        n0, n1, n2 = self.need
        rows = self.rows
        f0 = rows.cpu[j]
        if n0 > f0:
            return NONE_INT
        f1 = rows.memory[j]
        if n1 > f1:
            return NONE_INT
        f2 = rows.disk[j]
        if n2 > f2:
            return NONE_INT
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
        rows: Rows | None = None,
    ) -> ShapeState:
        """The state for ``demand``'s shape, caught up with the table. With a
        ``log``, the caller appends every row whose free resources it changes
        outside ``place_many`` (and writes it through ``rows``, the table's ``Rows``,
        or reads it back there) and starts a new list when ``version`` changes."""
        if resolve_mode(demand, mode) in PREDICTED_MODES:
            raise ValueError(f"{mode.value}: ranked by prediction, use place_batch")
        ck = (key, demand.shape, mode)
        state = self._cache.get(ck)
        if state is not None and state.version == version and state.log is log:
            state.catch_up(table)
            return state
        shape = prepare(table, demand, resolve_mode(demand, mode), self.weights)
        self.prepared += 1
        state = self._cache[ck] = ShapeState(table, shape, version, log, rows)
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
    shape, base, back = state.shape, state.base, state.back
    hashes, tied = state.hashes, state.tied
    cpu, memory, disk = shape.need
    free, log, allocate = state.free, state.log, state.rows.allocate
    out: list[int] = []
    for task_id, epoch in zip(task_ids, epochs, strict=True):
        if tied:  # rows tied lately: with the keys at once
            tied -= 1
            j = ranked(base, hashes, task_id, epoch, seed)
        else:  # ``ranks.first``, noting a tie
            j = alone(base, back)
            if j < 0:
                j = ranked(base, hashes, task_id, epoch, seed)
                tied = TIE_RUN
        if base.item(j) == NONE_INT:
            break
        allocate(j, cpu, memory, disk, 0.0)
        base[j] = state.rank(table, j)
        if log is not None:
            log.append(j)
        else:
            s0, s1, s2 = free  # type: ignore[misc]
            s0[j], s1[j], s2[j] = table.cpu_free[j], table.memory_free[j], table.disk_free[j]
        out.append(j)
    state.tied = tied
    if log is not None:
        state.seen = len(log)  # its own allocations are already applied
    return out
