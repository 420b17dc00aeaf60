"""Invariant checkers over a recorded run, in the manner of Jepsen.

Every checker is a pure function from an :class:`Observation` (the history, the
ledger lines, and the state collected after quiescence) to a verdict
``{"valid": True | False | "unknown", "counts": {...}, "examples": [...]}``.
:func:`check_all` runs them all, turns a crashing checker into ``unknown`` with
the error attached, and composes with ``False > "unknown" > True`` so nothing
masks a violation.

Ground truth comes from the **ledger** (what processes actually ran, on the host
clock) and from the **history** (what the testbed was told, with ok/fail/info),
not from the system's own status reports; the controller's records are used only
to ask "does the system *say* this task is done" and "do the replicas agree".

The guarantee a task is owed is that of the weakest level it may run at: a fixed
level, or the ``min`` bound of an adaptive task (``floor``).
"""

from __future__ import annotations

import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CHECKERS",
    "Execution",
    "Observation",
    "Submission",
    "Valid",
    "check_all",
    "check_causal",
    "check_convergence",
    "check_eventual",
    "check_liveness",
    "check_nothing_lost",
    "check_order",
    "check_strong",
    "compose",
    "executions",
    "submissions",
]

Valid = bool | Literal["unknown"]
Verdict = dict[str, Any]
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class Submission:
    """One task the testbed tried to submit, with the outcome the client saw."""

    task_id: str
    floor: str  # strong | causal | eventual: the weakest level the task may run at
    level: str  # as submitted: a level name or "adaptive"
    outcome: str  # ok | fail | info
    depends_on: tuple[str, ...] = ()
    workflow: str | None = None
    wall: float | None = None  # host clock at invocation


@dataclass(frozen=True, slots=True)
class Execution:
    """One process run of a task, reconstructed from its ledger lines."""

    task_id: str
    attempt: str
    node: str
    epoch: int | None
    pid: int
    start: float
    last_seen: float  # latest line of any kind: a lower bound on when it stopped
    end: float | None  # None: no end line (killed with SIGKILL, or still running)
    exit_code: int | None

    @property
    def stop(self) -> float:
        """When it certainly still ran until (end, else last tick)."""
        return self.end if self.end is not None else self.last_seen

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0

    def overlaps(self, other: Execution) -> bool:
        return self.start < other.stop and other.start < self.stop

    def brief(self) -> dict[str, object]:
        return {
            "attempt": self.attempt,
            "node": self.node,
            "epoch": self.epoch,
            "start": round(self.start, 3),
            "end": None if self.end is None else round(self.end, 3),
            "last_seen": round(self.last_seen, 3),
            "exit": self.exit_code,
        }


@dataclass(frozen=True)
class Observation:
    """Everything a run recorded. ``controller`` is ``None`` when its records could
    not be collected; an agent mapped to ``None`` likewise (→ unknown, not valid).

    - ``history``: ops ``{"process", "type": invoke|ok|fail|info, "f", "value", "time", "wall"}``
    - ``ledger``: raw ledger lines (dicts) from every agent
    - ``controller``: task id → ``{"status", "hash", ...}``
    - ``agents``: node → (task id → content hash)
    - ``losses``: confirmed-loss events ``{"task_id", "wall", ...}``
    """

    history: Sequence[Mapping[str, Any]] = ()
    ledger: Sequence[Mapping[str, Any]] = ()
    controller: Mapping[str, Mapping[str, Any]] | None = None
    agents: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    losses: Sequence[Mapping[str, Any]] = ()


# -- reconstruction --------------------------------------------------------------


def submissions(history: Iterable[Mapping[str, Any]]) -> dict[str, Submission]:
    """Submitted tasks by id, each with the outcome of its completion op.

    Invocations carry ``value.tasks`` (a list: one task, or a workflow's tasks);
    the completion (ok/fail/info) of the same ``value.request`` decides the
    outcome. An invocation with no completion is ``info`` (indeterminate).
    """
    invoked: dict[str, list[Mapping[str, Any]]] = {}
    outcome: dict[str, str] = {}
    wall: dict[str, float | None] = {}
    for op in history:
        if op.get("f") != "submit":
            continue
        value = op.get("value") or {}
        req = str(value.get("request"))
        if op.get("type") == "invoke":
            invoked[req] = list(value.get("tasks") or [])
            wall[req] = op.get("wall")
        elif op.get("type") in ("ok", "fail", "info"):
            outcome[req] = str(op["type"])
    out: dict[str, Submission] = {}
    for req, tasks in invoked.items():
        for t in tasks:
            level = str(t.get("level", "causal"))
            floor = str(t.get("min", level)) if level == "adaptive" else level
            out[str(t["task_id"])] = Submission(
                task_id=str(t["task_id"]),
                floor=floor,
                level=level,
                outcome=outcome.get(req, "info"),
                depends_on=tuple(str(d) for d in t.get("depends_on") or ()),
                workflow=t.get("workflow"),
                wall=wall.get(req),
            )
    return out


