"""Simulator scenario files (TOML, ``kind = "sim"``): topology, links, failures, workload.

Parsed into frozen dataclasses in one pass; a bad file raises one
``shared.errors.ValidationError`` listing every problem with its path
(``links.wan.mttr_s``, ``workload.types[1].deadline_s``). Every field has a
default, so a scenario states only what it changes. ``override`` applies a
``--param key=value`` (dotted path, e.g. ``links.wan.latency_ms=100``) to the raw
table before parsing, which is what sweeps vary.

Units: seconds, milliseconds for latencies, Mbit/s, MB of memory, KB of data,
million instructions (MI) of compute and MIPS of node speed, watts and
nanojoules per bit (LEAF's energy-per-bit model).
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from shared.errors import Problem, ValidationError
from shared.vocab import Level, PlacementMode

__all__ = [
    "CONSISTENCY_POLICIES",
    "Controller",
    "Failures",
    "LinkClass",
    "Links",
    "NodeClass",
    "Policy",
    "SimScenario",
    "TaskType",
    "Topology",
    "Workflow",
    "Workload",
    "load",
    "override",
    "parse",
    "parse_policy",
    "read_table",
    "scenario_dir",
]

#: ``declared`` keeps each task type's own level; the others force every task.
CONSISTENCY_POLICIES = ("declared", "strong", "causal", "eventual", "adaptive")


@dataclass(frozen=True, slots=True)
class NodeClass:
    """One tier's nodes: how many, how big, how fast, how much power (LEAF linear model)."""

    count: int = 1
    cpus: float = 8.0
    mips: float = 4000.0
    memory_mb: float = 16384.0
    idle_w: float = 100.0
    max_w: float = 200.0
    mtbf_s: float = 0.0  # node crashes; 0 = never
    mttr_s: float = 60.0
    start_s: float = 0.0  # fixed cost of starting an execution (process spawn)
    # the node's first execution also waits for the agent to start its task supervisor
    # (edge_agent/supervisor_link.py: on the first launch, from the placement's arrival)
    supervisor_start_s: float = 0.0
    slots: int = 0  # executions at once (the agent's executor.max_concurrent); 0 = as cpus allow
    compute_share: float = 1.0  # devices only: share that execute tasks
    battery: bool = False


@dataclass(frozen=True, slots=True)
class Topology:
    """Counts: ``device.count`` in all (dealt round robin over the sites),
    ``edge.count`` per site, ``regional.count`` per region (sites are dealt round
    robin over regions), ``cloud.count`` in all (0 is allowed: the controller is
    still in the cloud, reached over the ``lan`` link)."""

    sites: int = 4
    regions: int = 1
    device: NodeClass = NodeClass(
        count=100, cpus=1, mips=1000, memory_mb=1024, idle_w=1.5, max_w=5, compute_share=0.0
    )
    edge: NodeClass = NodeClass(count=1, cpus=8, mips=4000, memory_mb=16384, idle_w=60, max_w=150)
    regional: NodeClass = NodeClass(count=0, cpus=32, mips=6000, memory_mb=65536)
    cloud: NodeClass = NodeClass(
        count=1, cpus=1000, mips=10000, memory_mb=4e6, idle_w=2000, max_w=8000
    )


@dataclass(frozen=True, slots=True)
class LinkClass:
    """One class of links: one-way latency (base drawn per link in ``latency_ms``
    ± ``spread``, plus exponential per-message jitter), bandwidth, energy per bit
    and an alternating up/down process (exponential, means ``mtbf_s``/``mttr_s``)."""

    latency_ms: float = 5.0
    spread: float = 0.2
    jitter_ms: float = 0.5
    bandwidth_mbps: float = 100.0
    nj_per_bit: float = 0.0
    mtbf_s: float = 0.0  # 0 = never partitions
    mttr_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Links:
    """``access``: device ↔ its site; ``metro``: site ↔ region; ``wan``: region ↔ cloud;
    ``lan``: inside the cloud (controller ↔ cloud nodes)."""

    access: LinkClass = LinkClass(latency_ms=5, bandwidth_mbps=100, nj_per_bit=150)
    metro: LinkClass = LinkClass(latency_ms=5, bandwidth_mbps=1000, nj_per_bit=30)
    wan: LinkClass = LinkClass(latency_ms=50, bandwidth_mbps=1000, nj_per_bit=50)
    lan: LinkClass = LinkClass(latency_ms=0.5, spread=0.0, jitter_ms=0.05, bandwidth_mbps=10000)


