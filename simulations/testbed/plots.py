"""The run's two figures (matplotlib, Agg backend: no display needed).

- ``timeline.png``: one lane per node (and the controller) over the run's time;
  shaded spans are the faults in force (cut, slowed, process down, cloud cut),
  thin bars are the task executions the ledger recorded on that node (green:
  exit 0, blue: exit 0 while the node was cut off from the cloud, red: failed or
  fenced, grey: no end line), dashed lines mark each
  nemesis op, ▼ the convergence measured after each heal, ◆ a submission to the
  node's own local API.
- ``latency_cdf.png``: CDF of task latency (submission → first successful end)
  per consistency level.

Both are drawn from the same pure summaries the report uses, so a figure never
shows something the report does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .checker import Execution

__all__ = ["latency_cdf", "timeline"]

FAULT_COLORS = {
    "cut": "#d62728",
    "slow": "#ff7f0e",
    "lossy": "#bcbd22",
    "lossy-run": "#dbdb8d",
    "down": "#333333",
    "paused": "#17becf",
    "cloud-cut": "#9467bd",
}
LEVEL_COLORS = {
    "strong": "#1f77b4",
    "causal": "#2ca02c",
    "eventual": "#ff7f0e",
    "adaptive": "#9467bd",
}


CUT_OFF_OK = "#1f3fbf"


def _exec_color(e: Execution, while_cut: frozenset[Execution]) -> str:
    if e.end is None:
        return "#999999"
    if e in while_cut:
        return CUT_OFF_OK
    return "#2ca02c" if e.succeeded else "#d62728"


def timeline(
    path: Path,
    *,
    nodes: Sequence[str],
    t0_wall: float,
    end_wall: float,
    fault_intervals: Mapping[str, Sequence[Sequence[Any]]],
    runs: Mapping[str, Sequence[Execution]],
    nemesis: Sequence[Mapping[str, Any]],
    convergence: Sequence[Mapping[str, Any]],
    title: str,
    while_cut: frozenset[Execution] = frozenset(),
    local: Sequence[tuple[str, float]] = (),
) -> Path:
    """Draw the connectivity/execution timeline; returns ``path``."""
    lanes = list(nodes)
    fig, ax = plt.subplots(figsize=(13, 1.8 + 0.6 * len(lanes)))
    y = {n: i for i, n in enumerate(lanes)}
    for node, spans in fault_intervals.items():
        if node not in y:
            continue
        for start, end, kind in spans:
            ax.broken_barh(
                [(start - t0_wall, max(end - start, 0.05))],
                (y[node] - 0.42, 0.84),
                facecolors=FAULT_COLORS.get(str(kind), "#cccccc"),
                alpha=0.25,
            )
    per_node: dict[str, list[Execution]] = {}
    for task_runs in runs.values():
        for e in task_runs:
            per_node.setdefault(e.node, []).append(e)
    for node, execs in per_node.items():
        if node not in y:
            continue
        execs.sort(key=lambda e: e.start)
        for k, e in enumerate(execs):
            offset = -0.3 + 0.6 * ((k % 6) / 5)  # spread overlapping runs over the lane
            ax.hlines(
                y[node] + offset,
                e.start - t0_wall,
                e.stop - t0_wall,
                colors=_exec_color(e, while_cut),
                linewidth=2.2,
            )
    for op in nemesis:
        t = float(op["wall"]) - t0_wall
        ax.axvline(t, color="#555555", linestyle="--", linewidth=0.8, alpha=0.6)
        ax.text(t, len(lanes) - 0.45, str(op["f"]), rotation=90, fontsize=7, va="bottom")
    for node, wall in local:
        if node in y:
            ax.plot([wall - t0_wall], [y[node] + 0.42], marker="D", color="black", markersize=4)
    for c in convergence:
        if c.get("node") in y and c.get("after_s") is not None:
            t = float(c["heal_at"]) + float(c["after_s"])
            ax.plot([t], [y[c["node"]]], marker="v", color="black", markersize=6)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(-0.6, len(lanes) + 0.6)
    ax.set_xlim(0, max(1.0, end_wall - t0_wall))
    ax.set_xlabel("seconds since the workload started")
    ax.set_title(title)
    handles = [Patch(color=c, alpha=0.35, label=k) for k, c in FAULT_COLORS.items()]
    handles += [
        Patch(color="#2ca02c", label="execution ok"),
        Patch(color=CUT_OFF_OK, label="ok while cut off"),
        Patch(color="#d62728", label="execution failed/fenced"),
        Patch(color="#999999", label="execution without end"),
        Line2D([], [], color="black", marker="D", markersize=4, linestyle="", label="local submit"),
        Line2D([], [], color="black", marker="v", markersize=6, linestyle="", label="converged"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency_cdf(path: Path, latencies: Mapping[str, Sequence[float]], *, title: str) -> Path:
    """Draw per-level latency CDFs; returns ``path``."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for level, values in sorted(latencies.items()):
        xs = sorted(values)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{level} (n={len(xs)})", color=LEVEL_COLORS.get(level))
    ax.set_xlabel("latency: submission → first successful end (s)")
    ax.set_ylabel("share of tasks")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if latencies:
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
