"""Simulator output: CSV and JSON files, a comparison table, PNG plots.

One row per run (scenario, policy, seed, swept parameters, every metric) in
``results.csv``; the same plus latency percentiles in ``results.json``; plots
(matplotlib, Agg backend, so no display is needed) of the headline metrics per
policy and of the latency distributions.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from simulations.sim.model import Result

__all__ = ["HEADLINE", "comparison_table", "plot", "rows", "write"]

#: Metrics shown in the terminal table and plotted, with their labels.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("deadline_miss_rate", "deadline miss"),
    ("latency_mean_s", "mean latency s"),
    ("latency_p95_s", "p95 latency s"),
    ("wan_mb", "WAN MB"),
    ("duplicates", "duplicates"),
    ("lost", "lost"),
    ("failed", "failed"),
    ("energy_kj", "energy kJ"),
    ("events_per_s", "events/s"),
)


def rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Flat rows: identification, swept parameters, then every metric."""
    out = []
    for r in results:
        row: dict[str, Any] = {"scenario": r.scenario, "policy": r.policy, "seed": r.seed}
        row.update({f"param:{k}": v for k, v in sorted(r.params.items())})
        row.update(r.metrics)
        out.append(row)
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(results: Sequence[Result], out_dir: str | Path, *, plots: bool = True) -> list[Path]:
    """Write ``results.csv``, ``results.json`` and (``plots``) the PNGs; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = rows(results)
    columns: list[str] = []
    for row in table:
        columns += [c for c in row if c not in columns]
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    json_path = out / "results.json"
    payload = [
        {
            **{k: _json_safe(v) for k, v in row.items()},
            "latency_percentiles_s": _percentiles(r.latencies),
        }
        for row, r in zip(table, results, strict=True)
    ]
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return [csv_path, json_path, *(plot(results, out) if plots else [])]


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {}
    import numpy as np

    arr = np.asarray(values)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (5, 25, 50, 75, 90, 95, 99)}


def _label(r: Result) -> str:
    extra = ",".join(f"{k}={v}" for k, v in sorted(r.params.items()))
    return f"{r.policy}" + (f" [{extra}]" if extra else "")


def plot(results: Sequence[Result], out_dir: Path) -> list[Path]:
    """Bar charts of the headline metrics and latency CDFs, one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths: list[Path] = []
    labels = [_label(r) for r in results]
    keys = [k for k, _ in HEADLINE if k != "events_per_s"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for ax, key in zip(axes.flat, keys, strict=False):
        values = [r.metrics.get(key, math.nan) for r in results]
        ax.bar(range(len(values)), values, color="#4477aa")
        ax.set_title(dict(HEADLINE)[key])
        ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
    fig.suptitle(results[0].scenario if results else "")
    fig.tight_layout()
    path = out_dir / "metrics.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, r in zip(labels, results, strict=True):
        if not r.latencies:
            continue
        lat = np.sort(np.asarray(r.latencies))
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=label)
    ax.set_xscale("log")
    ax.set_xlabel("task latency (s)")
    ax.set_ylabel("fraction of succeeded tasks")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "latency_cdf.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def _fmt(key: str, value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if key == "deadline_miss_rate":
        return f"{value:.1%}"
    if key in ("latency_mean_s", "latency_p95_s"):
        return f"{value:.3f}"
    if key in ("wan_mb", "energy_kj"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def comparison_table(results: Sequence[Result], title: str = "") -> Table:
    """The terminal comparison: one row per run, the headline metrics as columns."""
    table = Table(title=title or None)
    table.add_column("policy")
    table.add_column("tasks", justify="right")
    for _, label in HEADLINE:
        table.add_column(label, justify="right")
    for r in results:
        m = r.metrics
        table.add_row(
            _label(r),
            f"{m['generated']:,.0f}",
            *(_fmt(k, m.get(k, math.nan)) for k, _ in HEADLINE),
        )
    return table
