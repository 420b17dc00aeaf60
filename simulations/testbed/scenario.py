"""Testbed scenario files (TOML, ``kind = "testbed"``): topology, workload, timeline.

A scenario is parsed into frozen dataclasses and validated in one pass: a bad
file raises one :class:`shared.errors.ValidationError` listing **every** problem
with its path (``timeline[2].op``, ``workload.mix[0].sleep_ms``), so an author
fixes it in one round trip. Node names are ``agent-1 … agent-N``; the timeline
names nodes through selectors (``"all"``, ``"half"``, ``"one"``, ``"random:K"``,
``"tier:edge"``, ``"agent-2"`` or a list of names) so a scenario still means
something when ``--agents`` changes N. Turning a scenario into concrete steps
and submissions is :mod:`simulations.testbed.plan`'s job.

Example::

    kind = "testbed"
    name = "partition-basic"
    description = "One agent cut for 15 s while work arrives"
    duration_s = 30

    [topology]
    agents = 3
    [[topology.groups]]
    tier = "edge"
    labels = { site = "a" }

    [workload]
    rate_per_s = 2
    [[workload.mix]]
    level = "causal"
    sleep_ms = [100, 400]

    [[timeline]]
    at = 8
    op = "partition"
    nodes = "agent-1"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.errors import Problem, ValidationError
from shared.vocab import Level, Tier

from .scenario_read import Reader, level_names, selector_problem
from .scenario_types import (
    CONTROLLER_OPS,
    DIRECTIONS,
    OPS,
    RANDOM_OPS,
    SHARES,
    WORKLOAD_LEVELS,
    AgentGroup,
    Burst,
    LocalGen,
    RandomNemesis,
    Scenario,
    Step,
    TaskMix,
    Topology,
    WorkflowGen,
    Workload,
)

__all__ = [
    "CONTROLLER_OPS",
    "OPS",
    "AgentGroup",
    "Burst",
    "LocalGen",
    "RandomNemesis",
    "Scenario",
    "Step",
    "TaskMix",
    "Topology",
    "WorkflowGen",
    "Workload",
    "load_scenario",
    "parse_scenario",
    "scenario_dir",
]


def scenario_dir() -> Path:
    """The shipped scenarios (``simulations/scenarios/``)."""
    return Path(__file__).resolve().parent.parent / "scenarios"


def _parse_mix(r: Reader, m: Mapping[str, Any], path: str) -> TaskMix:
    r.unknown(m, set(TaskMix.__slots__), path)  # type: ignore[attr-defined]
    level = r.choice(m, "level", f"{path}.level", "causal", WORKLOAD_LEVELS)
    lo = r.choice(m, "min", f"{path}.min", None, level_names())
    hi = r.choice(m, "max", f"{path}.max", None, level_names())
    if level == "adaptive":
        lo, hi = lo or "eventual", hi or "strong"
        if Level(lo).strength > Level(hi).strength:
            r.bad(f"{path}.min", f"min {lo!r} is stronger than max {hi!r}")
    elif lo is not None or hi is not None:
        r.bad(path, "min/max apply only to level = 'adaptive'")
    name, kind = (_name(r, m, key, f"{path}.{key}") for key in ("name", "kind"))
    return TaskMix(
        level=level,
        weight=r.num(m, "weight", f"{path}.weight", 1.0),
        sleep_ms=r.range_ms(m, "sleep_ms", f"{path}.sleep_ms", (100, 300)),
        fail_rate=r.num(m, "fail_rate", f"{path}.fail_rate", 0.0, hi=1.0),
        idempotent=bool(m.get("idempotent", False)),
        priority=r.num(m, "priority", f"{path}.priority", 50, hi=100, integer=True),
        max_disconnect_s=r.num(m, "max_disconnect_s", f"{path}.max_disconnect_s", None),
        min=lo,
        max=hi,
        max_attempts=r.num(m, "max_attempts", f"{path}.max_attempts", 3, lo=1, integer=True),
        name=name,
        labels=r.labels(m, "labels", f"{path}.labels"),
        deadline_s=r.num(m, "deadline_s", f"{path}.deadline_s", None, lo=0.1),
        kind=kind,
        max_latency_ms=r.num(m, "max_latency_ms", f"{path}.max_latency_ms", None, lo=1.0),
        cpu=r.num(m, "cpu", f"{path}.cpu", 0.1, lo=0.01, hi=64.0),
    )


def _name(r: Reader, m: Mapping[str, Any], key: str, path: str) -> str | None:
    """An optional non-empty string."""
    value = m.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        r.bad(path, "must be a non-empty string")
        return None
    return value


def _parse_step(r: Reader, s: Mapping[str, Any], path: str) -> Step | None:
    op = s.get("op")
    if op not in OPS:
        r.bad(f"{path}.op", f"must be one of {', '.join(OPS)}; got {op!r}")
        return None
    params_spec = OPS[op]
    allowed = {"at", "op", *params_spec} | (set() if op in CONTROLLER_OPS else {"nodes"})
    r.unknown(s, allowed, path)
    at = r.num(s, "at", f"{path}.at", None)
    if at is None:
        r.bad(f"{path}.at", "is required")
        at = 0.0
    params: dict[str, Any] = {}
    for key, (kind, required) in params_spec.items():
        if key not in s:
            if required:
                r.bad(f"{path}.{key}", f"is required for op {op!r}")
            continue
        value = s[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            r.bad(f"{path}.{key}", f"has the wrong type ({type(value).__name__})")
            continue
        if key == "direction" and value not in DIRECTIONS:
            r.bad(f"{path}.{key}", f"must be one of {', '.join(DIRECTIONS)}")
        elif key in SHARES and not 0 <= value <= 1:
            r.bad(f"{path}.{key}", "must be a share between 0 and 1")
        elif kind is not bool and kind is not str and value < 0:
            r.bad(f"{path}.{key}", "must be ≥ 0")
        params[key] = value
    nodes: str | tuple[str, ...] = "all"
    if op not in CONTROLLER_OPS:
        raw = s.get("nodes", "all")
        problem = selector_problem(raw)
        if problem:
            r.bad(f"{path}.nodes", problem)
        nodes = tuple(raw) if isinstance(raw, list) else raw
    return Step(at=float(at), op=op, nodes=nodes, params=params)


def _topology(r: Reader, data: Mapping[str, Any]) -> Topology:
    """``[topology]`` and its ``[[topology.groups]]``."""
    topo = r.table(data, "topology", "topology")
    r.unknown(topo, {"agents", "groups"}, "topology")
    groups = []
    for i, g in enumerate(r.tables(topo, "groups", "topology.groups")):
        p = f"topology.groups[{i}]"
        r.unknown(g, set(AgentGroup.__slots__), p)  # type: ignore[attr-defined]
        groups.append(
            AgentGroup(
                tier=r.choice(g, "tier", f"{p}.tier", "edge", [t.value for t in Tier]),
                labels=r.labels(g, "labels", f"{p}.labels"),
                cpus=r.num(g, "cpus", f"{p}.cpus", 2.0, lo=0.1),
                memory_mb=r.num(g, "memory_mb", f"{p}.memory_mb", 1024, lo=16, integer=True),
                count=r.num(g, "count", f"{p}.count", None, lo=1, integer=True),
                speed=r.num(g, "speed", f"{p}.speed", 1.0, lo=0.01, hi=100.0),
            )
        )
    return Topology(
        agents=r.num(topo, "agents", "topology.agents", 3, lo=1, hi=500, integer=True),
        groups=tuple(groups) or (AgentGroup(),),
    )


def _bursts(r: Reader, wl: Mapping[str, Any], mixes: tuple[TaskMix, ...]) -> list[Burst]:
    """``[[workload.bursts]]``: each names a level of ``mixes`` or one of their names."""
    bursts = []
    for i, b in enumerate(r.tables(wl, "bursts", "workload.bursts")):
        p = f"workload.bursts[{i}]"
        r.unknown(b, {"at", "count", "level", "mix"}, p)
        level = r.choice(b, "level", f"{p}.level", None, WORKLOAD_LEVELS)
        if level is not None and level not in {m.level for m in mixes or (TaskMix(),)}:
            r.bad(f"{p}.level", f"no workload.mix entry has level {level!r}")
        mix_name = r.choice(b, "mix", f"{p}.mix", None, [m.name for m in mixes if m.name])
        if level is not None and mix_name is not None:
            r.bad(p, "give level or mix, not both")
        bursts.append(
            Burst(
                at=r.num(b, "at", f"{p}.at", 0.0),
                count=r.num(b, "count", f"{p}.count", 1, lo=1, integer=True),
                level=level,
                mix=mix_name,
            )
        )
    return bursts


def _local(r: Reader, wl: Mapping[str, Any]) -> list[LocalGen]:
    """``[[workload.local]]``: submissions to an agent's own local API."""
    local = []
    for i, lg in enumerate(r.tables(wl, "local", "workload.local")):
        p = f"workload.local[{i}]"
        r.unknown(lg, set(LocalGen.__slots__), p)  # type: ignore[attr-defined]
        raw = lg.get("nodes", "agent-1")
        problem = selector_problem(raw)
        if problem:
            r.bad(f"{p}.nodes", problem)
        at = r.num(lg, "at", f"{p}.at", None)
        if at is None:
            r.bad(f"{p}.at", "is required")
        local.append(
            LocalGen(
                at=float(at or 0.0),
                nodes=tuple(raw) if isinstance(raw, list) else raw,
                count=r.num(lg, "count", f"{p}.count", 1, lo=1, integer=True),
                every_s=r.num(lg, "every_s", f"{p}.every_s", 0.0),
                level=r.choice(lg, "level", f"{p}.level", "causal", ("causal", "eventual")),
                sleep_ms=r.range_ms(lg, "sleep_ms", f"{p}.sleep_ms", (500, 1500)),
            )
        )
    return local


