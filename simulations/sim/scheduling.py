"""The controller's placement queues: tasks wait per (site, shape) and are placed in batches.

One ``shared.placement.NodeTable`` per site holds the candidates of the site's
tasks (its edge servers and computing devices, its region's regional nodes, the
cloud). Submissions reaching the controller are placed every
``placement_interval_s`` (0: one decision per arrival, exact timing, for small
runs). Work waits in per-(site, shape) FIFO queues; a queue that found no room
stays untouched until something is freed at its site or telemetry changes the
table; work waiting longer than ``max_queue_s`` fails. The batch paths
(``simulations.sim.placer``: ``place_many`` for the weighted-sum modes,
``place_predicted`` for the ``adaptive`` mode) run the pipeline's own stages and
choose exactly what ``place`` + ``allocate`` choose; ``placer="shared"`` and traced
runs use ``shared.placement.place_batch`` itself (with explanations).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from shared.placement import (
    DEFAULT_WEIGHTS,
    PREDICTED_MODES,
    Decision,
    NodeTable,
    TaskDemand,
    place,
    place_batch,
    prepare,
)
from shared.placement import ShapeCache as SharedShapes
from shared.placement._predict import NodeFacts
from shared.vocab import Level, PlacementMode
from simulations.sim.inputs import PlacementInputs
from simulations.sim.loop import Loop
from simulations.sim.metrics import Counters
from simulations.sim.placer import ShapeCache, ShapeState, place_many
from simulations.sim.predicted import PredictedState, place_predicted
from simulations.sim.records import Attempt, Task, TaskState
from simulations.sim.rows import Rows
from simulations.sim.scenario import SimScenario, TaskType
from simulations.sim.topology import Topology

__all__ = ["Scheduler"]

#: Most tasks handed to the placer at once (a queue is drained in such batches).
_BATCH = 256
#: Outside a trace, one batch in this many is placed with explanations: their
#: predicted finish is what the prediction error is learned from.
EXPLAIN_EVERY = 10
#: A placement queue: (site, task type, level, excluded nodes).
_QueueKey = tuple[int, int, Level, frozenset[str]]
_OPEN = TaskState.OPEN


class Scheduler:
    """Placement queues and per-site tables (see the module docstring).

    ``place(task, g, now, predicted)`` acts on each decision (resources are already
    taken; ``predicted`` the decision's predicted finish when it was explained);
    ``level_of(task)`` gives a first placement's level; ``done(task, state)``
    ends a task no node took in time."""

    def __init__(
        self,
        sc: SimScenario,
        mode: PlacementMode,
        topo: Topology,
        counters: Counters,
        loop: Loop,
        inputs: PlacementInputs,
        *,
        seed: int,
        placer: str,
        trace: int = 0,
    ) -> None:
        if placer not in ("cached", "shared"):
            raise ValueError("placer must be 'cached' (sim.placer) or 'shared' (place_batch)")
        self.inputs = inputs
        self.types: tuple[TaskType, ...] = sc.workload.types
        self.ctl = sc.controller
        self.horizon = sc.duration_s
        self.mode = mode
        self.topo = topo
        self.counters = counters
        self.loop = loop
        self.seed = seed
        #: the one implementation with explanations (``place_batch``) for the predicted
        #: modes and for traced runs; the cached fast path for the weighted-sum modes
        self.explained = placer == "shared" or mode in PREDICTED_MODES or trace > 0
        #: the adaptive mode's own batch path (``place_predicted``), untraced runs only
        self.predicted = placer == "cached" and mode in PREDICTED_MODES and trace <= 0
        self.pstates: dict[_QueueKey, PredictedState] = {}
        #: per queue, its shape's ``ShapeState`` (from ``cache``) while its version stands
        self.sstates: dict[_QueueKey, ShapeState] = {}
        self.facts: list[tuple[int, NodeFacts] | None] = [None] * topo.sites
        self.cache = ShapeCache()
        self.trace_left = trace
        self.trace_rate = 0.0
        self.trace_rng = np.random.default_rng([seed, 55])
        self.traced: list[dict[str, Any]] = []
        self.place: Callable[[Task, int, float, float | None], Attempt] = self._unwired
        self.level_of: Callable[[Task], Level] = lambda task: task.level
        self.done: Callable[[Task, TaskState], None] = lambda task, state: None
        self.pump: Callable[[float], None] = lambda now: None
        self.progress: Callable[[float, float], None] | None = None
        self.exact = self.ctl.placement_interval_s <= 0
        self.dt = self.ctl.placement_interval_s
        self.pending: list[Task] = []
        self.buckets: dict[int, list[Task]] = {}
        self.queues: dict[_QueueKey, deque[Task]] = {}
        self.active: dict[_QueueKey, None] = {}  # non-empty queues, in insertion order
        self.stuck: dict[_QueueKey, tuple[int, int, int, int]] = {}
        self._kicked = False
        self._k_done = -1
        self.tables: list[NodeTable] = []
        self.gidx: list[np.ndarray] = []
        for s in range(topo.sites):
            table = NodeTable(inputs.views(s))
            self.tables.append(table)
            self.gidx.append(np.array([topo.index[i] for i in table.ids], dtype=np.intp))
        self.glist: list[list[int]] = [gidx.tolist() for gidx in self.gidx]
        #: per site, its table's moving columns as lists (every write goes through it)
        self.rows: list[Rows] = [Rows(table) for table in self.tables]
        #: per site, each node's row, and the rows of nodes other sites share (read
        #: at every sync; the site's own nodes are read when ``topo.touched`` names them)
        self.row_of: list[dict[int, int]] = [{g: r for r, g in enumerate(gl)} for gl in self.glist]
        self.shared_rows: list[list[tuple[int, int]]] = [
            [(r, g) for r, g in enumerate(gl) if topo.local_site[g] != s]
            for s, gl in enumerate(self.glist)
        ]
        #: per site, rows whose running count differs while their resources do not:
        #: brought up to date at the next sync that moves any row
        self.silent: list[dict[int, int]] = [{} for _ in range(topo.sites)]
        self.version = [0] * topo.sites
        self.logs: list[list[int]] = [[] for _ in range(topo.sites)]  # rows moved, per version
        self.shapes: list[SharedShapes[Any]] = [SharedShapes() for _ in range(topo.sites)]
        self._batches = 0

    @staticmethod
    def _unwired(task: Task, g: int, now: float, run_s: float | None) -> Attempt:
        raise RuntimeError("Scheduler.place is not wired")

    def trace(self, expected: int) -> None:
        """Sample about ``trace_left`` of ``expected`` placement decisions."""
        self.trace_rate = min(1.0, self.trace_left / max(1, expected))

    def refresh(
        self, link: np.ndarray, load: np.ndarray, success: np.ndarray, prate: np.ndarray
    ) -> None:
        """Telemetry changed the measured columns: a new version of every table."""
        self.inputs.tick()
        for s, (table, gidx) in enumerate(zip(self.tables, self.gidx, strict=True)):
            table.link[:] = link[gidx]
            table.load[:] = np.round(load[gidx], 2)
            table.success[:] = np.round(success[gidx], 3)
            table.partition_rate[:] = np.round(prate[gidx], 1)
            self.inputs.refresh(s, table, gidx)
            self.version[s] += 1
            self.logs[s] = []
            self.shapes[s].clear()

    # ------------------------------------------------------------- inbox
    def receive(self, task: Task, t_c: float) -> None:
        """A submission reaches the controller at ``t_c``: into the next tick's bucket."""
        if self.exact:
            self.loop.at(t_c, self._receive_now, task)
            return
        k = math.ceil(t_c / self.dt - 1e-9)
        if k <= self._k_done:
            k = self._k_done + 1
        bucket = self.buckets.get(k)
        if bucket is None:
            self.buckets[k] = [task]
        else:
            bucket.append(task)

    def enqueue(self, task: Task, now: float) -> None:
        """Queue ``task`` for the next placement round (a re-placement at ``now``)."""
        task.entered = now
        self.pending.append(task)

    def requeue(self, task: Task, now: float) -> None:
        """A retry reaches the controller at ``now``: placed at once in exact mode."""
        task.entered = now
        if self.exact:
            self._receive_now(task)
        else:
            self.pending.append(task)

    def _receive_now(self, task: Task) -> None:
        self.pending.append(task)
        self.place_pending(self.loop.now)

    def kick(self) -> None:
        """Exact mode (no tick): retry waiting work once something changed."""
        if self.exact and not self._kicked and (self.pending or self.active):
            self._kicked = True
            self.loop.at(self.loop.now, self._kicked_place)

    def _kicked_place(self, _: Any) -> None:
        self._kicked = False
        self.place_pending(self.loop.now)

    def tick(self, k: int) -> None:
        now = self.loop.now
        dt = self.ctl.placement_interval_s
        self.pump(now)
        arrived = self.buckets.pop(k, None)
        self._k_done = k
        if arrived:
            self.pending.extend(arrived)
        if self.pending or self.active:
            self.place_pending(now)
        if (k + 1) * dt <= self.horizon + 1e-9:
            self.loop.at((k + 1) * dt, self.tick, k + 1)
        if self.progress is not None and k % 1000 == 0:
            self.progress(now, self.horizon)

    # --------------------------------------------------------- placement
    def place_pending(self, now: float) -> None:
        """Move new work into its queue, then place from every queue that can
        make progress (see the module docstring)."""
        inbox, self.pending = self.pending, []
        queues, active = self.queues, self.active
        level_of = self.level_of
        for task in inbox:
            if task.state is not _OPEN:
                continue
            if task.epoch == 0:  # (``level_of`` gives a one-level task its level)
                task.level = task.lo if task.lo is task.hi else level_of(task)
            key = (task.site, task.tt, task.level, task.exclude)
            q = queues.get(key)
            if q is None:  # an emptied queue is kept for its key's next task
                q = queues[key] = deque()
            q.append(task)
            active[key] = None
        max_q = self.ctl.max_queue_s
        synced: set[int] = set()
        topo, stuck, version = self.topo, self.stuck, self.version
        freed, S, R = topo.freed, topo.sites, topo.regions
        place_queue, sync = self._place_queue, self._sync
        for key in list(active):
            q = queues[key]
            site = key[0]
            # a queue that found no room waits for a release at its site, its region or
            # the cloud, or a new table version (the mark is read only for such a queue,
            # and after a failed pass: placing frees nothing and bumps no version)
            if key not in stuck or stuck[key] != (
                freed[site],
                freed[S + site % R],
                freed[-1],
                version[site],
            ):
                if site not in synced:
                    sync(site)
                    synced.add(site)
                if not place_queue(key, q, now):
                    stuck[key] = (freed[site], freed[S + site % R], freed[-1], version[site])
            while q and (q[0].state is not _OPEN or now - q[0].entered > max_q):
                task = q.popleft()
                if task.state is _OPEN:
                    self.counters.unplaceable += 1
                    self.done(task, TaskState.FAILED)
            if not q:
                del active[key]

    def _sync(self, site: int) -> None:
        """Bring the site's table up to the global free resources (releases, and
        other sites' use of shared rows), logging the rows that moved: those whose
        free CPU or memory (or backlog, which the prediction reads) differ. The
        candidates are the site's own nodes that ``topo.touched`` names and the
        shared rows: every other row equals its node already. When a row moves,
        every row's running count is brought up to date too."""
        topo, mirror = self.topo, self.rows[site]
        touched = topo.touched[site]
        rows: list[tuple[int, int]] = self.shared_rows[site]
        if touched:
            row_of = self.row_of[site]
            rows = rows + [(row_of[g], g) for g in touched]
            touched.clear()
        cpu, mem, running, backlog = topo.cpu_free, topo.mem_free, topo.running, topo.backlog
        # the table's values read from its ``Rows`` lists, written to both
        m_cpu, m_mem, m_run, m_back = mirror.cpu, mirror.memory, mirror.running, mirror.backlog
        explained, silent = self.explained, self.silent[site]
        log = self.logs[site]
        moved = False
        for r, g in rows:
            if m_cpu[r] != cpu[g] or m_mem[r] != mem[g] or (explained and m_back[r] != backlog[g]):
                mirror.set(r, cpu[g], mem[g], running[g], backlog[g] if explained else None)
                silent.pop(r, None)
                log.append(r)
                moved = True
            elif m_run[r] != running[g]:
                silent[r] = g
        if moved and silent:
            for r, g in silent.items():
                mirror.set_running(r, running[g])
            silent.clear()

    def can_place(self, task: Task, exclude: frozenset[str], now: float) -> bool:
        """Whether a node of ``task``'s site outside ``exclude`` would take it now
        (``shared.placement.place`` on the site's table as it stands): the controller
        places a task it moves at once, and leaves it where it runs when no node
        would (``cloud/reconcile.py`` ``_move``)."""
        self._sync(task.site)
        demand = replace(self.inputs.template(task), exclude=exclude)
        if self.mode in PREDICTED_MODES:
            demand = self.inputs.demand(task, demand, now)
        decision = place(
            self.tables[task.site], demand, mode=self.mode, seed=self.seed, explain=False
        )
        return decision.node_id is not None

    def _cached(self, key: _QueueKey, demand: TaskDemand) -> ShapeState:
        """The queue's ``ShapeState`` on its site's table version, caught up (the
        queue key names its demand, so the shape is looked up once per version)."""
        site = key[0]
        version, log = self.version[site], self.logs[site]
        state = self.sstates.get(key)
        if state is not None and state.version == version and state.log is log:
            state.catch_up(self.tables[site])
            return state
        state = self.sstates[key] = self.cache.get(
            site, version, self.tables[site], demand, self.mode, log, self.rows[site]
        )
        return state

    def _choose(
        self, site: int, batch: list[Task], demand: TaskDemand, now: float
    ) -> tuple[list[tuple[int, Decision | None, float | None, float]], bool]:
        """``(row, decision, predicted finish, work)`` for the placed prefix of
        ``batch`` (one task shape) on the explained path (``place_batch``, with
        explanations; the predicted path is ``_choose_predicted``), the predicted
        finish from an explained batch; and whether the prediction error is learned
        from this batch (``EXPLAIN_EVERY``)."""
        table = self.tables[site]
        epochs = [t.epoch + 1 for t in batch]
        self._batches += 1
        learn = self.trace_left > 0 or self._batches % EXPLAIN_EVERY == 0
        explain = learn or self._levels(batch)
        demands = [self.inputs.demand(t, demand, now) for t in batch]
        decisions = place_batch(
            table,
            demands,
            mode=self.mode,
            seed=self.seed,
            epochs=epochs,
            cache=self.shapes[site],
            explain=explain,
        )
        out: list[tuple[int, Decision | None, float | None, float]] = []
        reread = self.rows[site].reread  # ``place_batch`` allocated in the table itself
        for d, dec in zip(demands, decisions, strict=True):
            if dec.node_id is None:  # one shape: after the first refusal, all are refused
                break
            predicted = None
            if dec.explanation.candidates:
                predicted = dec.explanation.candidates[0].terms.get("finish_s")
            row = table.index[dec.node_id]
            reread(row)
            out.append((row, dec, predicted, d.work))
        return out, learn

    def _choose_predicted(
        self, key: _QueueKey, batch: list[Task], demand: TaskDemand, now: float
    ) -> tuple[list[tuple[int, float | None]], float, bool]:
        """The ``adaptive`` mode's batch path, untraced: ``(row, predicted finish)`` of
        the placed prefix of ``batch`` (``place_predicted``; ``key`` its queue), the
        shape's work, and whether the prediction error is learned from this batch."""
        self._batches += 1
        learn = self._batches % EXPLAIN_EVERY == 0  # untraced runs only
        pstate = self._predicted_state(key, batch[0], demand)
        placed = place_predicted(
            self.tables[key[0]],
            pstate,
            [t.id for t in batch],
            [t.epoch + 1 for t in batch],
            self.inputs.deadlines(batch, now),
            seed=self.seed,
            explain=learn or self._levels(batch),
        )
        return placed, pstate.demand.work, learn

    def _levels(self, batch: list[Task]) -> bool:
        """Whether ``batch``'s level is chosen on its node from the placement's
        predicted finish: an adaptive task in a mode that predicts one (the controller
        passes every decision's finish to ``placement_level``, cloud/scheduling.py), so
        it must not depend on whether the batch is one the error is learned from."""
        task = batch[0]
        return task.lo is not task.hi and self.mode in PREDICTED_MODES

    def _predicted_state(self, key: _QueueKey, task: Task, demand: TaskDemand) -> PredictedState:
        """The adaptive path's state of the shape of ``task``'s queue ``key`` on the
        site's table version (built again after a telemetry refresh), caught up by the
        caller."""
        site = key[0]
        version, log = self.version[site], self.logs[site]
        state = self.pstates.get(key)
        if state is not None and state.version == version and state.log is log:
            return state
        table = self.tables[site]
        known = self.facts[site]
        if known is None or known[0] != version:
            known = self.facts[site] = (version, NodeFacts.of(table))
        shape = prepare(
            table, self.inputs.predicted(task, demand), self.mode, DEFAULT_WEIGHTS, known[1]
        )
        state = self.pstates[key] = PredictedState(
            table, shape, known[1], version, log, self.rows[site]
        )
        return state

    def _sample(self, task: Task, decision: Decision, now: float) -> None:
        """Keep this decision in the trace (with the predicted-finish breakdown)."""
        self.trace_left -= 1
        self.traced.append(
            {
                "t": round(now, 6),
                "task": task.id,
                "type": self.types[task.tt].name,
                "site": task.site,
                "epoch": task.epoch + 1,
                "level": task.level.value,
                **decision.explanation.to_dict(),
            }
        )

    def _place_queue(self, key: _QueueKey, q: deque[Task], now: float) -> bool:
        """Place from the head of one queue (one task shape) until it is empty
        (``True``) or no node has room (``False``; the rest stays queued in order)."""
        site = key[0]
        glist, topo, place, table = self.glist[site], self.topo, self.place, self.tables[site]
        take = topo.take
        size = 8  # grows while everything fits: a full site costs little per tick
        popleft = q.popleft
        while q:
            batch: list[Task] = []
            n = 0
            while q and n < size:
                task = popleft()
                if task.state is _OPEN:
                    batch.append(task)
                    n += 1
            if not batch:
                return True
            demand = self.inputs.template(batch[0])
            cpu, memory = demand.cpu, demand.memory_mb
            if self.predicted:  # adaptive, untraced: nothing to sample
                chosen, work, learn = self._choose_predicted(key, batch, demand, now)
                # (the placed prefix of ``batch``: ``enumerate``, as ``zip(..., strict=False)``
                # parses its keyword on every call, once per batch)
                for i, (row, predicted) in enumerate(chosen):
                    task, g = batch[i], glist[row]
                    take(g, cpu, memory, work, False)
                    at = place(task, g, now, predicted)
                    at.work = work
                    at.predicted = (predicted or 0.0) if learn else 0.0
                placed = len(chosen)
            elif self.explained:
                rows, learn = self._choose(site, batch, demand, now)
                for i, (row, decision, predicted, work) in enumerate(rows):
                    task, g = batch[i], glist[row]
                    topo.take(g, cpu, memory, work, False)
                    sampled = self.trace_left > 0 and self.trace_rng.random() < self.trace_rate
                    if decision is not None and sampled:
                        self._sample(task, decision, now)
                    at = place(task, g, now, predicted)
                    at.work = work
                    at.predicted = (predicted or 0.0) if learn else 0.0
                placed = len(rows)
            else:  # the cached path: no decision, prediction or work to carry
                state = self._cached(key, demand)
                epochs = [t.epoch + 1 for t in batch]
                rows_many = place_many(table, state, [t.id for t in batch], epochs, seed=self.seed)
                for i, row in enumerate(rows_many):
                    task, g = batch[i], glist[row]
                    topo.take(g, cpu, memory, 0.0, False)
                    place(task, g, now, None)
                placed = len(rows_many)
            if placed < len(batch):
                q.extendleft(reversed(batch[placed:]))
                return False
            size *= 2  # ``min(2 * size, _BATCH)``
            if size > _BATCH:
                size = _BATCH
        return True
