"""Issue 12's goals in the simulator: does adaptation pay, over several seeds?

On every shipped simulator scenario, the five placement modes (declared
consistency) run over ``SIM_GOALS_SEEDS`` (default ``1-5``); per mode the mean
deadline-miss rate, WAN MB, energy and harm (re-executions of non-idempotent tasks)
with their 95 % interval (``simulations.sim.stats``). Goal rows, per scenario:

- ``adaptive`` has the lowest mean miss rate of the five modes (within 0.2
  percentage points of the best counts);
- its WAN bytes are no more than ``cloud_only``'s; its energy within 5 % of the
  lowest mode's;
- ``pureedgesim-10k``: at most 0.5 % misses; ``wan-100ms``: no worse than
  ``edge_only``.

On ``partitions-frequent`` also the consistency goal: adaptive consistency
(``hybrid_dynamic/adaptive``) misses no more deadlines than the best fixed level,
causes no more harm than ``causal``, and is strictly better than each fixed level
on one of the two.

``SIM_GOALS_QUICK=1`` cuts every scenario to 60 simulated seconds and one seed (a
smoke run; its figures are not the goals').
"""

from __future__ import annotations

import os

from _report import emit

from simulations.sim.records import Result
from simulations.sim.runner import run_policies
from simulations.sim.scenario import load, parse_policy, scenario_dir
from simulations.sim.stats import Summary, parse_seeds, summarise

MODES = ("cloud_only", "edge_only", "hybrid_static", "hybrid_dynamic", "adaptive")
LEVELS = ("strong", "causal", "eventual")
#: "within 0.2 percentage points of the best counts"
TIE_PP = 0.2


def _runs(name: str, policies: list[str], seeds: list[int | None], quick: bool) -> list[Result]:
    scenario = load(scenario_dir() / f"{name}.toml", params={"duration_s": 60} if quick else None)
    return run_policies(scenario, [parse_policy(p) for p in policies], seeds=seeds)


def _by_policy(results: list[Result], metric: str) -> dict[str, Summary]:
    values: dict[str, list[float]] = {}
    for r in results:
        values.setdefault(r.policy, []).append(r.metrics[metric])
    return {policy: summarise(v) for policy, v in values.items()}


def _modes(name: str, seeds: list[int | None], quick: bool) -> None:
    results = _runs(name, list(MODES), seeds, quick)
    miss = _by_policy(results, "deadline_miss_rate")
    wan = _by_policy(results, "wan_mb")
    energy = _by_policy(results, "energy_kj")
    harm = _by_policy(results, "harm")
    key = {m: f"{m}/declared" for m in MODES}
    for mode in MODES:
        p = key[mode]
        emit(
            f"sim goals: {name} {mode} deadline miss",
            measured=100 * miss[p].mean,
            unit="%",
            direction="lower",
            note=f"± {100 * miss[p].half:.2f} (95 %, {miss[p].n} seeds); "
            f"WAN {wan[p].mean:,.0f} MB, energy {energy[p].mean:,.0f} kJ, "
            f"harm {harm[p].mean:,.1f}",
        )
    ad = key["adaptive"]
    best = min((miss[key[m]].mean for m in MODES if m != "adaptive"), default=0.0)
    emit(
        f"sim goals: {name} adaptive miss minus the best other mode",
        measured=100 * (miss[ad].mean - best),
        unit="pp",
        goal=TIE_PP,
        direction="lower",
    )
    emit(
        f"sim goals: {name} adaptive WAN / cloud_only WAN",
        measured=wan[ad].mean / max(wan[key["cloud_only"]].mean, 1e-9),
        unit="x",
        goal=1.0,
        direction="lower",
    )
    lowest = min(energy[key[m]].mean for m in MODES)
    emit(
        f"sim goals: {name} adaptive energy / lowest mode's",
        measured=energy[ad].mean / lowest,
        unit="x",
        goal=1.05,
        direction="lower",
    )
    if name == "pureedgesim-10k":
        emit(
            f"sim goals: {name} adaptive deadline miss",
            measured=100 * miss[ad].mean,
            unit="%",
            goal=0.5,
            direction="lower",
        )
    if name == "wan-100ms":
        emit(
            f"sim goals: {name} adaptive miss minus edge_only's",
            measured=100 * (miss[ad].mean - miss[key["edge_only"]].mean),
            unit="pp",
            goal=0.0,
            direction="lower",
        )


def _consistency(seeds: list[int | None], quick: bool) -> None:
    name = "partitions-frequent"
    policies = [f"hybrid_dynamic/{c}" for c in (*LEVELS, "adaptive")]
    results = _runs(name, policies, seeds, quick)
    miss = _by_policy(results, "deadline_miss_rate")
    harm = _by_policy(results, "harm")
    ad = "hybrid_dynamic/adaptive"
    fixed = [f"hybrid_dynamic/{c}" for c in LEVELS]
    best = min(miss[p].mean for p in fixed)
    emit(
        f"sim goals: {name} adaptive consistency miss minus the best fixed level",
        measured=100 * (miss[ad].mean - best),
        unit="pp",
        goal=0.0,
        direction="lower",
        note=", ".join(f"{p.split('/')[1]} {100 * miss[p].mean:.2f} %" for p in (*fixed, ad)),
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


def main() -> None:
    quick = os.environ.get("SIM_GOALS_QUICK") == "1"
    seeds: list[int | None] = (
        [1] if quick else list(parse_seeds(os.environ.get("SIM_GOALS_SEEDS", "1-5")))
    )
    for path in sorted(scenario_dir().glob("*.toml")):
        _modes(path.stem, seeds, quick)
    _consistency(seeds, quick)


if __name__ == "__main__":
    main()
