"""Issue 12's goals in the simulator: does adaptation pay, over several seeds?

On every shipped simulator scenario, and on the *held-out* ones
(``benchmarks/heldout/*.toml``: written to check that the policy was not fitted to
the shipped ones, never tuned against; see its README), the five placement modes
(declared consistency) run over ``SIM_GOALS_SEEDS`` (default ``1-5``); per mode
the mean deadline-miss rate, WAN MB, energy and harm (re-executions of
non-idempotent tasks) with their 95 % interval (``simulations.sim.stats``). Goal
rows, per scenario:

- ``adaptive`` has the lowest mean miss rate of the five modes (within 0.2
  percentage points of the best counts);
- its WAN bytes are no more than ``cloud_only``'s; its energy within 5 % of the
  lowest mode's;
- ``pureedgesim-10k``: at most 0.5 % misses; ``wan-100ms``: no worse than
  ``edge_only``.

On each *consistency scenario* (one whose declared policies name consistency
levels under ``hybrid_dynamic``: ``partitions-frequent``, and the held-out
``outages-long``) also the consistency goal: adaptive consistency
(``hybrid_dynamic/adaptive``) misses no more deadlines than the best fixed level,
causes no more harm than ``causal``, and is strictly better than each fixed level
on one of the two.

Environment: ``SIM_GOALS_QUICK=1`` cuts every scenario to ``SIM_GOALS_QUICK_S``
(default 60) simulated seconds and one seed (a smoke run; its figures are not the
goals'); ``SIM_GOALS_ONLY`` a
comma-separated list of scenario names; ``SIM_GOALS_JOBS`` worker processes;
``SIM_GOALS_RUNS`` a JSON-lines file of finished runs: runs found there are not
run again and new ones are appended (a long measurement survives an interruption).
After the goal rows it prints a Markdown table of every mode's figures.

Two floors per scenario and seed, the same for every mode (``_floors``), say how much
of a goal placement can reach at all: the share of tasks whose device can reach
neither the controller nor an agent of its site (failover,
``shared.autonomy.Failover``) before their deadline (no placement, however good,
meets those; the share that only misses the controller, the floor before devices
failed over, is printed beside it), and the energy below
which no run that runs every task can go (every node's idle draw, each task's
compute on the cheapest cores with room for it, each byte of a plain device's data
once over its access link). docs/placement.md ("Does it pay?") derives both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _report import emit

from shared.vocab import Level, Tier
from simulations.sim.metrics import Counters, measure
from simulations.sim.model import Simulation, simulate
from simulations.sim.scenario import load, parse_policy, scenario_dir
from simulations.sim.stats import Summary, parse_seeds, summarise

MODES = ("cloud_only", "edge_only", "hybrid_static", "hybrid_dynamic", "adaptive")
LEVELS = ("strong", "causal", "eventual")
#: "within 0.2 percentage points of the best counts"
TIE_PP = 0.2
#: Held-out scenarios: not shipped, not tuned against (benchmarks/heldout/README.md).
HELDOUT = Path(__file__).resolve().parent / "heldout"
#: A scenario declaring this policy is a consistency scenario (the module's docstring).
CONSISTENCY = "hybrid_dynamic/adaptive"
METRICS = ("deadline_miss_rate", "wan_mb", "energy_kj", "harm")

#: A quick run's simulated seconds (``SIM_GOALS_QUICK=1``).
QUICK_S = float(os.environ.get("SIM_GOALS_QUICK_S", "60"))

#: The pseudo-policy under which a scenario's floors (``_floors``) are kept per seed.
FLOORS = "floors"

Key = tuple[str, str, int]  # scenario, policy, seed
Runs = dict[Key, dict[str, float]]


def _one(path: str, policy: str, seed: int, quick: bool) -> tuple[Key, dict[str, float]]:
    scenario = load(path, params={"duration_s": QUICK_S} if quick else None)
    if policy == FLOORS:
        return (scenario.name, FLOORS, seed), _floors(
            Simulation(scenario, parse_policy("cloud_only"), seed=seed)
        )
    result = simulate(scenario, parse_policy(policy), seed=seed)
    return (scenario.name, result.policy, seed), {m: result.metrics[m] for m in METRICS}


def _floors(sim: Simulation) -> dict[str, float]:
    """What no mode can go below on ``sim``'s scenario and seed (outages and arrivals
    are drawn before any decision, the same for every mode):

    - ``unreachable``: the share of arrivals from devices that do not compute whose
      submission reaches the controller after their deadline (the first moment every
      link of the device → controller path is up, plus its latency; jitter left out,
      so a lower bound). Computing devices are left out: autonomy may run their own
      tasks while they are cut off. Only tasks whose deadline falls inside the run
      are counted (a miss rate counts those whatever happened to them: see
      ``simulations.sim.metrics``), over all arrivals: a lower bound on every mode's
      miss rate. Before devices failed over, such a task missed in every mode; kept
      for comparison;
    - ``unreachable_failover``: of those, the share whose device cannot reach an
      agent of its site in time either (failover, ``shared.autonomy.Failover``: the
      first moment its access link and one of its site's edge servers are up, plus
      that path's latency, is after the deadline; no timeout, transfer or run time
      counted, so a lower bound), or whose declared level is strong-only (it never
      fails over). Such a task misses in every mode;
    - ``energy_kj``: every node's idle draw (the simulator's own accounting of a run
      with nothing executed), plus every arrival's compute on the cheapest cores
      with room for it (joules per MI = a node's marginal watts per core over its
      MIPS, times the cores the task holds; each node busy at most the whole run),
      plus each bit of a plain device's input and output once over its access link (a
      computing device's may stay on it). A run that runs every task spends at least this much."""
    sc, net, wl, topo = sim.sc, sim.net, sim.workload, sim.topo
    S = topo.sites
    deadlines = [t.deadline_s for t in sc.workload.types]
    arrivals = zip(wl.arr_t.tolist(), wl.arr_dev.tolist(), wl.arr_type.tolist(), strict=True)
    strong_only = [wl.bounds(k)[0] is Level.STRONG for k in range(len(deadlines))]
    T = sc.duration_s
    late = [
        (t, dev, deadlines[k], strong_only[k])
        for t, dev, k in arrivals
        if topo.dev_node[dev] < 0
        and t + deadlines[k] <= T
        and net.tl.next_up(net.dev_ctrl[dev].down, t) - t + net.dev_ctrl[dev].lat > deadlines[k]
    ]
    edges = [[g for g in topo.members(s) if topo.nodes[g].tier is Tier.EDGE] for s in range(S)]

    def agent_in_time(t: float, dev: int, deadline: float, strong_only: bool) -> bool:
        if strong_only:  # never fails over: it needs the controller's lease
            return False
        parts = net.part[topo.dev_site[dev]]
        lat = net.net.lat[dev]
        return any(
            net.tl.next_up((dev, *parts[g].down), t) - t + lat + parts[g].lat <= deadline
            for g in edges[topo.dev_site[dev]]
        )

    idle_kj = measure(Counters(), sc, topo, net, events=0, wall=0.0, cpu=0.0)[0]["energy_kj"]
    # a run holds its task's ``cpu`` cores for mi / mips seconds (the simulator charges
    # each held core): core-MI, not MI, is what the cores' capacity and joules are in
    cores = np.array([t.cpu for t in sc.workload.types])[wl.arr_type]
    left, compute_j = float((wl.arr_mi * cores).sum()), 0.0
    for cls in sorted(
        (n.cls for n in topo.nodes), key=lambda c: (c.max_w - c.idle_w) / c.cpus / c.mips
    ):
        take = min(left, cls.cpus * cls.mips * T)
        compute_j += take * (cls.max_w - cls.idle_w) / cls.cpus / cls.mips
        left -= take
    plain = np.array([g < 0 for g in topo.dev_node])[wl.arr_dev]
    bits = float((wl.arr_in + wl.arr_out)[plain].sum())
    link_j = bits * sc.links.access.nj_per_bit * 1e-9
    n = max(len(wl.arr_t), 1)
    return {
        "unreachable": len(late) / n,
        "unreachable_failover": sum(1 for x in late if not agent_in_time(*x)) / n,
        "energy_kj": idle_kj + (compute_j + link_j) / 1e3,
    }


