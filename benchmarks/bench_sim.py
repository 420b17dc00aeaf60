"""Simulator speed: the PureEdgeSim-sized scenario (goal ≤ 60 s wall) and events/s,
with the two design choices measured against their alternatives in the same run.

1. ``pureedgesim-10k`` (10,000 devices, 600 simulated seconds, ~1.13 M tasks) under
   ``hybrid_dynamic`` and under ``adaptive`` (the costlier mode: it predicts every
   candidate's finish and learns), heap loop, cached batch placer: wall and CPU
   seconds (goal ≤ 60 s wall each; baseline: PureEdgeSim's published 58 s for the
   same size on a 4-core i7-8550U, so ratio > 1 means faster than that figure;
   ``adaptive`` also beside ``hybrid_dynamic`` of the same run in its note) and
   events per second. CPU seconds and the load average are reported too: this
   2-core machine is shared and wall time moves with the load.
2. Event loop, alone: ``LOOP_EVENTS`` callbacks, each scheduling one more at a
   random delay with ``PENDING`` outstanding (a hold model), on ``HeapLoop`` and on
   ``SimPyLoop``: events/s, ratio heap / SimPy. Then the whole simulation on a
   30-second slice with each loop: the loop is a small part of a task's cost (about
   one loop event per task), so that ratio stays near 1.
3. The big ``adaptive`` run again, interpreted, in a child process
   (``CONTINUUM_SIM_NATIVE=0``), beside this process's build (compiled with mypyc by
   ``make install``, ``simulations/native.py``): wall and CPU seconds, ratio, and
   whether the results match. (The rows above say which build ran; the event loop of
   item 2 is one of the compiled modules.)
4. Placement: the same slice with the simulator's cached batch path
   (``sim.placer``: static half kept across ticks, rows caught up as resources
   move) and with ``shared.placement.place_batch`` called per tick and shape
   (which prepares each shape again per call): wall, ratio. Both give the same
   decisions (``tests/sim/test_sim_placer.py``), so the runs' metrics must match.
   Once for ``hybrid_dynamic`` (``place_many``) and once for ``adaptive``
   (``place_predicted`` against ``place_batch`` task by task, as the simulator
   placed that mode before).

``SIM_BENCH_QUICK=1`` shortens the big run to 120 simulated seconds (CI smoke);
``SIM_BENCH_DURATION_S`` sets its simulated seconds outright (over the quick run's),
``SIM_BENCH_SLICE_S`` the slice's (default 30) and ``SIM_BENCH_LOOP_EVENTS`` the hold
model's events (default 500,000; at least ``PENDING``): a smoke test's sizes.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from typing import Any

from _report import emit

from simulations import native
from simulations.sim.loop import make_loop
from simulations.sim.model import simulate
from simulations.sim.scenario import load, parse_policy, scenario_dir

SCENARIO = scenario_dir() / "pureedgesim-10k.toml"
POLICY = parse_policy("hybrid_dynamic")
ADAPTIVE = parse_policy("adaptive")
PUREEDGESIM_S = 58.0
SLICE_S = float(os.environ.get("SIM_BENCH_SLICE_S", "30"))
LOOP_EVENTS = int(os.environ.get("SIM_BENCH_LOOP_EVENTS", "500000"))
#: The big run's simulated seconds; unset: the scenario's own (120 with SIM_BENCH_QUICK=1).
DURATION_S = os.environ.get("SIM_BENCH_DURATION_S")
PENDING = 1_000
#: Metrics two placers giving the same decisions must agree on.
_SAME = ("generated", "succeeded", "latency_mean_s", "deadline_miss_rate", "energy_kj", "wan_mb")


def _hold(name: str) -> float:
    """Events/s of one loop on the hold model (each event schedules the next)."""
    loop = make_loop(name)
    rng = random.Random(1)
    delays = [rng.expovariate(1.0) for _ in range(LOOP_EVENTS)]
    it = iter(delays)

    def fire(_: object) -> None:
        delay = next(it, None)
        if delay is not None:
            loop.after(delay, fire)

    for _ in range(PENDING):
        loop.after(next(it), fire)
    t0 = time.perf_counter()
    loop.run(float("inf") if name == "heap" else 1e12)
    return loop.events / (time.perf_counter() - t0)


def _load() -> str:
    return "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())


#: What a child process prints: the run's metrics, interpreted.
_CHILD = """
import json, sys
from simulations import native
from simulations.sim.model import simulate
from simulations.sim.scenario import load, parse_policy, scenario_dir
assert not native.active()
run = load(scenario_dir() / "pureedgesim-10k.toml", params={"duration_s": float(sys.argv[1])})
print(json.dumps(simulate(run, parse_policy(sys.argv[2])).metrics))
"""


def _interpreted(duration_s: float, policy: str) -> dict[str, Any]:
    """A run's metrics from a child process running the simulator interpreted."""
    env = {**os.environ, native.ENV: "0"}
    args = [sys.executable, "-c", _CHILD, str(duration_s), policy]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _build() -> str:
    return "compiled (mypyc)" if native.active() else "interpreted (no matching build)"


