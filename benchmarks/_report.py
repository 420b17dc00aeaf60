"""How a benchmark script reports a figure.

Every goal is measured side by side with its baseline in the same run and given
as a ratio where a baseline exists. A script calls :func:`emit` once per figure;
``run_all.py`` collects the records (JSON lines in the file named by
``CONTINUUM_BENCH_OUT``) into the table and ``benchmarks/results/latest.json``.
Run alone, a script just prints its records.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Literal

Direction = Literal["higher", "lower"]


def emit(
    name: str,
    *,
    measured: float,
    unit: str,
    goal: float | None = None,
    direction: Direction = "higher",
    baseline: float | None = None,
    baseline_name: str | None = None,
    note: str = "",
) -> dict[str, object]:
    """Record one figure. ``direction`` says whether bigger is better; the goal is
    met when ``measured`` is on the right side of ``goal``. ``ratio`` is
    measured/baseline (for "higher") or baseline/measured (for "lower"), so a
    ratio above 1 always means better than the baseline. No ratio where its divisor is 0
    (an idle process measured at 0.00 % CPU over a short window): not a number to print."""
    ok: bool | None = None
    if goal is not None:
        ok = measured >= goal if direction == "higher" else measured <= goal
    ratio: float | None = None
    divisor = baseline if direction == "higher" else measured
    if baseline and divisor:
        ratio = measured / baseline if direction == "higher" else baseline / measured
    record = {
        "name": name,
        "measured": measured,
        "unit": unit,
        "goal": goal,
        "direction": direction,
        "ok": ok,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "note": note,
    }
    out = os.environ.get("CONTINUUM_BENCH_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
    print(json.dumps(record), file=sys.stderr if out else sys.stdout)
    return record
