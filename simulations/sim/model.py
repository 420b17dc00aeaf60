"""The simulated continuum: one run of one scenario under one policy, in virtual time.

Only time, the network and execution are simulated; every decision is the
production code's, from ``shared``. The run is assembled from facades:

- ``topology.Topology``: sites, regions, devices, nodes and their resources;
- ``network.Network``: links, paths, outage timelines, delivery times;
- ``workload.Workload``: arrivals and workflows, drawn up front;
- ``scheduling.Scheduler``: the controller's placement queues and tables;
- ``controller.Controller``: failure detection, health, levels, leases,
  re-placement;
- ``agent.Agents``: a device's submission (autonomy) and each attempt's timeline.

This module wires them and settles each attempt's end (``_attempt_end``).
Outcomes: a task *succeeded* when a result reached its device by the end of the
run; *failed* when its retry budget is spent (execution failure, fencing) or no
node could take it for ``max_queue_s``; *lost* when its last attempt died with
its node (crash) and no retry was left; otherwise it is *in flight*.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from shared.crdt import AttemptStatus
from shared.decisions import AttemptFacts, agent_retries
from shared.placement import PREDICTED_MODES, update_success
from shared.vocab import Level
from simulations.sim.agent import REASONS, Agents
from simulations.sim.controller import Controller
from simulations.sim.inputs import PlacementInputs
from simulations.sim.ledger import LedgerReplay, replay
from simulations.sim.loop import Loop, make_loop
from simulations.sim.metrics import Counters, measure
from simulations.sim.network import Network
from simulations.sim.records import INF, Attempt, Outcome, Result, Task, TaskState
from simulations.sim.scenario import Policy, SimScenario, TaskType
from simulations.sim.scheduling import Scheduler
from simulations.sim.topology import Topology
from simulations.sim.workload import Workload

__all__ = ["Result", "Simulation", "simulate"]

_OPEN = TaskState.OPEN
_SUCCEEDED = TaskState.SUCCEEDED
_STRONG = Level.STRONG
_OK, _REFUSED = Outcome.OK, Outcome.REFUSED


class Simulation:
    """One run of one scenario under one policy (see the module docstring)."""

    def __init__(
        self,
        scenario: SimScenario,
        policy: Policy,
        *,
        seed: int | None = None,
        loop: str = "heap",
        placer: str = "cached",
        progress: Callable[[float, float], None] | None = None,
        trace: int = 0,
        node_labels: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.sc = scenario
        self.types = scenario.workload.types
        self.policy = policy
        self.mode = policy.mode
        self.seed = s = scenario.seed if seed is None else seed
        self.loop: Loop = make_loop(loop)
        #: when set (lists), first successes ``(type, submitted, execution end)`` and
        #: every attempt are recorded
        self.trace: list[tuple[int, float, float]] | None = None
        self.attempt_log: list[Attempt] | None = None
        self.counters = c = Counters()
        rng = np.random.default_rng([s, 11])
        self.topo = topo = Topology(scenario.topology, rng)
        self.net = net = Network(topo, scenario.links, scenario.controller, rng, s)
        self.inputs = inputs = PlacementInputs(
            scenario, topo, net, learn=self.mode in PREDICTED_MODES, node_labels=node_labels
        )
        self.sched = sched = Scheduler(
            scenario, self.mode, topo, c, self.loop, inputs, seed=s, placer=placer, trace=trace
        )
        net.draw_failures(topo, scenario.links, scenario.failures, scenario.duration_s, s)
        self.workload = wl = Workload(scenario, policy, topo, c, s)
        self.ctl = ctl = Controller(scenario, self.mode, topo, net, sched, wl, c, self.loop)
        self.agents = ag = Agents(
            scenario.workload.types,
            scenario.controller,
            topo,
            net,
            ctl.leases,
            ctl.lease_policy,
            ctl.opened,
            c,
            self.loop,
            s,
        )
        wl.arrive = ag.arrive
        ag.submit = sched.receive
        ag.ended = self._attempt_end
        ag.freed = self._free
        sched.place = self._place
        sched.level_of = ctl.level_of
        sched.done = self._finish
        sched.pump = wl.pump
        sched.progress = progress

    def _place(self, task: Task, g: int, now: float, run_s: float | None) -> Attempt:
        """A placement decision: the level on the chosen node, then the attempt."""
        self.ctl.placed(task, g, now, run_s)
        return self.agents.start(task, g, now)

    # ----------------------------------------------------------- outcomes
    def _attempt_end(self, at: Attempt) -> None:
        """An attempt stopped: settle what it means for its node and its task. The
        node retries it itself where ``shared.decisions.agent_retries`` says so;
        otherwise the controller decides on its report (``Controller.ended``)."""
        task, g = at.task, at.node
        strong = at.level is _STRONG
        outcome = at.outcome
        # re-placed before its lease request arrived: refused as a stale epoch, so
        # it never ran (fencing token = epoch)
        stale = strong and at.superseded and at.t_req >= at.superseded_at
        if stale or outcome == _REFUSED:
            outcome = at.outcome = _REFUSED
            at.start = at.stop
        if self.attempt_log is not None:
            self.attempt_log.append(at)
            at.start_rep = self.net.held_arrival(self.net.ctrl[g], at.start)
        tt = self.types[task.tt]
        topo, c = self.topo, self.counters
        if strong:
            self.ctl.leases.release(task.id, at.epoch)  # on its terminal report
        if outcome == _REFUSED:
            c.refused += 1
            if stale:
                self._free(at, tt)
                return
        ran = at.stop - at.start
        if not ran > 0.0:  # ``max(0.0, ran)``
            ran = 0.0
        if task.state is _SUCCEEDED and task.best < INF:
            # the controller cancels the others once a success is reported
            cancel_at = self.net.deliver(self.net.ctrl[g], task.report)
            if cancel_at < at.stop:
                at.cancel_at = cancel_at
                if self.attempt_log is not None:  # its cancel is reported, not its end
                    at.report = self.net.held_arrival(self.net.ctrl[g], cancel_at)
                topo.busy[g] += max(0.0, cancel_at - at.start) * tt.cpu
                c.cancelled += 1
                self._free(at, tt)
                return
        topo.busy[g] += ran * tt.cpu
        ok = outcome == _OK
        if outcome != _REFUSED:
            success = topo.success
            success[g] = update_success(success[g], ok)
            self.ctl.outcome(g, ok, ran)
        if ok:
            self._free(at, tt)
            self.inputs.finished(at)
            self._succeeded(at, task)
            return
        if at.superseded or task.state is not _OPEN:
            self._free(at, tt)
            return
        if outcome == Outcome.FENCED:
            c.fenced += 1
        task.attempts += 1
        if task.attempts >= tt.max_attempts:
            self._free(at, tt)
            self._finish(task, TaskState.LOST if outcome == Outcome.LOST else TaskState.FAILED)
            return
        facts = AttemptFacts(
            node=topo.node_ids[g],
            epoch=at.epoch,
            status=AttemptStatus.FAILED,
            reason=REASONS[outcome],
        )
        if agent_retries(facts, level=at.level, idempotent=tt.idempotent):
            c.retried += 1
            self.agents.retry(at)
            return
        self._free(at, tt)
        self.loop.at(max(at.report, self.loop.now), self.ctl.ended, at)

    def _free(self, at: Attempt, tt: TaskType | None = None) -> None:
        if tt is None:
            tt = self.types[at.task.tt]
        self.topo.give_back(at.node, tt.cpu, tt.memory_mb, at.work)
        if self.sched.exact:  # only exact mode retries on a release (``Scheduler.kick``)
            self.sched.kick()

    def _succeeded(self, at: Attempt, task: Task) -> None:
        c = self.counters
        task.executions += 1
        if task.executions > 1:
            c.duplicates += 1
            if not self.types[task.tt].idempotent:
                c.harm += 1
        t_done = at.t_done
        if t_done >= task.best:
            return
        task.best = t_done
        task.report = at.report
        if task.state is _OPEN:
            if self.trace is not None:
                self.trace.append((task.tt, task.t_arr, at.stop))
            task.state = _SUCCEEDED
            c.open_due.pop(task.id, None)
            task.result_at = len(c.lat)
            c.lat.append(t_done - task.t_arr)
            c.done_at.append(t_done)
            c.deadline.append(self.types[task.tt].deadline_s)
            if task.flow is not None:
                self.loop.at(t_done, self._flow_step, task)
        else:
            c.lat[task.result_at] = t_done - task.t_arr
            c.done_at[task.result_at] = t_done

    def _flow_step(self, task: Task) -> None:
        self.workload.flow_step(task, self.loop.now)

    def _finish(self, task: Task, state: TaskState) -> None:
        if task.state is not _OPEN:
            return
        task.state = state
        c = self.counters
        c.open_due.pop(task.id, None)
        if state is TaskState.FAILED:
            c.failed += 1
        else:
            c.lost += 1
        if task.flow is not None:
            self.workload.flow_step(task, self.loop.now)

    # -------------------------------------------------------------- traces
    def ledger(self) -> LedgerReplay:
        """Replay the traced attempts through ``shared.crdt`` (needs ``attempt_log``
        set before ``run``; small runs only, see ``simulations.sim.ledger``)."""
        views, specs = self.traced()
        return replay(views, specs, self.sc.duration_s, send=self.control_arrival)

    def control_arrival(self, node_id: str, t: float) -> float:
        """When a message the controller sends ``node_id`` at ``t`` arrives (the
        ledger's fan-out, ``simulations.sim.ledger.Send``)."""
        return self.net.held_arrival(self.net.ctrl[self.topo.index[node_id]], t)

    def traced(self) -> tuple[list[Any], dict[str, dict[str, Any]]]:
        """The traced attempts as ``ledger.replay`` reads them, and the task specs."""
        if self.attempt_log is None:
            raise RuntimeError("set sim.attempt_log = [] before run() to trace attempts")
        specs: dict[str, dict[str, Any]] = {}
        views = []
        for at in self.attempt_log:
            task = at.task
            tt = self.sc.workload.types[task.tt]
            specs[task.id] = {
                "id": task.id,
                "consistency": {"level": tt.level, "min": tt.min, "max": tt.max},
                "retry": {"max_attempts": tt.max_attempts},
            }
            views.append(
                SimpleNamespace(
                    task_id=task.id,
                    node_id=self.topo.node_ids[at.node],
                    epoch=at.epoch,
                    level=at.level,
                    local=at.local,
                    retry=at.retry,
                    t_place=at.t_place,
                    t_recv=at.t_recv,
                    start=at.start,
                    start_rep=at.start_rep,
                    stop=at.stop,
                    report=at.report,
                    outcome=at.outcome,
                    cancel_at=at.cancel_at,
                    fence=at.fence,
                )
            )
        return views, specs

    # ----------------------------------------------------------- injection
    def inject(
        self,
        *,
        arrivals: list[tuple[float, int, int, float, float, float, float]] | None = None,
        flows: list[tuple[float, int, int]] | None = None,
        local: list[tuple[float, str, int, float]] | None = None,
        uplink_down: dict[str, list[tuple[float, float]]] | None = None,
        crashes: dict[str, list[tuple[float, float]]] | None = None,
    ) -> None:
        """Replace the drawn workload with explicit arrivals ``(t, device, type,
        MI, input bits, output bits, failure draw)`` and workflow starts ``(t,
        workflow index, device)``, add submissions to a node's own local API
        ``(t, node id, type, MI)``, and add outages of one node's own uplink or of
        the node itself (a timeline from a testbed scenario). Call before ``run``."""
        self.workload.replace(arrivals, flows)
        for t, node_id, k, mi in local or ():
            task = self.workload.new_task(0, k, t, mi, 0.0, 0.0, 1.0)
            self.loop.at(t, self.agents.submit_local, (task, self.topo.index[node_id]))
        net, index = self.net, self.topo.index
        for base, table in ((net.up, uplink_down or {}), (net.node, crashes or {})):
            for node_id, intervals in table.items():
                net.add_outages(base + index[node_id], intervals)
        net.mark_fallible()

    # ------------------------------------------------------------------ run
    def run(self) -> Result:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        loop, wl = self.loop, self.workload
        dt = self.sc.controller.placement_interval_s
        if dt > 0:
            loop.at(0.0, self.sched.tick, 0)
        else:
            for i in range(len(wl.arr_t)):
                loop.at(float(wl.arr_t[i]), wl.arrival_event, i)
        for item in wl.flow_starts:
            loop.at(item[0], wl.flow_start, item)
        loop.at(0.0, self.ctl.telemetry)
        self.sched.trace(len(wl.arr_t))
        # The run allocates a Task and an Attempt per task and frees them without
        # cycles, so the cyclic collector only re-walks the live ones (about 7 % of
        # the run's CPU on pureedgesim-10k); refcounting frees everything as before
        # and the collector runs again once the loop is done.
        collecting = gc.isenabled()
        gc.disable()
        try:
            loop.run(self.sc.duration_s)
        finally:
            if collecting:
                gc.enable()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        events = self.loop.events + self.counters.generated
        metrics, latencies = measure(
            self.counters, self.sc, self.topo, self.net, events=events, wall=wall, cpu=cpu
        )
        metrics["shapes_prepared"] = self.sched.cache.prepared
        return Result(
            scenario=self.sc.name,
            policy=self.policy.name,
            seed=self.seed,
            metrics=metrics,
            latencies=latencies,
            trace=self.sched.traced,
        )


def simulate(
    scenario: SimScenario,
    policy: Policy,
    *,
    seed: int | None = None,
    loop: str = "heap",
    placer: str = "cached",
    progress: Callable[[float, float], None] | None = None,
    trace: int = 0,
) -> Result:
    """Build and run one simulation (``trace``: keep about that many sampled
    placement decisions with their explanation in ``Result.trace``)."""
    return Simulation(
        scenario, policy, seed=seed, loop=loop, placer=placer, progress=progress, trace=trace
    ).run()