def _workflows(r: Reader, wl: Mapping[str, Any]) -> list[WorkflowGen]:
    """``[[workload.workflows]]``: layered DAGs."""
    workflows = []
    for i, w in enumerate(r.tables(wl, "workflows", "workload.workflows")):
        p = f"workload.workflows[{i}]"
        r.unknown(w, set(WorkflowGen.__slots__), p)  # type: ignore[attr-defined]
        workflows.append(
            WorkflowGen(
                at=r.num(w, "at", f"{p}.at", 0.0),
                count=r.num(w, "count", f"{p}.count", 1, lo=1, integer=True),
                every_s=r.num(w, "every_s", f"{p}.every_s", 0.0),
                width=r.num(w, "width", f"{p}.width", 2, lo=1, hi=20, integer=True),
                depth=r.num(w, "depth", f"{p}.depth", 2, lo=1, hi=20, integer=True),
                level=r.choice(
                    w, "level", f"{p}.level", "causal", ("strong", "causal", "eventual")
                ),
                sleep_ms=r.range_ms(w, "sleep_ms", f"{p}.sleep_ms", (100, 200)),
            )
        )
    return workflows


def _workload(r: Reader, data: Mapping[str, Any]) -> Workload:
    """``[workload]``: arrivals, mixes, bursts, local submissions and workflows."""
    wl = r.table(data, "workload", "workload")
    r.unknown(
        wl, {"rate_per_s", "start_s", "stop_s", "mix", "bursts", "workflows", "local"}, "workload"
    )
    mixes = tuple(
        _parse_mix(r, m, f"workload.mix[{i}]")
        for i, m in enumerate(r.tables(wl, "mix", "workload.mix"))
    )
    if mixes and sum(m.weight for m in mixes) <= 0:
        r.bad("workload.mix", "weights must not all be 0")
    names = [m.name for m in mixes if m.name]
    if len(names) != len(set(names)):
        r.bad("workload.mix", "mix names must be unique")
    bursts = _bursts(r, wl, mixes)
    local = _local(r, wl)
    workflows = _workflows(r, wl)
    stop = r.num(wl, "stop_s", "workload.stop_s", None)
    return Workload(
        rate_per_s=r.num(wl, "rate_per_s", "workload.rate_per_s", 1.0, hi=1000.0),
        start_s=r.num(wl, "start_s", "workload.start_s", 0.0),
        stop_s=stop,
        mix=mixes or (TaskMix(),),
        bursts=tuple(bursts),
        workflows=tuple(workflows),
        local=tuple(local),
    )


