"""Placing many tasks at once, with exactly the answers of ``place`` one by one.

``place_batch(table, demands)`` equals, decision for decision (node, candidates,
scores, counts), a loop of ``place`` followed by ``table.allocate`` on the chosen
node. It is faster because almost nothing changes between two decisions:

- the static half (filters, every term but ``fit``) depends only on the task's
  shape, so it is prepared once per distinct shape (``TaskDemand.shape`` and the
  resolved mode), not once per task;
- an allocation changes the free resources of one node, so each shape's
  per-node fit, total and quantised score are recomputed for the changed rows
  only (catching up lazily from a log of allocated rows), with the same
  floating-point operations in the same order as the vectorised path
  (IEEE-754 doubles in Python and numpy give the same bits);
- feasible rows are kept sorted by quantised score, so the best candidates are
  a prefix of that list; only the rows tied with the last candidate need the
  per-task tie key (``tie_seed``) to be ranked.

Pure: the only state is the caller's ``table``, which is allocated in place.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from collections.abc import Sequence

from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import DIMENSIONS, first_exhausted
from shared.placement._pipeline import DEFAULT_MODE, DEFAULT_WEIGHTS, Shape, prepare
from shared.placement._scoring import TINY, Weights, fit_term, resolve_mode
from shared.placement._select import SCALE, quantise, tie_seed
from shared.placement._table import NodeTable
from shared.vocab import PlacementMode

__all__ = ["place_batch"]

_LOW = 0xFFFFFFFF
_SHIFT = 1 << 32


class _ShapeState:
    """Per-row fit, total, quantised score and exhaustion of one shape, kept
    current with the table's free resources."""

    def __init__(self, table: NodeTable, shape: Shape, seen: int) -> None:
        self.shape = shape
        self.seen = seen
        free = (table.cpu_free, table.memory_free, table.disk_free)
        dims = first_exhausted(shape.need, free)
        fit = fit_term(shape.need, shape.count, free)
        total = shape.static + shape.wfit * fit
        q = quantise(total)
        self.mask: list[bool] = shape.mask.tolist()
        self.dims: list[int] = dims.tolist()
        self.fit: list[float] = fit.tolist()
        self.total: list[float] = total.tolist()
        self.static: list[float] = shape.static.tolist()
        self.terms: list[list[float]] = shape.terms.T.tolist()
        self.counts = [0] * len(DIMENSIONS)
        order: list[tuple[float, int]] = []
        for row, (ok, dim, qv) in enumerate(zip(self.mask, self.dims, q.tolist(), strict=True)):
            if not ok:
                continue
            if dim >= 0:
                self.counts[dim] += 1
            else:
                order.append((-qv, row))
        order.sort()
        self.order = order
        self.q: list[float] = q.tolist()

    def refresh(self, free: tuple[list[float], list[float], list[float]], rows: set[int]) -> None:
        """Recompute ``rows`` from the free columns (the scalar form of
        ``first_exhausted``, ``fit_term`` and ``quantise``, operation for operation)."""
        n0, n1, n2 = self.shape.need
        count, wfit = self.shape.count, self.shape.wfit
        free0, free1, free2 = free
        for row in rows:
            if not self.mask[row]:
                continue
            old_dim = self.dims[row]
            if old_dim >= 0:
                self.counts[old_dim] -= 1
            else:
                del self.order[bisect_right(self.order, (-self.q[row], row)) - 1]
            f0, f1, f2 = free0[row], free1[row], free2[row]
            dim = 0 if n0 > f0 else 1 if n1 > f1 else 2 if n2 > f2 else -1
            fit = (n0 / max(f0, TINY) + n1 / max(f1, TINY) + n2 / max(f2, TINY)) / count
            total = self.static[row] + wfit * fit
            qv = float(round(total * SCALE)) if math.isfinite(total) else total * SCALE
            self.dims[row], self.fit[row], self.total[row], self.q[row] = dim, fit, total, qv
            if dim >= 0:
                self.counts[dim] += 1
            else:
                insort(self.order, (-qv, row))

    def decide(self, table: NodeTable, hashes: list[int], tie: int) -> Decision:
        order = self.order
        group = order
        if len(order) > TOP_CANDIDATES:
            bound = order[TOP_CANDIDATES - 1][0]
            group = order[: bisect_right(order, (bound, math.inf))]
        ranked = sorted(
            [(-(int(-nq) * _SHIFT + (_LOW - (hashes[row] ^ tie))), row) for nq, row in group]
        )[:TOP_CANDIDATES]
        ids = table.ids
        candidates = tuple(
            Candidate(ids[row], self.total[row], (self.fit[row], *self.terms[row][1:]))
            for _, row in ranked
        )
        explanation = Explanation(
            mode=self.shape.mode,
            evaluated=len(table),
            filtered=dict(self.shape.filtered),
            exhausted={n: c for n, c in zip(DIMENSIONS, self.counts, strict=True) if c},
            candidates=candidates,
            chosen=candidates[0].node_id if candidates else None,
        )
        return Decision(explanation.chosen, explanation)


def place_batch(
    table: NodeTable,
    demands: Sequence[TaskDemand],
    *,
    mode: PlacementMode | str = DEFAULT_MODE,
    weights: Weights = DEFAULT_WEIGHTS,
    seed: int = 0,
    epochs: Sequence[int] | None = None,
) -> list[Decision]:
    """Place ``demands`` in order, allocating each chosen node in ``table``.

    Same decisions as ``place(table, d, mode=mode, weights=weights, seed=seed,
    epoch=e)`` then ``table.allocate(chosen, d.cpu, d.memory_mb, d.disk_mb)`` for
    each demand in turn. ``epochs`` (default all 0) feeds each task's tie seed.
    """
    if epochs is not None and len(epochs) != len(demands):
        raise ValueError("epochs must have one entry per demand")
    log: list[int] = []
    # The shape includes the task's own mode, so it fixes the resolved mode too.
    states: dict[tuple[object, ...], _ShapeState] = {}
    out: list[Decision] = []
    hashes: list[int] = table.hash.tolist()
    # Python mirrors of the free columns, updated with the same subtraction as
    # ``NodeTable.allocate`` (which keeps the table itself current).
    free = (table.cpu_free.tolist(), table.memory_free.tolist(), table.disk_free.tolist())
    index = table.index
    for k, demand in enumerate(demands):
        state = states.get(demand.shape)
        if state is None:
            shape = prepare(table, demand, resolve_mode(demand, mode), weights)
            state = states[demand.shape] = _ShapeState(table, shape, len(log))
        elif state.seen < len(log):
            state.refresh(free, set(log[state.seen :]))
            state.seen = len(log)
        epoch = 0 if epochs is None else epochs[k]
        decision = state.decide(table, hashes, tie_seed(demand.task_id, epoch, seed))
        out.append(decision)
        if decision.node_id is not None:
            row = index[decision.node_id]
            table.allocate(row, demand.cpu, demand.memory_mb, demand.disk_mb)
            free[0][row] -= demand.cpu
            free[1][row] -= demand.memory_mb
            free[2][row] -= demand.disk_mb
            log.append(row)
    return out