@dataclass(frozen=True, slots=True)
class Failures:
    """Correlated regional outages (every metro link of the region and its WAN link
    down together), Poisson in time with exponential durations."""

    region_outage_per_h: float = 0.0
    region_outage_s: float = 60.0


@dataclass(frozen=True, slots=True)
class TaskType:
    name: str = "task"
    weight: float = 1.0
    compute_mi: tuple[float, float] = (100.0, 300.0)
    input_kb: tuple[float, float] = (10.0, 100.0)
    output_kb: tuple[float, float] = (1.0, 10.0)
    deadline_s: float = 1.0
    cpu: float = 1.0
    memory_mb: float = 128.0
    level: str = "causal"  # strong | causal | eventual | adaptive
    min: str = "eventual"  # adaptive bounds
    max: str = "strong"
    max_latency_ms: float | None = None
    preferred_tiers: tuple[str, ...] = ()
    max_disconnect_s: float = 300.0
    max_attempts: int = 3
    fail_rate: float = 0.0
    #: node labels the task must run on, ``key=value`` (``placement.labels`` of a spec)
    labels: tuple[str, ...] = ()
    #: a re-execution is harmless (``shared.model`` ``TaskSpec.idempotent``); the
    #: ``harm`` metric counts re-executions of the others
    idempotent: bool = False


@dataclass(frozen=True, slots=True)
class Workflow:
    """A DAG instance: ``depth`` layers of ``width`` tasks, each layer after the previous."""

    rate_per_s: float = 0.0
    width: int = 2
    depth: int = 3
    type: str = ""  # a task type name; default the first


@dataclass(frozen=True, slots=True)
class Workload:
    arrival: str = "poisson"  # poisson | bursty
    rate_per_device: float = 0.1
    burst_on_s: float = 10.0  # bursty: on/off periods (exponential), rate x factor when on
    burst_off_s: float = 30.0
    burst_factor: float = 4.0
    start_s: float = 0.0
    stop_s: float | None = None
    types: tuple[TaskType, ...] = (TaskType(),)
    workflows: tuple[Workflow, ...] = ()


#: The agent's configuration defaults (its MQTT session and sync loop timing).
_AGENT = AgentConfig()


@dataclass(frozen=True, slots=True)
class Controller:
    """Controller and agent timing (the production defaults of shared.health/consistency)."""

    placement_interval_s: float = 0.01  # batch placement tick
    telemetry_s: float = 3.0  # heartbeats, link grading, table refresh, consistency samples
    max_queue_s: float = 30.0  # a task no node can take for this long fails
    lease_s: float = 30.0
    # one durable commit of the controller's store (an fsync: cloud/store.py runs SQLite
    # with synchronous=FULL); a placement or a lease grant is sent only once it committed
    # (cloud/uow.py)
    commit_s: float = 0.0
    # the controller's [health] and [consistency] settings (cloud/config.py defaults)
    suspect_missed: int = 3  # heartbeats missed before a link is suspected
    confirm_after_s: float = 30.0  # suspected this long: failure confirmed
    link_window_s: float = 300.0  # window of RTT samples that grades a link
    lease_margin_s: float = 5.0  # drift margin before a strong task may move
    upgrade_dwell_s: float = 60.0  # good samples this long before a level goes up
    ack_period_s: float = _AGENT.autonomy.period_s  # autonomy period T (docs/agent.md)
    retry_backoff_s: float = 0.5
    # an agent's MQTT session and sync loop, by default as the agent's own defaults
    # (edge_agent/config.py, read from there): the broker drops a silent client after
    # 1.5 x keepalive_s; the agent reconnects with a jittered exponential backoff from
    # reconnect_min_s to reconnect_max_s, sends a full digest on every connection and
    # then every antientropy_s (the controller answers with what the agent lacks)
    keepalive_s: float = float(_AGENT.broker.keepalive_s)
    reconnect_min_s: float = _AGENT.broker.reconnect_min_s
    reconnect_max_s: float = _AGENT.broker.reconnect_max_s
    antientropy_s: float = _AGENT.antientropy_s