def _timeline(r: Reader, data: Mapping[str, Any], duration: float) -> list[Step]:
    """``[[timeline]]``: every step within ``duration``."""
    timeline = []
    for i, s in enumerate(r.tables(data, "timeline", "timeline")):
        step = _parse_step(r, s, f"timeline[{i}]")
        if step is not None:
            if step.at > duration:
                r.bad(f"timeline[{i}].at", f"is after the scenario's duration_s ({duration})")
            timeline.append(step)
    return timeline


def _nemesis(r: Reader, data: Mapping[str, Any]) -> RandomNemesis | None:
    """The ``[nemesis]`` table (``None`` without one)."""
    if "nemesis" not in data:
        return None
    nm = r.table(data, "nemesis", "nemesis")
    r.unknown(
        nm,
        {"kind", "start_s", "stop_s", "interval_s", "max_fault_s", "ops", "lease_s"},
        "nemesis",
    )
    lease = nm.get("lease_s")
    if lease is not None and not (
        isinstance(lease, list)
        and len(lease) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in lease)
        and 3 <= lease[0] <= lease[1]
    ):
        r.bad("nemesis.lease_s", "must be [lo, hi] seconds with 3 ≤ lo ≤ hi")
        lease = None
    if nm.get("kind", "random") != "random":
        r.bad("nemesis.kind", "only 'random' is supported")
    ops = nm.get("ops", list(RANDOM_OPS))
    if not isinstance(ops, list) or not ops or any(o not in RANDOM_OPS for o in ops):
        r.bad("nemesis.ops", f"must be a non-empty list of {', '.join(RANDOM_OPS)}")
        ops = list(RANDOM_OPS)
    return RandomNemesis(
        start_s=r.num(nm, "start_s", "nemesis.start_s", 5.0),
        stop_s=r.num(nm, "stop_s", "nemesis.stop_s", None),
        interval_s=r.num(nm, "interval_s", "nemesis.interval_s", 5.0, lo=0.1),
        max_fault_s=r.num(nm, "max_fault_s", "nemesis.max_fault_s", 8.0, lo=1.0),
        ops=tuple(ops),
        lease_s=None if lease is None else (float(lease[0]), float(lease[1])),
    )


