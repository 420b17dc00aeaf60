"""Who exists in a run: sites, regions, devices and nodes, and each node's resources.

Nodes are numbered once (``g``): every site's edge servers, then every region's
regional nodes, the cloud nodes, then the computing devices. ``Topology`` holds
the rows (``NodeRow``) and the per-node columns the other facades read and move:
free CPU and memory, running attempts, busy core-seconds (energy), the success
EWMA, the link grade and partition rate the controller measured.
"""

from __future__ import annotations

import numpy as np

from shared.vocab import Tier
from simulations.sim.records import NodeRow
from simulations.sim.scenario import Topology as TopologySpec

__all__ = ["Topology"]


class Topology:
    """The node rows and their mutable resource columns (see the module docstring)."""

    def __init__(self, spec: TopologySpec, rng: np.random.Generator) -> None:
        S, R, D = spec.sites, spec.regions, spec.device.count
        self.sites, self.regions, self.devices = S, R, D
        self.dev_site = [d % S for d in range(D)]
        computing = rng.random(D) < spec.device.compute_share
        nodes: list[NodeRow] = []
        for s in range(S):
            for k in range(spec.edge.count):
                nodes.append(NodeRow(f"edge-{s}-{k}", Tier.EDGE, s, s % R, spec.edge))
        for r in range(R):
            for k in range(spec.regional.count):
                nodes.append(NodeRow(f"reg-{r}-{k}", Tier.REGIONAL, -1, r, spec.regional))
        for k in range(spec.cloud.count):
            nodes.append(NodeRow(f"cloud-{k}", Tier.CLOUD, -1, -1, spec.cloud))
        #: the node of each device that computes, else -1
        self.dev_node = [-1] * D
        for d in np.flatnonzero(computing).tolist():
            self.dev_node[d] = len(nodes)
            s = self.dev_site[d]
            nodes.append(NodeRow(f"dev-{d}", Tier.DEVICE, s, s % R, spec.device, d))
        self.nodes = nodes
        self.count = G = len(nodes)
        self.node_ids = [n.node_id for n in nodes]
        self.index = {nid: g for g, nid in enumerate(self.node_ids)}
        self.node_tier = [n.tier for n in nodes]
        self.cpus = np.array([n.cls.cpus for n in nodes], dtype=np.float64)
        self.mem = np.array([n.cls.memory_mb for n in nodes], dtype=np.float64)
        self.mips = [n.cls.mips for n in nodes]
        self.start_s = [n.cls.start_s for n in nodes]
        self.supervisor_start_s = [n.cls.supervisor_start_s for n in nodes]
        self.slots = [n.cls.slots for n in nodes]  # 0: no executor limit beyond the cpus
        # the columns an attempt moves, as Python floats (two scalar updates per attempt)
        self.cpu_free: list[float] = self.cpus.tolist()
        self.mem_free: list[float] = self.mem.tolist()
        self.running = [0.0] * G
        self.backlog = [0.0] * G  # placed, unfinished work (reference-core seconds)
        self.success = [1.0] * G  # success-rate EWMA per node
        self.link = np.zeros(G, dtype=np.int8)  # LINK_CODES grade seen by the controller
        self.prate = np.zeros(G)  # partitions per hour seen by the controller
        self.busy = [0.0] * G  # core-seconds of execution (LEAF dynamic energy)
        #: release counters (a queue stuck for lack of room retries once one moves):
        #: one per site, one per region, one for the cloud
        self.freed = [0] * (S + R + 1)
        self.freed_counter = [
            n.site
            if n.tier in (Tier.EDGE, Tier.DEVICE)
            else S + n.region
            if n.tier is Tier.REGIONAL
            else -1
            for n in nodes
        ]
        #: per site, its own nodes (edge servers, computing devices) whose columns
        #: moved since the scheduler last read them; a regional or cloud node is in
        #: several sites' tables, which read it every time
        self.touched: list[set[int]] = [set() for _ in range(S)]
        self.local_site = [n.site if n.tier in (Tier.EDGE, Tier.DEVICE) else -1 for n in nodes]

    def members(self, site: int) -> list[int]:
        """The nodes a task from ``site`` may run on: the site's own, its region's
        regional nodes and the cloud (the controller's candidate set per site)."""
        r = site % self.regions
        return [
            g
            for g, n in enumerate(self.nodes)
            if n.site == site or (n.tier is Tier.REGIONAL and n.region == r) or n.tier is Tier.CLOUD
        ]

    def take(
        self, g: int, cpu: float, memory_mb: float, work_s: float = 0.0, mark: bool = True
    ) -> None:
        """An attempt starts holding ``cpu`` and ``memory_mb`` on node ``g``
        (``mark`` False: the caller's table took the same from a row equal to the
        node's, so nothing is left for the site's sync to read)."""
        self.cpu_free[g] -= cpu
        self.mem_free[g] -= memory_mb
        self.running[g] += 1
        if work_s:
            self.backlog[g] += work_s
        if mark:
            site = self.local_site[g]
            if site >= 0:
                self.touched[site].add(g)

    def give_back(self, g: int, cpu: float, memory_mb: float, work_s: float = 0.0) -> None:
        """An attempt on ``g`` ended: its resources are free again."""
        self.cpu_free[g] += cpu
        self.mem_free[g] += memory_mb
        self.running[g] -= 1
        if work_s:  # ``max(0.0, backlog - work_s)``, spelled out (once per attempt)
            left = self.backlog[g] - work_s
            self.backlog[g] = left if left > 0.0 else 0.0
        self.freed[self.freed_counter[g]] += 1
        site = self.local_site[g]
        if site >= 0:
            self.touched[site].add(g)

    def computing_devices(self) -> int:
        return sum(1 for g in self.dev_node if g >= 0)
