"""A plain device's submission, by its breaker (``shared.autonomy.Failover``).

What the device knows is what its attempts told it. With the breaker closed it tries the
controller and waits for the connection as ``Failover.connect_wait`` says: RFC 6298's
timeout from the round trips its earlier connections measured (``observe_rtt``, one per
connection made without a resent SYN), or less when the fallback could meet the task's
deadline only by giving up earlier (``_fallback_s``). An attempt whose answer cannot come
by then (the device's session is down until later) fails at that moment
(``_timed_out``): the RTT-based timeout opens the breaker, a deadline-driven give-up sends
only its own task to an edge. With the breaker open, submissions go to an edge server of
the site at once (``_to_agent``), and only a background probe (``_probe``) closes it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from shared.autonomy import CONNECT_TIMEOUT_S, Failover, Route
from shared.health import clamp_level
from shared.vocab import Level, Tier
from simulations.sim.network import CONTROL_BITS, Path
from simulations.sim.records import Attempt, Task

if TYPE_CHECKING:
    from simulations.sim.agent import Agents

__all__ = ["PlainDevices"]

_STRONG = Level.STRONG


class PlainDevices:
    """The plain devices' failover to their site's edge agents (see the module docstring)."""

    def __init__(self, agents: Agents) -> None:
        self.ag = agents
        topo = agents.topo
        #: per plain device that submitted once, its breaker (and round-trip estimate)
        self.breakers: dict[int, Failover] = {}
        #: per site, its edge servers: the agents a plain device of the site falls back to
        self.site_edges = [
            [g for g in topo.members(s) if topo.node_tier[g] is Tier.EDGE]
            for s in range(topo.sites)
        ]
        #: submissions that went to a site's agent instead of the controller
        self.failovers = 0
        #: per (site, kind), the fallback's expected time from submission to result
        self._fallback: dict[tuple[int, int], float] = {}

    def submit(self, task: Task, path: Path, t: float) -> None:
        """A plain device's new submission at ``t`` (see the module docstring)."""
        br = self.breakers.get(task.dev)
        if br is None:
            br = self.breakers[task.dev] = Failover()
        edges = self.site_edges[task.site]
        if br.down_since is not None:
            self._probe(br, path, t)
            if br.down_since is not None:
                if br.route(min_level=task.lo, fallback=bool(edges)) is Route.AGENT:
                    self._to_agent(task, t)
                else:  # known out of reach: queued for it (strong-only, no agent)
                    self.ag.to_controller(task, t)
                return
        deadline = self.ag.types[task.tt].deadline_s
        if edges and task.lo is not _STRONG and not math.isinf(deadline):
            wait = br.connect_wait(deadline_left_s=deadline, fallback_s=self._fallback_s(task))
        else:
            wait = br.connect_wait()
        rtt = 2 * path.lat
        if path.down:
            up = self.ag.net.tl.next_up(path.down, t)
            if up + rtt > t + wait.timeout_s:
                self.ag.loop.at(t + wait.timeout_s, self._timed_out, (task, wait.opens))
                return
            if up <= t:  # answered to its first SYN: a sample (Karn's rule)
                br.observe_rtt(rtt)
        else:
            br.observe_rtt(rtt)
        self.ag.to_controller(task, t)

    def _fallback_s(self, task: Task) -> float:
        """What the device expects the fallback to take, submission to result: the round
        trip to its site's (first) edge server, the kind's mean input and output over
        that path and its mean run there (what a device learns from its earlier fallbacks
        or an agent advertises; the simulator gives it the kind's means)."""
        key = (task.site, task.tt)
        est = self._fallback.get(key)
        if est is None:
            ag = self.ag
            tt, g = ag.types[task.tt], self.site_edges[task.site][0]
            part, lat = ag.net.part[task.site][g], ag.net.net.lat[task.dev]
            bw = min(part.bw, ag.net.net.bw[task.dev])
            bits = (sum(tt.input_kb) + sum(tt.output_kb)) / 2 * 8192.0
            run = ag.topo.start_s[g] + sum(tt.compute_mi) / 2 / ag.topo.mips[g]
            est = self._fallback[key] = 2 * (lat + part.lat) + bits / bw + run
        return est

    def _timed_out(self, item: tuple[Task, bool]) -> None:
        """The device's attempt to reach the controller went unanswered: past the
        RTT-based timeout (``opens``) the breaker opens and the submission goes where it
        says now; a deadline-driven give-up sends this one task to an edge server."""
        task, opens = item
        ag = self.ag
        now = ag.loop.now
        if not opens:
            self._to_agent(task, now)
            return
        br = self.breakers[task.dev]
        br.failed(now)
        if br.route(min_level=task.lo, fallback=bool(self.site_edges[task.site])) is Route.AGENT:
            self._to_agent(task, now)
        else:
            ag.to_controller(task, now)

    def _probe(self, br: Failover, path: Path, t: float) -> None:
        """The device's background probes up to ``t``, one every ``Failover.probe_s``
        from the failure: the first sent while the path is up closes the breaker once
        its answer is back (a round trip later, a sample; an answer still on its way by
        ``t`` leaves it open for now)."""
        rtt = 2 * path.lat
        is_up = self.ag.net.is_up
        while br.next_probe <= t:
            p = br.next_probe
            if is_up(path, p):
                if p + rtt <= t:
                    br.observe_rtt(rtt)
                    br.reached(p + rtt)
                return
            br.probe_sent(p)

    def _to_agent(self, task: Task, t: float) -> None:
        """The submission goes to an edge server of the device's site (from the one
        its index picks, then the next): a crashed one, or any while the device's own
        access link is down, leaves the connection unanswered for
        ``CONNECT_TIMEOUT_S`` (no round trip to it measured); one without room
        (``Agents.admit_local``) answers at once (a round trip). The first that admits
        it runs it alone (``_run_at_site``); when none does, the submission goes to the
        controller after all."""
        ag = self.ag
        net, dev = ag.net, task.dev
        edges = self.site_edges[task.site]
        access_down = net.fallible[dev] and net.tl.next_up((dev,), t) > t
        if access_down:  # no agent answers either
            ag.to_controller(task, t + CONNECT_TIMEOUT_S)
            return
        parts = net.part[task.site]
        first = (dev // ag.topo.sites) % len(edges)
        for i in range(len(edges)):
            g = edges[(first + i) % len(edges)]
            part = parts[g]
            if not net.is_up(part, t):
                t += CONNECT_TIMEOUT_S
            elif ag.admit_local(g, task):
                self._run_at_site(task, g, t, part)
                return
            else:
                t += 2 * (net.net.lat[dev] + part.lat)
        ag.to_controller(task, t)

    def _run_at_site(self, task: Task, g: int, t: float, part: Path) -> None:
        """Edge server ``g``'s agent took the device's submission sent at ``t`` on its
        local API: it runs it alone at ``causal`` (clamped into the task's bounds,
        never strong), the input with the submission over the access link, the result
        back to the device. The controller learns of it with the node's sync; the
        run is left to its node (not in ``open_on``: no partition or trigger move)."""
        ag = self.ag
        tt = ag.types[task.tt]
        ag.topo.take(g, tt.cpu, tt.memory_mb)
        ag.counters.local_runs += 1
        self.failovers += 1
        task.level = clamp_level(Level.CAUSAL, lo=task.lo, hi=task.hi)
        task.epoch += 1
        at = Attempt(task, g, task.epoch, task.level, t, local=True)
        at.t_recv = ag.net.deliver_data(task.dev, part, t, task.in_bits + CONTROL_BITS)
        ag.execute(at, task, tt, g, at.t_recv, part)
        ag.counters.placed_tier[ag.node_tier[g]] += 1
        ag.loop.at(at.stop, ag.ended, at)
