"""``continuum simulate …``: run a scenario, sweep parameters, list scenarios, compare
with the testbed.

    continuum simulate SCENARIO.toml [--seed S | --seeds 1-5] [--policy NAME …]
                                     [--trace N] [--out DIR]
    continuum simulate sweep SCENARIO.toml --param key=v1,v2,… [--param …] [--seeds 1-5]
                                     [--jobs K]
    continuum simulate list
    continuum simulate realgap TESTBED.toml [--testbed-report report.json] [--out DIR]

A scenario is a path or the name of a shipped one (``pureedgesim-10k``). Policies
are ``MODE``, ``CONSISTENCY`` or ``MODE/CONSISTENCY`` (``edge_only/strong``);
without ``--policy`` the scenario's list is run. Output goes to ``--out``
(default ``runs/sim/<scenario>``): ``results.csv``, ``results.json``, PNG plots;
with several seeds ``summary.csv`` (mean and 95 % interval); with ``--trace N``
``trace.json`` (N sampled placement decisions with their explanation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.errors import ValidationError
from simulations import native
from simulations.sim import report
from simulations.sim.loop import LOOPS
from simulations.sim.runner import parse_param, run_policies, sweep
from simulations.sim.scenario import load, parse_policy, read_table, scenario_dir
from simulations.sim.stats import parse_seeds

__all__ = ["build_parser", "main", "resolve"]

SUBCOMMANDS = ("run", "sweep", "list", "realgap")


def resolve(name: str) -> Path:
    """A scenario path, or a shipped scenario's name (with or without ``.toml``)."""
    path = Path(name)
    if path.exists():
        return path
    for candidate in (scenario_dir() / name, scenario_dir() / f"{name}.toml"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no scenario {name!r} (not a file, not in {scenario_dir()})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continuum simulate",
        description="Discrete-event simulation of placement and consistency policies.",
    )
    sub = parser.add_subparsers(dest="command")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("scenario", help="scenario file or shipped scenario name")
        p.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
        p.add_argument(
            "--seeds",
            default=None,
            metavar="LIST",
            help="several seeds (1-5, or 1,4,9): mean and 95 %% interval per policy",
        )
        p.add_argument(
            "--policy",
            action="append",
            default=None,
            metavar="NAME",
            help="MODE, CONSISTENCY or MODE/CONSISTENCY; repeatable (default: the scenario's)",
        )
        p.add_argument("--out", default=None, help="output folder (default runs/sim/<scenario>)")
        p.add_argument("--loop", choices=sorted(LOOPS), default="heap", help="event loop")
        p.add_argument("--json", action="store_true", help="print the results as JSON")
        p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")

    run = sub.add_parser("run", help="run a scenario under its policies (the default)")
    common(run)
    run.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="N",
        help="write about N sampled placement decisions per run, explained, to trace.json",
    )
    sw = sub.add_parser("sweep", help="run a parameter grid (local worker processes)")
    common(sw)
    sw.add_argument(
        "--param",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="dotted scenario key and values, e.g. links.wan.latency_ms=20,50,100",
    )
    sw.add_argument("--jobs", type=int, default=1, help="worker processes")
    sub.add_parser("list", help="list the shipped scenarios")
    gap = sub.add_parser("realgap", help="run a testbed scenario in the simulator (sim-to-real)")
    gap.add_argument("scenario", help="testbed scenario file or name (simulations/scenarios)")
    gap.add_argument("--seed", type=int, default=None)
    gap.add_argument("--testbed-report", default=None, help="a testbed run's report.json")
    gap.add_argument("--out", default=None, help="output folder")
    return parser


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _cmd_list(console: Console) -> int:
    table = Table(title=f"simulator scenarios ({scenario_dir()})")
    for col in ("name", "devices", "duration s", "policies", "description"):
        table.add_column(col)
    for path in sorted(scenario_dir().glob("*.toml")):
        try:
            sc = load(path)
        except ValidationError as exc:
            table.add_row(path.stem, "", "", "", f"[red]invalid: {exc.problems[0]}[/]")
            continue
        table.add_row(
            path.stem,
            f"{sc.topology.device.count:,}",
            f"{sc.duration_s:g}",
            ", ".join(p.name for p in sc.policies),
            sc.description,
        )
    console.print(table)
    return 0


def _finish(console: Console, results: list, out: Path, args: argparse.Namespace) -> None:
    paths = report.write(results, out, plots=not args.no_plots)
    if args.json:
        print(json.dumps(report.rows(results), indent=1, default=str))
    else:
        console.print(report.comparison_table(results, title=results[0].scenario))
        if any(r.params for r in results):
            for metric in ("deadline_miss_rate", "harm", "wan_mb", "energy_kj"):
                console.print(report.sweep_table(results, metric))
        console.print(f"wrote {', '.join(str(p) for p in paths)}")
        console.print(
            "simulator: compiled (mypyc)"
            if native.active()
            else "simulator: interpreted (`python -m simulations.build_native` compiles "
            "it: same results, less CPU)"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in SUBCOMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")
    args = build_parser().parse_args(argv)
    console = Console(stderr=bool(getattr(args, "json", False)))
    if args.command is None:
        build_parser().print_help()
        return 2
    if args.command == "list":
        return _cmd_list(console)
    try:
        if args.command == "realgap":
            from simulations.sim import realgap

            return realgap.main(args, console)
        path = resolve(args.scenario)
        policies = [parse_policy(p) for p in args.policy] if args.policy else None
        seeds: list[int | None] = list(parse_seeds(args.seeds)) if args.seeds else [args.seed]
        name = read_table(path).get("name", path.stem)
        out = Path(args.out or Path("runs") / "sim" / str(name))
        if args.command == "sweep":
            params = [parse_param(p) for p in args.param]
            with _progress(console) as bar:
                job = bar.add_task("sweep", total=1)

                def done(n: int, total: int) -> None:
                    bar.update(job, completed=n, total=total)

                results = sweep(
                    path,
                    params,
                    policies=policies,
                    seeds=seeds,
                    jobs=args.jobs,
                    loop=args.loop,
                    done=done,
                )
        else:
            scenario = load(path)
            chosen = policies or list(scenario.policies)
            with _progress(console) as bar:
                jobs = [
                    bar.add_task(
                        f"{p.name} seed {s if s is not None else scenario.seed}",
                        total=scenario.duration_s,
                    )
                    for p in chosen
                    for s in seeds
                ]

                def tick(i: int, now: float, total: float) -> None:
                    bar.update(jobs[i], completed=now)

                results = run_policies(
                    scenario,
                    chosen,
                    seeds=seeds,
                    loop=args.loop,
                    progress=tick,
                    trace=args.trace,
                )
    except ValidationError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    _finish(console, results, out, args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
