"""Sim-to-real gap (issue 10 item 6): the simulator against the testbed on the same
scenarios, seeds and faults.

For ``partition-basic`` and ``strong-vs-eventual``: one testbed run (real controller,
agents and broker, ``continuum testbed run``), then the same scenario and seed in the
simulator (``continuum simulate realgap``, ``simulations/sim/realgap.py``), which
takes the controller's and the agents' timing from the configs the testbed writes
for them. Per level, the p50 and p95 latency (submission to the end of the first
successful execution), and the worst convergence after a heal (as the testbed polls
it), each as the gap ``|sim / testbed - 1|`` (goal ≤ 0.15). The testbed's figure is
the baseline in the note. This 2-core machine is shared, and real latencies rise with
its load, so the load average is in every note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _report import emit

from simulations.sim.realgap import compare, run_testbed_scenario
from simulations.testbed.scenario import scenario_dir

SCENARIOS = ("partition-basic", "strong-vs-eventual")
GAP = 0.15
CONTINUUM = Path(sys.executable).with_name("continuum")
#: Where the testbed runs are kept (git-ignored ``runs/``), to read what a figure came from.
RUNS = Path(__file__).resolve().parent.parent / "runs" / "bench"


def _gap(name: str, what: str, sim: float | None, testbed: float | None, note: str) -> None:
    if sim is None or not testbed:
        emit(f"realgap: {name} {what}", measured=float("nan"), unit="", note=f"no figure; {note}")
        return
    emit(
        f"realgap: {name} {what}, |sim / testbed - 1|",
        measured=abs(sim / testbed - 1.0),
        unit="",
        goal=GAP,
        direction="lower",
        note=f"sim {sim:.3f} s, testbed {testbed:.3f} s; {note}",
    )


def main() -> None:
    for name in SCENARIOS:
        out = RUNS / f"realgap-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = [str(CONTINUUM), "testbed", "run", name, "--no-progress", "--out", str(out)]
        proc = subprocess.run(run, check=False, capture_output=True, text=True)
        load = "load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        valid = f"testbed {'VALID' if report.get('valid') else 'INVALID'} (exit {proc.returncode})"
        valid += f" in runs/bench/{out.name}"
        gap = compare(run_testbed_scenario(scenario_dir() / f"{name}.toml"), report)
        for level, row in sorted(gap["latency"].items()):
            s, t = row["sim"], row["testbed"] or {}
            for q in ("p50", "p95"):
                counts = f"n {s['count']}/{t.get('count', 0)}"
                _gap(name, f"{level} latency {q}", s[q], t.get(q), f"{counts}; {valid}; {load}")
        conv = gap["convergence_max_s"]
        heals = ", ".join(
            f"{c['node']} {c['cause']} {c['after_s']}"
            for c in report.get("timings", {}).get("convergence_after_heal", [])
        )
        note = f"testbed per heal: {heals}; {valid}; {load}"
        _gap(name, "convergence after a heal (max)", conv["sim"], conv["testbed"], note)


if __name__ == "__main__":
    main()
