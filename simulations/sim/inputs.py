"""What placement reads, filled from the simulated network and nodes, and learned as the
controller learns it (``shared.learning``).

Per node (``NodeView``), as seen from one site: ``rtt_ms`` = the controller → node
one-way delay (the placement message) plus the device ↔ node round trip (input in,
result back), so that the prediction's dispatch + return (``rtt_ms``) is the part of
a task's path that depends on the node (the controller is in the cloud and results
go back to the device, where the deadline is judged); it is also what a latency
bound is checked against. Then the bandwidth of
the path from the site's devices (input and output transfers), the marginal watts of
a busy core (``power_w`` = (max - idle) / cpus), the joules a MB costs on that path
(``transfer_j_per_mb``, as ``Network`` charges it), whether the site's data crosses the
WAN to reach it, and three learned columns refreshed at each telemetry tick: the
RTT (its controller part: EWMA of the heartbeats, ``observe_rtt``), the per-core
speed (``observe_run`` on every finished run) and the prediction error
(``observe_finish``). Per task (``TaskDemand``, ``adaptive`` mode): the kind's
learned work, the seconds left to its deadline, its output size.

Learned values are read once per telemetry tick (as a controller reading telemetry
would), and the deadline left is rounded to ``DEADLINE_STEP_S``, so the tasks of one
tick share a few shapes and their static halves are computed once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from shared.learning import LearnerState, observe_finish, observe_rtt, observe_run
from shared.placement import NodeTable, NodeView, TaskDemand
from shared.vocab import Level, Tier
from simulations.sim.network import Network
from simulations.sim.records import Attempt, Task
from simulations.sim.scenario import SimScenario, TaskType
from simulations.sim.topology import Topology

__all__ = ["DEADLINE_STEP_S", "PlacementInputs"]

#: Granularity of the deadline left that the adaptive ranking is given (seconds).
DEADLINE_STEP_S = 0.05


class PlacementInputs:
    """Node views per site, per-task demands and the learner (see the module docstring)."""

    def __init__(
        self,
        sc: SimScenario,
        topo: Topology,
        net: Network,
        *,
        learn: bool,
        node_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.node_labels = dict(node_labels or {})
        self.topo = topo
        self.net = net
        self.types: tuple[TaskType, ...] = sc.workload.types
        self.access = sc.links.access
        self.learn = learn
        self.learner = LearnerState()
        ref_mips = sc.topology.edge.mips
        self.runtime = [(sum(t.compute_mi, 0.0) / 2) / ref_mips for t in self.types]
        self.work = self._works()
        #: ``template``'s demands, per (kind, level, exclusion)
        self._templates: dict[tuple[int, Level, frozenset[str]], TaskDemand] = {}
        #: ``predicted``'s demands until the next tick, per (kind, template id)
        self._predicted: dict[tuple[int, int], tuple[TaskDemand, TaskDemand]] = {}
        self.node_ids = topo.node_ids
        self.tiers = topo.node_tier
        self.speed = self._speeds()
        #: controller ↔ node round trip (ms) before any heartbeat
        self.ctrl_rtt = [2000.0 * net.ctrl[g].lat for g in range(topo.count)]
        #: per site, node → device ↔ node round trip (ms) over the site's data path
        self.data_rtt = [
            {g: 2000.0 * (p.lat + sc.links.access.latency_ms / 1000.0) for g, p in parts.items()}
            for parts in net.part
        ]

    def views(self, site: int) -> list[NodeView]:
        """The nodes a task from ``site`` may run on, as the controller first sees them."""
        topo, net, access = self.topo, self.net, self.access
        out = []
        for g in topo.members(site):
            part, n = net.part[site][g], topo.nodes[g]
            out.append(
                NodeView(
                    node_id=n.node_id,
                    tier=n.tier,
                    labels={
                        **({"site": str(site)} if n.site == site else {}),
                        **self.node_labels.get(n.node_id, {}),
                    },
                    cpus=n.cls.cpus,
                    memory_mb=n.cls.memory_mb,
                    rtt_ms=self.ctrl_rtt[g] / 2.0 + self.data_rtt[site][g],
                    bandwidth_mbps=min(part.bw, access.bandwidth_mbps * 1e6) / 1e6,
                    battery_pct=100.0 if n.cls.battery else None,
                    power_w=(n.cls.max_w - n.cls.idle_w) / n.cls.cpus,
                    wan=part.wan,
                    slots=n.cls.slots,
                    # LEAF's J/bit on the device's access link and the node's side
                    transfer_j_per_mb=8e6 * (access.nj_per_bit * 1e-9 + part.j_per_bit),
                )
            )
        return out

    # ------------------------------------------------------------ telemetry
    def ping(self, g: int, rtt_ms: float) -> None:
        """A heartbeat's round trip to node ``g``."""
        observe_rtt(self.learner, self.node_ids[g], rtt_ms)

    def refresh(self, site: int, table: NodeTable, gidx: np.ndarray) -> None:
        """Write the learned columns into a site's table (once per telemetry tick)."""
        learner = self.learner
        ids, tiers, data = self.node_ids, self.tiers, self.data_rtt[site]
        rows = gidx.tolist()
        table.rtt_ms[:] = [
            learner.rtt_ms.get(ids[g], self.ctrl_rtt[g]) / 2.0 + data[g] for g in rows
        ]
        if self.learn:
            table.speed[:] = [self.speed[g] for g in rows]
            table.error[:] = [learner.error_of(ids[g], tiers[g]) for g in rows]

    def tick(self) -> None:
        """Read the learned work of every kind and speed of every node (once per
        telemetry tick)."""
        self._predicted.clear()
        if self.learn:
            self.work = self._works()
            self.speed = self._speeds()

    def _speeds(self) -> list[float]:
        """Every node's learned speed (``speed_of``). A node without samples has its
        tier's prior, the same for every such node of the tier: asked once per tier."""
        learner, tiers, known = self.learner, self.tiers, self.learner.speed
        prior: dict[Tier, float] = {}
        out = []
        for g, nid in enumerate(self.node_ids):
            if nid in known:
                out.append(learner.speed_of(nid, tiers[g]).value)
                continue
            tier = tiers[g]
            value = prior.get(tier)
            if value is None:
                value = prior[tier] = learner.speed_of(nid, tier).value
            out.append(value)
        return out

    def _works(self) -> list[float]:
        """Each kind's learned work (before its first run: the default, bounded by
        the kind's deadline, as ``shared.learning`` has it)."""
        return [self.learner.work_of(t.name, bound_s=t.deadline_s).value for t in self.types]

    # ----------------------------------------------------------------- tasks
    def template(self, task: Task) -> TaskDemand:
        """What placement reads of ``task``'s shape: one object per type, level and
        exclusion (the scheduler's queues, and the template of ``demand``)."""
        key = (task.tt, task.level, task.exclude)
        demand = self._templates.get(key)
        if demand is None:
            tt = self.types[task.tt]
            demand = TaskDemand(
                task_id="sim",
                cpu=tt.cpu,
                memory_mb=tt.memory_mb,
                preferred_tiers=tuple(Tier(t) for t in tt.preferred_tiers),
                labels=tuple((k, v) for k, v in (label.split("=", 1) for label in tt.labels)),
                max_latency_ms=tt.max_latency_ms,
                data_size_mb=(sum(tt.input_kb, 0.0) / 2) / 1024.0,
                runtime_s=self.runtime[task.tt],
                level=task.level,
                exclude=task.exclude,
            )
            self._templates[key] = demand
        return demand

    def demand(self, task: Task, template: TaskDemand, now: float) -> TaskDemand:
        """``task``'s own demand for the adaptive ranking: ``template`` (its shape)
        with its id, the learned work of its kind and the deadline left."""
        return replace(
            self.predicted(task, template), task_id=task.id, deadline_s=self.deadline(task, now)
        )

    def deadline(self, task: Task, now: float) -> float | None:
        """Seconds left to ``task``'s deadline at ``now``, rounded down to
        ``DEADLINE_STEP_S``; ``None`` for a kind whose ``deadline_s`` is infinite (ranked
        as the controller ranks a task without ``deadline_s``)."""
        return self.deadlines((task,), now)[0]

    def deadlines(self, tasks: Sequence[Task], now: float) -> list[float | None]:
        """``deadline`` of each of ``tasks``, tasks of one kind (a placement batch)."""
        deadline_s = self.types[tasks[0].tt].deadline_s
        if math.isinf(deadline_s):  # every deadline left is infinite too
            return [None] * len(tasks)
        floor, step = math.floor, DEADLINE_STEP_S
        return [floor((deadline_s - (now - t.t_arr)) / step) * step for t in tasks]

    def predicted(self, task: Task, template: TaskDemand) -> TaskDemand:
        """What ``demand`` gives every task of ``task``'s kind until the next
        telemetry tick, but without an id or deadline (the static half of the
        adaptive ranking reads neither). Built once per kind and template until
        then (``TaskDemand`` is frozen; its validation is not free)."""
        key = (task.tt, id(template))
        hit = self._predicted.get(key)
        if hit is not None and hit[0] is template:
            return hit[1]
        tt = self.types[task.tt]
        demand = TaskDemand(
            task_id=template.task_id,
            cpu=template.cpu,
            memory_mb=template.memory_mb,
            preferred_tiers=template.preferred_tiers,
            labels=template.labels,
            max_latency_ms=template.max_latency_ms,
            data_size_mb=template.data_size_mb,
            runtime_s=template.runtime_s,
            level=template.level,
            exclude=template.exclude,
            work_s=self.work[task.tt],
            output_mb=(sum(tt.output_kb, 0.0) / 2) / 1024.0,
            idempotent=tt.idempotent,
        )
        self._predicted[key] = (template, demand)
        return demand

    def work_and_speed(self, task: Task, g: int) -> tuple[float, float]:
        """``(work, speed)`` of ``task`` on node ``g`` as the controller knows them:
        the kind's learned work (reference-core seconds; the prior unless the
        adaptive mode learns) and the node's learned per-core speed, as read at the
        last telemetry tick."""
        return self.work[task.tt], self.speed[g]

    def finished(self, at: Attempt) -> None:
        """A successful run ended: learn the node's speed, the kind's work and (when
        the placement predicted it) the prediction's error."""
        if not self.learn:
            return
        g = at.node
        node_id, tier, tt = self.node_ids[g], self.tiers[g], self.types[at.task.tt]
        observe_run(
            self.learner,
            node_id=node_id,
            tier=tier,
            kind=tt.name,
            seconds=at.stop - at.start,
            bound_s=tt.deadline_s,
        )
        if at.predicted > 0:  # what the prediction is of: placement to result at the device
            actual = at.t_done - at.t_place
            observe_finish(self.learner, node_id, at.predicted, actual, tier)
