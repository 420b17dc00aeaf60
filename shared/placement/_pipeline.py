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

Within a batch, an ``adaptive`` decision of a shape seen before mostly scores only
that shape's *lead*, the ``LEAD_ROWS`` best rows of its last full scoring: the
batch's own allocations only lower scores, so the rows left out still score at
most what the best of them scored then, and when the lead's best rows score above
that they are the best of every row (``_predicted``; the same decision, bit for
bit, as scoring every row).

Modes (``docs/placement.md``): ``adaptive`` ranks by predicted completion time
(``PREDICTED_MODES``); ``cloud_only`` and ``edge_only`` restrict tiers;
``hybrid_static`` scores only the task's declared preferences (tier fit,
preference order, best fit); ``hybrid_dynamic``, ``cloud_only`` and ``edge_only``
use the weighted sum of every term. ``adaptive`` also arms the re-placement
triggers (``_triggers``), which the caller evaluates.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from shared.placement._cache import ShapeCache
from shared.placement._demand import TaskDemand
from shared.placement._explain import TOP_CANDIDATES, Candidate, Decision, Explanation
from shared.placement._filters import DIMENSIONS, FILTERS, Counts
from shared.placement._predict import (
    NodeFacts,
    Standing,
    Timing,
    breakdown,
    fixed,
    lowers,
    rate,
    tame,
    timing,
)
from shared.placement._scoring import (
    MODE_TIERS,
    TERMS,
    Weights,
    fit_term,
    resolve_mode,
    static_terms,
)
from shared.placement._select import lead_rows, tie_seed, top_rows
from shared.placement._table import BoolArray, FloatArray, IntArray, NodeTable
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
    run: FloatArray | None = None,
) -> Shape:
    """Run the static filters and the static half of the ranking for ``demand``
    under an already resolved mode (``facts``: the table's ``NodeFacts`` if the
    caller has them, for the predicted modes; ``run``: the demand's ``fixed`` time
    on them, if it has that)."""
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
            timing(facts, table, effective, mask, run), need, count, 0.0, facts,
        )  # fmt: skip
    static = np.zeros(len(table), dtype=np.float64)
    w = weights.normalised(mode)
    rows = np.flatnonzero(mask)
    terms = static_terms(table, effective, mode, rows)
    for row, name in enumerate(TERMS):
        if name != "fit" and w[name]:
            static[rows] += w[name] * terms[row]
    return Shape(effective, mode, mask, filtered, static, None, need, count, w["fit"])


@dataclass(slots=True)
class Lead:
    """One shape's best rows at one point of a batch (``_predicted``): ``rows`` in
    row order, what scoring them reads that is the shape's own and does not move
    (``run``, ``base_cost``: ``Standing``) and their tie hashes, and ``beyond``, the
    best score of the rows with room left out (``-inf``: none was)."""

    rows: IntArray
    beyond: float
    run: FloatArray
    base_cost: FloatArray
    hashes: npt.NDArray[np.uint32]

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.run.nbytes + self.base_cost.nbytes + self.hashes.nbytes

    def standing(self, table: NodeTable, facts: NodeFacts) -> Standing:
        """``Standing.of`` on the lead's rows."""
        return Standing.take(self.run, self.base_cost, facts, table, self.rows)


#: How many rows a lead keeps: the best ones of a full scoring, rescored first by
#: the next decision of the shape (a few hundred rows cost about as much to score
#: as a few dozen, and settle far more decisions).
LEAD_ROWS = 256
# Byte budget of the leads one batch keeps (about 1,200 shapes of 256 rows).
_LEAD_BYTES = 8 * 1024 * 1024