@dataclass(frozen=True, slots=True)
class Policy:
    """One compared configuration: a placement mode and a consistency policy."""

    mode: PlacementMode = PlacementMode.HYBRID_DYNAMIC
    consistency: str = "declared"

    @property
    def name(self) -> str:
        return f"{self.mode.value}/{self.consistency}"


@dataclass(frozen=True, slots=True)
class SimScenario:
    name: str
    description: str = ""
    duration_s: float = 60.0
    seed: int = 0
    policies: tuple[Policy, ...] = (Policy(),)
    topology: Topology = Topology()
    links: Links = Links()
    failures: Failures = Failures()
    workload: Workload = Workload()
    controller: Controller = Controller()
    path: str | None = None


def scenario_dir() -> Path:
    """Where the shipped simulator scenarios live."""
    return Path(__file__).resolve().parent.parent / "scenarios" / "sim"


def parse_policy(text: str) -> Policy:
    """``MODE/CONSISTENCY`` (e.g. ``edge_only/strong``, ``hybrid_dynamic/adaptive``), or
    one word: a placement mode (``adaptive`` alone is the placement mode) or a
    consistency policy with the default mode."""
    modes = {m.value for m in PlacementMode}
    parts = [p.strip() for p in text.split("/")]
    mode, consistency = PlacementMode.HYBRID_DYNAMIC.value, "declared"
    if len(parts) == 2:
        mode, consistency = parts
    elif len(parts) == 1 and parts[0] in modes:
        mode = parts[0]
    elif len(parts) == 1:
        consistency = parts[0]
    else:
        raise ValueError(f"policy {text!r}: use MODE, CONSISTENCY or MODE/CONSISTENCY")
    if mode not in modes:
        raise ValueError(f"unknown placement mode {mode!r} (one of {', '.join(sorted(modes))})")
    if consistency not in CONSISTENCY_POLICIES:
        raise ValueError(
            f"unknown consistency policy {consistency!r} (one of {', '.join(CONSISTENCY_POLICIES)})"
        )
    return Policy(PlacementMode(mode), consistency)