def executions(ledger: Iterable[Mapping[str, Any]]) -> dict[str, list[Execution]]:
    """Executions by task id, ordered by start. Lines of one execution share
    (task, attempt, node, pid); lines without a ``start`` are ignored."""
    groups: dict[tuple[str, str, str, int], list[Mapping[str, Any]]] = defaultdict(list)
    for line in ledger:
        key = (str(line["task"]), str(line["attempt"]), str(line["node"]), int(line["pid"]))
        groups[key].append(line)
    out: dict[str, list[Execution]] = defaultdict(list)
    for (task, attempt, node, pid), lines in groups.items():
        starts = [float(x["t"]) for x in lines if x.get("event") == "start"]
        if not starts:
            continue
        ends = [x for x in lines if x.get("event") == "end"]
        end = ends[-1] if ends else None
        epoch = lines[0].get("epoch")
        out[task].append(
            Execution(
                task_id=task,
                attempt=attempt,
                node=node,
                epoch=None if epoch is None else int(epoch),
                pid=pid,
                start=min(starts),
                last_seen=max(float(x["t"]) for x in lines),
                end=None if end is None else float(end["t"]),
                exit_code=None if end is None else int(end.get("exit", 0)),
            )
        )
    for runs in out.values():
        runs.sort(key=lambda e: e.start)
    return dict(out)


def _verdict(valid: Valid, counts: Mapping[str, object], examples: list[object]) -> Verdict:
    return {"valid": valid, "counts": dict(counts), "examples": examples[:MAX_EXAMPLES]}


# -- the checkers ------------------------------------------------------------------


def _cancel_requests(history: Iterable[Mapping[str, Any]]) -> set[str]:
    """Task ids the client asked to cancel (``cancel`` invocations)."""
    return {
        str((op.get("value") or {}).get("task_id"))
        for op in history
        if op.get("f") == "cancel" and op.get("type") == "invoke"
    }


def check_nothing_lost(obs: Observation) -> Verdict:
    """1. Every *acknowledged* submission reached a terminal state; an ``info``
    one found terminal is "recovered", never lost. A success the ledger never saw
    (no execution ended with exit 0) is a phantom; a ``fail`` submission that
    exists anyway is unexpected. A task ``cancelled`` that the client never asked
    to cancel is work the system dropped (``cancelled_unasked``), unless one of its
    dependencies failed or was cancelled first (``cancelled_cascade``, reported:
    the root is counted where it happened). Phantoms, unexpected and unasked
    cancellations are violations, like lost tasks."""
    if obs.controller is None:
        return _verdict("unknown", {"reason": "controller records not collected"}, [])
    subs = submissions(obs.history)
    runs = executions(obs.ledger)
    asked = _cancel_requests(obs.history)
    counts = dict.fromkeys(
        (
            "acknowledged",
            "terminal",
            "lost",
            "recovered",
            "indeterminate",
            "phantom",
            "unexpected",
            "cancelled_unasked",
            "cancelled_cascade",
        ),
        0,
    )
    examples: list[object] = []

    def status_of(task_id: str) -> object:
        rec = obs.controller.get(task_id) if obs.controller is not None else None
        return None if rec is None else rec.get("status")

    for sub in subs.values():
        rec = obs.controller.get(sub.task_id)
        status = None if rec is None else rec.get("status")
        if sub.outcome == "ok":
            counts["acknowledged"] += 1
            if status in TERMINAL:
                counts["terminal"] += 1
            else:
                counts["lost"] += 1
                examples.append({"kind": "lost", "task": sub.task_id, "status": status})
        elif sub.outcome == "info":
            key = "recovered" if status in TERMINAL else "indeterminate"
            counts[key] += 1
        elif rec is not None:
            counts["unexpected"] += 1
            examples.append({"kind": "unexpected", "task": sub.task_id, "status": status})
        if status == "succeeded" and not any(e.succeeded for e in runs.get(sub.task_id, ())):
            counts["phantom"] += 1
            examples.append({"kind": "phantom_success", "task": sub.task_id})
        if status == "cancelled" and sub.task_id not in asked:
            upstream = [d for d in sub.depends_on if status_of(d) in ("failed", "cancelled")]
            if upstream:
                counts["cancelled_cascade"] += 1
            else:
                counts["cancelled_unasked"] += 1
                examples.append(
                    {
                        "kind": "cancelled_unasked",
                        "task": sub.task_id,
                        "executions": [e.brief() for e in runs.get(sub.task_id, ())],
                    }
                )
    valid = not (
        counts["lost"] or counts["phantom"] or counts["unexpected"] or counts["cancelled_unasked"]
    )
    return _verdict(valid, counts, examples)