def _decide(
    table: NodeTable,
    shape: Shape,
    tie: int,
    explain: bool,
    leads: ShapeCache[Lead] | None = None,
    key: Hashable = None,
    run: FloatArray | None = None,
    disk_owed: bool = True,
) -> Decision:
    """The dynamic half: exhaustion, the rank of every remaining candidate, the
    explanation of the best ``TOP_CANDIDATES`` (only the chosen node's id when not
    ``explain``). Works on whole columns: cheaper than gathering the candidates,
    except where a predicted shape's lead settles the decision (``leads``, by the
    shape's ``key``: see ``_predicted``; ``run``: the shape's fixed time when the
    caller just computed it, for its first decision). ``disk_owed=False``: the
    caller knows no node's free disk is below 0, so a task needing no disk is short
    of it nowhere."""
    free = (table.cpu_free, table.memory_free, table.disk_free)
    n0, n1, n2 = shape.need
    mask = shape.mask
    over_cpu = n0 > free[0]
    over_either = over_cpu | (n1 > free[1])
    short = over_either | (n2 > free[2]) if disk_owed or not n2 <= 0 else over_either
    ok = mask & ~short
    exhausted: Counts = {}
    # the rows past the filters less those with room
    lacking = len(mask) - sum(shape.filtered.values()) - int(np.count_nonzero(ok))
    if lacking:
        # ``first_exhausted`` counted from the comparisons at hand: cpu first, then
        # memory where cpu sufficed, disk for the rest
        cpu = int(np.count_nonzero(mask & over_cpu))
        memory = int(np.count_nonzero(mask & over_either)) - cpu
        counts = zip(DIMENSIONS, (cpu, memory, lacking - cpu - memory), strict=True)
        exhausted = {name: c for name, c in counts if c}
    demand, facts, t = shape.demand, shape.facts, shape.timing
    limit = TOP_CANDIDATES if explain else 1
    if t is not None and facts is not None:
        if not t.bounded:
            leads = None
        best, scores, queue, cost = _predicted(
            table, facts, demand, t, ok, tie, limit, leads, key, run
        )
    else:
        fit = fit_term(shape.need, shape.count, free)
        total = shape.static + shape.wfit * fit
        best = top_rows(total, ok, table.hash, tie, limit)
        scores = total[best]
    chosen: str | None = None
    candidates: tuple[Candidate, ...] = ()
    if not explain:
        chosen = table.ids[best[0]] if len(best) and ok[best[0]] else None
    else:
        if t is not None and facts is not None:
            names, values = breakdown(facts, table, demand, best, queue, cost)
        else:
            names = TERMS
            matrix = static_terms(table, demand, shape.mode, best)
            matrix[0] = fit[best]
            values = [tuple(v) for v in matrix.T.tolist()]
        ids = table.ids
        candidates = tuple(
            Candidate(ids[i], s, v, names)
            for i, s, v in zip(best.tolist(), scores.tolist(), values, strict=True)
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


def _predicted(
    table: NodeTable,
    facts: NodeFacts,
    demand: TaskDemand,
    t: Timing,
    ok: BoolArray,
    tie: int,
    limit: int,
    leads: ShapeCache[Lead] | None,
    key: Hashable,
    run: FloatArray | None,
) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    """The best ``limit`` rows of a predicted mode, with their score, queue wait and
    cost: the rows ``top_rows`` picks from every row's score.

    With ``leads`` (a batch, on a bounded shape and a tame table: ``Timing``), the
    shape's lead is rescored first: since it was taken, only allocations of the
    batch with non-negative needs changed the table (``place_batch`` drops the
    leads otherwise), and those only lower scores and room (``lowers``), so every
    row left out still scores at most the lead's recorded best of them. When the
    best rows of the lead score above that (``lead_rows``), they are the best of
    every row; otherwise every row is scored, and the best ``LEAD_ROWS`` of them
    become the shape's lead (and give the best rows, unless that cannot settle it
    either: a tie across its edge)."""
    lead = leads.get(key) if leads is not None else None
    if lead is not None:
        rows = lead.rows
        total, queue, cost = rate(
            demand,
            lead.standing(table, facts),
            table.backlog[rows],
            table.cpu_free[rows],
            table.running[rows],
        )
        top = lead_rows(total, ok[rows], lead.hashes, tie, limit, lead.beyond)
        if top is not None:
            return rows[top], total[top], queue[top], cost[top]
    standing = Standing.of(facts, table, demand, t, run)
    total, queue, cost = rate(demand, standing, table.backlog, table.cpu_free, table.running)
    best = None
    if leads is not None and tame(table):
        lead = _lead(table, standing, total, ok)
        leads.put(key, lead, lead.nbytes)
        rows = lead.rows
        top = lead_rows(total[rows], ok[rows], lead.hashes, tie, limit, lead.beyond)
        best = None if top is None else rows[top]
    if best is None:
        best = top_rows(total, ok, table.hash, tie, limit)
    return best, total[best], queue[best], cost[best]


def _lead(table: NodeTable, standing: Standing, total: FloatArray, ok: BoolArray) -> Lead:
    """The rows with room that score above the ``LEAD_ROWS + 1``-th best of them
    (``beyond``; every row with room, and ``-inf``, when there are no more): at most
    ``LEAD_ROWS`` rows, fewer when scores tie there. One partition, no sort."""
    scored = np.where(ok, total, -math.inf)
    k = len(scored) - LEAD_ROWS - 1
    beyond = float(np.partition(scored, k)[k]) if k >= 0 else -math.inf
    rows = np.flatnonzero(scored > beyond)
    return Lead(rows, beyond, standing.run[rows], standing.base_cost[rows], table.hash[rows])


def _shape(
    table: NodeTable,
    demand: TaskDemand,
    mode: PlacementMode | str,
    weights: Weights,
    cache: ShapeCache[Shape | NodeFacts] | None,
) -> tuple[Hashable, Shape, FloatArray | None]:
    """The shape of ``demand``, its cache key, and, when the shape was prepared now
    in a predicted mode, the fixed time its first decision needs (``Standing``)."""
    resolved = resolve_mode(demand, mode)
    key = (demand.shape, resolved, weights)
    if cache is None:
        return key, prepare(table, demand, resolved, weights), None
    shape = cache.get(key)
    run = None
    if shape is None:
        facts = None
        if resolved in PREDICTED_MODES:
            facts = cache.get(_FACTS)
            if facts is None:
                facts = NodeFacts.of(table)
                cache.put(_FACTS, facts, facts.nbytes)
            run = fixed(facts, table, demand)  # type: ignore[arg-type]
        shape = prepare(table, demand, resolved, weights, facts, run)  # type: ignore[arg-type]
        cache.put(key, shape, shape.nbytes)
    return key, shape, run  # type: ignore[return-value]


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
    _, shape, run = _shape(table, demand, mode, weights, cache)
    return _decide(table, shape, tie_seed(demand.task_id, epoch, seed), explain, run=run)


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
    resources, and its work on the backlog): each decision sees the ones before,
    and is the decision ``place`` gives on the table as it stands then.

    ``epochs`` (default all 0) feeds each task's tie seed. ``cache`` keeps static
    halves across calls; it is only valid while the table's telemetry columns
    stand (``clear()`` it after ``update``); by default a fresh one per call.
    ``explain`` as for ``place``. Leads (``_predicted``) live for one call: between
    calls the caller may release resources, which raises scores.
    """
    if epochs is not None and len(epochs) != len(demands):
        raise ValueError("epochs must have one entry per demand")
    shapes: ShapeCache[Shape | NodeFacts] = cache if cache is not None else ShapeCache()
    leads: ShapeCache[Lead] = ShapeCache(_LEAD_BYTES)
    # a chosen node had room, so the batch's own allocations never owe disk
    disk_owed = bool(np.any(table.disk_free < 0.0))
    # Decisions where every node was filtered out or lacked room, by what decides
    # that: on the same table a task with the same key gets the very same decision
    # (no candidates, the same counts), so it is reused until an allocation.
    blocked: dict[tuple[object, ...], Decision] = {}
    out: list[Decision] = []
    for k, demand in enumerate(demands):
        decision = blocked.get(feasibility_key(demand, mode)) if blocked else None
        if decision is None:
            key, shape, run = _shape(table, demand, mode, weights, shapes)
            tie = tie_seed(demand.task_id, 0 if epochs is None else epochs[k], seed)
            decision = _decide(table, shape, tie, explain, leads, key, run, disk_owed)
        if decision.node_id is None:
            if decision.explanation.feasible == 0:  # not merely unrankable
                blocked[feasibility_key(demand, mode)] = decision
        else:
            work = demand.work
            row = table.index[decision.node_id]
            table.allocate(row, demand.cpu, demand.memory_mb, demand.disk_mb, work_s=work)
            blocked.clear()
            # (a node without room is chosen only when scores are not numbers)
            disk_owed = disk_owed or table.disk_free.item(row) < 0.0
            if not lowers(demand.cpu, demand.memory_mb, demand.disk_mb, work):
                leads.clear()
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
