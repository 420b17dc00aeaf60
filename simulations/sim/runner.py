"""Running policies and parameter sweeps (local worker processes for sweeps).

A sweep is the cross product of every ``--param key=v1,v2`` list, each point run
under every policy and seed; points run in a ``ProcessPoolExecutor`` of ``jobs`` workers
(each a fresh interpreter on this machine), results come back in a fixed order
whatever order the workers finish in, so a sweep's output does not depend on
``jobs``.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from simulations.sim.model import Result, simulate
from simulations.sim.scenario import Policy, SimScenario, load, parse_policy

__all__ = ["grid", "parse_param", "parse_value", "run_policies", "sweep"]


def parse_value(text: str) -> Any:
    """A TOML scalar (``100``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``), else the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_param(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2,…`` → ``(key, [v1, v2, …])``."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise ValueError(f"--param {text!r}: expected key=v1,v2,…")
    return key.strip(), [parse_value(v.strip()) for v in values.split(",")]


def grid(params: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the swept values, in the order given."""
    keys = [k for k, _ in params]
    return [
        dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(v for _, v in params))
    ]


def run_policies(
    scenario: SimScenario,
    policies: Sequence[Policy],
    *,
    seeds: Sequence[int | None] = (None,),
    loop: str = "heap",
    params: Mapping[str, Any] | None = None,
    progress: Callable[[int, float, float], None] | None = None,
    trace: int = 0,
) -> list[Result]:
    """Run ``scenario`` once per policy and seed (one seed: the same faults and
    workload for every policy); ``None`` is the scenario's own seed. Results come
    policy by policy, seeds in the order given."""
    results = []
    runs = [(policy, seed) for policy in policies for seed in seeds]
    for i, (policy, seed) in enumerate(runs):
        hook = None if progress is None else (lambda now, total, i=i: progress(i, now, total))
        result = simulate(scenario, policy, seed=seed, loop=loop, progress=hook, trace=trace)
        result.params = dict(params or {})
        results.append(result)
    return results


def _point(path: str, params: dict[str, Any], policy: str, seed: int | None, loop: str) -> Result:
    scenario = load(path, params=params)
    result = simulate(scenario, parse_policy(policy), seed=seed, loop=loop)
    result.params = params
    return result


def sweep(
    path: str | Path,
    params: Sequence[tuple[str, list[Any]]],
    *,
    policies: Sequence[Policy] | None = None,
    seeds: Sequence[int | None] = (None,),
    jobs: int = 1,
    loop: str = "heap",
    done: Callable[[int, int], None] | None = None,
) -> list[Result]:
    """Run every grid point under every policy and seed; ``jobs > 1`` uses worker
    processes."""
    points = grid(params)
    if policies is None:
        policies = load(path, params=points[0] if points else None).policies
    work = [
        (str(path), p, pol.name, seed, loop) for p in points for pol in policies for seed in seeds
    ]
    results: list[Result | None] = [None] * len(work)
    if jobs <= 1:
        for i, item in enumerate(work):
            results[i] = _point(*item)
            if done:
                done(i + 1, len(work))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_point, *item): i for i, item in enumerate(work)}
            for n, future in enumerate(as_completed(futures), start=1):
                results[futures[future]] = future.result()
                if done:
                    done(n, len(work))
    return [r for r in results if r is not None]
