"""``make soak``: the testbed's goals measured over many runs, per broker.

    python -m simulations.testbed.soak [--demo N] [--seeds K] [--brokers mosquitto,embedded]
                                       [--only NAME,...] [--lossy SHARE] [--budget-min M]
                                       [--out DIR]

Runs, interleaved over the brokers so a soak cut short by its budget still covers both:

1. the demo as ``make demo`` runs it (``partition-basic``, 3 agents), ``--demo`` times;
2. every other shipped scenario once, with a strong lease drawn from 3-6 s (``--lease-s``,
   fixed per scenario name) and, with ``--lossy``, every agent link lossy;
3. ``random`` over seeds 1..``--seeds`` (its own lease draw, 3-6 s), ``--lossy`` likewise.

``--only`` keeps the runs of the named scenarios (``partition-basic`` for the demo,
``random`` for the seeds): a round that re-runs what failed.

Each run is a separate ``continuum testbed run`` process with its own directory under
``--out``; its ``report.json`` gives the verdict, the duration and the violated invariants.
The summary (a table per broker and kind of run, then every run that was not VALID) is
printed and written to ``summary.md`` and ``summary.json``. A run that could not start
(exit 2) or did not finish counts as not VALID. Not part of ``make test``: a full soak
takes hours on a small machine; ``--budget-min`` stops starting new runs after M minutes
and the summary says what was left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .broker import find_mosquitto
from .scenario import scenario_dir

__all__ = ["Job", "Outcome", "jobs", "main", "summarize"]

DEMO = "partition-basic"
DEMO_GOAL_S = 120.0  # the demo's goal: each run under 2 minutes
RUN_TIMEOUT_S = 420


@dataclass(frozen=True, slots=True)
class Job:
    """One testbed run to make."""

    kind: str  # demo | scenario | random
    scenario: str
    broker: str
    seed: int | None = None
    lease_s: float | None = None
    lossy: float | None = None
    index: int = 0  # the demo's repetition

    @property
    def name(self) -> str:
        seed = "" if self.seed is None else f"-s{self.seed}"
        rep = f"-{self.index}" if self.kind == "demo" else ""
        return f"{self.broker}-{self.scenario}{seed}{rep}"

    def argv(self, out: Path) -> list[str]:
        argv = [sys.executable, "-m", "simulations.testbed.cli", "run", self.scenario]
        argv += ["--broker", self.broker, "--out", str(out), "--no-progress"]
        argv += [] if self.seed is None else ["--seed", str(self.seed)]
        argv += [] if self.lease_s is None else ["--lease-s", str(self.lease_s)]
        return argv + ([] if self.lossy is None else ["--lossy", str(self.lossy)])


@dataclass
class Outcome:
    job: Job
    verdict: str  # VALID | INVALID | UNKNOWN | NO-START | TIMEOUT
    wall_s: float
    total_s: float | None = None
    violations: dict[str, dict[str, Any]] = field(default_factory=dict)
    autonomy: str | None = None  # the demo: "k of n" of the cut agent's executions
    autonomy_share: float | None = None  # the demo: k / n
    load: float | None = None  # the host's 1-minute load average when the run ended


def lease_for(name: str) -> float:
    """A lease in [3, 6] s fixed by the scenario's name (reproducible soaks)."""
    return 3.0 + (zlib.crc32(name.encode()) % 31) / 10.0


def shipped() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.toml"))


def jobs(
    brokers: Sequence[str],
    *,
    demo: int,
    seeds: int,
    lossy: float | None,
    only: Sequence[str] = (),
) -> list[Job]:
    """Every run of a soak, in the order it is made (brokers interleaved); with ``only``,
    those of the named scenarios."""
    plan: list[list[Job]] = [
        [Job("demo", DEMO, b, index=i) for b in brokers] for i in range(1, demo + 1)
    ]
    for name in shipped():
        if name in (DEMO, "random"):
            continue
        plan.append(
            [Job("scenario", name, b, lease_s=lease_for(name), lossy=lossy) for b in brokers]
        )
    plan += [
        [Job("random", "random", b, seed=s, lossy=lossy) for b in brokers]
        for s in range(1, seeds + 1)
    ]
    return [job for group in plan for job in group if not only or job.scenario in only]


def run_one(job: Job, out: Path) -> Outcome:
    run_dir = out / job.name
    started = time.monotonic()
    with open(out / f"{job.name}.log", "wb") as log:
        try:
            rc = subprocess.run(
                job.argv(run_dir), stdout=log, stderr=subprocess.STDOUT, timeout=RUN_TIMEOUT_S
            ).returncode
        except subprocess.TimeoutExpired:
            return Outcome(job, "TIMEOUT", time.monotonic() - started, load=os.getloadavg()[0])
    wall = time.monotonic() - started
    load = os.getloadavg()[0]
    try:
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        # exit 2: it could not start; otherwise the harness failed before its report
        return Outcome(job, "NO-START" if rc == 2 else "NO-REPORT", wall, load=load)
    valid = report.get("valid")
    verdict = "VALID" if valid is True else "INVALID" if valid is False else "UNKNOWN"
    violations = {
        name: {"counts": r.get("counts", {}), "example": (r.get("examples") or [None])[0]}
        for name, r in report.get("invariants", {}).items()
        if r.get("valid") is not True
    }
    timings = report.get("timings", {})
    autonomy = share = None
    for node, a in (timings.get("autonomy_by_node") or {}).items():
        autonomy = f"{node}: {a['while_cut']} of {a['completed']}"
        share = a["while_cut"] / a["completed"] if a["completed"] else 0.0
    return Outcome(job, verdict, wall, timings.get("total_s"), violations, autonomy, share, load)


