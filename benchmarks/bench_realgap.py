"""Sim-to-real gap (issue 10 item 6): the simulator against the testbed on the same
scenarios, seeds and faults, pooled over repeated runs.

For ``partition-basic`` and ``strong-vs-eventual``: ``RUNS`` testbed runs each (real
controller, agents and broker, ``continuum testbed run --seed``, seeds from the
scenario's own upwards), and the simulator on the same scenario and seeds
(``simulations/sim/realgap.py``, which takes the controller's and the agents' timing
from the configs the testbed writes for them). Per level, the pooled p50 and p95
latency (submission to the end of the first successful execution) on each side, and
convergence after a heal (pooled median and worst), each as the gap
``|sim / testbed - 1|`` (goal ≤ 0.15) with ``n`` on both sides, the range of the
per-run figures over the repeats, the testbed's 95 % confidence interval and the load
average before and after every testbed run (``/proc/loadavg``: real latencies rise
with the machine's load). The simulator's two machine costs, a process start and a
durable commit, are measured right before each testbed run, under its load
(``simulations/sim/realgap_machine.py``), and simulated with that run's seed. A
percentile whose pooled samples are too small to bound it
(``simulations/sim/realgap_stats.py``: fewer than 6 values for a p50, 72 for a p95) is
reported with its ``n`` and figures but no goal.

``CONTINUUM_REALGAP_RUNS`` (default 4) sets the repeats; run alone, ``--runs`` does,
and ``--from DIR...`` judges testbed runs already made (their plan gives scenario and
seed; their ``loadavg.json`` the load, when this script made them).
``CONTINUUM_REALGAP_SCENARIOS`` (default ``partition-basic,strong-vs-eventual``) names
the scenarios, and ``CONTINUUM_REALGAP_DIR`` (default ``runs/bench``) where the testbed
runs are kept: a smoke test runs one scenario once, in a directory of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from _report import emit

from simulations.sim.realgap import run_testbed_scenario
from simulations.sim.realgap_machine import MachineTiming, measure
from simulations.sim.realgap_stats import pooled_convergence, pooled_latency
from simulations.testbed import collect
from simulations.testbed.metrics import summarize_run
from simulations.testbed.report import load_run
from simulations.testbed.scenario import load_scenario, scenario_dir

SCENARIOS = tuple(
    os.environ.get("CONTINUUM_REALGAP_SCENARIOS", "partition-basic,strong-vs-eventual").split(",")
)
GAP = 0.15
RUNS = int(os.environ.get("CONTINUUM_REALGAP_RUNS", "4"))
CONTINUUM = Path(sys.executable).with_name("continuum")
#: Where the testbed runs are kept (git-ignored ``runs/``), to read what a figure came from.
RUNS_DIR = Path(
    os.environ.get(
        "CONTINUUM_REALGAP_DIR", Path(__file__).resolve().parent.parent / "runs" / "bench"
    )
)
LOADAVG = "loadavg.json"


def _testbed(name: str, seed: int) -> Path:
    """One testbed run; the load average before and after it in its ``loadavg.json``."""
    out = RUNS_DIR / f"realgap-{name}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    machine = measure()  # the machine's costs under the load this run will see
    before = os.getloadavg()
    run = [str(CONTINUUM), "testbed", "run", name, "--seed", str(seed), "--no-progress"]
    proc = subprocess.run([*run, "--out", str(out)], check=False, capture_output=True, text=True)
    load = {
        "before": before,
        "after": os.getloadavg(),
        "exit": proc.returncode,
        "machine": machine.as_dict(),
    }
    out.mkdir(parents=True, exist_ok=True)  # a run that died early: its load still kept
    (out / LOADAVG).write_text(json.dumps(load) + "\n", encoding="utf-8")
    return out


def testbed_latencies(run_dir: Path) -> dict[str, list[float]]:
    """Per level, every task's latency of a testbed run, by the testbed's own
    ``summarize_run`` (its ``report.json`` keeps only the summaries)."""
    run = load_run(run_dir, recollect=False)
    history = collect.read_history(run_dir)
    ledger = collect.read_ledgers(sorted(collect.ledger_dir(run_dir).glob("*.jsonl")))
    end = float(run["collected"]["end_wall"])
    return summarize_run(history, ledger, run["nodes"], end)["latencies"]


def _one(run_dir: Path) -> dict[str, Any]:
    """A testbed run and the simulation of its scenario and seed, side by side."""
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    plan = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    load_file = run_dir / LOADAVG
    load = json.loads(load_file.read_text(encoding="utf-8")) if load_file.exists() else {}
    machine = MachineTiming.from_dict(load.get("machine"))  # measured before the run
    sim = run_testbed_scenario(
        scenario_dir() / f"{plan['scenario']}.toml", seed=plan["seed"], machine=machine
    )
    heals = report.get("timings", {}).get("convergence_after_heal", [])
    return {
        "scenario": plan["scenario"],
        "seed": plan["seed"],
        "dir": run_dir.name,
        "valid": bool(report.get("valid")),
        "load": load,
        "testbed": testbed_latencies(run_dir),
        "sim": sim["latencies"],
        "testbed_heals": [h["after_s"] for h in heals if h.get("after_s") is not None],
        "testbed_unconverged": sum(h.get("after_s") is None for h in heals),
        "sim_heals": [c["after_s"] for c in sim["convergence_after_heal"] if c["after_s"]],
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _span(pair: list[float] | None) -> str:
    return "-" if not pair else f"{pair[0]:.3f}-{pair[1]:.3f}"


def _emit(name: str, what: str, row: dict[str, Any], context: str) -> None:
    figures = (
        f"n {row['n_sim']}/{row['n_testbed']}; sim {_fmt(row['sim'])} s "
        f"(runs {_span(row['sim_runs'])}), testbed {_fmt(row['testbed'])} s "
        f"(runs {_span(row['testbed_runs'])}, 95 % CI {_span(row['testbed_ci'])})"
    )
    if row["gap"] is None:
        emit(
            f"realgap: {name} {what}", measured=float("nan"), unit="", note=f"no figure; {figures}"
        )
        return
    judged = row["judged"]
    emit(
        f"realgap: {name} {what}, |sim / testbed - 1|",
        measured=row["gap"],
        unit="",
        goal=GAP if judged else None,
        direction="lower",
        note=("" if judged else "NOT JUDGED: too few samples to bound it; ")
        + f"{figures}; {context}",
    )
    print(
        f"{name:20} {what:28} n {row['n_sim']:4}/{row['n_testbed']:<4} "
        f"sim {_fmt(row['sim'])} [{_span(row['sim_runs'])}]  "
        f"testbed {_fmt(row['testbed'])} [{_span(row['testbed_runs'])}] "
        f"CI {_span(row['testbed_ci'])}  gap {row['gap']:.3f}{'' if judged else ' (not judged)'}",
        file=sys.stderr,
    )


def _machine(load: dict[str, Any]) -> str:
    m = MachineTiming.from_dict(load.get("machine"))
    return f"{m.process_start_s * 1000:.0f}/{m.commit_s * 1000:.1f} ms" + (
        "" if load.get("machine") else " (defaults)"
    )


def judge(runs: list[dict[str, Any]]) -> None:
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_scenario[r["scenario"]].append(r)
    for name, rs in sorted(by_scenario.items()):
        loads = "; ".join(
            f"seed {r['seed']} {'VALID' if r['valid'] else 'INVALID'} load "
            + (
                "/".join(f"{x:.1f}" for x in (*r["load"]["before"][:1], *r["load"]["after"][:1]))
                if r["load"]
                else "?"
            )
            + " start/commit "
            + _machine(r["load"])
            for r in rs
        )
        context = (
            f"{len(rs)} runs ({loads}; load 1-min before/after; the process start and "
            "commit simulated, measured before the run)"
        )
        latency = pooled_latency([r["sim"] for r in rs], [r["testbed"] for r in rs])
        for level, rows in latency.items():
            for q, row in rows.items():
                _emit(name, f"{level} latency {q}", row, context)
        conv = pooled_convergence([r["sim_heals"] for r in rs], [r["testbed_heals"] for r in rs])
        missing = sum(r["testbed_unconverged"] for r in rs)
        unconverged = f"; {missing} testbed heal(s) not converged when its monitor stopped"
        for q, row in conv.items():
            _emit(name, f"convergence after heal {q}", row, context + unconverged * bool(missing))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="testbed runs per scenario")
    parser.add_argument("--from", dest="dirs", nargs="*", type=Path, help="judge these runs")
    args = parser.parse_args(argv)
    dirs = args.dirs or [
        _testbed(name, load_scenario(scenario_dir() / f"{name}.toml").seed + i)
        for i in range(args.runs)
        for name in SCENARIOS
    ]
    judge([_one(d) for d in dirs])


if __name__ == "__main__":
    main()
