"""The simulated controller: failure detection, health, levels, leases, re-placement, results.

Every ``telemetry_s`` each node's heartbeat reaches the controller only while the
node's path to it is up: one ``shared.health.LinkMonitor`` per node (and per site)
grades the links, ``system_health`` grades the whole, ``target_level`` feeds the
``AdaptiveLevel`` machines, and the measured columns go into the placement tables.
Then work on unreachable nodes is re-placed as far as ``replacement_allowed``
lets it, and in the ``adaptive`` placement mode the ``shared.placement``
triggers move unstarted work. Attempt reports end here: the first success wins
and the controller cancels the other attempts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from shared.consistency import (
    AdaptiveLevel,
    LeaseBook,
    LeasePolicy,
    replacement_allowed,
    target_level,
)
from shared.health import LinkMonitor, LinkPolicy, SystemHealth, percentile, system_health
from shared.placement import LINK_CODES, latency_violated, link_degraded
from shared.vocab import Level, LinkState, PlacementMode
from simulations.sim.loop import Loop
from simulations.sim.metrics import Counters
from simulations.sim.network import Network
from simulations.sim.records import Attempt, Task, TaskState
from simulations.sim.scenario import SimScenario, TaskType
from simulations.sim.scheduling import Scheduler
from simulations.sim.topology import Topology

__all__ = ["Controller"]

_PARTITIONED = LINK_CODES[LinkState.PARTITIONED]
_OPEN = TaskState.OPEN
_STRONG = Level.STRONG


class Controller:
    """The controller's decisions in a run (see the module docstring)."""

    def __init__(
        self,
        sc: SimScenario,
        mode: PlacementMode,
        topo: Topology,
        net: Network,
        sched: Scheduler,
        counters: Counters,
        loop: Loop,
    ) -> None:
        self.types: tuple[TaskType, ...] = sc.workload.types
        self.spec = spec = sc.controller
        self.horizon = sc.duration_s
        self.mode = mode
        self.topo = topo
        self.net = net
        self.sched = sched
        self.counters = counters
        self.loop = loop
        self.lease_policy = LeasePolicy(
            duration_s=spec.lease_s,
            min_duration_s=min(3.0, spec.lease_s),
            max_duration_s=max(300.0, spec.lease_s),
        )
        self.leases = LeaseBook(self.lease_policy)
        self.link_policy = LinkPolicy(heartbeat_interval_s=spec.telemetry_s)
        self.system = SystemHealth.HEALTHY
        self.monitors = [
            LinkMonitor(nid, now=0.0, policy=self.link_policy) for nid in topo.node_ids
        ]
        self.site_mon = [
            LinkMonitor(f"site-{s}", now=0.0, policy=self.link_policy) for s in range(topo.sites)
        ]
        self.site_levels: dict[tuple[int, Level, Level], AdaptiveLevel] = {}
        #: attempts per node whose report has not reached the controller yet
        self.open_on: list[list[Attempt]] = [[] for _ in range(topo.count)]
        #: a task ended (terminal state); a successful task's result reached its device
        self.done: Callable[[Task, TaskState], None] = lambda task, state: None

    # -------------------------------------------------------------- levels
    def level_of(self, task: Task) -> Level:
        """The level a task is placed at: its site's adaptive level within its bounds."""
        lo, hi = task.lo, task.hi
        if lo is hi:
            return lo
        site = task.site
        machine = self.site_levels.get((site, lo, hi))
        if machine is None:
            target = target_level(lo, hi, link=self.site_mon[site].state, system=self.system).level
            machine = AdaptiveLevel(f"site-{site}", lo=lo, hi=hi, initial=target)
            self.site_levels[(site, lo, hi)] = machine
        return machine.level

    def _adapt_levels(self, now: float) -> None:
        for (s, lo, hi), machine in self.site_levels.items():
            target = target_level(lo, hi, link=self.site_mon[s].state, system=self.system)
            if machine.observe(target, now) is not None:
                self.counters.level_changes += 1

    # ----------------------------------------------------------- telemetry
    def telemetry(self, _: object = None) -> None:
        """One heartbeat round: grade links and health, adapt levels, refresh the
        tables, re-place what may move; then the next round."""
        now = self.loop.now
        topo, net = self.topo, self.net
        samples: list[float] = []
        changed: list[tuple[int, LinkState, LinkState]] = []
        for g in range(topo.count):
            mon = self.monitors[g]
            path = net.ctrl[g]
            if not net.is_up(path, now):
                change = mon.poll(now)
            else:
                rtt = (
                    2000.0 * path.lat + 1000.0 * path.jit * net.exp()
                    if path.jit
                    else 2000.0 * path.lat
                )
                samples.append(rtt)
                change = mon.rtt(rtt, now)
            if change is not None:
                topo.link[g] = LINK_CODES[change.new]
                changed.append((g, change.old, change.new))
            topo.prate[g] = mon.partition_rate_per_h(now)
        for s in range(topo.sites):
            path = net.site_ctrl[s]
            mon = self.site_mon[s]
            if not net.is_up(path, now):
                mon.poll(now)
            else:
                mon.rtt(2000.0 * path.lat, now)
        self.system = self._system_health(samples)
        self._adapt_levels(now)
        load = 1.0 - topo.cpu_free / topo.cpus
        self.sched.refresh(topo.link, load, np.array(topo.success), topo.prate)
        self._replace(now, changed)
        self.sched.kick()
        if now + self.spec.telemetry_s <= self.horizon:
            self.loop.at(now + self.spec.telemetry_s, self.telemetry)

    def _system_health(self, samples: list[float]) -> SystemHealth:
        available = int(np.count_nonzero(self.topo.link < _PARTITIONED))
        samples.sort()
        return system_health(
            available, self.topo.count, percentile(samples, 0.99) if samples else None
        )

    # --------------------------------------------------------- re-placement
    def _replace(self, now: float, changed: list[tuple[int, LinkState, LinkState]]) -> None:
        """Re-place work on unreachable nodes as far as ``replacement_allowed`` lets it.
        In adaptive mode two triggers (``shared.placement``) also move work that has
        not started: strong work off a link that turns degraded (``link_degraded``),
        and any work whose latency bound has passed (``latency_violated``), again
        only where ``replacement_allowed`` agrees."""
        adaptive = self.mode is PlacementMode.ADAPTIVE
        triggered: set[int] = set()
        if adaptive:
            for g, old, new in changed:
                strong = [
                    a
                    for a in self.open_on[g]
                    if a.level is _STRONG and a.start > now and not a.superseded
                ]
                if link_degraded(old, new, strong_tasks=len(strong)) is not None:
                    triggered.add(g)
        link = self.topo.link
        for g in range(self.topo.count):
            opened = self.open_on[g]
            if not opened:
                continue
            live = [
                a for a in opened if a.report > now and not a.superseded and a.task.state is _OPEN
            ]
            self.open_on[g] = [a for a in opened if a.report > now]
            if not live:
                continue
            down = link[g] >= _PARTITIONED
            if not down and not adaptive:
                continue
            out = self.monitors[g].out_of_contact_for(now) if down else None
            for at in live:
                task = at.task
                if task.state is not _OPEN or at.epoch != task.epoch:
                    continue
                tt = self.types[task.tt]
                if not down:
                    if at.start <= now:
                        continue  # started: only unstarted work is moved
                    strong = g in triggered and at.level is _STRONG
                    bound = tt.max_latency_ms
                    late = (
                        bound is not None
                        and latency_violated(1000.0 * (now - task.t_arr), bound) is not None
                    )
                    if not (strong or late):
                        continue
                lease = self.leases.get(task.id)
                if lease is not None and (lease.granted_at > now or lease.epoch != at.epoch):
                    lease = None
                decision = replacement_allowed(
                    at.level,
                    now=now,
                    lease=lease,
                    out_of_contact_s=out if down else None,
                    max_disconnect_s=tt.max_disconnect_s,
                )
                if not decision.allowed:
                    continue
                self._move(at, task, g, now, lease is None)

    def _move(self, at: Attempt, task: Task, g: int, now: float, no_lease: bool) -> None:
        """Supersede ``at`` and queue its task for a new placement away from ``g``."""
        at.superseded, at.superseded_at = True, now
        if no_lease and at.level is _STRONG:
            # its request has not arrived: it will be refused as stale
            self.leases.release(task.id, at.epoch)
        task.replaced += 1
        self.counters.replaced += 1
        task.exclude = frozenset({self.topo.node_ids[g]})
        if task.lo is not task.hi:
            task.level = self.level_of(task)
        self.sched.enqueue(task, now)
