"""Parity of the decision cores beyond placement (see ``test_sim_parity.py``): retries,
re-placement triggers and dependent cancellation. Each trace goes to the real shells
(``cloud.controller.Controller`` on the in-memory bus with scripted nodes; for the
node's side of a retry, the agent's own report of an ended process,
``edge_agent.scheduler.status_of``, under its retry rule) and, as the same facts, to
the simulator's facades (``Simulation._attempt_end`` and the controller facade's
``ended``/``decide``; ``Workload.flow_step``). Compared:

- **retries**: whether the node retries an ended attempt itself (same node and epoch)
  and whether and at which tick the controller places it again (a new epoch elsewhere);
- **triggers** (adaptive mode): which task is on which node after each 1 s tick, for
  the latency bound against the node's round trip (with the 30 s cooldown) and for
  overload (one task per busy node and pass, while the busiest minus the idlest is 2);
- **dependent cancellation**: which layers of a workflow are released after each
  report, how many dependents are cancelled when a task fails, and the final status.

Both sides run with the harness's controller configuration. Where a move needs a
destination, the simulator's scheduler is replaced by the destination the real
controller chose (placement parity is ``test_sim_parity.py``'s and
``test_sim_placer.py``'s): the decisions compared are what moves and when.

Where the shells differ in *when* they act, the traces line the two up, and say so:

- the simulator's controller decides a retry when the report arrives
  (``Controller.ended``); the controller on its next tick (every ``tick_s``, 0.5 s by
  default): compared as the same pass, the first after the report;
- the controller cancels dependents one level per pass (the report's batch cancels the
  failed task's dependents, the next tick theirs); the simulator cancels every later
  layer at once (``Workload.flow_step``): compared once the controller has settled.

One drift is kept as a strict expected failure
(``test_a_trigger_with_nowhere_to_go_leaves_the_task_in_place``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloud.config import ControllerConfig
from edge_agent.executor import Outcome as ProcessOutcome
from edge_agent.scheduler import status_of
from shared.crdt import AttemptStatus
from shared.decisions import AttemptFacts, agent_retries
from shared.protocol import Heartbeat
from shared.vocab import Level
from simulations.sim.model import Simulation
from simulations.sim.records import INF, Attempt, Flow, Outcome, Task, TaskState
from simulations.sim.scenario import parse, parse_policy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cloud"))
from cloud_harness import NodeScript, make_config
from memory_bus import MemoryHarness

STEP = 1.0
DEADLINE_S = 3600.0  # far away: the controller counts deadlines on the wall clock
POOL = {"pool": "x"}


@contextmanager
def _harness(tmp: Path) -> Iterator[MemoryHarness]:
    tmp.mkdir(parents=True, exist_ok=True)
    h = MemoryHarness(tmp)
    try:
        yield h
    finally:
        h.close()


def _simulation(
    cfg: ControllerConfig, types: list[dict[str, Any]], *, edges: int, mode: str
) -> Simulation:
    """A simulator configured as the controller is, with ``edges`` edge nodes (one
    site) and no arrivals of its own: the trace supplies the work."""
    health, consistency = cfg.health, cfg.consistency
    sc = parse(
        {
            "kind": "sim",
            "name": "parity-moves",
            "duration_s": 1000,
            "topology": {
                "sites": 1,
                "device": {"count": 1},
                "edge": {"count": edges},
                "cloud": {"count": 0},
            },
            "workload": {"rate_per_device": 0.0, "types": types},
            "controller": {
                "telemetry_s": health.heartbeat_interval_s,
                "suspect_missed": health.suspect_missed,
                "confirm_after_s": health.confirm_after_s,
                "link_window_s": health.window_s,
                "lease_s": consistency.lease_s,
                "lease_margin_s": consistency.lease_margin_s,
                "upgrade_dwell_s": consistency.upgrade_dwell_s,
            },
        }
    )
    return Simulation(sc, parse_policy(f"{mode}/declared"))


def _sim_task(sim: Simulation, k: int, task_id: str, t: float = 0.0) -> Task:
    lo, hi = sim.workload.bounds(k)
    return Task(task_id, 0, 0, k, t, 1.0, 0.0, 0.0, 1.0, lo, hi, level=lo, epoch=0)


def _sim_place(sim: Simulation, task: Task, g: int, now: float) -> Attempt:
    """What the scheduler does with a placement: a new epoch on ``g``, not started."""
    task.epoch += 1
    sim.ctl.placed(task, g, now)
    at = Attempt(task, g, task.epoch, task.level, now, start=INF, stop=INF, report=INF)
    sim.ctl.open_on[g].append(at)
    return at


def _beat(h: MemoryHarness, node: NodeScript, rtt_ms: float | None = None) -> None:
    """A heartbeat (reporting ``rtt_ms``, as an agent's does) the controller answers."""
    hb = node.publish("up", Heartbeat(rtt_ms=rtt_ms))
    h.await_msg(node, "ack", lambda e: e.body.heartbeat_id == hb)


# ------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryCase:
    name: str
    level: str
    idempotent: bool
    max_attempts: int
    #: how the attempt ended on the node: a process outcome (``status_of`` reports it),
    #: or the restart sweep's ``agent_restart``
    ended: str
    sim: str  # the simulator's outcome for the same end

    def report(self) -> tuple[AttemptStatus, str | None]:
        """What the agent writes into the attempt (its own mapping)."""
        if self.ended == "agent_restart":
            return AttemptStatus.FAILED, "agent_restart"  # edge_agent/recovery.py
        return status_of(
            ProcessOutcome(
                task_id="r",
                attempt="r/1",
                reason=self.ended,
                exit_code=3 if self.ended == "exited" else None,
                signal=None,
                duration_s=0.1,
                result=None,
                stdout_tail="",
                stderr_tail="",
                deadline=None,
                fenced_at=None,
            )
        )


RETRY_CASES = [
    RetryCase("exit code", "causal", False, 3, "exited", Outcome.FAIL),
    RetryCase("exit code, budget spent", "causal", False, 1, "exited", Outcome.FAIL),
    RetryCase("fenced at the lease deadline", "strong", False, 3, "fenced", Outcome.FENCED),
    RetryCase("agent restart, not idempotent", "causal", False, 3, "agent_restart", Outcome.LOST),
    RetryCase("agent restart, idempotent", "eventual", True, 3, "agent_restart", Outcome.LOST),
    RetryCase("agent restart, strong", "strong", True, 3, "agent_restart", Outcome.LOST),
]
TICKS_RETRY = 15
#: (the node retries it itself, the tick at which the controller placed it again)
RetryDecision = tuple[bool, int | None]


def _retry_real(tmp: Path, case: RetryCase) -> RetryDecision:
    """The agent's rule on its own report; the controller on that report, tick by tick."""
    status, reason = case.report()
    node_retries = (
        agent_retries(
            AttemptFacts(node="n1", epoch=1, status=status, reason=reason),
            level=Level(case.level),
            idempotent=case.idempotent,
        )
        and case.max_attempts > 1  # edge_agent.scheduler.maybe_retry: the budget lasts
    )
    with _harness(tmp) as h:
        n1 = h.node("n1", labels=POOL)
        h.controller.submit_task(
            {
                "id": "r",
                "command": ["true"],
                "consistency": {"level": case.level},
                "idempotent": case.idempotent,
                "retry": {"max_attempts": case.max_attempts},
                "placement": {"labels": POOL},
                "deadline_s": DEADLINE_S,
            }
        )
        n1.expect("place", lambda e: e.body.task_id == "r")
        if case.level == "strong":
            n1.request_lease("r", 1, request_id="i1-1")
            assert h.await_msg(n1, "lease_grant").body.granted
        dot = n1.start("r", 1)
        h.node("n2", labels=POOL)
        h.keep_alive("n1", "n2")
        n1.finish("r", dot, status, reason=reason)
        h.pump_until(lambda: h.controller.get_task("r")["attempts"][-1]["status"] == "failed")
        for k in range(TICKS_RETRY + 1):
            if k:
                h.tick(STEP)
                h.keep_alive("n1", "n2")
            if h.controller.get_task("r")["epoch"] != 1:
                return node_retries, k
        return node_retries, None


def _retry_simulated(cfg: ControllerConfig, case: RetryCase) -> RetryDecision:
    """The simulator's end of an attempt (``Simulation._attempt_end``: its node's retry
    or the controller facade's ``ended``), then its ticks."""
    sim = _simulation(
        cfg,
        [
            {
                "name": "r",
                "level": case.level,
                "idempotent": case.idempotent,
                "max_attempts": case.max_attempts,
                "deadline_s": DEADLINE_S,
            }
        ],
        edges=2,
        mode="hybrid_dynamic",
    )
    ctl = sim.ctl
    n1, n2 = sim.topo.index["edge-0-0"], sim.topo.index["edge-0-1"]
    for g in (n1, n2):
        ctl.monitors[g].heard(0.0)
    ctl.decide(0.0, [])
    task = _sim_task(sim, 0, "r")
    at = _sim_place(sim, task, n1, 0.0)
    if case.level == "strong":
        ctl.leases.request(
            task_id="r",
            node="edge-0-0",
            epoch=1,
            duration_s=ctl.lease_policy.duration_s,
            now=0.0,
            placed_epoch=1,
            placed_node="edge-0-0",
        )
    at.start, at.stop, at.report, at.outcome = 0.0, 0.0, 0.0, case.sim
    retried: list[Attempt] = []
    placed_again: list[float] = []
    sim.agents.retry = retried.append  # type: ignore[method-assign]
    sim.sched.requeue = lambda task, now: placed_again.append(now)  # type: ignore[method-assign]
    sim._attempt_end(at)  # the node's decision; the controller's, at the report
    for k in range(TICKS_RETRY + 1):
        if k == 1:
            # The report reaches the controller facade (``ended``) and it decides at
            # once; the controller decides on its first tick after the report (every
            # ``tick_s``): the same pass, counted as the first.
            sim.loop.run(until=0.0)
        if k:
            t = k * STEP
            for g in (n1, n2):
                ctl.monitors[g].rtt(0.0, t)
            ctl.decide(t, [])
        if placed_again:
            return bool(retried), k
    return bool(retried), None


@pytest.mark.parametrize("case", RETRY_CASES, ids=lambda c: c.name)
def test_retries_are_decided_alike(tmp_path: Path, case: RetryCase) -> None:
    real = _retry_real(tmp_path, case)
    simulated = _retry_simulated(make_config(tmp_path), case)
    assert simulated == real, case
    # not vacuous: the node retries, or the controller places again, or neither when
    # the budget is spent, as the rules say
    expected = {
        "exit code": (True, None),
        "exit code, budget spent": (False, None),
        "fenced at the lease deadline": (False, 1),
        "agent restart, not idempotent": (False, 1),
        "agent restart, idempotent": (True, None),
        "agent restart, strong": (False, 1),
    }
    assert real == expected[case.name]


# ------------------------------------------------------------------------ triggers

#: per tick: each task's (node, epoch)
Where = list[tuple[tuple[str, int], ...]]


@dataclass(frozen=True)
class TriggerTrace:
    """Tasks placed on ``n1`` while it is the only node; then every node reports the
    round trip ``rtt(node, tick)`` (ms) after each controller tick."""

    name: str
    nodes: tuple[str, ...]
    tasks: tuple[str, ...]
    max_latency_ms: float | None
    rtt: Callable[[str, int], float]
    ticks: int


def _latency_rtt(node: str, k: int) -> float:
    """n1 slow and n2 fast, then (from tick 10) the other way round."""
    slow = "n1" if k < 10 else "n2"
    return 300.0 if node == slow else 10.0


TRIGGER_TRACES = [
    # the task leaves slow n1 at once; n2 turns slow at once too, but the task moved
    # less than 30 s ago: it goes back to n1 only when the cooldown is over
    TriggerTrace("latency", ("n1", "n2"), ("l",), 100.0, _latency_rtt, 40),
    # four tasks on n1, none on n2 and n3: one moves per pass while the busiest minus
    # the idlest is at least 2
    TriggerTrace(
        "overload", ("n1", "n2", "n3"), ("o0", "o1", "o2", "o3"), None, lambda n, k: 0.0, 8
    ),
]


def _trigger_config(tmp: Path) -> ControllerConfig:
    """Heartbeats every tick keep each node spoken-for: no ping (whose round trip, 0 ms
    on the bus, would mix with the reported ones) is ever due."""
    return make_config(tmp, health={"heartbeat_interval_s": 2.0})


def _trigger_spec(task_id: str, trace: TriggerTrace) -> dict[str, Any]:
    placement: dict[str, Any] = {"labels": POOL, "mode": "adaptive"}
    if trace.max_latency_ms is not None:
        placement["max_latency_ms"] = trace.max_latency_ms
    return {
        "id": task_id,
        "command": ["true"],
        "consistency": {"level": "eventual"},
        "idempotent": True,  # movable by policy: a stale start is a harmless hedge
        "placement": placement,
        "deadline_s": DEADLINE_S,
    }


def _trigger_real(tmp: Path, trace: TriggerTrace) -> Where:
    tmp.mkdir(parents=True, exist_ok=True)
    h = MemoryHarness(tmp, _trigger_config(tmp))
    try:
        first = h.node("n1", labels=POOL)
        for task_id in trace.tasks:
            h.controller.submit_task(_trigger_spec(task_id, trace))
            first.expect("place", lambda e, t=task_id: e.body.task_id == t)
        for node in trace.nodes[1:]:
            h.node(node, labels=POOL)
        for node in trace.nodes:
            _beat(h, h.nodes[node], trace.rtt(node, 0))
        out: Where = []
        for k in range(1, trace.ticks + 1):
            h.tick(STEP)
            for node in trace.nodes:
                _beat(h, h.nodes[node], trace.rtt(node, k))
            rows = [h.controller.get_task(t) for t in trace.tasks]
            out.append(tuple((r["node"], r["epoch"]) for r in rows))
        return out
    finally:
        h.close()


def _trigger_simulated(cfg: ControllerConfig, trace: TriggerTrace, real: Where) -> Where:
    """The controller facade's ``decide`` per tick on the same round trips; a move goes
    where the real controller placed it at that tick (``real``)."""
    kind: dict[str, Any] = {
        "name": "t",
        "level": "eventual",
        "idempotent": True,
        "deadline_s": DEADLINE_S,
    }
    if trace.max_latency_ms is not None:
        kind["max_latency_ms"] = trace.max_latency_ms
    sim = _simulation(cfg, [kind], edges=len(trace.nodes), mode="adaptive")
    ctl = sim.ctl
    index = {n: sim.topo.index[f"edge-0-{i}"] for i, n in enumerate(trace.nodes)}
    name = {g: n for n, g in index.items()}
    for g in index.values():
        ctl.monitors[g].heard(0.0)
    ctl.decide(0.0, [])
    tasks = {t: _sim_task(sim, 0, t) for t in trace.tasks}
    where = dict.fromkeys(tasks, index["n1"])
    for task in tasks.values():
        _sim_place(sim, task, index["n1"], 0.0)
    tick = 0

    def moved(task: Task, now: float) -> None:
        node, _ = real[tick - 1][trace.tasks.index(task.id)]
        where[task.id] = index[node]
        _sim_place(sim, task, index[node], now)

    sim.sched.enqueue = moved  # type: ignore[method-assign]
    for node, g in index.items():
        ctl.monitors[g].rtt(trace.rtt(node, 0), 0.0)
    out: Where = []
    for tick in range(1, trace.ticks + 1):
        t = tick * STEP
        changed = []
        for g, mon in enumerate(ctl.monitors):
            change = mon.poll(t)
            if change is not None:
                changed.append((g, change.old, change.new))
        ctl.decide(t, changed)
        for node, g in index.items():
            ctl.monitors[g].rtt(trace.rtt(node, tick), t)
        out.append(tuple((name[where[t]], task.epoch) for t, task in tasks.items()))
    return out


@pytest.mark.parametrize("trace", TRIGGER_TRACES, ids=lambda t: t.name)
def test_triggers_move_the_same_tasks_at_the_same_ticks(
    tmp_path: Path, trace: TriggerTrace
) -> None:
    real = _trigger_real(tmp_path, trace)
    simulated = _trigger_simulated(_trigger_config(tmp_path), trace, real)
    assert simulated == real
    moves = {k + 1 for k in range(trace.ticks) if real[k] != (real[k - 1] if k else None)}
    # not vacuous: the latency bound moves the task at once and back only after the
    # cooldown; overload moves one task per pass until the imbalance is below 2
    assert moves == ({1, 31} if trace.name == "latency" else {1, 2})


def test_a_trigger_with_nowhere_to_go_leaves_the_task_in_place(tmp_path: Path) -> None:
    """One node, too slow for the task's latency bound, and no other node to take it:
    ``trigger_move`` says move on both sides; the controller finds no node and leaves
    the task (no re-placement counted, no cooldown started, the attempt not superseded)."""
    trace = TriggerTrace("alone", ("n1",), ("l",), 100.0, lambda n, k: 300.0, 5)
    real = _trigger_real(tmp_path, trace)
    assert real == [(("n1", 1),)] * trace.ticks  # the controller finds no node: it stays
    sim = _simulation(
        _trigger_config(tmp_path),
        [{"name": "t", "level": "eventual", "idempotent": True, "max_latency_ms": 100.0}],
        edges=1,
        mode="adaptive",
    )
    ctl, g = sim.ctl, sim.topo.index["edge-0-0"]
    ctl.monitors[g].rtt(300.0, 0.0)
    task = _sim_task(sim, 0, "l")
    at = _sim_place(sim, task, g, 0.0)
    for k in range(1, trace.ticks + 1):
        ctl.decide(k * STEP, [])
        ctl.monitors[g].rtt(300.0, k * STEP)
    assert (task.replaced, at.superseded) == (0, False)


# ------------------------------------------------------------- dependent cancellation

WIDTH, DEPTH = 2, 3
#: a report: (layer, index in the layer, succeeded)
Report = tuple[int, int, bool]
#: after each report: (layers released, dependents cancelled, final status or None)
FlowState = list[tuple[tuple[int, ...], int, str | None]]

FLOW_TRACES: dict[str, list[Report]] = {
    "every task succeeds": [
        (0, 0, True),
        (0, 1, True),
        (1, 1, True),
        (1, 0, True),
        (2, 0, True),
        (2, 1, True),
    ],
    "a middle task fails": [(0, 0, True), (0, 1, True), (1, 0, False), (1, 1, True)],
    "a first task fails while its sibling runs": [(0, 1, False), (0, 0, True)],
}
_FINAL = ("succeeded", "failed", "cancelled")


def _flow_real(tmp: Path, reports: list[Report]) -> FlowState:
    ids = [[f"w{layer}-{i}" for i in range(WIDTH)] for layer in range(DEPTH)]
    with _harness(tmp) as h:
        node = h.node("n1", cpus=8)
        h.controller.submit_workflow(
            {
                "id": "wf",
                "tasks": [
                    {
                        "id": ids[layer][i],
                        "command": ["true"],
                        "retry": {"max_attempts": 1},
                        "depends_on": ids[layer - 1] if layer else [],
                    }
                    for layer in range(DEPTH)
                    for i in range(WIDTH)
                ],
            }
        )
        out: FlowState = []
        for layer, i, ok in reports:
            task_id = ids[layer][i]
            node.expect("place", lambda e, t=task_id: e.body.task_id == t)
            dot = node.start(task_id, 1)
            status = AttemptStatus.SUCCEEDED if ok else AttemptStatus.FAILED
            node.finish(task_id, dot, status)
            want = "succeeded" if ok else "failed"
            h.pump_until(lambda t=task_id, w=want: h.controller.get_task(t)["status"] == w)
            for _ in range(DEPTH - 1):  # one pass per level of dependents (see the doc)
                h.tick()
            rows = {t: h.controller.get_task(t) for row in ids for t in row}
            released = tuple(n for n, row in enumerate(ids) if all(rows[t]["epoch"] for t in row))
            cancelled = sum(1 for r in rows.values() if r["status"] == "cancelled")
            final = h.controller.get_workflow("wf")["status"]
            out.append((released, cancelled, final if final in _FINAL else None))
        return out


def _flow_simulated(cfg: ControllerConfig, reports: list[Report]) -> FlowState:
    """``Workload.flow_layer`` and ``flow_step`` on the same reports (a task's end as the
    simulator settles it: its state, then the workflow's step)."""
    sim = _simulation(cfg, [{"name": "w", "max_attempts": 1}], edges=1, mode="hybrid_dynamic")
    wl, c = sim.workload, sim.counters
    released: list[Task] = []
    wl.arrive = released.append  # type: ignore[method-assign]
    wl.flow_layer(Flow(0, 0, WIDTH, DEPTH, 0.0), 0.0)
    out: FlowState = []
    for t, (layer, i, ok) in enumerate(reports, start=1):
        task = released[layer * WIDTH + i]
        task.state = TaskState.SUCCEEDED if ok else TaskState.FAILED
        wl.flow_step(task, float(t))
        final = "succeeded" if c.flows_done else "failed" if c.flows_failed else None
        out.append((tuple(range(len(released) // WIDTH)), c.dependents_cancelled, final))
    return out


@pytest.mark.parametrize("name", FLOW_TRACES)
def test_workflows_release_and_cancel_alike(tmp_path: Path, name: str) -> None:
    reports = FLOW_TRACES[name]
    real = _flow_real(tmp_path, reports)
    assert _flow_simulated(make_config(tmp_path), reports) == real
    # not vacuous: where the trace ends, as the rules say
    assert (
        real[-1]
        == {
            "every task succeeds": ((0, 1, 2), 0, "succeeded"),
            "a middle task fails": ((0, 1), 2, "failed"),
            "a first task fails while its sibling runs": ((0,), 4, "failed"),
        }[name]
    )