def _fmt(values: Iterable[float]) -> str:
    xs = sorted(values)
    if not xs:
        return "-"
    return f"{statistics.median(xs):.0f} / {xs[-1]:.0f}"


def _commit() -> str:
    """The checked-out commit of the code under test (``?`` outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


def summarize(outcomes: Sequence[Outcome], left_out: Sequence[Job], header: str = "") -> str:
    """The soak's summary as Markdown: one row per broker and kind of run."""
    lines = [header, ""] if header else []
    lines += [
        "| broker | runs | VALID | not VALID | run time s (median / max) | violated invariants |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.job.broker, o.job.kind), []).append(o)
    for (broker, kind), group in sorted(groups.items()):
        bad = [o for o in group if o.verdict != "VALID"]
        counts: dict[str, int] = {}
        for o in bad:
            for name in o.violations or {o.verdict: {}}:
                counts[name] = counts.get(name, 0) + 1
        label = {"demo": "demo", "scenario": "shipped scenarios", "random": "random seeds"}[kind]
        lines.append(
            f"| {broker} | {label}: {len(group)} | {len(group) - len(bad)} | {len(bad)} | "
            f"{_fmt(o.total_s or o.wall_s for o in group)} | "
            + (", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "-")
            + " |"
        )
    bad = [o for o in outcomes if o.verdict != "VALID"]
    if bad:
        lines += ["", "Runs that were not VALID:", ""]
        for o in bad:
            what = "; ".join(
                f"{k}: {json.dumps(v['counts'])[:160]}" for k, v in o.violations.items()
            )
            lines.append(f"- `{o.job.name}` {o.verdict} {what}")
    demos = [o for o in outcomes if o.job.kind == "demo"]
    if demos:
        lines += ["", "Demo goals (VALID, under 2 min, at least 1/3 of the cut agent's executions"]
        lines += ["completed while cut off):", ""]
        for broker in sorted({o.job.broker for o in demos}):
            mine = [o for o in demos if o.job.broker == broker]
            valid = sum(o.verdict == "VALID" for o in mine)
            quick = sum((o.total_s or o.wall_s) < DEMO_GOAL_S for o in mine)
            shown = sum((o.autonomy_share or 0.0) >= 1 / 3 for o in mine)
            lines.append(
                f"- {broker}: VALID {valid} of {len(mine)}, under 2 min {quick} of {len(mine)}, "
                f"autonomy shown {shown} of {len(mine)} ("
                + ", ".join(o.autonomy or "-" for o in mine)
                + ")"
            )
    loads = [o.load for o in outcomes if o.load is not None]
    if loads:
        lines += [
            "",
            f"Host load (1-minute average at each run's end, {os.cpu_count()} CPUs): "
            f"median {statistics.median(loads):.1f}, max {max(loads):.1f}",
        ]
    if left_out:
        lines += ["", f"Not run (budget): {len(left_out)} runs, e.g. {left_out[0].name}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=int, default=10, help="demo runs per broker (10)")
    parser.add_argument("--seeds", type=int, default=20, help="random seeds per broker (20)")
    parser.add_argument("--brokers", default="mosquitto,embedded")
    parser.add_argument("--only", default="", help="scenario names, comma-separated (all)")
    parser.add_argument("--lossy", type=float, default=0.05, help="0 for none (0.05)")
    parser.add_argument("--budget-min", type=float, default=0.0, help="0: no budget")
    parser.add_argument("--out", default="runs/soak")
    args = parser.parse_args(argv)
    brokers = [b for b in args.brokers.split(",") if b]
    if "mosquitto" in brokers and find_mosquitto() is None:
        print("soak: Mosquitto is not installed; soaking the embedded broker only")
        brokers.remove("mosquitto")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    only = [name for name in args.only.split(",") if name]
    unknown = sorted(set(only) - set(shipped()))
    if unknown:
        parser.error(f"--only: no shipped scenario {', '.join(unknown)}")
    todo = jobs(brokers, demo=args.demo, seeds=args.seeds, lossy=args.lossy or None, only=only)
    deadline = time.monotonic() + args.budget_min * 60 if args.budget_min else None
    outcomes: list[Outcome] = []
    for n, job in enumerate(todo, start=1):
        if deadline is not None and time.monotonic() > deadline:
            break
        outcome = run_one(job, out)
        outcomes.append(outcome)
        print(
            f"[{n}/{len(todo)}] {job.name}: {outcome.verdict} in {outcome.wall_s:.0f} s"
            + (f" ({', '.join(outcome.violations)})" if outcome.violations else ""),
            flush=True,
        )
    header = (
        f"Soak of commit {_commit()}, {started} to {time.strftime('%Y-%m-%d %H:%M:%S')}: "
        f"{' '.join(argv if argv is not None else sys.argv[1:]) or 'defaults'}"
    )
    summary = summarize(outcomes, todo[len(outcomes) :], header)
    (out / "summary.md").write_text(summary, encoding="utf-8")
    (out / "summary.json").write_text(
        json.dumps([{**asdict(o), "job": asdict(o.job)} for o in outcomes], indent=1, default=str),
        encoding="utf-8",
    )
    print(summary)
    print(f"summary: {out / 'summary.md'}")
    return 0 if all(o.verdict == "VALID" for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
