"""Turn a :class:`Scenario` into a concrete, reproducible plan: the nodes, the
fault steps (selectors resolved, the random nemesis expanded) and the timed
submissions with their task bodies. Pure: the seed decides everything, so a run
can be repeated exactly and a plan can be tested without processes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from .scenario import Scenario, Step, TaskMix

__all__ = ["NodeSpec", "Plan", "PlannedSubmission", "make_plan", "resolve_nodes", "task_body"]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: str
    tier: str
    labels: dict[str, str]
    cpus: float
    memory_mb: int
    speed: float = 1.0  # the ledger task's work is stretched by 1 / speed here


@dataclass(frozen=True, slots=True)
class PlannedSubmission:
    """One request to the controller at ``at`` seconds: a task or a workflow.

    ``tasks`` is what the history records for the checker (id, level, bounds,
    dependencies); ``body`` is the request body without the ledger env, which the
    runner adds (it knows the run directory)."""

    at: float
    request: int
    kind: str  # "task" | "workflow" | "local" (to ``node``'s own local API)
    body: dict[str, Any]
    tasks: tuple[dict[str, Any], ...]
    node: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    nodes: tuple[NodeSpec, ...]
    steps: tuple[Step, ...]  # nodes resolved to tuples of node ids
    submissions: tuple[PlannedSubmission, ...]
    seed: int
    duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _nodes(scenario: Scenario, count: int) -> tuple[NodeSpec, ...]:
    groups = scenario.topology.groups
    dealt: list[int] = []
    for gi, g in enumerate(groups):
        dealt += [gi] * (g.count or 0)
    free = [gi for gi, g in enumerate(groups) if g.count is None] or list(range(len(groups)))
    i = 0
    while len(dealt) < count:
        dealt.append(free[i % len(free)])
        i += 1
    out = []
    for n, gi in enumerate(dealt[:count], start=1):
        g = groups[gi]
        out.append(NodeSpec(f"agent-{n}", g.tier, dict(g.labels), g.cpus, g.memory_mb, g.speed))
    return tuple(out)


def resolve_nodes(
    selector: str | tuple[str, ...], nodes: tuple[NodeSpec, ...], rng: random.Random
) -> tuple[str, ...]:
    """Selector → node ids. Names beyond N are dropped (a scenario written for 5
    agents still runs with 3); ``half`` is Jepsen's bisect (the first half)."""
    ids = [n.node_id for n in nodes]
    if isinstance(selector, tuple):
        return tuple(s for s in selector if s in ids)
    if selector == "all":
        return tuple(ids)
    if selector == "half":
        return tuple(ids[: max(1, len(ids) // 2)])
    if selector == "others":
        return tuple(ids[1:])
    if selector == "one":
        return (rng.choice(ids),)
    if selector.startswith("random:"):
        k = min(int(selector[7:]), len(ids))
        return tuple(sorted(rng.sample(ids, k), key=ids.index))
    if selector.startswith("tier:"):
        return tuple(n.node_id for n in nodes if n.tier == selector[5:])
    return (selector,) if selector in ids else ()


def _random_steps(
    scenario: Scenario, nodes: tuple[NodeSpec, ...], rng: random.Random
) -> list[Step]:
    nem = scenario.nemesis
    assert nem is not None
    stop = nem.stop_s if nem.stop_s is not None else scenario.duration_s - 2.0
    steps: list[Step] = []
    t = nem.start_s
    ids = [n.node_id for n in nodes]
    while True:
        t += rng.expovariate(1.0 / nem.interval_s)
        if t >= stop:
            break
        op = rng.choice(nem.ops)
        k = rng.randint(1, max(1, len(ids) // 2))
        targets = tuple(sorted(rng.sample(ids, k), key=ids.index))
        length = min(rng.uniform(1.0, nem.max_fault_s), stop - t)
        if op.startswith("partition"):
            direction = {"partition": "both", "partition-up": "up", "partition-down": "down"}[op]
            steps.append(Step(t, "partition", targets, {"direction": direction}))
            steps.append(Step(t + length, "heal", targets))
        elif op == "flap":
            steps.append(Step(t, "flap", targets, {"down_s": 1.0, "up_s": 1.0}))
            steps.append(Step(t + length, "heal", targets))
        elif op == "delay":
            ms = rng.choice([100, 300, 1000])
            steps.append(Step(t, "delay", targets, {"ms": ms, "jitter_ms": ms / 4}))
            steps.append(Step(t + length, "heal", targets))
        elif op == "kill":
            steps.append(Step(t, "kill", targets))
            steps.append(Step(t + length, "restart", targets))
        elif op == "pause":
            steps.append(Step(t, "pause", targets))
            steps.append(Step(t + length, "resume", targets))
        elif op == "lossy":
            lossy = {"drop": 0.05, "duplicate": 0.05, "delay": 0.05, "delay_ms": 500}
            steps.append(Step(t, "lossy", targets, lossy))
            steps.append(Step(t + length, "heal", targets))
        else:
            steps.append(Step(t, "reset", targets))
        t += length
    return steps


def _command(mix_sleep: tuple[int, int], fail: bool, rng: random.Random) -> list[str]:
    sleep = rng.randint(*mix_sleep)
    argv = ["--sleep-ms", str(sleep)]
    if fail:
        argv += ["--exit", "1"]
    return argv


def task_body(
    task_id: str,
    mix: TaskMix,
    rng: random.Random,
    *,
    depends_on: list[str] | None = None,
    output: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A task submission body (canonical spec fields, docs/task-spec.md). ``command``
    holds only the ledger task's arguments; the runner prefixes the interpreter
    and script path and adds the ledger env."""
    fail = rng.random() < mix.fail_rate
    args = _command(mix.sleep_ms, fail, rng)
    if output is not None:
        args += ["--output", _json(output)]
    if mix.level == "adaptive":
        consistency = {"level": "adaptive", "min": mix.min, "max": mix.max}
    else:
        consistency = {"level": mix.level, "min": mix.level, "max": mix.level}
    body: dict[str, Any] = {
        "id": task_id,
        "name": mix.kind or f"testbed {mix.level}",
        "command": args,
        "env": {"CONTINUUM_TB_LEVEL": mix.level},
        "resources": {"cpu": mix.cpu, "memory_mb": 32},
        "priority": mix.priority,
        "timeout_s": max(30.0, mix.sleep_ms[1] / 1000.0 * 4),
        "retry": {
            "max_attempts": mix.max_attempts,
            "backoff_s": 0.5,
            "multiplier": 2.0,
            "backoff_max_s": 5.0,
            "jitter": 0.1,
        },
        "consistency": consistency,
        "idempotent": mix.idempotent,
        "depends_on": list(depends_on or []),
    }
    if mix.max_disconnect_s is not None:
        body["max_disconnect_s"] = mix.max_disconnect_s
    if mix.deadline_s is not None:
        body["deadline_s"] = mix.deadline_s
    placement: dict[str, Any] = {"labels": dict(mix.labels)} if mix.labels else {}
    if mix.max_latency_ms is not None:
        placement["max_latency_ms"] = mix.max_latency_ms
    if placement:
        body["placement"] = placement
    return body


def _draw_mix(mixes: tuple[TaskMix, ...], only: str | None, rng: random.Random) -> TaskMix:
    """A mix for one arrival: by weight among all (``None``), among one level's, or the
    named one (``"mix:NAME"``, a burst's; it may have weight 0)."""
    if only is not None and only.startswith("mix:"):
        return next(m for m in mixes if m.name == only[4:])
    choices = [m for m in mixes if only is None or m.level == only]
    return rng.choices(choices, weights=[m.weight for m in choices])[0]


def _local_submissions(
    scenario: Scenario, nodes: tuple[NodeSpec, ...], seed: int, rng: random.Random
) -> list[PlannedSubmission]:
    """The ``[[workload.local]]`` tasks: one submission per task, to one agent's local API
    (its level is what an agent accepts alone: causal or eventual)."""
    out: list[PlannedSubmission] = []
    for g, gen in enumerate(scenario.workload.local, start=1):
        targets = resolve_nodes(gen.nodes, nodes, rng)
        mix = TaskMix(level=gen.level, sleep_ms=gen.sleep_ms)
        for k in range(gen.count):
            for node in targets:
                # In the agent's id namespace (shared.authz): the controller adopts it.
                body = task_body(f"{node}:tbl-{seed}-{g}-{k + 1}", mix, rng)
                meta = {**_meta(body), "local": node}
                out.append(
                    PlannedSubmission(gen.at + k * gen.every_s, 0, "local", body, (meta,), node)
                )
    return out


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _meta(body: dict[str, Any], workflow: str | None = None) -> dict[str, Any]:
    c = body["consistency"]
    meta = {"task_id": body["id"], "level": c["level"], "depends_on": list(body["depends_on"])}
    if c["level"] == "adaptive":
        meta |= {"min": c["min"], "max": c["max"]}
    if body.get("deadline_s") is not None:
        meta["deadline_s"] = body["deadline_s"]
    if body.get("idempotent"):
        meta["idempotent"] = True
    if workflow:
        meta["workflow"] = workflow
    return meta


def make_plan(scenario: Scenario, *, agents: int | None = None, seed: int | None = None) -> Plan:
    """Expand ``scenario`` for ``agents`` nodes (default: the topology's) and ``seed``
    (default: the scenario's)."""
    seed = scenario.seed if seed is None else seed
    nodes = _nodes(scenario, agents or scenario.topology.agents)
    fault_rng = random.Random(f"{seed}:faults")
    steps = [
        Step(s.at, s.op, resolve_nodes(s.nodes, nodes, fault_rng), dict(s.params))
        for s in scenario.timeline
    ]
    extra: dict[str, Any] = {}
    if scenario.nemesis is not None:
        steps += _random_steps(scenario, nodes, fault_rng)
        if scenario.nemesis.lease_s is not None:
            extra["lease_s"] = round(fault_rng.uniform(*scenario.nemesis.lease_s), 1)
    steps.sort(key=lambda s: s.at)

    rng = random.Random(f"{seed}:workload")
    wl = scenario.workload
    stop = wl.stop_s if wl.stop_s is not None else scenario.duration_s
    times: list[tuple[float, str | None]] = []
    if wl.rate_per_s > 0:
        t = wl.start_s
        while True:
            t += rng.expovariate(wl.rate_per_s)
            if t >= stop:
                break
            times.append((t, None))
    for b in wl.bursts:
        times += [(b.at, b.level or (f"mix:{b.mix}" if b.mix else None))] * b.count
    times.sort(key=lambda x: x[0])

    subs: list[PlannedSubmission] = []
    for n, (t, only) in enumerate(times, start=1):
        mix = _draw_mix(wl.mix, only, rng)
        body = task_body(f"tb-{seed}-{n}", mix, rng)
        subs.append(PlannedSubmission(t, len(subs) + 1, "task", body, (_meta(body),)))
    subs += _local_submissions(scenario, nodes, seed, rng)

    wf_n = 0
    for gen in wl.workflows:
        for k in range(gen.count):
            wf_n += 1
            wid = f"tbw-{seed}-{wf_n}"
            mix = TaskMix(level=gen.level, sleep_ms=gen.sleep_ms)
            tasks: list[dict[str, Any]] = []
            previous: list[str] = []
            for layer in range(gen.depth):
                current = []
                for col in range(gen.width):
                    tid = f"{wid}-{layer}-{col}"
                    body = task_body(tid, mix, rng, depends_on=previous, output={"layer": layer})
                    tasks.append(body)
                    current.append(tid)
                previous = current
            body = {"id": wid, "name": f"testbed workflow {wf_n}", "tasks": tasks}
            meta = tuple(_meta(tb, wid) for tb in tasks)
            subs.append(PlannedSubmission(gen.at + k * gen.every_s, 0, "workflow", body, meta))
    subs.sort(key=lambda s: s.at)
    subs = [
        PlannedSubmission(s.at, i, s.kind, s.body, s.tasks, s.node)
        for i, s in enumerate(subs, start=1)
    ]
    return Plan(nodes, tuple(steps), tuple(subs), seed, scenario.duration_s, extra)
