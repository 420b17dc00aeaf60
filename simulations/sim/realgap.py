"""Sim-to-real: run a *testbed* scenario in the simulator and compare with a testbed run.

The testbed's own planner (``simulations.testbed.plan.make_plan``) expands the
scenario into nodes, fault steps and timed submissions with the same seed, so
the simulator sees the very tasks, sleeps and faults the real processes see:

- topology: one site; the submitter is a device that does not compute (the
  testbed posts to the controller's API); each agent is a node of its tier;
  every hop is a loopback hop (``LOOPBACK_MS``); a placement leaves the controller once
  its store committed it (a commit, ``MachineTiming.commit_s``); an execution costs the
  durable writes before the task's work (``START_FSYNCS`` commits), a process start
  (``MachineTiming.process_start_s``) and its ``--sleep-ms`` (1 MI = 1 ms at 1000 MIPS);
  an agent's first execution also waits for its supervisor (``SUPERVISOR_START_S``);
  a strong start waits for the lease round trip: request hop, the controller's
  durable commit of the grant, grant hop. The two machine costs are the defaults of
  ``simulations.sim.realgap_machine.MachineTiming`` unless measured (the bench measures
  them before each testbed run, under that run's load);
- faults: ``partition``/``flap`` of an agent → outages of that agent's own uplink
  until its ``heal``; ``kill`` → a node outage until ``restart`` (the attempt dies);
  ``controller-cut`` → every agent's uplink; ``delay``, ``throttle``, ``reset``
  and a controller restart are not modelled (listed in ``unmodelled``);
- workload: every planned task with its level, bounds, sleep and deadline (none
  unless its spec has one); workflows as layered DAGs of the same width and depth;
- the controller places in the testbed controller's own mode (its config's
  ``placement.mode``).

Reported, per level as the testbed reports them: task latency from submission to
the end of the first successful execution (count, p50, p95, max), and per heal
the time until the controller's replica held everything the healed node's replica
held, found by replaying the run's deltas through ``shared.crdt``
(``simulations.sim.ledger``). With ``--testbed-report report.json`` of a real
run, the two are put side by side with their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.vocab import PlacementMode, Tier
from simulations.sim.ledger import converged_at, observed_convergence, replay
from simulations.sim.model import Simulation
from simulations.sim.realgap_config import testbed_configs, testbed_timing
from simulations.sim.realgap_machine import DEFAULT_MACHINE, MachineTiming
from simulations.sim.scenario import (
    LinkClass,
    Links,
    NodeClass,
    Policy,
    SimScenario,
    TaskType,
    Topology,
    Workflow,
    Workload,
)
from simulations.testbed.metrics import percentile
from simulations.testbed.observe import POLL_S
from simulations.testbed.plan import Plan, make_plan
from simulations.testbed.scenario import Scenario, load_scenario
from simulations.testbed.scenario import scenario_dir as testbed_dir

__all__ = [
    "LOOPBACK_MS",
    "START_FSYNCS",
    "SUPERVISOR_START_S",
    "SimRun",
    "compare",
    "main",
    "run_testbed_scenario",
]

#: One hop over loopback through the broker (publish → deliver), one way.
LOOPBACK_MS = 2.0
#: The agent starts its task supervisor (a Python interpreter) on its first launch and
#: that launch waits for it: 44-83 ms from spawn to its hello, median 59, over 8 starts
#: on this machine at a load of 5.3 (2026-12-02).
SUPERVISOR_START_S = 0.06
#: Durable writes between a placement's arrival and the task's work, one fsync each
#: (``MachineTiming.commit_s``): the agent's journal commits of the placement
#: (edge_agent/inbound.py) and of the start (edge_agent/scheduler.py ``settle``: a start is
#: durable before it is launched), and the ledger task's fsync'd ``start`` line, after
#: which its sleep begins (simulations/testbed/ledger_task.py). A strong start has the
#: same two agent commits (the grant is journaled in the start's transaction).
START_FSYNCS = 3
_CUT_OPS = ("partition", "flap", "controller-cut")


def _key(body: dict[str, Any]) -> tuple[Any, ...]:
    """What distinguishes the simulated task types of a plan."""
    c = body["consistency"]
    labels = tuple(sorted((body.get("placement") or {}).get("labels", {}).items()))
    return (
        c["level"],
        c.get("min"),
        c.get("max"),
        body.get("max_disconnect_s", 300.0),
        labels,
        bool(body.get("idempotent")),
        body.get("deadline_s"),
    )


def _sleep_ms(command: list[str]) -> float:
    if "--sleep-ms" in command:
        return float(command[command.index("--sleep-ms") + 1])
    return 0.0


Windows = dict[str, list[tuple[float, float]]]


def _fault_windows(
    plan: Plan, end: float
) -> tuple[Windows, Windows, list[str], list[tuple[str, str, float]]]:
    """Per node: uplink outages, node outages; the steps not modelled; heals."""
    ids = [n.node_id for n in plan.nodes]
    cut_since: dict[str, tuple[float, str, dict[str, Any]]] = {}
    down_since: dict[str, float] = {}
    uplink: dict[str, list[tuple[float, float]]] = defaultdict(list)
    crash: dict[str, list[tuple[float, float]]] = defaultdict(list)
    unmodelled: list[str] = []
    heals: list[tuple[str, str, float]] = []

    def close(node: str, t: float) -> None:
        start, op, params = cut_since.pop(node)
        if op == "flap":
            down, up = float(params.get("down_s", 1.0)), float(params.get("up_s", 1.0))
            a = start
            while a < t:
                uplink[node].append((a, min(a + down, t)))
                a += down + up
        else:
            uplink[node].append((start, t))
        heals.append((node, op, t))

    for step in plan.steps:
        nodes = ids if step.op.startswith("controller") else list(step.nodes)
        if step.op in _CUT_OPS:
            for n in nodes:
                if n not in cut_since:
                    cut_since[n] = (step.at, step.op, dict(step.params))
        elif step.op in ("heal", "controller-heal"):
            for n in nodes:
                if n in cut_since:
                    close(n, step.at)
        elif step.op == "kill":
            for n in nodes:
                down_since.setdefault(n, step.at)
        elif step.op == "restart":
            for n in nodes:
                if n in down_since:
                    crash[n].append((down_since.pop(n), step.at))
                    heals.append((n, "restart", step.at))
        else:
            unmodelled.append(f"{step.op}@{step.at:g}")
    for n in list(cut_since):
        close(n, end)
    for n, t in down_since.items():
        crash[n].append((t, end))
    return dict(uplink), dict(crash), unmodelled, heals


def to_sim(
    scenario: Scenario, plan: Plan, machine: MachineTiming = DEFAULT_MACHINE
) -> tuple[SimScenario, dict[str, str], list[tuple[Any, ...]], list[TaskType]]:
    """The simulator scenario for a testbed plan on a machine of ``machine``'s costs, the
    agent → sim node map, and the task types (one per distinct level, bounds and
    ``max_disconnect_s``) with their keys."""
    counts: dict[Tier, int] = defaultdict(int)
    for n in plan.nodes:
        counts[Tier(n.tier)] += 1
    first = plan.nodes[0]
    hop = LinkClass(latency_ms=LOOPBACK_MS / 2, spread=0.2, jitter_ms=0.5, bandwidth_mbps=1000)
    fast = LinkClass(latency_ms=0.0, spread=0.0, jitter_ms=0.0, bandwidth_mbps=10000)
    agent, ctl = testbed_configs(scenario, plan)

    def node_class(count: int) -> NodeClass:
        return NodeClass(
            count=count,
            cpus=first.cpus,
            mips=1000.0,
            memory_mb=float(first.memory_mb),
            start_s=machine.process_start_s + START_FSYNCS * machine.commit_s,
            supervisor_start_s=SUPERVISOR_START_S,
            slots=agent.executor.max_concurrent,
        )

    types: list[TaskType] = []
    keys: list[tuple[Any, ...]] = []
    for sub in plan.submissions:
        bodies = list(sub.body["tasks"]) if sub.kind == "workflow" else [sub.body]
        for body in bodies:
            c = body["consistency"]
            key = _key(body)
            if key not in keys:
                keys.append(key)
                types.append(
                    TaskType(
                        name=f"{c['level']}-{len(types)}",
                        compute_mi=(1.0, 1.0),
                        input_kb=(0.0, 0.0),
                        output_kb=(0.0, 0.0),
                        # none unless the spec has one (infinite: ranked without one)
                        deadline_s=math.inf if key[6] is None else float(key[6]),
                        cpu=float(body["resources"]["cpu"]),
                        memory_mb=float(body["resources"]["memory_mb"]),
                        level=c["level"],
                        min=c.get("min") or "eventual",
                        max=c.get("max") or "strong",
                        max_disconnect_s=float(key[3]),
                        max_attempts=int(body["retry"]["max_attempts"]),
                        labels=tuple(f"{k}={v}" for k, v in key[4]),
                        idempotent=key[5],
                    )
                )
    sim = SimScenario(
        name=f"{scenario.name} (simulated)",
        description=f"testbed scenario {scenario.name} run in the simulator",
        duration_s=plan.duration_s + scenario.settle_s,
        seed=plan.seed,
        policies=(Policy(PlacementMode(ctl.placement.mode), "declared"),),
        topology=Topology(
            sites=1,
            regions=1,
            device=NodeClass(count=1, compute_share=0.0),
            edge=node_class(counts[Tier.EDGE] + counts[Tier.DEVICE]),
            regional=node_class(counts[Tier.REGIONAL]),
            cloud=node_class(counts[Tier.CLOUD]),
        ),
        links=Links(access=fast, metro=hop, wan=hop, lan=hop),
        workload=Workload(rate_per_device=0.0, types=tuple(types) or (TaskType(),)),
        controller=replace(testbed_timing(agent, ctl), commit_s=machine.commit_s),
    )
    # agents in plan order → sim node ids of their tier, in order
    per_tier: dict[Tier, int] = defaultdict(int)
    names = {}
    for n in plan.nodes:
        tier = Tier(n.tier)
        k = per_tier[tier]
        per_tier[tier] += 1
        names[n.node_id] = {
            Tier.EDGE: f"edge-0-{k}",
            Tier.DEVICE: f"edge-0-{counts[Tier.EDGE] + k}",
            Tier.REGIONAL: f"reg-0-{k}",
            Tier.CLOUD: f"cloud-{k}",
        }[tier]
    return sim, names, keys, types


class SimRun:
    """A testbed scenario simulated: latencies by level and convergence after heals."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        machine: MachineTiming = DEFAULT_MACHINE,
    ) -> None:
        self.scenario = scenario
        self.machine = machine
        self.plan = make_plan(scenario, seed=seed)
        self.sim_scenario, self.names, self.keys, self.types = to_sim(scenario, self.plan, machine)

    def run(self) -> dict[str, Any]:
        plan, sc = self.plan, self.sim_scenario
        uplink, crash, unmodelled, heals = _fault_windows(plan, sc.duration_s)
        arrivals = []
        local = []
        flows = []
        wf_types: list[Workflow] = []
        for sub in plan.submissions:
            if sub.kind == "local":
                b = sub.body
                local.append(
                    (sub.at, self.names[str(sub.node)], self._type(b), _sleep_ms(b["command"]))
                )
            elif sub.kind == "task":
                b = sub.body
                k = self._type(b)
                arrivals.append((sub.at, 0, k, _sleep_ms(b["command"]), 0.0, 0.0, 1.0))
            else:
                tasks = sub.body["tasks"]
                width = sum(1 for t in tasks if not t["depends_on"])
                depth = max(1, len(tasks) // max(1, width))
                k = self._type(tasks[0])
                sleeps = [_sleep_ms(t["command"]) for t in tasks]
                wf_types.append(Workflow(width=width, depth=depth, type=self.types[k].name))
                self.types[k] = replace(self.types[k], compute_mi=(min(sleeps), max(sleeps)))
                flows.append((sub.at, len(wf_types) - 1, 0))
        sc = replace(
            sc,
            workload=replace(sc.workload, types=tuple(self.types), workflows=tuple(wf_types)),
        )
        labels = {self.names[n.node_id]: dict(n.labels) for n in plan.nodes}
        sim = Simulation(sc, sc.policies[0], node_labels=labels)
        sim.inject(
            arrivals=arrivals,
            local=local,
            flows=flows,
            uplink_down={self.names[n]: iv for n, iv in uplink.items()},
            crashes={self.names[n]: iv for n, iv in crash.items()},
        )
        sim.trace, sim.attempt_log = [], []
        result = sim.run()
        latency: dict[str, list[float]] = defaultdict(list)
        for k, t_sub, t_end in sim.trace:
            latency[self.types[k].level].append(t_end - t_sub)
        views, specs = sim.traced()
        ledger = replay(views, specs, sc.duration_s, send=sim.control_arrival)
        digests = _digests(sim, sc.controller.antientropy_s)
        convergence = []
        # the testbed heals everything at the end of the plan and measures every agent
        final = [(n.node_id, "final-heal", plan.duration_s) for n in plan.nodes]
        for node, cause, t in [*heals, *final]:
            name = self.names[node]
            g = sim.topo.index[name]
            held = converged_at(views, specs, name, t, sc.duration_s)
            seen = observed_convergence(
                views, specs, name, t, sc.duration_s,
                digests=digests, ack_s=sim.net.ctrl[g].lat, poll_s=POLL_S,
                send=sim.control_arrival,
            )  # fmt: skip
            convergence.append(
                {
                    "node": node,
                    "cause": cause,
                    "heal_at": t,
                    "after_s": None if seen is None else seen - t,
                    "controller_holds_after_s": None if held is None else held - t,
                }
            )
        return {
            "scenario": self.scenario.name,
            "seed": plan.seed,
            "agents": len(plan.nodes),
            "metrics": result.metrics,
            "latency_s": {lvl: _summary(v) for lvl, v in sorted(latency.items())},
            "latencies": {lvl: sorted(v) for lvl, v in latency.items()},
            "convergence_after_heal": convergence,
            "convergence_after_heal_max_s": max(
                (c["after_s"] for c in convergence if c["after_s"] is not None), default=None
            ),
            "crdt": {
                "duplicates": ledger.duplicates,
                "controller_status": dict(ledger.status()),
            },
            "unmodelled": unmodelled,
            "assumptions": {
                "loopback_ms": LOOPBACK_MS,
                **self.machine.as_dict(),
                "start_fsyncs": START_FSYNCS,
                "supervisor_start_s": SUPERVISOR_START_S,
                "keepalive_s": sc.controller.keepalive_s,
                "reconnect_s": [sc.controller.reconnect_min_s, sc.controller.reconnect_max_s],
                "antientropy_s": sc.controller.antientropy_s,
                "poll_s": POLL_S,
            },
        }

    def _type(self, body: dict[str, Any]) -> int:
        return self.keys.index(_key(body))


def _digests(sim: Simulation, every: float) -> dict[str, list[tuple[float, float]]]:
    """Per node, its digests as (reached the controller, answer back): one on every
    connection (the first, and each reconnect of ``Network.resume``), then every
    ``every`` seconds while its control path is up, until the next reconnect
    (``shared/protocol/_session.py``: a full digest on every connection, then each
    anti-entropy period)."""
    net, horizon = sim.net, sim.sc.duration_s
    out: dict[str, list[tuple[float, float]]] = {}
    for g, node_id in enumerate(sim.topo.node_ids):
        path = net.ctrl[g]
        starts = [0.0, *net.reconnects.get(net.session_link(g), [])]
        exchanges = []
        for c, stop in zip(starts, [*starts[1:], horizon], strict=True):
            t = c
            while t < stop:
                if net.is_up(path, t):
                    reached = net.deliver(path, t)
                    exchanges.append((reached, net.deliver(path, reached)))
                t += every
        out[node_id] = exchanges
    return out


def _summary(values: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p95 and max, with the testbed's nearest-rank percentile."""
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values, default=None),
    }


