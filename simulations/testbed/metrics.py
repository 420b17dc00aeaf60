"""Timings of a run, computed from the history and the ledger (pure functions).

- task latency by level: from the submission's invocation to the end of the
  task's first successful execution in the ledger (host clock on both sides);
- the share of successful executions that ended while their node was cut off
  from the cloud (partitioned, flapping, or the controller cut): autonomy at work;
  in all, and per node that was cut off at some point (``autonomy_by_node``);
- convergence after each heal, as measured live by the runner (``converged`` ops,
  or ``not-converged`` with ``after_s = None`` when it never happened);
- fault intervals per node, for the timeline plot;
- deadlines: of the acknowledged tasks with a ``deadline_s``, those whose first
  successful execution did not end within it of the submission (or never ended),
  with where each first success ran;
- harm: re-executions of tasks that are not idempotent (every ledger execution of
  such a task after its first), the cost a weaker level or a hedge may bring.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .checker import Execution, executions, submissions

__all__ = [
    "completed_while_cut",
    "deadline_outcomes",
    "fault_intervals",
    "harm",
    "percentile",
    "summarize_run",
]

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


def _submitted_meta(history: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Task id → the meta the plan recorded with its submission (deadline_s, idempotent)."""
    return {
        str(t["task_id"]): t
        for op in history
        if op.get("f") == "submit" and op.get("type") == "invoke"
        for t in (op.get("value") or {}).get("tasks") or ()
    }


def deadline_outcomes(
    history: Sequence[Mapping[str, Any]], runs: Mapping[str, Sequence[Execution]]
) -> dict[str, Any]:
    """Acknowledged tasks with a deadline: how many missed it (their first successful
    execution ended after submission + ``deadline_s``, or none did), the rate, and per
    node where the first successes ran (met / missed; ``none`` for no success)."""
    meta = _submitted_meta(history)
    tasks = missed = 0
    by_node: dict[str, dict[str, int]] = defaultdict(lambda: {"met": 0, "missed": 0})
    for sub in submissions(history).values():
        deadline = meta.get(sub.task_id, {}).get("deadline_s")
        if sub.outcome != "ok" or deadline is None or sub.wall is None:
            continue
        ok = [e for e in runs.get(sub.task_id, ()) if e.succeeded and e.end is not None]
        first = min(ok, key=lambda e: e.stop) if ok else None
        late = first is None or first.stop - sub.wall > float(deadline)
        tasks += 1
        missed += late
        by_node["none" if first is None else first.node]["missed" if late else "met"] += 1
    return {
        "tasks": tasks,
        "missed": missed,
        "rate": (missed / tasks) if tasks else None,
        "by_node": dict(sorted(by_node.items())),
    }


def harm(
    history: Sequence[Mapping[str, Any]], runs: Mapping[str, Sequence[Execution]]
) -> dict[str, int]:
    """Re-executions of submitted tasks that are not idempotent: ``reexecutions`` (every
    ledger execution after a task's first) and ``tasks`` (how many tasks had one)."""
    meta = _submitted_meta(history)
    extra = [
        len(task_runs) - 1
        for tid, task_runs in runs.items()
        if tid in meta and not meta[tid].get("idempotent") and len(task_runs) > 1
    ]
    return {"reexecutions": sum(extra), "tasks": len(extra)}


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
        "deadlines": deadline_outcomes(history, runs),
        "harm": harm(history, runs),
        "fault_intervals": {n: [list(i) for i in iv] for n, iv in intervals.items()},
    }
