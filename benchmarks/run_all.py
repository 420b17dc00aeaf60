"""`make bench`: run every ``benchmarks/bench_*.py``, print goal vs measured, and
write ``benchmarks/results/latest.json``.

Each script runs in its own process (so one script's memory or threads cannot
skew another's figures) and reports through ``_report.emit``. A script that
crashes shows up as a failed row with its exit status; the others still run.
Exit status is 1 when a goal is missed or a script failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="run only scripts whose name contains one of these")
    args = parser.parse_args(argv)
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if any(o in s.name for o in args.only)]
    records: list[dict[str, object]] = []
    # Not a terminal (CI logs, a pipe): wide enough that names and figures stay on a line.
    console = Console(width=None if sys.stdout.isatty() else 160)
    for script in scripts:
        with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
            env = dict(os.environ, CONTINUUM_BENCH_OUT=out.name, PYTHONPATH=str(HERE))
            console.print(f"[bold]running[/] {script.name}")
            started = time.monotonic()
            proc = subprocess.run([sys.executable, str(script)], env=env, check=False)
            elapsed = time.monotonic() - started
            rows = [json.loads(line) for line in out.read().splitlines() if line.strip()]
        for row in rows:
            row["script"] = script.name
        if proc.returncode != 0 or not rows:
            rows.append(
                {
                    "script": script.name,
                    "name": f"{script.stem} (script)",
                    "ok": False,
                    "measured": None,
                    "unit": "",
                    "goal": None,
                    "ratio": None,
                    "note": f"exit status {proc.returncode}, {len(rows)} figure(s)",
                }
            )
        console.print(f"  done in {elapsed:.1f}s")
        records.extend(rows)

    table = Table(title="Continuum benchmarks: goal vs measured")
    for col in ("benchmark", "measured", "unit", "goal", "baseline", "ratio", "ok"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for r in records:
        goal = r.get("goal")
        sign = "≥ " if r.get("direction") == "higher" else "≤ "
        goal_s = "-" if goal is None else sign + _fmt(goal)
        ok = r.get("ok")
        table.add_row(
            str(r["name"]),
            _fmt(r.get("measured")),
            str(r.get("unit", "")),
            goal_s,
            _fmt(r.get("baseline")),
            "-" if r.get("ratio") is None else f"{r['ratio']:.1f}x",
            "[green]yes[/]" if ok else ("[red]no[/]" if ok is False else "-"),
        )
    console.print(table)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "results": records,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {HERE / 'results' / 'latest.json'}")
    return 0 if all(r.get("ok") is not False for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
