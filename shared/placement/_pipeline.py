"""The placement pipeline, in one implementation: feasibility filters -> ranking of
every feasible node at once -> selection with ties spread.

A decision is split in two halves. The *static* half (``Shape``, from
``prepare``) depends only on the task's shape and the nodes' telemetry: the
filters before exhaustion, and either the weighted sum of every score term but
``fit`` (``_scoring``) or the parts of the predicted finish that do not move with
placements (``_predict.timing``). The *dynamic* half depends on free resources
and backlog, which move with every placement: exhaustion, then ``fit`` or the
queue wait, utilisation and the deadline rule (``_predict.score``). It is
evaluated with numpy over the shape's candidate rows for every decision, so a
decision never reads stale state.

``place_batch`` places tasks in order, allocating each chosen node in the table;
static halves are kept in a ``ShapeCache`` (least recently used, bounded in bytes:
one per call unless the caller passes its own). A task no node can take (every node
filtered out or short of room) lends its decision to the tasks after it that the
filters and exhaustion read alike, until the next allocation: a backlog of blocked
work costs one decision per kind of task, not per task. ``place`` is the single-task form
of the same code and leaves the table alone.

Modes (``docs/placement.md``): ``adaptive`` ranks by predicted completion time
(``PREDICTED_MODES``); ``cloud_only`` and ``edge_only`` restrict tiers;
``hybrid_static`` scores only the task's declared preferences (tier fit,
preference order, best fit); ``hybrid_dynamic``, ``cloud_only`` and ``edge_only``
use the weighted sum of every term. ``adaptive`` also arms the re-placement
triggers (``_triggers``), which the caller evaluates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from shared.placement._cache import ShapeCache
from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import DIMENSIONS, FILTERS, Counts
from shared.placement._predict import NodeFacts, Timing, breakdown, score, timing
from shared.placement._scoring import (
    MODE_TIERS,
    TERMS,
    Weights,
    fit_term,
    resolve_mode,
    static_terms,
)
from shared.placement._select import tie_seed, top_rows
from shared.placement._table import BoolArray, FloatArray, NodeTable
from shared.vocab import PlacementMode

__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_WEIGHTS",
    "PREDICTED_MODES",
    "Shape",
    "feasibility_key",
    "place",
    "place_batch",
    "prepare",
]

DEFAULT_MODE = PlacementMode.HYBRID_DYNAMIC
DEFAULT_WEIGHTS = Weights()
#: Modes ranked by predicted completion time rather than the weighted sum.
PREDICTED_MODES: frozenset[PlacementMode] = frozenset({PlacementMode.ADAPTIVE})
# ``Shape.static`` of the predicted modes: one read-only row of zeros shared by all.
_ZEROS = np.zeros(1 << 16)
_ZEROS.flags.writeable = False
# The cache key of the table's ``NodeFacts`` (beside the shapes, same validity).
_FACTS = ("node facts",)


@dataclass(slots=True)
class Shape:
    """The static half of placing one task shape on one table.

    ``mask``: nodes past every static filter; ``filtered``: drops by reason;
    ``static``: per node, the weighted sum of the non-``fit`` terms (0 off the
    mask, and everywhere in a predicted mode); ``timing``: the prediction's static
    half per node and ``facts`` the node facts it was computed from (predicted
    modes only); ``need``/``count``/``wfit``: what the dynamic half needs.
    """

    demand: TaskDemand
    mode: PlacementMode
    mask: BoolArray
    filtered: Counts
    static: FloatArray
    timing: Timing | None
    need: tuple[float, float, float]
    count: float
    wfit: float
    facts: NodeFacts | None = None

    @property
    def nbytes(self) -> int:
        """Memory it holds on its own (the shared all-zero ``static`` excluded)."""
        if self.timing is not None:
            return self.mask.nbytes + self.timing.nbytes
        return self.mask.nbytes + self.static.nbytes


def prepare(
    table: NodeTable,
    demand: TaskDemand,
    mode: PlacementMode,
    weights: Weights,
    facts: NodeFacts | None = None,
) -> Shape:
    """Run the static filters and the static half of the ranking for ``demand``
    under an already resolved mode (``facts``: the table's ``NodeFacts`` if the
    caller has them, for the predicted modes)."""
    allowed = MODE_TIERS[mode]
    effective = demand if demand.tiers <= allowed else replace(demand, tiers=demand.tiers & allowed)
    mask = np.ones(len(table), dtype=np.bool_)
    filtered: Counts = {}
    for stage in FILTERS:
        mask, dropped = stage(table, effective, mask)
        filtered.update(dropped)
    need = (demand.cpu, demand.memory_mb, demand.disk_mb)
    count = float(max(1, sum(1 for n in need if n > 0)))
    if mode in PREDICTED_MODES:
        static = _ZEROS[: len(table)] if len(table) <= len(_ZEROS) else np.zeros(len(table))
        facts = facts if facts is not None else NodeFacts.of(table)
        return Shape(
            effective, mode, mask, filtered, static,
            timing(facts, table, effective, mask), need, count, 0.0, facts,
        )  # fmt: skip
    static = np.zeros(len(table), dtype=np.float64)
    w = weights.normalised(mode)
    rows = np.flatnonzero(mask)
    terms = static_terms(table, effective, mode, rows)
    for row, name in enumerate(TERMS):
        if name != "fit" and w[name]:
            static[rows] += w[name] * terms[row]
    return Shape(effective, mode, mask, filtered, static, None, need, count, w["fit"])


def _decide(table: NodeTable, shape: Shape, tie: int, explain: bool) -> Decision:
    """The dynamic half: exhaustion, the rank of every remaining candidate, the
    explanation of the best ``TOP_CANDIDATES`` (only the chosen node's id when not
    ``explain``). Works on whole columns: cheaper than gathering the candidates."""
    free = (table.cpu_free, table.memory_free, table.disk_free)
    n0, n1, n2 = shape.need
    mask = shape.mask
    over_cpu, over_memory = n0 > free[0], n1 > free[1]
    short = over_cpu | over_memory | (n2 > free[2])
    ok = mask & ~short
    exhausted: Counts = {}
    lacking = int(np.count_nonzero(mask & short))
    if lacking:
        # ``first_exhausted`` counted from the comparisons at hand: cpu first, then
        # memory where cpu sufficed, disk for the rest
        by_cpu = mask & over_cpu
        cpu = int(np.count_nonzero(by_cpu))
        memory = int(np.count_nonzero(mask & over_memory & ~by_cpu))
        counts = zip(DIMENSIONS, (cpu, memory, lacking - cpu - memory), strict=True)
        exhausted = {name: c for name, c in counts if c}
    demand, facts = shape.demand, shape.facts
    if shape.timing is not None and facts is not None:
        total, queue, cost = score(facts, table, demand, shape.timing)
    else:
        fit = fit_term(shape.need, shape.count, free)
        total = shape.static + shape.wfit * fit
    chosen: str | None = None
    candidates: tuple[Candidate, ...] = ()
    if not explain:
        top = top_rows(total, ok, table.hash, tie, 1)
        chosen = table.ids[top[0]] if len(top) and ok[top[0]] else None
    else:
        best = top_rows(total, ok, table.hash, tie, TOP_CANDIDATES)
        if shape.timing is not None and facts is not None:
            names, values = breakdown(facts, table, demand, best, queue[best], cost[best])
        else:
            names = TERMS
            matrix = static_terms(table, demand, shape.mode, best)
            matrix[0] = fit[best]
            values = [tuple(v) for v in matrix.T.tolist()]
        ids = table.ids
        candidates = tuple(
            Candidate(ids[i], s, v, names)
            for i, s, v in zip(best.tolist(), total[best].tolist(), values, strict=True)
        )
        chosen = candidates[0].node_id if candidates else None
    explanation = Explanation(
        mode=shape.mode,
        evaluated=len(table),
        filtered=shape.filtered,
        exhausted=exhausted,
        candidates=candidates,
        chosen=chosen,
    )
    return Decision(chosen, explanation)


def _shape(
    table: NodeTable,
    demand: TaskDemand,
    mode: PlacementMode | str,
    weights: Weights,
    cache: ShapeCache[Shape | NodeFacts] | None,
) -> Shape:
    resolved = resolve_mode(demand, mode)
    if cache is None:
        return prepare(table, demand, resolved, weights)
    key = (demand.shape, resolved, weights)
    shape = cache.get(key)
    if shape is None:
        facts = None
        if resolved in PREDICTED_MODES:
            facts = cache.get(_FACTS)
            if facts is None:
                facts = NodeFacts.of(table)
                cache.put(_FACTS, facts, facts.nbytes)
        shape = prepare(table, demand, resolved, weights, facts)  # type: ignore[arg-type]
        cache.put(key, shape, shape.nbytes)
    return shape  # type: ignore[return-value]


def place(
    table: NodeTable,
    demand: TaskDemand,
    *,
    mode: PlacementMode | str = DEFAULT_MODE,
    weights: Weights = DEFAULT_WEIGHTS,
    seed: int = 0,
    epoch: int = 0,
    cache: ShapeCache[Shape | NodeFacts] | None = None,
    explain: bool = True,
) -> Decision:
    """Place one task. ``mode`` is the controller's default; the task's own
    ``placement.mode`` wins. Ties are broken by ``tie_seed(task_id, epoch, seed)``.
    Does not touch the table: the caller ``allocate`` s on the chosen node.
    ``explain=False`` leaves the explanation's candidates out (its counts and the
    chosen node stay): for callers that never read them, such as the simulator."""
    shape = _shape(table, demand, mode, weights, cache)
    return _decide(table, shape, tie_seed(demand.task_id, epoch, seed), explain)


def place_batch(
    table: NodeTable,
    demands: Sequence[TaskDemand],
    *,
    mode: PlacementMode | str = DEFAULT_MODE,
    weights: Weights = DEFAULT_WEIGHTS,
    seed: int = 0,
    epochs: Sequence[int] | None = None,
    cache: ShapeCache[Shape | NodeFacts] | None = None,
    explain: bool = True,
) -> list[Decision]:
    """Place ``demands`` in order, allocating each chosen node in ``table`` (its
    resources, and its work on the backlog): each decision sees the ones before.

    ``epochs`` (default all 0) feeds each task's tie seed. ``cache`` keeps static
    halves across calls; it is only valid while the table's telemetry columns
    stand (``clear()`` it after ``update``); by default a fresh one per call.
    ``explain`` as for ``place``.
    """
    if epochs is not None and len(epochs) != len(demands):
        raise ValueError("epochs must have one entry per demand")
    shapes: ShapeCache[Shape | NodeFacts] = cache if cache is not None else ShapeCache()
    # Decisions where every node was filtered out or lacked room, by what decides
    # that: on the same table a task with the same key gets the very same decision
    # (no candidates, the same counts), so it is reused until an allocation.
    blocked: dict[tuple[object, ...], Decision] = {}
    out: list[Decision] = []
    for k, demand in enumerate(demands):
        key = feasibility_key(demand, mode)
        decision = blocked.get(key)
        if decision is None:
            decision = place(
                table,
                demand,
                mode=mode,
                weights=weights,
                seed=seed,
                epoch=0 if epochs is None else epochs[k],
                cache=shapes,
                explain=explain,
            )
        if decision.node_id is None:
            if decision.explanation.feasible == 0:  # not merely unrankable
                blocked[key] = decision
        else:
            table.allocate(
                decision.node_id, demand.cpu, demand.memory_mb, demand.disk_mb, work_s=demand.work
            )
            blocked.clear()
        out.append(decision)
    return out


def feasibility_key(demand: TaskDemand, mode: PlacementMode | str) -> tuple[object, ...]:
    """Everything a decision that finds no node reads of the task: the resolved mode
    (its explanation names it; it bounds the tiers), what the filters read and the
    resources exhaustion compares (never the task id, work or deadline: those only
    rank candidates). Tasks with equal keys are placeable on the same nodes of a
    table, or on none (the controller's backlog parks them together)."""
    resolved = resolve_mode(demand, mode)
    return (
        resolved,
        demand.tiers & MODE_TIERS[resolved],
        demand.level,
        demand.max_latency_ms,
        demand.labels,
        demand.exclude,
        demand.cpu,
        demand.memory_mb,
        demand.disk_mb,
    )