def _measure(work: list[tuple[str, str, int]], quick: bool, runs: Runs, log: str | None) -> None:
    """Run every ``(path, policy, seed)`` not yet in ``runs`` (appending to ``log``)."""
    todo = [w for w in work if (Path(w[0]).stem, _name(w[1]), w[2]) not in runs]
    jobs = int(os.environ.get("SIM_GOALS_JOBS", "1"))

    def record(key: Key, metrics: dict[str, float]) -> None:
        runs[key] = metrics
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": list(key), "metrics": metrics}) + "\n")

    if not todo:
        return
    if jobs <= 1:
        for item in todo:
            record(*_one(*item, quick))
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for key, metrics in pool.map(_one, *zip(*todo, strict=True), [quick] * len(todo)):
            record(key, metrics)


def _name(policy: str) -> str:
    """The key a run of ``policy`` is kept under."""
    return policy if policy == FLOORS else parse_policy(policy).name


def _load_runs(log: str | None) -> Runs:
    runs: Runs = {}
    if log and os.path.exists(log):
        with open(log, encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                name, policy, seed = row["key"]
                runs[(name, policy, int(seed))] = row["metrics"]
    return runs


def _summary(runs: Runs, name: str, policy: str, seeds: Iterable[int], metric: str) -> Summary:
    return summarise([runs[(name, policy, s)][metric] for s in seeds])


def _modes(name: str, runs: Runs, seeds: list[int], heldout: bool) -> None:
    label = f"{name} (held out)" if heldout else name

    def get(mode: str, metric: str) -> Summary:
        return _summary(runs, name, f"{mode}/declared", seeds, metric)

    miss = {m: get(m, "deadline_miss_rate") for m in MODES}
    wan = {m: get(m, "wan_mb") for m in MODES}
    energy = {m: get(m, "energy_kj") for m in MODES}
    harm = {m: get(m, "harm") for m in MODES}
    for mode in MODES:
        emit(
            f"sim goals: {label} {mode} deadline miss",
            measured=100 * miss[mode].mean,
            unit="%",
            direction="lower",
            note=f"± {100 * miss[mode].half:.2f} (95 %, {miss[mode].n} seeds); "
            f"WAN {wan[mode].mean:,.0f} MB, energy {energy[mode].mean:,.0f} kJ, "
            f"harm {harm[mode].mean:,.1f} ± {harm[mode].half:,.1f}",
        )
    best = min(miss[m].mean for m in MODES if m != "adaptive")
    emit(
        f"sim goals: {label} adaptive miss minus the best other mode",
        measured=100 * (miss["adaptive"].mean - best),
        unit="pp",
        goal=TIE_PP,
        direction="lower",
    )
    emit(
        f"sim goals: {label} adaptive WAN / cloud_only WAN",
        measured=wan["adaptive"].mean / max(wan["cloud_only"].mean, 1e-9),
        unit="x",
        goal=1.0,
        direction="lower",
    )
    frugal = min(MODES, key=lambda m: energy[m].mean)
    unreachable = _summary(runs, name, FLOORS, seeds, "unreachable")
    floor = _summary(runs, name, FLOORS, seeds, "unreachable_failover")
    least = _summary(runs, name, FLOORS, seeds, "energy_kj")
    emit(
        f"sim goals: {label} adaptive energy / lowest mode's",
        measured=energy["adaptive"].mean / energy[frugal].mean,
        unit="x",
        goal=1.05,
        direction="lower",
        note=f"lowest: {frugal} ({100 * miss[frugal].mean:.2f} % misses); the floor for "
        f"running every task is {least.mean / energy[frugal].mean:.3f} x it",
    )
    emit(
        f"sim goals: {label} adaptive energy / the floor for running every task",
        measured=energy["adaptive"].mean / least.mean,
        unit="x",
        direction="lower",
        note=f"floor {least.mean:,.0f} kJ (idle draw, each MI on the cheapest free cores, "
        "each byte once over the access link)",
    )
    emit(
        f"sim goals: {label} tasks whose submission reaches the controller after the deadline",
        measured=100 * unreachable.mean,
        unit="%",
        direction="lower",
        note=f"± {100 * unreachable.half:.2f} (95 %, {unreachable.n} seeds); the floor before "
        "devices failed over to their site's agents",
    )
    emit(
        f"sim goals: {label} tasks that reach neither the controller nor a site agent in time",
        measured=100 * floor.mean,
        unit="%",
        direction="lower",
        note=f"± {100 * floor.half:.2f} (95 %, {floor.n} seeds); a floor under every mode's "
        f"misses; adaptive {100 * (miss['adaptive'].mean - floor.mean):+.2f} pp above it",
    )
    if name == "pureedgesim-10k":
        emit(
            f"sim goals: {name} adaptive deadline miss (goal ≤ 0.5 %)",
            measured=100 * miss["adaptive"].mean,
            unit="%",
            goal=0.5,
            direction="lower",
            note=f"{100 * floor.mean:.2f} % of the tasks reach neither the controller nor a "
            f"site agent in time ({100 * unreachable.mean:.2f} % not the controller)",
        )
    if name == "wan-100ms":
        emit(
            f"sim goals: {name} adaptive miss minus edge_only's",
            measured=100 * (miss["adaptive"].mean - miss["edge_only"].mean),
            unit="pp",
            goal=0.0,
            direction="lower",
        )


def _consistency(name: str, runs: Runs, seeds: list[int]) -> None:
    fixed = [f"hybrid_dynamic/{c}" for c in LEVELS]
    ad = "hybrid_dynamic/adaptive"
    miss = {p: _summary(runs, name, p, seeds, "deadline_miss_rate") for p in (*fixed, ad)}
    harm = {p: _summary(runs, name, p, seeds, "harm") for p in (*fixed, ad)}
    best = min(miss[p].mean for p in fixed)
    emit(
        f"sim goals: {name} adaptive consistency miss minus the best fixed level",
        measured=100 * (miss[ad].mean - best),
        unit="pp",
        goal=0.0,
        direction="lower",
        note=", ".join(
            f"{p.split('/')[1]} {100 * miss[p].mean:.2f} ± {100 * miss[p].half:.2f} %"
            for p in (*fixed, ad)
        ),
    )
    emit(
        f"sim goals: {name} adaptive consistency harm minus causal's",
        measured=harm[ad].mean - harm["hybrid_dynamic/causal"].mean,
        unit="re-executions",
        goal=0.0,
        direction="lower",
        note=", ".join(f"{p.split('/')[1]} {harm[p].mean:.1f}" for p in (*fixed, ad)),
    )
    better = sum(1 for p in fixed if miss[ad].mean < miss[p].mean or harm[ad].mean < harm[p].mean)
    emit(
        f"sim goals: {name} fixed levels adaptive consistency beats on misses or harm",
        measured=better,
        unit=f"of {len(fixed)}",
        goal=float(len(fixed)),
        direction="higher",
    )


def _table(runs: Runs, scenarios: list[tuple[str, bool]], seeds: list[int]) -> str:
    """Every mode's figures, mean ± 95 % half-width over the seeds (Markdown)."""

    def cell(s: Summary, scale: float = 1.0, digits: int = 2) -> str:
        return f"{scale * s.mean:,.{digits}f} ± {scale * s.half:,.{digits}f}"

    lines = [
        f"| scenario | policy | miss % | WAN MB | energy kJ | harm |  ({len(seeds)} seeds)",
        "|---|---|---|---|---|---|",
    ]
    for name, heldout in scenarios:
        policies = sorted({k[1] for k in runs if k[0] == name and k[1] != FLOORS})
        for policy in policies:
            if not all((name, policy, seed) in runs for seed in seeds):
                continue
            miss, wan, energy, harm = (
                _summary(runs, name, policy, seeds, metric) for metric in METRICS
            )
            lines.append(
                f"| {name}{' (held out)' if heldout else ''} | {policy} | "
                f"{cell(miss, 100)} | {cell(wan, digits=0)} | "
                f"{cell(energy, digits=0)} | {cell(harm, digits=1)} |"
            )
    return "\n".join(lines)


def main() -> None:
    quick = os.environ.get("SIM_GOALS_QUICK") == "1"
    seeds = [1] if quick else parse_seeds(os.environ.get("SIM_GOALS_SEEDS", "1-5"))
    only = {n for n in os.environ.get("SIM_GOALS_ONLY", "").split(",") if n}
    paths = [(p, False) for p in sorted(scenario_dir().glob("*.toml"))]
    paths += [(p, True) for p in sorted(HELDOUT.glob("*.toml"))]
    paths = [(p, h) for p, h in paths if not only or p.stem in only]
    consistency = {p.stem for p, _ in paths if parse_policy(CONSISTENCY) in load(p).policies}
    work: list[tuple[str, str, int]] = []
    for path, _ in paths:
        policies = list(MODES)
        if path.stem in consistency:
            policies += [f"hybrid_dynamic/{c}" for c in (*LEVELS, "adaptive")]
        policies.append(FLOORS)
        work += [(str(path), p, s) for s in seeds for p in policies]  # whole seeds first
    log = os.environ.get("SIM_GOALS_RUNS")
    runs = _load_runs(log)
    _measure(work, quick, runs, log)
    for path, heldout in paths:
        _modes(path.stem, runs, seeds, heldout)
        if path.stem in consistency:
            _consistency(path.stem, runs, seeds)
    print(_table(runs, [(p.stem, h) for p, h in paths], seeds))


if __name__ == "__main__":
    main()
