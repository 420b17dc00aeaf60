"""Timings of a run, computed from the history and the ledger (pure functions).

- task latency by level: from the submission's invocation to the end of the
  task's first successful execution in the ledger (host clock on both sides);
- the share of successful executions that ended while their node was cut off
  from the cloud (partitioned, flapping, or the controller cut): autonomy at work;
  in all, and per node that was cut off at some point (``autonomy_by_node``);
- convergence after each heal, as measured live by the runner (``converged`` ops,
  or ``not-converged`` with ``after_s = None`` when it never happened);
- fault intervals per node, for the timeline plot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .checker import Execution, executions, submissions

__all__ = ["completed_while_cut", "fault_intervals", "percentile", "summarize_run"]

CUT_OPS = frozenset({"partition", "flap"})
CUT_KINDS = frozenset({"cut", "cloud-cut"})
PROXY_KINDS = ("cut", "slow", "lossy")  # what a heal of a node's proxy ends
ALL_KINDS = (*PROXY_KINDS, "lossy-run", "down", "paused", "cloud-cut")
SLOW_OPS = frozenset({"delay", "throttle"})


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fault_intervals(
    history: Iterable[Mapping[str, Any]], nodes: Sequence[str], end_wall: float
) -> dict[str, list[tuple[float, float, str]]]:
    """Per node, ``(start_wall, end_wall, kind)`` with kind ``cut``, ``slow``,
    ``lossy`` (PUBLISH packets lost, repeated, reordered), ``down`` (agent killed),
    ``paused`` (agent frozen with SIGSTOP) or ``cloud-cut`` (the controller cut from
    the broker). The final heal ends every fault."""
    open_: dict[tuple[str, str], float] = {}
    out: dict[str, list[tuple[float, float, str]]] = defaultdict(list)

    def close(node: str, kind: str, wall: float) -> None:
        start = open_.pop((node, kind), None)
        if start is not None:
            out[node].append((start, wall, kind))

    for op in history:
        if op.get("process") != "nemesis" or op.get("type") != "info":
            continue
        f, wall = op.get("f"), float(op.get("wall", 0.0))
        targets = list((op.get("value") or {}).get("nodes") or [])
        if f in CUT_OPS:
            for n in targets:
                open_.setdefault((n, "cut"), wall)
        elif f in SLOW_OPS:
            for n in targets:
                open_.setdefault((n, "slow"), wall)
        elif f == "lossy":
            # --lossy's baseline loss ends only with the final heal
            kind = "lossy-run" if (op.get("value") or {}).get("baseline") else "lossy"
            for n in targets:
                open_.setdefault((n, kind), wall)
        elif f == "heal":
            kinds = ALL_KINDS if (op.get("value") or {}).get("final") else PROXY_KINDS
            for n in targets:
                for kind in kinds:
                    close(n, kind, wall)
        elif f == "kill":
            for n in targets:
                close(n, "paused", wall)
                open_.setdefault((n, "down"), wall)
        elif f == "restart":
            for n in targets:
                close(n, "down", wall)
        elif f == "pause":
            for n in targets:
                open_.setdefault((n, "paused"), wall)
        elif f == "resume":
            for n in targets:
                close(n, "paused", wall)
        elif f == "controller-cut":
            for n in nodes:
                open_.setdefault((n, "cloud-cut"), wall)
        elif f == "controller-heal":
            for n in nodes:
                close(n, "cloud-cut", wall)
    for (node, kind), start in list(open_.items()):
        out[node].append((start, end_wall, kind))
    return dict(out)


def completed_while_cut(
    runs: Mapping[str, Sequence[Execution]],
    intervals: Mapping[str, Sequence[Sequence[Any]]],
) -> list[Execution]:
    """Successful executions that ended while their node was cut off from the cloud."""
    return [
        e
        for task_runs in runs.values()
        for e in task_runs
        if e.succeeded
        and e.end is not None
        and any(a <= e.end <= b and kind in CUT_KINDS for a, b, kind in intervals.get(e.node, ()))
    ]


def summarize_run(
    history: Sequence[Mapping[str, Any]],
    ledger: Sequence[Mapping[str, Any]],
    nodes: Sequence[str],
    end_wall: float,
) -> dict[str, Any]:
    subs = submissions(history)
    runs = executions(ledger)
    latency: dict[str, list[float]] = defaultdict(list)
    for sub in subs.values():
        if sub.wall is None:
            continue
        ok = [e for e in runs.get(sub.task_id, ()) if e.succeeded and e.end is not None]
        if ok:
            latency[sub.level].append(min(e.end for e in ok if e.end is not None) - sub.wall)
    intervals = fault_intervals(history, nodes, end_wall)
    ok = [e for task_runs in runs.values() for e in task_runs if e.succeeded and e.end is not None]
    while_cut = completed_while_cut(runs, intervals)
    completed, cut_off = len(ok), len(while_cut)
    by_node = {
        n: {
            "completed": sum(e.node == n for e in ok),
            "while_cut": sum(e.node == n for e in while_cut),
        }
        for n in nodes
        if any(kind in CUT_KINDS for _a, _b, kind in intervals.get(n, ()))
    }
    convergence = [
        dict(op["value"])
        for op in history
        if op.get("f") in ("converged", "not-converged") and op.get("process") == "monitor"
    ]
    return {
        "latency_s": {
            level: {
                "count": len(v),
                "p50": percentile(v, 50),
                "p95": percentile(v, 95),
                "max": max(v),
            }
            for level, v in sorted(latency.items())
        },
        "latencies": {level: sorted(v) for level, v in latency.items()},
        "completed_executions": completed,
        "completed_while_partitioned": cut_off,
        "share_completed_while_partitioned": (cut_off / completed) if completed else None,
        "autonomy_by_node": by_node,
        "convergence_after_heal": convergence,
        "fault_intervals": {n: [list(i) for i in iv] for n, iv in intervals.items()},
    }