def _full(full: Any, name: str, m: dict[str, Any], load: str, extra: str = "") -> None:
    scale = full.duration_s / 600.0
    emit(
        f"sim: pureedgesim-10k {name} wall ({full.duration_s:g} s simulated, "
        f"{m['generated']:,.0f} tasks)",
        measured=m["wall_s"],
        unit="s",
        goal=60.0 * scale,
        direction="lower",
        baseline=PUREEDGESIM_S * scale,
        baseline_name="PureEdgeSim README, 4-core i7-8550U",
        note=f"{_build()}; CPU {m['cpu_s']:.1f} s; {m['succeeded']:,.0f} succeeded, "
        f"miss {m['deadline_miss_rate']:.1%}, p95 {m['latency_p95_s']:.2f} s; {load}{extra}",
    )


def main() -> None:
    quick = os.environ.get("SIM_BENCH_QUICK") == "1"
    duration = float(DURATION_S) if DURATION_S else 120 if quick else None
    full = load(SCENARIO, params=None if duration is None else {"duration_s": duration})
    before = _load()
    m = simulate(full, POLICY).metrics
    _full(full, "hybrid_dynamic", m, f"{before} before, {_load()} after")
    before = _load()
    a = simulate(full, ADAPTIVE).metrics
    _full(
        full,
        "adaptive",
        a,
        f"{before} before, {_load()} after",
        f"; {a['wall_s'] / m['wall_s']:.2f}x the wall of hybrid_dynamic right before "
        f"({a['cpu_s'] / m['cpu_s']:.2f}x its CPU)",
    )
    before = _load()
    slow = _interpreted(full.duration_s, "adaptive")
    emit(
        f"sim: pureedgesim-10k adaptive wall, this process's build vs interpreted "
        f"({full.duration_s:g} s simulated)",
        measured=a["wall_s"],
        unit="s",
        direction="lower",
        baseline=slow["wall_s"],
        baseline_name="the same sources interpreted (CONTINUUM_SIM_NATIVE=0)",
        note=f"{_build()}; CPU {a['cpu_s']:.1f} s vs {slow['cpu_s']:.1f} s; same results: "
        f"{all(a[k] == slow[k] for k in _SAME)}; {before} before, {_load()} after",
    )
    emit(
        "sim: pureedgesim-10k events/s (heap loop)",
        measured=m["events_per_s"],
        unit="events/s",
        note=f"{m['events']:,.0f} events (arrivals + loop events)",
    )

    rates = {}
    for name in ("heap", "simpy"):
        rates[name] = _hold(name)
    emit(
        f"sim: event loop alone, heap vs SimPy ({LOOP_EVENTS:,} events, {PENDING} pending)",
        measured=rates["heap"],
        unit="events/s",
        direction="higher",
        baseline=rates["simpy"],
        baseline_name="SimPyLoop (simpy.Environment)",
    )

    part = load(SCENARIO, params={"duration_s": SLICE_S})
    heap = simulate(part, POLICY, loop="heap").metrics
    simpy = simulate(part, POLICY, loop="simpy").metrics
    same = all(heap[k] == simpy[k] for k in ("generated", "succeeded", "latency_mean_s"))
    emit(
        f"sim: whole simulation events/s, heap loop vs SimPy ({SLICE_S:g} s slice)",
        measured=heap["events_per_s"],
        unit="events/s",
        direction="higher",
        baseline=simpy["events_per_s"],
        baseline_name="SimPyLoop (simpy.Environment)",
        note=f"same results: {same}; loop events heap {heap['events']:,.0f}",
    )
    runs = {
        "hybrid_dynamic": (POLICY, heap),
        "adaptive": (ADAPTIVE, simulate(part, ADAPTIVE).metrics),
    }
    for name, (policy, cached) in runs.items():
        shared = simulate(part, policy, placer="shared").metrics
        same = all(cached[k] == shared[k] for k in _SAME)
        emit(
            f"sim: wall, cached batch placer vs shared place_batch per tick, {name} "
            f"({SLICE_S:g} s slice)",
            measured=cached["wall_s"],
            unit="s",
            direction="lower",
            baseline=shared["wall_s"],
            baseline_name="shared.placement.place_batch per tick and shape",
            note=f"same results: {same}",
        )


if __name__ == "__main__":
    main()
