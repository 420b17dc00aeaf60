"""A device's submission, by its breaker (``shared.autonomy.Failover``): a plain device's
always, a computing device's when it does not run the task itself (``Agents.arrive``).

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

import heapq
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.autonomy import (
    DeadlineJob,
    EdfPlan,
    Failover,
    Route,
    plan_edf,
)
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
        #: per device that submitted once, its breaker (and round-trip estimate)
        self.breakers: dict[int, Failover] = {}
        #: per device that tried its site's edges once, its round-trip estimate of that
        #: path (a ``Failover`` used for ``observe_rtt`` and ``rto_s`` alone)
        self.edge_rtt: dict[int, Failover] = {}
        #: per site, its edge servers: the agents a plain device of the site falls back to
        self.site_edges = [
            [g for g in topo.members(s) if topo.node_tier[g] is Tier.EDGE]
            for s in range(topo.sites)
        ]
        #: submissions that went to a site's agent instead of the controller
        self.failovers = 0
        #: per (site, kind, edge), the transfers and run an edge's agent expects
        self._expected: dict[tuple[int, int, int], tuple[float, float]] = {}
        #: per node, the run its agent expects of each kind (``_runs_on``)
        self._runs: list[list[float] | None] = [None] * topo.count
        #: per site and kind, ``_fallback_s`` once asked (``_expect`` fixed it then)
        self._fallback: list[list[float | None]] = [
            [None] * len(agents.types) for _ in range(topo.sites)
        ]
        #: per kind, whether its deadline is finite (a fallback may meet it)
        self._finite = [not math.isinf(tt.deadline_s) for tt in agents.types]
        #: nodes whose agents take devices' submissions: the edge servers (for their
        #: site's devices) and the computing devices (for their own)
        self.is_agent = [tier is Tier.EDGE for tier in topo.node_tier]
        for g in topo.dev_node:
            if g >= 0:
                self.is_agent[g] = True
        #: per edge server, the submissions its agent holds, in admission order
        self.queue: dict[int, list[_Queued]] = {}
        #: per node, its runs as a heap of (end, expected end, placement received, cpu,
        #: memory), for the agents that take devices' submissions
        self.running: list[list[tuple[float, float, float, float, float]]] = [
            [] for _ in range(topo.count)
        ]
        #: per edge server, when its queue is next looked at
        self.drain_at: dict[int, float] = {}
        #: queued submissions an edge's plan refused later (tried elsewhere)
        self.handed_back = 0

    def submit(self, task: Task, path: Path, t: float) -> None:
        """A plain device's new submission at ``t`` (see the module docstring)."""
        br = self.breakers.get(task.dev)
        if br is None:
            br = self.breakers[task.dev] = Failover()
        edges = self.site_edges[task.site]
        # the probes may close the breaker: ``_probe`` says whether it is still open
        if br.down_since is not None and self._probe(br, path, t):
            if br.route(min_level=task.lo, fallback=bool(edges)) is Route.AGENT:
                self._to_agent(task, t)
            else:  # known out of reach: queued for it (strong-only, no agent)
                self.ag.to_controller(task, t)
            return
        rtt = 2 * path.lat
        fallback = edges and task.lo is not _STRONG and self._finite[task.tt]
        fallback_s = 0.0
        if fallback:
            # the fallback's expectation is asked for either way: the first device of a
            # site to ask fixes it for the others (``_expect`` caches it per site, kind and
            # edge; kept here per site and kind once asked)
            row = self._fallback[task.site]
            known = row[task.tt]
            if known is None:
                known = row[task.tt] = self._fallback_s(task)
            fallback_s = known
        if not path.down:  # never cut: answered at once, so how long it would wait is moot
            br.observe_rtt(rtt)
            self.ag.to_controller(task, t)
            return
        if fallback:
            deadline = self.ag.types[task.tt].deadline_s
            wait = br.connect_wait(deadline_left_s=deadline, fallback_s=fallback_s)
        else:
            wait = br.connect_wait()
        up = self.ag.net.tl.next_up(path.down, t)
        if up + rtt > t + wait.timeout_s:
            self.ag.loop.at(t + wait.timeout_s, self._timed_out, (task, wait.opens))
            return
        if up <= t:  # answered to its first SYN: a sample (Karn's rule)
            br.observe_rtt(rtt)
        self.ag.to_controller(task, t)

    def _fallback_s(self, task: Task) -> float:
        """What the device expects the fallback to take, submission to result: the
        transfers and run its site's first edge server expects (``_expect``: what a
        device learns from its earlier fallbacks or an agent advertises)."""
        transfers, run = self._expect(task, self.site_edges[task.site][0])
        return transfers + run

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

    def _probe(self, br: Failover, path: Path, t: float) -> bool:
        """The device's background probes up to ``t``, one every ``Failover.probe_s``
        from the failure: the first sent while the path is up closes the breaker once
        its answer is back (a round trip later, a sample; an answer still on its way by
        ``t`` leaves it open for now). Returns whether it is still open."""
        rtt = 2 * path.lat
        is_up = self.ag.net.is_up
        while br.next_probe <= t:
            p = br.next_probe
            if is_up(path, p):
                if p + rtt <= t:
                    br.observe_rtt(rtt)
                    br.reached(p + rtt)
                return br.down_since is not None
            br.probe_sent(p)
        return br.down_since is not None

    def _to_agent(self, task: Task, t: float, offset: int | None = None) -> None:
        """The submission goes to an agent: a computing device's own first (``_own``;
        offset -1), then an edge server of the device's site (from the one its index
        picks, then the next; ``offset``: the ones already tried): a crashed
        one, or any while the device's own access link is down, leaves the connection
        unanswered for the device's RFC 6298 timeout on its edge path (``Failover.rto_s``
        over the round trips of its answered connections to its site's edges:
        ``CONNECT_TIMEOUT_S`` before the first, ``RTO_MIN_S`` at least, as for the
        controller); one whose plan has no room by the deadline (``_offer``) answers at
        once (a round trip). When none admits it, the submission goes to the
        controller after all."""
        ag = self.ag
        net, dev = ag.net, task.dev
        own = ag.topo.dev_node[dev]
        if offset is None:
            offset = -1 if own >= 0 else 0
        if offset < 0:
            if self._own(own, task, t):
                return
            offset = 0
        edges = self.site_edges[task.site]
        est = self.edge_rtt.get(dev)
        if est is None:
            est = self.edge_rtt[dev] = Failover()
        wait = est.rto_s  # RFC 6298 over the device's answered connections to its edges
        access_down = net.fallible[dev] and net.tl.next_up((dev,), t) > t
        if access_down:  # no agent answers either
            ag.to_controller(task, t + wait)
            return
        parts = net.part[task.site]
        first = (dev // ag.topo.sites) % len(edges)
        for i in range(offset, len(edges)):
            g = edges[(first + i) % len(edges)]
            part = parts[g]
            if not net.is_up(part, t):
                t += wait
                continue
            rtt = 2 * (net.net.lat[dev] + part.lat)
            est.observe_rtt(rtt)  # answered (admitted or refused): a sample
            if self._offer(g, task, t, i, part):
                return
            t += rtt
        ag.to_controller(task, t)

    def _own(self, g: int, task: Task, t: float) -> bool:
        """A computing device's own agent is offered the device's task first: the
        nearest agent (no transfer, no network: its own cut access link does not
        matter) decides by the same plan as an edge's (``_offer``). This is the
        agent's local API, not autonomy: a cut-off device's *own* decision to run new
        work (``Agents.arrive``, by its autonomy level) comes before the breaker; here
        the breaker already chose an agent, and the device's own is one."""
        if self.ag.net.restarted(g, t) > t:  # its agent is down
            return False
        return self._offer(g, task, t, -1, None)

    # ----------------------------------------------- an edge agent's local queue
    def _expect(self, task: Task, g: int) -> tuple[float, float]:
        """``(transfers, run)``: what edge ``g``'s agent expects of ``task``'s kind, in
        seconds: the input in and the result back over the device's path (latencies and
        the kind's mean sizes; none on the device's own node), and its mean run on one
        of ``g``'s cores (what an agent learns of a kind from its own runs; the
        simulator gives it the kind's means)."""
        ag = self.ag
        own = g == ag.topo.dev_node[task.dev]
        key = (-1 if own else task.site, task.tt, g)
        est = self._expected.get(key)
        if est is None:
            tt = ag.types[task.tt]
            transfers = 0.0
            if not own:
                part = ag.net.part[task.site][g]
                bw = min(part.bw, ag.net.net.bw[task.dev])
                bits = (sum(tt.input_kb, 0.0) + sum(tt.output_kb, 0.0)) / 2 * 8192.0
                transfers = 2 * (ag.net.net.lat[task.dev] + part.lat) + bits / bw
            est = self._expected[key] = (transfers, self._runs_on(g)[task.tt])
        return est

    def _runs_on(self, g: int) -> list[float]:
        """Per task kind, the run ``g``'s agent expects (its start cost and the kind's
        mean MI on one of its cores), computed once per node: ``started`` reads it for
        every attempt an agent runs."""
        runs = self._runs[g]
        if runs is None:
            topo = self.ag.topo
            start, mips = topo.start_s[g], topo.mips[g]
            runs = self._runs[g] = [
                start + sum(tt.compute_mi, 0.0) / 2 / mips for tt in self.ag.types
            ]
        return runs

    def _offer(self, g: int, task: Task, t: float, offset: int, part: Path | None) -> bool:
        """Edge ``g``'s agent is offered ``task`` at ``t``: it keeps it when its plan
        (``shared.autonomy.plan_edf``) can still finish it by its deadline, less the
        transfers, with every task it holds; queued tasks the plan refuses are handed
        back (``_hand_back``). A kept task's input comes with the submission."""
        transfers, run = self._expect(task, g)
        deadline = task.t_arr + self.ag.types[task.tt].deadline_s - transfers
        job = DeadlineJob(task.id, deadline, run)
        queue = self.queue.setdefault(g, [])
        plan = plan_edf(self._free_at(g, t), [q.job for q in queue], t, job)
        if not plan.admits(task.id):
            self._settle(g, plan, t)
            return False
        t_recv = t  # the device's own node (``part`` None) holds the input
        if part is not None:
            t_recv = self.ag.net.deliver_data(task.dev, part, t, task.in_bits + CONTROL_BITS)
        queue.append(_Queued(job, task, offset, t_recv))
        self._settle(g, plan, t)
        return True

    def _settle(self, g: int, plan: EdfPlan, t: float) -> None:
        """Apply ``plan`` to ``g``'s queue at ``t``: hand back what it refuses, start its
        head while a core is free (strict EDF), and look again when the next run on
        ``g`` ends (when none that the agent knows of runs, nothing it holds can start:
        the rest is handed back)."""
        queue = self.queue[g]
        kept = {job.key for job in plan.kept}
        for q in [q for q in queue if q.job.key not in kept]:
            queue.remove(q)
            self._hand_back(q, g, t)
        by_key = {q.job.key: q for q in queue}
        unseen = self._unseen(g, t)
        for job in plan.kept:
            q = by_key[job.key]
            if not self.ag.admit_local(g, q.task, unseen):
                break
            queue.remove(q)
            self._run_at_site(q, g, t)
        if not queue:
            return
        running = self.running[g]
        if not running:
            self._hand_back_all(g, t)
            return
        when = running[0][0]
        if not t < self.drain_at.get(g, -1.0) <= when:
            self.drain_at[g] = when
            self.ag.loop.at(when, self._drain, g)

    def _drain(self, g: int) -> None:
        """A run on ``g`` ended while its queue held tasks: plan again, start what fits
        (a crash ended it: the agent is down, its submitters try elsewhere)."""
        now = self.ag.loop.now
        if self.drain_at.get(g) == now:
            del self.drain_at[g]
        queue = self.queue.get(g)
        if not queue:
            return
        if self.ag.net.restarted(g, now) > now:  # the node crashed: its agent answers no one
            self._hand_back_all(g, now)
            return
        self._settle(g, plan_edf(self._free_at(g, now), [q.job for q in queue], now), now)

    def _free_at(self, g: int, t: float) -> list[float]:
        """When each of ``g``'s cores is free for queued work, as its agent expects: now
        for a free one, else the start of the run on it plus the run it expects. Only
        the attempts the agent has received count (``_unseen``)."""
        running = self.running[g]
        while running and running[0][0] <= t:
            heapq.heappop(running)
        topo = self.ag.topo
        cores = int(topo.cpus[g])
        seen = [r for r in running if r[2] <= t]
        free = topo.cpu_free[g] + sum((r[3] for r in running if r[2] > t), 0.0)
        busy = min(len(seen), max(0, cores - int(free)))
        ends = sorted(r[1] for r in seen)[:busy]
        return [t] * (cores - busy) + ends

    def _unseen(self, g: int, t: float) -> tuple[float, float, int]:
        """The cpu, memory and count of the attempts placed on ``g`` whose placement
        has not reached its agent by ``t`` (held by a cut of the controller's path):
        the controller's accounting reserves them from the placement on, but the agent
        knows only what it received, and admits its local work without them (in the
        product as here; the held attempt starts at the heal, when the agent has it).
        Counting them kept up to half of a cut site's edge cores out of its failover
        for a whole regional outage."""
        cpu = memory = 0.0
        n = 0
        for r in self.running[g]:
            if r[2] > t and r[0] > t:
                cpu += r[3]
                memory += r[4]
                n += 1
        return cpu, memory, n

    def started(self, at: Attempt) -> None:
        """Any attempt's run was scheduled on node ``at.node`` (``Agents.execute``): an
        edge server's agent keeps when it ends (``at.stop``, the moment it frees its
        core) and when it expects it to (its start plus the kind's expected run)."""
        g = at.node
        if self.is_agent[g]:
            k = at.task.tt
            runs = self._runs[g] or self._runs_on(g)
            tt = self.ag.types[k]
            entry = (at.stop, at.start + runs[k], at.t_recv, tt.cpu, tt.memory_mb)
            heapq.heappush(self.running[g], entry)

    def _hand_back(self, q: _Queued, g: int, t: float) -> None:
        """A queued task the plan refused: never started, so the device may send it
        elsewhere; it learns of it one way later and tries the next edge server then."""
        net, task = self.ag.net, q.task
        back = t
        if q.offset >= 0:  # from an edge (the device's own agent answers at once)
            back += net.net.lat[task.dev] + net.part[task.site][g].lat
        self.handed_back += 1
        self.ag.loop.at(back, self._try_next, q)

    def _hand_back_all(self, g: int, t: float) -> None:
        queue = self.queue[g]
        while queue:
            self._hand_back(queue.pop(0), g, t)

    def _try_next(self, q: _Queued) -> None:
        self._to_agent(q.task, self.ag.loop.now, q.offset + 1)

    def _run_at_site(self, q: _Queued, g: int, now: float) -> None:
        """Edge server ``g``'s agent starts the device's queued submission at ``now``
        (once its input is there): it runs it alone at ``causal`` (clamped into the
        task's bounds, never strong), the result back to the device. The controller
        learns of it with the node's sync; the run is left to its node (not in
        ``open_on``: no partition or trigger move)."""
        ag, task = self.ag, q.task
        tt = ag.types[task.tt]
        ag.topo.take(g, tt.cpu, tt.memory_mb)
        ag.counters.local_runs += 1
        self.failovers += 1
        task.level = clamp_level(Level.CAUSAL, lo=task.lo, hi=task.hi)
        task.epoch += 1
        at = Attempt(task, g, task.epoch, task.level, now, local=True)
        at.t_recv = q.t_recv
        path = ag.net.part[task.site][g] if q.offset >= 0 else None
        ag.execute(at, task, tt, g, max(q.t_recv, now), path)
        ag.counters.placed_tier[ag.node_tier[g]] += 1
        ag.loop.at(at.stop, ag.ended, at)


@dataclass(slots=True)
class _Queued:
    """A submission an edge agent holds: its plan entry, the task, the device's index
    into its site's edges (where to go on if handed back), when its input arrived."""

    job: DeadlineJob
    task: Task
    offset: int
    t_recv: float