def check_strong(obs: Observation) -> Verdict:
    """2. No two ledger executions of one strong task overlap in time. An execution
    with no end line is taken to have run until its last line (the least we know)."""
    subs = submissions(obs.history)
    runs = executions(obs.ledger)
    counts = {"strong_tasks": 0, "executions": 0, "overlaps": 0, "unterminated": 0}
    examples: list[object] = []
    for sub in subs.values():
        if sub.floor != "strong":
            continue
        counts["strong_tasks"] += 1
        task_runs = runs.get(sub.task_id, [])
        counts["executions"] += len(task_runs)
        counts["unterminated"] += sum(e.end is None for e in task_runs)
        for i, a in enumerate(task_runs):
            for b in task_runs[i + 1 :]:
                if a.overlaps(b):
                    counts["overlaps"] += 1
                    examples.append({"task": sub.task_id, "first": a.brief(), "second": b.brief()})
    return _verdict(counts["overlaps"] == 0, counts, examples)


def check_convergence(obs: Observation) -> Verdict:
    """3. Each agent's record of each task it holds has the controller's content hash."""
    if obs.controller is None:
        return _verdict("unknown", {"reason": "controller records not collected"}, [])
    counts = {"nodes": 0, "nodes_unknown": 0, "compared": 0, "diverged": 0, "unknown_to_cloud": 0}
    examples: list[object] = []
    for node, hashes in sorted(obs.agents.items()):
        if hashes is None:
            counts["nodes_unknown"] += 1
            examples.append({"kind": "not_collected", "node": node})
            continue
        counts["nodes"] += 1
        for task_id, digest in sorted(hashes.items()):
            counts["compared"] += 1
            rec = obs.controller.get(task_id)
            if rec is None:
                counts["unknown_to_cloud"] += 1
                examples.append({"kind": "unknown_to_cloud", "node": node, "task": task_id})
            elif rec.get("hash") != digest:
                counts["diverged"] += 1
                examples.append(
                    {
                        "kind": "diverged",
                        "node": node,
                        "task": task_id,
                        "agent": digest[:16],
                        "controller": str(rec.get("hash"))[:16],
                    }
                )
    valid: Valid = not (counts["diverged"] or counts["unknown_to_cloud"])
    if valid and counts["nodes_unknown"]:
        valid = "unknown"
    return _verdict(valid, counts, examples)


def check_order(obs: Observation) -> Verdict:
    """4. No workflow task started before every dependency had a successful
    execution that ended no later than that start."""
    subs = submissions(obs.history)
    runs = executions(obs.ledger)
    counts = {"workflow_tasks": 0, "checked_starts": 0, "early_starts": 0}
    examples: list[object] = []
    for sub in subs.values():
        if not sub.depends_on:
            continue
        counts["workflow_tasks"] += 1
        for run in runs.get(sub.task_id, []):
            counts["checked_starts"] += 1
            missing = [
                dep
                for dep in sub.depends_on
                if not any(d.succeeded and d.stop <= run.start for d in runs.get(dep, ()))
            ]
            if missing:
                counts["early_starts"] += 1
                examples.append(
                    {"task": sub.task_id, "started": round(run.start, 3), "unmet": missing}
                )
    return _verdict(counts["early_starts"] == 0, counts, examples)


def _double_runs(task_runs: Sequence[Execution]) -> list[tuple[Execution, Execution]]:
    """Pairs (earlier, later) where the later is a second run, not a retry: it
    overlaps the earlier, or the earlier had already succeeded."""
    pairs = []
    for i, a in enumerate(task_runs):
        for b in task_runs[i + 1 :]:
            if a.overlaps(b) or (a.succeeded and a.stop <= b.start):
                pairs.append((a, b))
    return pairs