class _Reader:
    """Builds a dataclass from a table, collecting problems instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def build(self, cls: Any, data: Any, path: str, default: Any) -> Any:
        if data is None:
            return default
        if not isinstance(data, Mapping):
            self.problems.append(Problem(path, "must be a table"))
            return default
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in data.items():
            where = f"{path}.{key}" if path else key
            if key not in known:
                self.problems.append(Problem(where, f"unknown key (known: {', '.join(known)})"))
                continue
            value = self.value(known[key].type, getattr(default, key), raw, where)
            if value is not None:
                values[key] = value
        return replace(default, **values)

    def value(self, kind: Any, current: Any, raw: Any, where: str) -> Any:
        """Check ``raw`` against the field's annotation ``kind`` (a string, as
        ``from __future__ import annotations`` leaves it)."""
        if is_dataclass(current):
            return self.build(type(current), raw, where, current)
        number = isinstance(raw, int | float) and not isinstance(raw, bool)
        if kind == "bool" and isinstance(raw, bool):
            return raw
        if kind == "int" and number and float(raw).is_integer():
            return int(raw)
        if kind in ("float", "float | None") and number:
            return float(raw)
        if kind == "str" and isinstance(raw, str):
            return raw
        if kind == "tuple[float, float]":
            if isinstance(raw, list) and len(raw) == 2 and _numeric(raw) and raw[0] <= raw[1]:
                return (float(raw[0]), float(raw[1]))
            if number:
                return (float(raw), float(raw))
            self.problems.append(Problem(where, "must be a number or a [low, high] pair"))
            return None
        if kind == "tuple[str, ...]" and isinstance(raw, list) and _all_str(raw):
            return tuple(raw)
        self.problems.append(Problem(where, f"has the wrong type ({type(raw).__name__})"))
        return None


def _or(value: Any, default: Any) -> Any:
    """``value`` unless it is ``None`` (a rejected value; the problem is recorded)."""
    return default if value is None else value


def _all_str(values: list[Any]) -> bool:
    return all(isinstance(x, str) for x in values)


def _numeric(values: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in values)


def _check(s: SimScenario, problems: list[Problem]) -> None:
    def need(ok: bool, path: str, message: str) -> None:
        if not ok:
            problems.append(Problem(path, message))

    need(s.duration_s > 0, "duration_s", "must be > 0")
    t = s.topology
    need(t.sites >= 1, "topology.sites", "must be ≥ 1")
    need(1 <= t.regions <= t.sites, "topology.regions", "must be between 1 and sites")
    need(t.device.count >= 1, "topology.device.count", "must be ≥ 1")
    for tier in ("device", "edge", "regional", "cloud"):
        nc: NodeClass = getattr(t, tier)
        need(nc.count >= 0, f"topology.{tier}.count", "must be ≥ 0")
        need(nc.cpus > 0 and nc.mips > 0, f"topology.{tier}", "cpus and mips must be > 0")
        need(0 <= nc.idle_w <= nc.max_w, f"topology.{tier}", "need 0 ≤ idle_w ≤ max_w")
        need(nc.mtbf_s >= 0 and nc.mttr_s > 0, f"topology.{tier}", "need mtbf_s ≥ 0, mttr_s > 0")
        need(0 <= nc.compute_share <= 1, f"topology.{tier}.compute_share", "must be in [0, 1]")
        need(nc.start_s >= 0, f"topology.{tier}.start_s", "must be ≥ 0")
        need(nc.supervisor_start_s >= 0, f"topology.{tier}.supervisor_start_s", "must be ≥ 0")
    for name in ("access", "metro", "wan", "lan"):
        lc: LinkClass = getattr(s.links, name)
        need(lc.latency_ms >= 0 and lc.jitter_ms >= 0, f"links.{name}", "latencies must be ≥ 0")
        need(0 <= lc.spread < 1, f"links.{name}.spread", "must be in [0, 1)")
        need(lc.bandwidth_mbps > 0, f"links.{name}.bandwidth_mbps", "must be > 0")
        need(lc.mtbf_s >= 0 and lc.mttr_s > 0, f"links.{name}", "need mtbf_s ≥ 0 and mttr_s > 0")
    w = s.workload
    need(w.arrival in ("poisson", "bursty"), "workload.arrival", "must be poisson or bursty")
    need(w.rate_per_device >= 0, "workload.rate_per_device", "must be ≥ 0")
    need(w.burst_on_s > 0 and w.burst_off_s > 0 and w.burst_factor >= 1, "workload", "bad burst")
    need(bool(w.types), "workload.types", "needs at least one task type")
    names = [tt.name for tt in w.types]
    need(len(set(names)) == len(names), "workload.types", "names must be unique")
    levels = {lv.value for lv in Level}
    for i, tt in enumerate(w.types):
        p = f"workload.types[{i}]"
        need(tt.weight > 0, f"{p}.weight", "must be > 0")
        need(tt.deadline_s > 0, f"{p}.deadline_s", "must be > 0")
        need(tt.cpu > 0 and tt.memory_mb >= 0, p, "cpu must be > 0, memory_mb ≥ 0")
        need(
            tt.level in levels | {"adaptive"}, f"{p}.level", "strong, causal, eventual or adaptive"
        )
        need(tt.min in levels and tt.max in levels, p, "min/max must be levels")
        if tt.min in levels and tt.max in levels:
            need(Level(tt.min).strength <= Level(tt.max).strength, p, "min above max")
        need(tt.max_attempts >= 1, f"{p}.max_attempts", "must be ≥ 1")
        need(0 <= tt.fail_rate < 1, f"{p}.fail_rate", "must be in [0, 1)")
        need(min(tt.compute_mi) > 0, f"{p}.compute_mi", "must be > 0")
    for i, wf in enumerate(w.workflows):
        p = f"workload.workflows[{i}]"
        need(wf.width >= 1 and wf.depth >= 1, p, "width and depth must be ≥ 1")
        need(not wf.type or wf.type in names, f"{p}.type", "not a task type name")
    c = s.controller
    need(c.placement_interval_s >= 0, "controller.placement_interval_s", "must be ≥ 0")
    need(c.telemetry_s > 0 and c.ack_period_s > 0, "controller", "periods must be > 0")
    need(
        c.suspect_missed >= 1 and c.confirm_after_s >= 0 and c.link_window_s > 0,
        "controller",
        "need suspect_missed >= 1, confirm_after_s >= 0, link_window_s > 0",
    )
    need(c.lease_margin_s >= 0 and c.upgrade_dwell_s >= 0, "controller", "margins must be >= 0")
    need(c.commit_s >= 0, "controller.commit_s", "must be ≥ 0")
    need(
        c.keepalive_s > 0 and 0 < c.reconnect_min_s <= c.reconnect_max_s,
        "controller",
        "need keepalive_s > 0 and 0 < reconnect_min_s <= reconnect_max_s",
    )


def parse(data: Mapping[str, Any], *, source: str | None = None) -> SimScenario:
    """Validate a raw table into a ``SimScenario`` (every problem reported at once)."""
    problems: list[Problem] = []
    r = _Reader()
    if data.get("kind", "sim") != "sim":
        problems.append(Problem("kind", 'must be "sim" (testbed scenarios: see sim.realgap)'))
    name = data.get("name")
    if not isinstance(name, str) or not name:
        problems.append(Problem("name", "required, a non-empty string"))
        name = "unnamed"
    policies: list[Policy] = []
    raw_policies = data.get("policies", ["hybrid_dynamic"])
    if not isinstance(raw_policies, list) or not raw_policies:
        problems.append(Problem("policies", "must be a non-empty list of policy names"))
    else:
        for i, text in enumerate(raw_policies):
            try:
                policies.append(parse_policy(str(text)))
            except ValueError as exc:
                problems.append(Problem(f"policies[{i}]", str(exc)))
    wl_raw = data.get("workload") or {}
    types: list[TaskType] = []
    flows: list[Workflow] = []
    if isinstance(wl_raw, Mapping):
        for i, t in enumerate(wl_raw.get("types") or [{}]):
            types.append(r.build(TaskType, t, f"workload.types[{i}]", TaskType(name=f"type{i}")))
        for i, wf in enumerate(wl_raw.get("workflows") or []):
            flows.append(r.build(Workflow, wf, f"workload.workflows[{i}]", Workflow()))
        wl_raw = {k: v for k, v in wl_raw.items() if k not in ("types", "workflows")}
    scenario = SimScenario(
        name=name,
        description=str(data.get("description", "")),
        duration_s=_or(r.value("float", None, data.get("duration_s", 60.0), "duration_s"), 60.0),
        seed=_or(r.value("int", None, data.get("seed", 0), "seed"), 0),
        policies=tuple(policies) or (Policy(),),
        topology=r.build(Topology, data.get("topology"), "topology", Topology()),
        links=r.build(Links, data.get("links"), "links", Links()),
        failures=r.build(Failures, data.get("failures"), "failures", Failures()),
        workload=replace(
            r.build(Workload, wl_raw, "workload", Workload()),
            types=tuple(types),
            workflows=tuple(flows),
        ),
        controller=r.build(Controller, data.get("controller"), "controller", Controller()),
        path=source,
    )
    allowed = {f.name for f in fields(SimScenario)} | {"kind"}
    problems += [Problem(k, "unknown key") for k in data if k not in allowed]
    problems += r.problems
    _check(scenario, problems)
    if problems:
        raise ValidationError(problems, what=f"simulator scenario {source or name}")
    return scenario


def override(data: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the dotted ``key`` set to ``value``
    (``links.wan.latency_ms``, ``workload.types.0.deadline_s``, ``seed``)."""
    out = copy.deepcopy(dict(data))
    node: Any = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def read_table(path: str | Path) -> dict[str, Any]:
    """The raw TOML table of a scenario file."""
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load(path: str | Path, *, params: Mapping[str, Any] | None = None) -> SimScenario:
    """Read, override and validate a scenario file."""
    data = read_table(path)
    for key, value in (params or {}).items():
        data = override(data, key, value)
    return parse(data, source=str(path))
