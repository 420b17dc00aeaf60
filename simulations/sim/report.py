"""Simulator output: CSV and JSON files, comparison tables, PNG plots.

One row per run (scenario, policy, seed, swept parameters, every metric) in
``results.csv``; the same plus latency percentiles in ``results.json``. Runs of
one configuration (policy and swept values) over several seeds are summarised as
mean and 95 % interval (``simulations.sim.stats``) in ``summary.csv`` and in the
terminal table. The terminal table shows the headline metrics, the harm (re-
executions of non-idempotent tasks) and where work was placed (share per tier).
A sweep adds ``sweep.png`` and a table: each metric against the swept value, one
line per policy. ``trace.json`` holds the sampled placement decisions of a
``--trace`` run with their explanation (the predicted finish broken into parts in
the ``adaptive`` mode). Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from simulations.sim.records import Result
from simulations.sim.stats import Summary, summarise

__all__ = [
    "HEADLINE",
    "comparison_table",
    "groups",
    "plot",
    "plot_sweep",
    "rows",
    "summary_rows",
    "sweep_table",
    "write",
]

#: Placement counters, in tier order, and their short labels.
TIERS = (
    ("placed_device", "d"),
    ("placed_edge", "e"),
    ("placed_regional", "r"),
    ("placed_cloud", "c"),
)

#: Metrics shown in the terminal table and plotted, with their labels.
HEADLINE: tuple[tuple[str, str], ...] = (
    ("deadline_miss_rate", "deadline miss"),
    ("latency_mean_s", "mean latency s"),
    ("latency_p95_s", "p95 latency s"),
    ("wan_mb", "WAN MB"),
    ("duplicates", "duplicates"),
    ("harm", "harm"),
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
    csv_path = _write_csv(out / "results.csv", table)
    json_path = out / "results.json"
    payload = [
        {
            **{k: _json_safe(v) for k, v in row.items()},
            "latency_percentiles_s": _percentiles(r.latencies),
        }
        for row, r in zip(table, results, strict=True)
    ]
    json_path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    paths = [csv_path, json_path]
    if any(n > 1 for n in (len(g) for g in groups(results).values())):
        paths.append(_write_csv(out / "summary.csv", summary_rows(results)))
    traced = [
        {"policy": r.policy, "seed": r.seed, "params": r.params, "decisions": r.trace}
        for r in results
        if r.trace
    ]
    if traced:
        trace_path = out / "trace.json"
        trace_path.write_text(json.dumps(traced, indent=1, default=_json_safe) + "\n", "utf-8")
        paths.append(trace_path)
    if plots:
        paths += plot(results, out)
        if any(r.params for r in results):
            paths.append(plot_sweep(results, out))
    return paths


def _write_csv(path: Path, table: list[dict[str, Any]]) -> Path:
    columns: list[str] = []
    for row in table:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(table)
    return path


GroupKey = tuple[str, tuple[tuple[str, Any], ...]]


def groups(results: Sequence[Result]) -> dict[GroupKey, list[Result]]:
    """Runs of one configuration (policy, swept values), in first-seen order."""
    out: dict[GroupKey, list[Result]] = {}
    for r in results:
        out.setdefault((r.policy, tuple(sorted(r.params.items()))), []).append(r)
    return out


def summary_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """Per configuration: seeds, then ``metric``, ``metric:ci95`` for every metric."""
    table = []
    for (policy, params), runs in groups(results).items():
        row: dict[str, Any] = {"scenario": runs[0].scenario, "policy": policy}
        row.update({f"param:{k}": v for k, v in params})
        row["seeds"] = " ".join(str(r.seed) for r in runs)
        for key in runs[0].metrics:
            s = summarise([r.metrics.get(key, math.nan) for r in runs])
            row[key] = s.mean
            row[f"{key}:ci95"] = s.half
        table.append(row)
    return table


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {}
    import numpy as np

    arr = np.asarray(values)
    return {f"p{q}": float(np.percentile(arr, q)) for q in (5, 25, 50, 75, 90, 95, 99)}


def plot(results: Sequence[Result], out_dir: Path) -> list[Path]:
    """Bar charts of the headline metrics and latency CDFs, one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths: list[Path] = []
    labels = [_label(r.policy, tuple(sorted(r.params.items()))) + f" s{r.seed}" for r in results]
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
        return f"{value:.2%}"
    if key in ("latency_mean_s", "latency_p95_s"):
        return f"{value:.3f}"
    if key in ("wan_mb", "energy_kj"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _cell(key: str, s: Summary) -> str:
    """``mean`` alone for one seed, ``mean ± half`` (95 %) for several."""
    if s.n <= 1 or math.isnan(s.half):
        return _fmt(key, s.mean)
    return f"{_fmt(key, s.mean)} ± {_fmt(key, s.half)}"


def _tiers(runs: Sequence[Result]) -> str:
    """Share of placements per tier (device / edge / regional / cloud), over the runs."""
    counts = [sum(r.metrics.get(k, 0.0) for r in runs) for k, _ in TIERS]
    total = sum(counts)
    if not total:
        return "-"
    return " ".join(
        f"{label}{100 * c / total:.0f}" for (_, label), c in zip(TIERS, counts, strict=True)
    )


def _label(policy: str, params: tuple[tuple[str, Any], ...]) -> str:
    extra = ",".join(f"{k}={v}" for k, v in params)
    return policy + (f" [{extra}]" if extra else "")


def comparison_table(results: Sequence[Result], title: str = "") -> Table:
    """The terminal comparison: one row per configuration (mean ± 95 % interval
    over its seeds), the headline metrics and the placement split by tier (%)."""
    table = Table(title=title or None)
    table.add_column("policy")
    table.add_column("seeds", justify="right")
    table.add_column("tasks", justify="right")
    for _, label in HEADLINE:
        table.add_column(label, justify="right")
    table.add_column("placed % d e r c", justify="right")
    for (policy, params), runs in groups(results).items():
        seeds = runs[0].seed if len(runs) == 1 else f"{len(runs)}"
        table.add_row(
            _label(policy, params),
            str(seeds),
            _cell("generated", summarise([r.metrics["generated"] for r in runs])),
            *(_cell(k, summarise([r.metrics.get(k, math.nan) for r in runs])) for k, _ in HEADLINE),
            _tiers(runs),
        )
    return table


def _swept(results: Sequence[Result]) -> tuple[str, list[Any]]:
    """The first swept parameter and its values in order."""
    key = next(iter(results[0].params))
    values: list[Any] = []
    for r in results:
        if r.params[key] not in values:
            values.append(r.params[key])
    return key, values


def _series(results: Sequence[Result], metric: str) -> dict[str, dict[Any, Summary]]:
    """Per line (policy and the other swept values): swept value -> summary of ``metric``."""
    key, _ = _swept(results)
    lines: dict[str, dict[Any, Summary]] = {}
    for (policy, params), runs in groups(results).items():
        rest = tuple((k, v) for k, v in params if k != key)
        x = dict(params)[key]
        lines.setdefault(_label(policy, rest), {})[x] = summarise(
            [r.metrics.get(metric, math.nan) for r in runs]
        )
    return lines


def sweep_table(
    results: Sequence[Result], metric: str = "deadline_miss_rate", title: str = ""
) -> Table:
    """``metric`` against the swept value: one row per value, one column per policy."""
    key, values = _swept(results)
    lines = _series(results, metric)
    table = Table(title=title or f"{dict(HEADLINE).get(metric, metric)} against {key}")
    table.add_column(key, justify="right")
    for name in lines:
        table.add_column(name, justify="right")
    for x in values:
        table.add_row(
            str(x),
            *(_cell(metric, line[x]) if x in line else "-" for line in lines.values()),
        )
    return table


def plot_sweep(results: Sequence[Result], out_dir: Path) -> Path:
    """``sweep.png``: each headline metric against the first swept value, one line
    per policy (error bars: 95 % interval over the seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, values = _swept(results)
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    keys = [k for k, _ in HEADLINE if k != "events_per_s"]
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(18, 7.5))
    for ax, metric in zip(axes.flat, keys, strict=False):
        for name, line in _series(results, metric).items():
            xs = [x for x in values if x in line]
            pos = xs if numeric else [values.index(x) for x in xs]
            means = [line[x].mean for x in xs]
            errs = [0.0 if math.isnan(line[x].half) else line[x].half for x in xs]
            ax.errorbar(pos, means, yerr=errs, marker="o", capsize=3, label=name)
        ax.set_title(dict(HEADLINE)[metric])
        ax.set_xlabel(key)
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(results[0].scenario if results else "")
    fig.tight_layout()
    path = out_dir / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