def run_testbed_scenario(
    path: str | Path, *, seed: int | None = None, machine: MachineTiming = DEFAULT_MACHINE
) -> dict[str, Any]:
    """Simulate a testbed scenario file (see the module docstring)."""
    return SimRun(load_scenario(path), seed=seed, machine=machine).run()


def compare(sim: dict[str, Any], testbed: dict[str, Any]) -> dict[str, Any]:
    """Per level, simulated vs measured latency (p50, p95) and their ratio; the same
    for the worst convergence after a heal. ``testbed`` is a testbed ``report.json``."""
    measured = testbed.get("timings", {})
    rows: dict[str, Any] = {}
    for level, s in sim["latency_s"].items():
        t = measured.get("latency_s", {}).get(level)
        row: dict[str, Any] = {"sim": s, "testbed": t}
        if t:
            for q in ("p50", "p95"):
                if s.get(q) and t.get(q):
                    row[f"{q}_ratio_sim_over_testbed"] = s[q] / t[q]
        rows[level] = row
    conv_t = measured.get("convergence_after_heal_max_s")
    conv_s = sim.get("convergence_after_heal_max_s")
    return {
        "latency": rows,
        "convergence_max_s": {
            "sim": conv_s,
            "testbed": conv_t,
            "ratio_sim_over_testbed": (conv_s / conv_t) if conv_s and conv_t else None,
        },
    }


