"""The simulated agents: a device's submission, and each attempt's timeline on its node.

When a task appears at its device, a computing device that is cut off from the
controller runs it itself when ``shared.autonomy`` says it is autonomous enough,
the level allows it (``may_start``) and it has room (``admit``); otherwise the
submission travels to the controller. A plain device submits by its breaker
(``simulations.sim.failover``): to the controller, or, once an attempt found the
controller out of reach, to an edge server of its site, whose agent runs it alone.
When the controller places an attempt, its
whole timeline is computed at once from the link timelines: placement message →
(strong: lease request and grant from ``LeaseBook``) → input transfer → start
cost + MI / MIPS → result at the device (strong: and the controller's ack). A
crash of the node inside that window loses the attempt; a strong attempt whose
control path stays down past its lease is fenced at the agent's deadline
(``LeasePolicy.agent_deadline``). The attempt's end is one loop event.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable

from shared.autonomy import (
    AutonomyLevel,
    admit,
    autonomy_level,
    connectivity,
    may_start,
)
from shared.consistency import LeaseBook, LeasePolicy
from shared.health import clamp_level
from shared.model import RetryPolicy, backoff_delay
from shared.vocab import Level, Tier
from simulations.sim.failover import PlainDevices
from simulations.sim.loop import Loop
from simulations.sim.metrics import Counters
from simulations.sim.network import Network, Path
from simulations.sim.records import Attempt, Outcome, Task, TaskState
from simulations.sim.scenario import Controller as ControllerSpec
from simulations.sim.scenario import TaskType
from simulations.sim.topology import Topology

__all__ = ["REASONS", "Agents"]

_STRONG = Level.STRONG
_OK = Outcome.OK
#: Why an ended attempt failed, as the node reports it (``shared.decisions.agent_retries``).
REASONS = {
    "fail": "exit",
    "lost": "agent_restart",
    "fenced": "fenced",
    "refused": "lease_refused",
}


class Agents:
    """Every device and node agent of the run (see the module docstring).

    ``submit(task, t)`` hands a submission that reached the controller at ``t`` to
    the controller; ``ended(attempt)`` is called at each attempt's stop time."""

    def __init__(
        self,
        types: tuple[TaskType, ...],
        spec: ControllerSpec,
        topo: Topology,
        net: Network,
        leases: LeaseBook,
        lease_policy: LeasePolicy,
        opened: Callable[[int, Attempt], None],
        counters: Counters,
        loop: Loop,
        seed: int,
    ) -> None:
        self.types = types
        self.spec = spec
        self.topo = topo
        self.net = net
        self.leases = leases
        self.lease_policy = lease_policy
        #: hands the controller each attempt it may have to decide on while it runs
        #: (``Controller.opened``)
        self.opened = opened
        self.counters = counters
        self.loop = loop
        self.rng = random.Random(f"{seed}:retry")
        #: per node with an executor limit, when each busy slot frees (a heap)
        self.busy: list[list[float]] = [[] for _ in range(topo.count)]
        #: per node, when its agent's task supervisor is up (None: not started yet)
        self.supervisor_up: list[float | None] = [None] * topo.count
        self.submit: Callable[[Task, float], None] = lambda task, t: None
        self.ended: Callable[[Attempt], None] = lambda at: None
        self.node_tier = topo.node_tier
        self.dev_node = topo.dev_node
        #: an attempt gave its resources back
        self.freed: Callable[[Attempt], None] = lambda at: None
        #: the plain devices' submissions and failover (``simulations.sim.failover``)
        self.plain = PlainDevices(self)
        self.is_agent = self.plain.is_agent
        # what every attempt reads, bound once (the per-task path)
        self.commit_s = spec.commit_s
        self.ctrl, self.part = net.ctrl, net.part
        self.placed_tier = counters.placed_tier
        self.slots, self.mips, self.start_s = topo.slots, topo.mips, topo.start_s
        self.supervisor_start_s = topo.supervisor_start_s

    # ------------------------------------------------------------- devices
    def arrive(self, task: Task) -> None:
        """A task appears at its device at ``task.t_arr``: a computing device runs it
        itself when it is cut off and autonomy allows; otherwise the device, computing
        or plain, submits by its breaker (``PlainDevices.submit``: the controller, or
        an edge agent of its site when the controller is out of reach)."""
        t = task.t_arr
        net = self.net
        path = net.dev_ctrl[task.dev]
        g = self.topo.dev_node[task.dev]
        if g < 0:
            self.plain.submit(task, path, t)
            return
        since = net.tl.down_since(path.down, t)
        if since is not None:
            autonomy = autonomy_level(connectivity(t - since, self.spec.ack_period_s))
            # a device's own submissions run as causal or eventual (docs/agent.md)
            level = clamp_level(Level.CAUSAL, lo=task.lo, hi=task.hi)
            if (
                autonomy.rank >= AutonomyLevel.HIGHLY_AUTONOMOUS.rank
                and level is not _STRONG
                and may_start(level, None, t)
                and self.admit_local(g, task)
            ):
                task.level = level
                self._run_local(task, g, t)
                return
        self.plain.submit(task, path, t)

    def to_controller(self, task: Task, t: float) -> None:
        """The submission leaves the device for the controller at ``t`` (held while
        the path is down: the device's MQTT session keeps it)."""
        t_c = self.net.control(self.net.dev_ctrl[task.dev], t)
        task.entered = task.t_ctrl = t_c
        self.submit(task, t_c)

    def submit_local(self, item: tuple[Task, int]) -> None:
        """A task submitted to node ``g``'s own local API: the node runs it itself,
        at its declared level (an agent accepts causal or eventual work alone)."""
        task, g = item
        task.level = task.lo
        self._run_local(task, g, task.t_arr)

    def admit_local(
        self, g: int, task: Task, unseen: tuple[float, float, int] = (0.0, 0.0, 0)
    ) -> bool:
        """May node ``g``'s agent start ``task`` now (``shared.autonomy.admit``)?
        ``unseen``: the cpu, memory and count of the attempts placed on ``g`` whose
        placement has not reached its agent yet (held by a cut): reserved in the
        controller's accounting, unknown to the agent."""
        tt = self.types[task.tt]
        topo = self.topo
        cpus = float(topo.cpus[g])
        free = float(topo.cpu_free[g]) + unseen[0]
        decision = admit(
            {"cpu": tt.cpu, "memory_mb": tt.memory_mb},
            {"cpus": cpus, "memory_free_mb": float(topo.mem_free[g]) + unseen[1]},
            {"cpu": cpus - free},
            running=int(topo.running[g]) - unseen[2],
        )
        return bool(decision) and tt.cpu <= free

    def _run_local(self, task: Task, g: int, t: float) -> None:
        """Autonomy: the device runs its own task while cut off (no controller round trips)."""
        tt = self.types[task.tt]
        self.topo.take(g, tt.cpu, tt.memory_mb)
        self.counters.local_runs += 1
        task.epoch += 1
        at = Attempt(task, g, task.epoch, task.level, t, local=True)
        at.t_recv = at.start = t
        self.execute(at, task, tt, g, t, None)
        self.counters.placed_tier[Tier.DEVICE] += 1
        self.opened(g, at)
        self.loop.at(at.stop, self.ended, at)

    # --------------------------------------------------------------- nodes
    def start(self, task: Task, g: int, now: float) -> Attempt:
        """The controller placed ``task`` on node ``g`` at ``now`` (resources already
        taken): compute the attempt's timeline and schedule its end. The placement
        leaves once the controller's store committed it (``commit_s``, cloud/uow.py)."""
        task.epoch = epoch = task.epoch + 1
        at = Attempt(task, g, epoch, task.level, now)
        self.placed_tier[self.node_tier[g]] += 1
        at.t_recv = self.net.control(self.ctrl[g], now + self.commit_s)
        self._begin(at, task, g, True)
        return at

    def _begin(self, at: Attempt, task: Task, g: int, with_input: bool) -> None:
        """From the placement's arrival ``at.t_recv``: (strong) the lease round trip
        (request hop, the controller's durable commit of the grant, grant hop: what a
        strong start costs beyond an eventual one, whose journal commits it shares), the
        input transfer, execution; the end is scheduled."""
        tt = self.types[task.tt]
        net = self.net
        ctrl = self.ctrl[g]
        t_recv = ready = at.t_recv
        if at.level is _STRONG and not at.local:
            at.t_req = t_req = net.control(ctrl, t_recv)
            decision = self.leases.request(
                task_id=task.id,
                node=self.topo.node_ids[g],
                epoch=at.epoch,
                duration_s=self.lease_policy.duration_s,
                now=t_req,
                placed_epoch=task.epoch,
                placed_node=self.topo.node_ids[g],
            )
            ready = at.t_grant = net.control(ctrl, t_req + self.spec.commit_s)
            # a grant held by a cut can arrive after the agent's deadline for its
            # request (``agent_deadline`` from the send): expired, it may not start
            policy = self.lease_policy
            late = ready >= policy.agent_deadline(t_recv, policy.duration_s)
            if not decision.granted or late:  # the attempt may not start (docs/consistency.md)
                at.stop, at.outcome = ready, Outcome.REFUSED
                at.report = net.control(ctrl, ready)
                self.opened(g, at)
                self.loop.at(at.stop, self.ended, at)
                return
        # input data from the device to the node (already there for a retry)
        if g == self.dev_node[task.dev]:
            t_in, data_path = t_recv, None
        else:
            data_path = self.part[task.site][g]
            t_in = (
                net.deliver_data(task.dev, data_path, t_recv, task.in_bits)
                if with_input
                else t_recv
            )
        self.execute(at, task, tt, g, t_in if t_in > ready else ready, data_path)
        self.opened(g, at)
        self.loop.at(at.stop, self.ended, at)

    def retry(self, at: Attempt) -> None:
        """The node retries ``at`` itself (``shared.decisions.agent_retries`` said so):
        same node, same epoch, after ``shared.model.backoff_delay`` from the failure
        (from the restart after a crash); it keeps the attempt's resources."""
        task = at.task
        tt = self.types[task.tt]
        policy = RetryPolicy(max_attempts=tt.max_attempts, backoff_s=self.spec.retry_backoff_s)
        t0 = self.net.restarted(at.node, at.stop)
        self.loop.at(t0 + backoff_delay(policy, task.attempts, self.rng), self._retry_now, at)

    def _retry_now(self, old: Attempt) -> None:
        task, g = old.task, old.node
        now = self.loop.now
        back = self.net.restarted(g, now)
        if back > now:  # the node is down: its agent retries once it restarts
            self.loop.at(back, self._retry_now, old)
            return
        superseded = old.epoch != task.epoch and old.level is _STRONG  # lease refused
        if task.state is not TaskState.OPEN or superseded:
            self.freed(old)
            return
        contact = self._held_until(old, now)
        if contact is not None:
            self.loop.at(contact, self._retry_on_contact, old)
            return
        at = Attempt(task, g, old.epoch, old.level, now, local=old.local, retry=old.retry + 1)
        at.work = old.work
        at.t_recv = now
        self._begin(at, task, g, False)

    def _held_until(self, old: Attempt, now: float) -> float | None:
        """The agent's start gate (``shared.autonomy.may_start``) on a retry of its own:
        a causal attempt does not start once the controller has been silent for the
        task's ``max_disconnect_s`` (silent since its control path went down), the
        bound after which the controller may re-place it. It waits for the next
        contact (returned), which brings the newer placement if there is one. A
        strong retry asks for a lease instead (``_begin``); the node's own local runs
        stay its own (as a local submission pinned to its node, never re-placed)."""
        if old.level is _STRONG or old.local:
            return None
        links = self.net.control_links(self.net.ctrl[old.node])
        since = self.net.tl.down_since(links, now)
        if since is None or may_start(
            old.level,
            None,
            now,
            out_of_contact_s=now - since,
            max_disconnect_s=self.types[old.task.tt].max_disconnect_s,
        ):
            return None
        return self.net.tl.next_up(links, now)

    def _retry_on_contact(self, old: Attempt) -> None:
        """A held retry at the next contact: dropped if the controller placed the task
        anew meanwhile (the contact brings that record), else retried now."""
        if old.epoch != old.task.epoch:
            self.freed(old)
            return
        self._retry_now(old)

    def execute(
        self, at: Attempt, task: Task, tt: TaskType, g: int, start: float, data_path: Path | None
    ) -> None:
        """Execution from ``start`` (or once one of the node's executor slots frees:
        the agent queues what it cannot run yet): where it stops (crash, fence,
        failure) and when its report and result arrive."""
        net = self.net
        sup = self.supervisor_start_s[g]
        if sup:
            up = self.supervisor_up[g]
            if up is None:  # the first launch starts it, from the placement's arrival on
                up = self.supervisor_up[g] = at.t_recv + sup
            start = max(start, up)
        slots = self.slots[g]
        if slots:
            busy = self.busy[g]
            while busy and busy[0] <= start:
                heapq.heappop(busy)
            if len(busy) >= slots:
                start = heapq.heappop(busy)
        at.start = start
        at.end = end = start + self.start_s[g] + task.mi / self.mips[g]
        stop, outcome = end, _OK
        crash = net.crash_in(g, at.t_recv, end)
        if crash is not None:
            stop, outcome = crash, Outcome.LOST
        strong = at.level is _STRONG
        if strong and not at.local:
            fence = self._fence_time(self.ctrl[g], at.t_recv, at.t_grant, stop)
            if fence is not None and fence < stop:
                stop, outcome = fence, Outcome.FENCED
        if outcome is _OK and task.fail_u < tt.fail_rate:
            outcome = Outcome.FAIL
        at.stop, at.outcome = stop, outcome
        if self.is_agent[g]:  # ``PlainDevices.started`` keeps only an agent's runs
            self.plain.started(at)
        if slots:
            heapq.heappush(self.busy[g], stop)
        # the report to the controller; on success, the result at the device
        at.report = report = net.control(self.ctrl[g], stop)
        if outcome is not _OK:
            return
        if data_path is None:
            at.t_done = stop
        else:
            at.t_done = net.deliver_data(task.dev, data_path, stop, task.out_bits)
        if strong:
            # state changes count once the controller acknowledged them
            ack_at_device = net.control(net.dev_ctrl[task.dev], report)
            at.t_done = max(at.t_done, ack_at_device)

    def _fence_time(self, ctrl: Path, t_recv: float, t_grant: float, stop: float) -> float | None:
        """Where an outage of the control path outlasts the lease: the agent's deadline
        (``LeasePolicy.agent_deadline`` from the last renewal sent before the outage)."""
        net = self.net
        links = net.control_links(ctrl)
        a = net.tl.first_down(links, t_grant, stop)
        if a is None:
            return None
        back = net.tl.next_up(links, a)
        policy = self.lease_policy
        period = policy.duration_s * policy.renew_fraction
        last_send = t_recv + math.floor((a - t_recv) / period) * period
        deadline = policy.agent_deadline(last_send, policy.duration_s)
        return deadline if deadline < back else None
