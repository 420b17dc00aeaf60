"""``continuum testbed``: run a partition scenario, list the shipped ones, re-check a run.

    continuum testbed run SCENARIO[.toml] [--agents N] [--broker auto|mosquitto|embedded]
                          [--out DIR] [--netns] [--seed S] [--duration S] [--lease-s S]
                          [--lossy SHARE] [--mode MODE] [--no-progress]
    continuum testbed compare SCENARIO [--modes adaptive,hybrid_static] [--runs N]
                          [--agents N] [--broker B] [--seed S] [--out DIR]
    continuum testbed list
    continuum testbed check DIR

Exit status: 0 every invariant held, 1 a violation (or, for ``run``/``check``,
a verdict that stayed unknown), 2 the run could not be set up or the input is bad.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from rich.console import Console

from shared.errors import ValidationError
from shared.vocab import PlacementMode

from .broker import BrokerError
from .processes import ProcessError
from .scenario import load_scenario, scenario_dir

MODES = tuple(m.value for m in PlacementMode)
T = TypeVar("T")

__all__ = ["main", "run_scenario"]


def _exit_code(valid: object) -> int:
    return 0 if valid is True else 1


def run_scenario(
    scenario_ref: str,
    *,
    out: Path | None = None,
    agents: int | None = None,
    broker: str = "auto",
    netns: bool = False,
    seed: int | None = None,
    duration_s: float | None = None,
    settle_s: float | None = None,
    lease_s: float | None = None,
    lossy: float | None = None,
    mode: str | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> dict[str, object]:
    """Run a scenario end to end and judge it; returns the report (raises on set-up
    failure). The programmatic entry the tests and benchmarks use."""
    from .progress import Progress
    from .report import judge
    from .runner import RunOptions, Testbed

    console = console or Console()
    scenario = load_scenario(scenario_ref)
    if out is None:
        out = Path("runs") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out.resolve()
    options = RunOptions(
        out=out,
        agents=agents,
        broker=broker,
        netns=netns,
        seed=seed,
        duration_s=duration_s,
        settle_s=settle_s,
        lease_s=lease_s,
        lossy=lossy,
        mode=mode,
    )
    with Progress(console, enabled=progress) as display:
        bed = Testbed(scenario, options, on_event=display)
        asyncio.run(bed.run())
    return judge(out)


def _set_up(console: Console, start: Callable[[], T]) -> T | None:
    """``start()``, or ``None`` after printing why the testbed could not be set up (a
    bad scenario, or a broker or process that did not start: exit status 2)."""
    from .runner import TestbedError

    try:
        return start()
    except ValidationError as exc:
        console.print(f"[red]{exc}[/]")
    except (TestbedError, ProcessError, BrokerError) as exc:
        console.print(f"[red]the testbed could not start:[/] {exc}")
    return None


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from .report import render

    report = _set_up(
        console,
        lambda: run_scenario(
            args.scenario,
            out=Path(args.out) if args.out else None,
            agents=args.agents,
            broker=args.broker,
            netns=args.netns,
            seed=args.seed,
            duration_s=args.duration,
            lease_s=args.lease_s,
            lossy=args.lossy,
            mode=args.mode,
            console=console,
            progress=not args.no_progress,
        ),
    )
    if report is None:
        return 2
    render(report, console)
    return _exit_code(report["valid"])


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from .compare import compare_modes

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(MODES) or not modes or args.runs < 1:
        console.print(f"[red]--modes takes {', '.join(MODES)}; --runs at least 1[/]")
        return 2
    summary = _set_up(
        console,
        lambda: compare_modes(
            args.scenario,
            modes,
            runs=args.runs,
            out=Path(args.out) if args.out else None,
            agents=args.agents,
            broker=args.broker,
            seed=args.seed,
            console=console,
        ),
    )
    if summary is None:
        return 2
    return 0 if summary["all_valid"] else 1


def _cmd_list(_args: argparse.Namespace, console: Console) -> int:
    for path in sorted(scenario_dir().glob("*.toml")):
        try:
            sc = load_scenario(path)
        except ValidationError as exc:
            console.print(f"{path.stem:20} [red]invalid: {exc}[/]")
            continue
        console.print(
            f"[bold]{sc.name:20}[/] {sc.topology.agents:>2} agents {sc.duration_s:>4.0f} s  "
            f"{sc.description}",
            highlight=False,
            soft_wrap=True,
        )
    return 0


def _cmd_check(args: argparse.Namespace, console: Console) -> int:
    from .report import judge, render

    run_dir = Path(args.dir).resolve()
    try:
        report = judge(run_dir, recollect=True)
    except FileNotFoundError as exc:
        console.print(f"[red]not a recorded run:[/] {exc}")
        return 2
    render(report, console)
    return _exit_code(report["valid"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continuum testbed",
        description="Partition testbed: real agents and controller behind fault proxies, "
        "a fault timeline, and a verdict judged from ground truth.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="run a scenario and check its invariants")
    p.add_argument("scenario", help="a scenario file, or the name of a shipped one")
    p.add_argument("--agents", type=int, help="number of agents (default: the scenario's)")
    p.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "embedded"),
        default="auto",
        help="auto: Mosquitto when installed, else the embedded amqtt broker",
    )
    p.add_argument("--out", help="run directory (default runs/<scenario>-<time>)")
    p.add_argument("--netns", action="store_true", help="hard cuts with network namespaces (root)")
    p.add_argument("--seed", type=int, help="seed of the plan (default: the scenario's)")
    p.add_argument("--duration", type=float, help="override the scenario's duration_s")
    p.add_argument(
        "--lease-s", type=float, help="strong lease for the controller (≥ 3 s; default: scenario)"
    )
    p.add_argument(
        "--lossy",
        type=float,
        metavar="SHARE",
        help="every agent link drops, duplicates and delays this share of PUBLISH packets "
        "(each) until the final heal, on top of the scenario's faults (e.g. 0.05)",
    )
    p.add_argument("--mode", choices=MODES, help="placement mode (default: the scenario's)")
    p.add_argument("--no-progress", action="store_true", help="no live display")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser(
        "compare", help="run a scenario in several placement modes and tabulate deadline misses"
    )
    p.add_argument("scenario", help="a scenario file, or the name of a shipped one")
    p.add_argument(
        "--modes", default="adaptive,hybrid_static", help="comma-separated placement modes"
    )
    p.add_argument("--runs", type=int, default=3, help="runs per mode (seeds S, S+1, ...)")
    p.add_argument("--agents", type=int, help="number of agents (default: the scenario's)")
    p.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto")
    p.add_argument("--seed", type=int, help="first seed (default: the scenario's)")
    p.add_argument("--out", help="directory of the runs (default runs/compare-<scenario>-<time>)")
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser("list", help="the shipped scenarios, one line each")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("check", help="re-run the checker on a recorded run directory")
    p.add_argument("dir", help="the run directory (holds report.json, history.jsonl, ...)")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "agents", None) is not None and args.agents < 1:
        print("--agents must be at least 1", file=sys.stderr)
        return 2
    if getattr(args, "lossy", None) is not None and not 0 <= args.lossy <= 1 / 3:
        print("--lossy must be a share between 0 and 1/3", file=sys.stderr)
        return 2
    if getattr(args, "lease_s", None) is not None and args.lease_s < 3:
        print("--lease-s must be at least 3 (the controller's minimum)", file=sys.stderr)
        return 2
    return int(args.func(args, Console()))


if __name__ == "__main__":
    sys.exit(main())