def _resolve(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    for candidate in (testbed_dir() / name, testbed_dir() / f"{name}.toml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no testbed scenario {name!r}")


def main(args: argparse.Namespace, console: Console) -> int:
    """``continuum simulate realgap``: simulate, write ``realgap.json``, compare if asked."""
    path = _resolve(args.scenario)
    out = Path(args.out or Path("runs") / "sim" / f"realgap-{path.stem}")
    out.mkdir(parents=True, exist_ok=True)
    sim = run_testbed_scenario(path, seed=args.seed)
    doc: dict[str, Any] = {"sim": sim}
    if args.testbed_report:
        testbed = json.loads(Path(args.testbed_report).read_text(encoding="utf-8"))
        doc["testbed_report"] = str(args.testbed_report)
        doc["gap"] = compare(sim, testbed)
    target = out / "realgap.json"
    target.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")
    table = Table(title=f"{path.stem}: simulated latency (submission → execution end)")
    for col in ("level", "count", "p50 s", "p95 s", "max s", "testbed p50", "testbed p95"):
        table.add_column(col, justify="right")
    gap = doc.get("gap", {}).get("latency", {})
    for level, s in sim["latency_s"].items():
        t = (gap.get(level) or {}).get("testbed") or {}
        table.add_row(
            level,
            str(s["count"]),
            *(f"{s[q]:.3f}" if s[q] is not None else "-" for q in ("p50", "p95", "max")),
            *(f"{t[q]:.3f}" if t.get(q) is not None else "-" for q in ("p50", "p95")),
        )
    console.print(table)
    for c in sim["convergence_after_heal"]:
        console.print(
            f"converged {c['after_s']:.3f} s after {c['cause']} of {c['node']} "
            f"healed at {c['heal_at']:.1f} s"
        )
    if sim["unmodelled"]:
        console.print(f"not modelled: {', '.join(sim['unmodelled'])}")
    console.print(f"wrote {target}")
    return 0
