"""``continuum testbed compare``: one scenario, several placement modes, several seeds.

Each mode runs the same seeds (``S, S+1, ...``), the modes interleaved per seed so
that whatever else loads the machine falls on every mode alike. Each run is a
whole ``continuum testbed run`` (its own directory under ``out``, its own
verdict); the summary gives, per mode, the deadline-miss rate (mean and range
over the runs), the harm (re-executions of non-idempotent tasks), where the
deadline tasks' first successes ran, and how many runs were VALID. It is printed
and written to ``out/compare.json`` and ``out/compare.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .cli import run_scenario
from .scenario import load_scenario

__all__ = ["compare_modes", "summarize_modes"]


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def summarize_modes(reports: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per mode, from its runs' reports: ``runs``, ``valid``, ``miss_rate`` and
    ``reexecutions`` (mean / min / max), the deadline tasks and misses in all, and
    the first successes per node (met + missed, all runs)."""
    modes: dict[str, Any] = {}
    for mode, runs in reports.items():
        rates = [r["deadlines"]["rate"] for r in runs if r["deadlines"]["rate"] is not None]
        where: dict[str, int] = {}
        for r in runs:
            for node, v in r["deadlines"]["by_node"].items():
                where[node] = where.get(node, 0) + v["met"] + v["missed"]
        modes[mode] = {
            "runs": len(runs),
            "valid": sum(r["valid"] is True for r in runs),
            "miss_rate": _spread(rates),
            "per_run": [
                {
                    "seed": r["seed"],
                    "valid": r["valid"],
                    "missed": r["deadlines"]["missed"],
                    "tasks": r["deadlines"]["tasks"],
                    "reexecutions": r["harm"]["reexecutions"],
                    "run_dir": r["run_dir"],
                }
                for r in runs
            ],
            "reexecutions": _spread([float(r["harm"]["reexecutions"]) for r in runs]),
            "first_success_by_node": dict(sorted(where.items())),
        }
    every = [r for runs in reports.values() for r in runs]
    return {"modes": modes, "all_valid": all(r["valid"] is True for r in every)}


def _pct(spread: Mapping[str, float | None]) -> str:
    if spread["mean"] is None:
        return "-"
    return f"{spread['mean']:.1%} ({spread['min']:.1%}-{spread['max']:.1%})"


def render_modes(title: str, summary: Mapping[str, Any], console: Console) -> str:
    """Print the comparison table; return it as Markdown (for ``compare.md``)."""
    table = Table(title=title)
    head = ["mode", "runs", "VALID", "deadline misses mean (range)", "per run", "harm", "where"]
    for col in head:
        table.add_column(col)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode, m in summary["modes"].items():
        per_run = ", ".join(f"{r['missed']}/{r['tasks']}" for r in m["per_run"])
        harm = m["reexecutions"]
        row = [
            mode,
            str(m["runs"]),
            str(m["valid"]),
            _pct(m["miss_rate"]),
            per_run,
            "-"
            if harm["mean"] is None
            else f"{harm['mean']:.1f} ({harm['min']:g}-{harm['max']:g})",
            ", ".join(f"{n} {c}" for n, c in m["first_success_by_node"].items()),
        ]
        table.add_row(*row)
        lines.append("| " + " | ".join(row) + " |")
    console.print(table)
    return "\n".join(lines) + "\n"


def compare_modes(
    scenario_ref: str,
    modes: Sequence[str],
    *,
    runs: int,
    out: Path | None = None,
    agents: int | None = None,
    broker: str = "auto",
    seed: int | None = None,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run ``scenario_ref`` ``runs`` times per mode and summarise (see the module doc)."""
    console = console or Console()
    scenario = load_scenario(scenario_ref)
    first = scenario.seed if seed is None else seed
    out = out or Path("runs") / f"compare-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for k in range(runs):
        for mode in modes:
            s = first + k
            console.print(f"[bold]{scenario.name}[/] mode {mode} seed {s} ({k + 1}/{runs})")
            report = run_scenario(
                scenario_ref,
                out=out / f"{mode}-seed{s}",
                agents=agents,
                broker=broker,
                seed=s,
                mode=mode,
                console=console,
                progress=False,
            )
            reports[mode].append(report)
            d = report["deadlines"]
            console.print(
                f"  valid={report['valid']} deadline misses {d['missed']}/{d['tasks']}, "
                f"harm {report['harm']['reexecutions']}"
            )
    summary = summarize_modes(reports)
    title = f"{scenario.name}: seeds {first}-{first + runs - 1}, {broker} broker"
    markdown = render_modes(title, summary, console)
    (out / "compare.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (out / "compare.md").write_text(f"{title}\n\n{markdown}", encoding="utf-8")
    console.print(f"summary: {out / 'compare.md'}")
    return summary