def check_causal(obs: Observation) -> Verdict:
    """5. A causal task ran twice (concurrently, or again after a success) only
    after a confirmed-loss event for it; each such double run is reported."""
    subs = submissions(obs.history)
    runs = executions(obs.ledger)
    losses: dict[str, list[float]] = defaultdict(list)
    for loss in obs.losses:
        losses[str(loss["task_id"])].append(float(loss["wall"]))
    counts = {"causal_tasks": 0, "double_runs": 0, "after_confirmed_loss": 0, "unjustified": 0}
    examples: list[object] = []
    for sub in subs.values():
        if sub.floor != "causal":
            continue
        counts["causal_tasks"] += 1
        for a, b in _double_runs(runs.get(sub.task_id, [])):
            counts["double_runs"] += 1
            justified = any(t <= b.start for t in losses.get(sub.task_id, ()))
            counts["after_confirmed_loss" if justified else "unjustified"] += 1
            examples.append(
                {
                    "task": sub.task_id,
                    "justified": justified,
                    "first": a.brief(),
                    "second": b.brief(),
                }
            )
    examples.sort(key=lambda e: e["justified"])  # type: ignore[index]
    return _verdict(counts["unjustified"] == 0, counts, examples)


def check_eventual(obs: Observation) -> Verdict:
    """6. Eventual tasks may run more than once (at-least-once): count, never fail."""
    subs = submissions(obs.history)
    runs = executions(obs.ledger)
    counts = {"eventual_tasks": 0, "executed_more_than_once": 0, "extra_executions": 0}
    counts["succeeded_more_than_once"] = 0
    examples: list[object] = []
    for sub in subs.values():
        if sub.floor != "eventual":
            continue
        counts["eventual_tasks"] += 1
        task_runs = runs.get(sub.task_id, [])
        if len(task_runs) > 1:
            counts["executed_more_than_once"] += 1
            counts["extra_executions"] += len(task_runs) - 1
            examples.append({"task": sub.task_id, "runs": [e.brief() for e in task_runs]})
        if sum(e.succeeded for e in task_runs) > 1:
            counts["succeeded_more_than_once"] += 1
    return _verdict(True, counts, examples)


def check_liveness(obs: Observation) -> Verdict:
    """7. Every acknowledged task became terminal within the run's bound after the final
    heal (``liveness_bound_s``): no work left pending once the faults are gone, e.g. a
    fenced strong attempt never retried. Measured by the runner while settling (the
    ``settled`` op: seconds after the final heal for each task still open at its first
    look, and the tasks still open at the end); without that op the verdict is unknown."""
    settled = [op for op in obs.history if op.get("f") == "settled"]
    if not settled or "liveness_bound_s" not in (settled[-1].get("value") or {}):
        return _verdict("unknown", {"reason": "no settle record (the run did not finish)"}, [])
    value = settled[-1]["value"]
    bound = float(value["liveness_bound_s"])
    after: Mapping[str, float] = value.get("terminal_after_heal_s") or {}
    still = set(value.get("still_open") or ())
    acked = {s.task_id for s in submissions(obs.history).values() if s.outcome == "ok"}
    never = sorted(acked & still)
    late = sorted(
        ((t, s) for t, s in after.items() if t in acked and s > bound), key=lambda x: -x[1]
    )
    counts = {
        "acknowledged": len(acked),
        "bound_s": bound,
        "open_at_final_heal": int(value.get("open_at_first_look", 0)),
        "late": len(late),
        "never": len(never),
        "slowest_s": max(after.values(), default=0.0),
    }
    examples: list[object] = [{"kind": "never_terminal", "task": t} for t in never]
    examples += [{"kind": "late", "task": t, "after_heal_s": secs} for t, secs in late]
    return _verdict(not (late or never), counts, examples)


CHECKERS: dict[str, Callable[[Observation], Verdict]] = {
    "nothing_lost": check_nothing_lost,
    "strong_no_overlap": check_strong,
    "convergence": check_convergence,
    "workflow_order": check_order,
    "causal_double_runs": check_causal,
    "eventual_duplicates": check_eventual,
    "liveness": check_liveness,
}


def compose(verdicts: Iterable[Valid]) -> Valid:
    """False beats "unknown" beats True."""
    result: Valid = True
    for v in verdicts:
        if v is False:
            return False
        if v != True:  # noqa: E712 - "unknown" (or any non-True) degrades, never masks
            result = "unknown"
    return result


def check_all(
    obs: Observation, checkers: Mapping[str, Callable[[Observation], Verdict]] = CHECKERS
) -> dict[str, Any]:
    """Run every checker; a crash becomes ``unknown`` with the error (``check-safe``)."""
    results: dict[str, Verdict] = {}
    for name, checker in checkers.items():
        try:
            results[name] = checker(obs)
        except Exception as exc:
            results[name] = {
                "valid": "unknown",
                "counts": {},
                "examples": [],
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=5),
            }
    return {"valid": compose(r["valid"] for r in results.values()), "results": results}
