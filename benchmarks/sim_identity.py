"""Does a change to the simulator keep every result? Record fingerprints of many runs with
one version of the code, record them again with another, and compare.

A speed change to ``simulations/sim`` (or to the ``shared`` code it calls) must leave the
results bit-identical. Metrics alone can hide a moved decision that happens to cancel
out, so each case keeps: every metric but the timings, a hash of the succeeded tasks'
latencies and completion times, of every attempt's fields as it ends (task, node, epoch,
level, each time on its timeline, outcome, work, predicted finish, retry, local,
superseded), of the node columns the run leaves (busy, success, free resources,
backlog), of the trace and of the learner's state; and, through ``simulations.sim.realgap``,
a hash of the simulated twin of every testbed scenario.

Cases: ``pureedgesim-10k`` under the five modes (60 simulated seconds for ``adaptive``
and ``hybrid_dynamic``, 30 for the others, plus seeds 2 and 3 at 45 s), and every other
scenario of ``simulations/scenarios/sim`` and ``benchmarks/heldout`` under its declared
policies and the five modes (up to 120 s). ``--quick`` shortens them (15 s and 30 s).

Usage, from the root of the checkout whose code is measured (the script refuses to run
code imported from anywhere else)::

    python benchmarks/sim_identity.py record base.json        # on the old code
    python benchmarks/sim_identity.py record new.json         # on the new code
    python benchmarks/sim_identity.py compare base.json new.json

For the old code, a worktree (``git worktree add /tmp/base <commit>``) run as
``cd /tmp/base && PYTHONPATH=/tmp/base python benchmarks/sim_identity.py record ...``
(an editable install elsewhere would otherwise be imported). ``compare`` exits 1 when any
case differs and names what differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import simulations.sim.model as model
from simulations.sim.model import Simulation
from simulations.sim.realgap import run_testbed_scenario
from simulations.sim.records import Attempt
from simulations.sim.scenario import load, parse_policy, scenario_dir

ROOT = Path.cwd()
MODES = ("cloud_only", "edge_only", "hybrid_static", "hybrid_dynamic", "adaptive")
#: Metrics that measure the machine, not the run.
TIMINGS = frozenset({"wall_s", "cpu_s", "events_per_s"})
#: Node columns a run leaves on its topology (those it has).
COLUMNS = ("busy", "success", "cpu_free", "mem_free", "running", "backlog")

Case = tuple[Path, str, float, int | None]


def _hash(obj: object) -> str:
    return hashlib.sha256(repr(obj).encode()).hexdigest()[:16]


def _untimed(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIMINGS}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _attempt(at: Attempt) -> tuple[object, ...]:
    return (
        at.task.id, at.node, at.epoch, at.level.value, at.t_place, at.t_recv, at.t_req,
        at.t_grant, at.start, at.end, at.stop, at.report, at.t_done, at.outcome, at.work,
        at.predicted, at.retry, at.local, at.superseded,
    )  # fmt: skip


def run_case(path: Path, policy: str, duration_s: float, seed: int | None) -> dict[str, Any]:
    """One run's fingerprint (see the module docstring)."""
    sim = Simulation(load(path, params={"duration_s": duration_s}), parse_policy(policy), seed=seed)
    attempts: list[tuple[object, ...]] = []
    ended = sim.agents.ended

    def record(at: Attempt) -> None:
        attempts.append(_attempt(at))
        ended(at)

    sim.agents.ended = record  # type: ignore[method-assign]
    result = sim.run()
    columns = {
        name: _hash([float(x) for x in getattr(sim.topo, name)])
        for name in COLUMNS
        if getattr(sim.topo, name, None) is not None
    }
    learner = getattr(sim.inputs, "learner", None)
    return {
        "metrics": {k: v for k, v in result.metrics.items() if k not in TIMINGS},
        "latencies": _hash([float(x) for x in result.latencies]),
        "done_at": _hash(list(sim.counters.done_at)),
        "attempts": _hash(attempts),
        "n_attempts": len(attempts),
        "columns": columns,
        "trace": _hash(result.trace),
        "learner": None if learner is None else _hash(repr(learner)),
    }


def cases(quick: bool) -> list[Case]:
    sims = scenario_dir()
    big = sims / "pureedgesim-10k.toml"
    out: list[Case] = []
    for mode in MODES:
        out.append(
            (big, mode, 15 if quick else 60 if mode in ("adaptive", "hybrid_dynamic") else 30, None)
        )
    if not quick:
        out += [(big, "adaptive", 45, 2), (big, "hybrid_dynamic", 45, 3)]
    heldout = ROOT / "benchmarks" / "heldout"
    for path in [*sorted(sims.glob("*.toml")), *sorted(heldout.glob("*.toml"))]:
        if path == big:
            continue
        sc = load(path)
        declared = [p.name for p in sc.policies]
        for policy in dict.fromkeys(declared + [parse_policy(m).name for m in MODES]):
            out.append((path, policy, 30 if quick else min(120.0, sc.duration_s), None))
    return out


def record(out: Path, *, quick: bool, only: str) -> None:
    if not Path(model.__file__).resolve().is_relative_to(ROOT.resolve()):
        raise SystemExit(f"the simulator comes from {model.__file__}, not {ROOT}: set PYTHONPATH")
    results: dict[str, Any] = {}
    for path, policy, duration_s, seed in cases(quick):
        key = f"{path.name}|{policy}|{duration_s:g}|{seed}"
        if only and only not in key:
            continue
        started = time.monotonic()
        results[key] = run_case(path, policy, duration_s, seed)
        print(f"{key} {time.monotonic() - started:.1f} s", flush=True)
    for path in [] if only else sorted((ROOT / "simulations" / "scenarios").glob("*.toml")):
        key = f"realgap|{path.name}"
        twin = run_testbed_scenario(path, seed=1)
        results[key] = _hash(json.dumps(_untimed(twin), sort_keys=True, default=str))
        print(key, flush=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")


def compare(a: Path, b: Path) -> int:
    old = json.loads(a.read_text(encoding="utf-8"))
    new = json.loads(b.read_text(encoding="utf-8"))
    differ = 0
    for key in sorted(set(old) | set(new)):
        x, y = old.get(key), new.get(key)
        if x == y:
            continue
        differ += 1
        print(f"DIFF {key}")
        if isinstance(x, dict) and isinstance(y, dict):
            for part in sorted(set(x) | set(y)):
                if x.get(part) != y.get(part):
                    print(f"    {part}: {str(x.get(part))[:160]} | {str(y.get(part))[:160]}")
    print(f"{len(set(old) | set(new))} cases, {differ} differ")
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run every case on this checkout's code")
    rec.add_argument("out", type=Path, help="JSON file of fingerprints to write")
    rec.add_argument("--quick", action="store_true", help="shorter runs")
    rec.add_argument("--only", default="", help="only cases whose key contains this")
    cmp_ = sub.add_parser("compare", help="compare two recordings; exit 1 if any differs")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out, quick=args.quick, only=args.only)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
