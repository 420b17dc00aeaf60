"""The controller's placement queues: tasks wait per (site, shape) and are placed in batches.

One ``shared.placement.NodeTable`` per site holds the candidates of the site's
tasks (its edge servers and computing devices, its region's regional nodes, the
cloud). Submissions reaching the controller are placed every
``placement_interval_s`` (0: one decision per arrival, exact timing, for small
runs). Work waits in per-(site, shape) FIFO queues; a queue that found no room
stays untouched until something is freed at its site or telemetry changes the
table; work waiting longer than ``max_queue_s`` fails. The batch path
(``simulations.sim.placer``) runs the pipeline's own stages and chooses exactly
what ``place`` + ``allocate`` choose; ``placer="shared"`` uses
``shared.placement.place_batch`` itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.placement import NodeTable, NodeView, TaskDemand, place_batch
from shared.vocab import Level, PlacementMode, Tier
from simulations.sim.loop import Loop
from simulations.sim.metrics import Counters
from simulations.sim.network import Network
from simulations.sim.placer import ShapeCache, place_many
from simulations.sim.records import Task, TaskState
from simulations.sim.scenario import SimScenario, TaskType
from simulations.sim.topology import Topology

__all__ = ["Scheduler"]

#: Most tasks handed to the placer at once (a queue is drained in such batches).
_BATCH = 256
#: A placement queue: (site, task type, level, excluded nodes).
_QueueKey = tuple[int, int, Level, frozenset[str]]
_OPEN = TaskState.OPEN


class Scheduler:
    """Placement queues and per-site tables (see the module docstring).

    ``place(task, g, now)`` acts on each decision (resources are already taken);
    ``level_of(task)`` gives a first placement's level; ``done(task, state)``
    ends a task no node took in time."""

    def __init__(
        self,
        sc: SimScenario,
        mode: PlacementMode,
        topo: Topology,
        net: Network,
        counters: Counters,
        loop: Loop,
        *,
        seed: int,
        placer: str,
    ) -> None:
        if placer not in ("cached", "shared"):
            raise ValueError("placer must be 'cached' (sim.placer) or 'shared' (place_batch)")
        self.types: tuple[TaskType, ...] = sc.workload.types
        self.ctl = sc.controller
        self.horizon = sc.duration_s
        self.mode = mode
        self.topo = topo
        self.counters = counters
        self.loop = loop
        self.seed = seed
        self.placer = placer
        self.cache = ShapeCache()
        self.place: Callable[[Task, int, float], None] = lambda task, g, now: None
        self.level_of: Callable[[Task], Level] = lambda task: task.level
        self.done: Callable[[Task, TaskState], None] = lambda task, state: None
        self.pump: Callable[[float], None] = lambda now: None
        self.progress: Callable[[float, float], None] | None = None
        self.exact = self.ctl.placement_interval_s <= 0
        self.pending: list[Task] = []
        self.buckets: dict[int, list[Task]] = {}
        self.queues: dict[_QueueKey, deque[Task]] = {}
        self.active: dict[_QueueKey, None] = {}  # non-empty queues, in insertion order
        self.stuck: dict[_QueueKey, tuple[int, int, int, int]] = {}
        self._kicked = False
        self._k_done = -1
        ref_mips = sc.topology.edge.mips
        self.type_runtime = [(sum(t.compute_mi) / 2) / ref_mips for t in self.types]
        self.demands: dict[tuple[int, Level, frozenset[str]], TaskDemand] = {}
        self._build_tables(sc, net)

    def _build_tables(self, sc: SimScenario, net: Network) -> None:
        topo, access = self.topo, sc.links.access
        self.tables: list[NodeTable] = []
        self.gidx: list[np.ndarray] = []
        for s in range(topo.sites):
            views = []
            for g in topo.members(s):
                part, n = net.part[s][g], topo.nodes[g]
                views.append(
                    NodeView(
                        node_id=n.node_id,
                        tier=n.tier,
                        labels={"site": str(s)} if n.site == s else {},
                        cpus=n.cls.cpus,
                        memory_mb=n.cls.memory_mb,
                        rtt_ms=2000.0 * (part.lat + access.latency_ms / 1000.0),
                        bandwidth_mbps=min(part.bw, access.bandwidth_mbps * 1e6) / 1e6,
                        battery_pct=100.0 if n.cls.battery else None,
                    )
                )
            table = NodeTable(views)
            self.tables.append(table)
            self.gidx.append(np.array([topo.index[i] for i in table.ids], dtype=np.intp))
        self.version = [0] * topo.sites
        self.logs: list[list[int]] = [[] for _ in range(topo.sites)]  # rows moved, per version

    def refresh(
        self, link: np.ndarray, load: np.ndarray, success: np.ndarray, prate: np.ndarray
    ) -> None:
        """Telemetry changed the measured columns: a new version of every table."""
        for s, (table, gidx) in enumerate(zip(self.tables, self.gidx, strict=True)):
            table.link[:] = link[gidx]
            table.load[:] = np.round(load[gidx], 2)
            table.success[:] = np.round(success[gidx], 3)
            table.partition_rate[:] = np.round(prate[gidx], 1)
            self.version[s] += 1
            self.logs[s] = []

    # ------------------------------------------------------------- inbox
    def receive(self, task: Task, t_c: float) -> None:
        """A submission reaches the controller at ``t_c``: into the next tick's bucket."""
        dt = self.ctl.placement_interval_s
        if dt <= 0:
            self.loop.at(t_c, self._receive_now, task)
        else:
            k = max(math.ceil(t_c / dt - 1e-9), self._k_done + 1)
            self.buckets.setdefault(k, []).append(task)

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
        for task in inbox:
            if task.state is not _OPEN:
                continue
            if task.epoch == 0:
                task.level = self.level_of(task)
            key = (task.site, task.tt, task.level, task.exclude)
            q = queues.get(key)
            if q is None:
                q = queues[key] = deque()
            q.append(task)
            active[key] = None
        max_q = self.ctl.max_queue_s
        synced: set[int] = set()
        topo = self.topo
        freed, S, R = topo.freed, topo.sites, topo.regions
        for key in list(active):
            q = queues[key]
            site = key[0]
            mark = (freed[site], freed[S + site % R], freed[-1], self.version[site])
            if self.stuck.get(key) != mark:
                if site not in synced:
                    self._sync(site)
                    synced.add(site)
                if not self._place_queue(site, q, now):
                    self.stuck[key] = mark
            while q and (q[0].state is not _OPEN or now - q[0].entered > max_q):
                task = q.popleft()
                if task.state is _OPEN:
                    self.counters.unplaceable += 1
                    self.done(task, TaskState.FAILED)
            if not q:
                del active[key]
                del queues[key]

    def _sync(self, site: int) -> None:
        """Bring the site's table up to the global free resources (releases, and
        other sites' use of shared rows), logging the rows that moved."""
        gidx, table, topo = self.gidx[site], self.tables[site], self.topo
        cpu, mem = topo.cpu_free[gidx], topo.mem_free[gidx]
        moved = np.flatnonzero((table.cpu_free != cpu) | (table.memory_free != mem))
        if len(moved):
            table.cpu_free[:] = cpu
            table.memory_free[:] = mem
            table.running[:] = topo.running[gidx]
            self.logs[site].extend(moved.tolist())

    def demand(self, task: Task) -> TaskDemand:
        """What placement reads of ``task`` (one object per type, level and exclusion)."""
        key = (task.tt, task.level, task.exclude)
        demand = self.demands.get(key)
        if demand is None:
            tt = self.types[task.tt]
            demand = TaskDemand(
                task_id="sim",
                cpu=tt.cpu,
                memory_mb=tt.memory_mb,
                preferred_tiers=tuple(Tier(t) for t in tt.preferred_tiers),
                max_latency_ms=tt.max_latency_ms,
                data_size_mb=(sum(tt.input_kb) / 2) / 1024.0,
                runtime_s=self.type_runtime[task.tt],
                level=task.level,
                exclude=task.exclude,
            )
            self.demands[key] = demand
        return demand

    def _choose(self, site: int, batch: list[Task], demand: TaskDemand) -> list[int]:
        """Rows chosen for the placed prefix of ``batch`` (one task shape)."""
        table = self.tables[site]
        epochs = [t.epoch + 1 for t in batch]
        if self.placer == "cached":
            state = self.cache.get(
                site, self.version[site], table, demand, self.mode, self.logs[site]
            )
            return place_many(table, state, [t.id for t in batch], epochs, seed=self.seed)
        demands = [
            TaskDemand(
                task_id=t.id,
                cpu=demand.cpu,
                memory_mb=demand.memory_mb,
                preferred_tiers=demand.preferred_tiers,
                max_latency_ms=demand.max_latency_ms,
                data_size_mb=demand.data_size_mb,
                runtime_s=demand.runtime_s,
                level=demand.level,
                exclude=demand.exclude,
            )
            for t in batch
        ]
        rows = []
        for dec in place_batch(table, demands, mode=self.mode, seed=self.seed, epochs=epochs):
            if dec.node_id is None:  # one shape: after the first refusal, all are refused
                break
            rows.append(table.index[dec.node_id])
        return rows

    def _place_queue(self, site: int, q: deque[Task], now: float) -> bool:
        """Place from the head of one queue (one task shape) until it is empty
        (``True``) or no node has room (``False``; the rest stays queued in order)."""
        gidx, topo = self.gidx[site], self.topo
        size = 8  # grows while everything fits: a full site costs little per tick
        while q:
            batch: list[Task] = []
            while q and len(batch) < size:
                task = q.popleft()
                if task.state is _OPEN:
                    batch.append(task)
            if not batch:
                return True
            demand = self.demand(batch[0])
            rows = self._choose(site, batch, demand)
            for task, row in zip(batch, rows, strict=False):
                g = int(gidx[row])
                topo.take(g, demand.cpu, demand.memory_mb)
                self.place(task, g, now)
            if len(rows) < len(batch):
                q.extendleft(reversed(batch[len(rows) :]))
                return False
            size = min(2 * size, _BATCH)
        return True