def parse_scenario(data: Mapping[str, Any], *, source: str | None = None) -> Scenario:
    """Validate a parsed TOML document; raise one ValidationError with every problem."""
    r = Reader()
    r.unknown(
        data,
        {
            "kind",
            "name",
            "description",
            "duration_s",
            "seed",
            "settle_s",
            "liveness_bound_s",
            "topology",
            "workload",
            "timeline",
            "nemesis",
            "controller",
            "agent",
        },
        "",
    )
    if data.get("kind") != "testbed":
        r.bad("kind", f"must be 'testbed' for the testbed; got {data.get('kind')!r}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        r.bad("name", "is required (a non-empty string)")
        name = "?"
    description = data.get("description", "")
    if not isinstance(description, str):
        r.bad("description", "must be a string")
        description = ""
    duration = r.num(data, "duration_s", "duration_s", 30.0, lo=1.0)
    seed = r.num(data, "seed", "seed", 0, integer=True)
    settle = r.num(data, "settle_s", "settle_s", 60.0, lo=1.0)
    bound = r.num(data, "liveness_bound_s", "liveness_bound_s", 30.0, lo=1.0)

    topology = _topology(r, data)

    workload = _workload(r, data)

    timeline = _timeline(r, data, duration)

    nemesis = _nemesis(r, data)
    controller = r.table(data, "controller", "controller")
    agent = r.table(data, "agent", "agent")
    if r.problems:
        raise ValidationError(r.problems, what=f"scenario {source or name}")
    return Scenario(
        name=name,
        description=description,
        duration_s=float(duration),
        seed=int(seed),
        settle_s=float(settle),
        liveness_bound_s=float(bound),
        topology=topology,
        workload=workload,
        timeline=tuple(sorted(timeline, key=lambda s: s.at)),
        nemesis=nemesis,
        controller=dict(controller),
        agent=dict(agent),
        path=source,
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; a bare name finds a shipped scenario."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        p = scenario_dir() / f"{path}.toml"
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValidationError(
            [Problem("", f"no such scenario file: {path}")], what="scenario"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(
            [Problem("", f"not valid TOML: {exc}")], what=f"scenario {p}"
        ) from exc
    return parse_scenario(data, source=str(p))
