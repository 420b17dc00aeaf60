"""Replaying a traced run through the real task-record CRDT (``shared.crdt``).

With tracing on, the simulator keeps every attempt with its timeline. Here each
attempt becomes the deltas production writes: the controller's ``new_record`` and
``place`` (delivered to the node when the placement message arrives), the node's
``start_attempt`` (delivered when its start report arrives) and its terminal
``set_status`` (delivered with the final report); a device running its own task
while cut off writes the record itself and the controller learns it on reconnect.
Each writer applies its delta to its own replica at creation, the other side at
delivery, in time order, up to the horizon.

From the replicas:

- ``duplicates``: per task, successful attempts beyond the first, counted from the
  merged records (the simulator's own counter must agree; tested);
- ``status``: the controller's visible status per task at the horizon;
- ``converged_at(node, t)``: the first delivery at or after ``t`` after which the
  controller's replica contains everything the node's replica holds (the join of
  the two equals the controller's), i.e. the node's held deltas have arrived;
- ``observed_convergence(node, t)``: what the testbed measures
  (``simulations/testbed/observe.py`` ``node_converged``, polled every ``poll_s``
  from ``t``): the node's outbox is empty (everything it wrote was acknowledged)
  and each record it holds equals the controller's. The node learns the
  controller's changes to its records from two sources, as the agent does: the
  answers to its digests (``digests``: per node, when a digest reaches the
  controller and when the answer is back; ``cloud/ingest.py`` ``_on_digest``: the
  controller sends what it lacks) and the controller's fan-out (``send``).

**Fan-out** (``cloud/fanout.py``): whenever the controller's replica of a task
gains events (a node's delta merged, a placement), each node that
``shared.authz.lacking`` names gets the controller's whole record, sent then and
arriving at ``send(node, t)`` (the network's control path: held over a cut until the
session resumes, as the broker holds a persistent session's messages). As in
``cloud/scheduling.py``, a placement's fan-out skips the new holder (it gets the
record with its ``place``) and the node the task leaves, which is told at once only
when the move fenced it (``fence``, ``cloud/reconcile.py`` ``_fence_old``; its
lost marks are not modelled); a hedged node learns of the move from later changes.
Without ``send`` nothing is fanned out (digests only).

Cost grows with the number of attempts (every delta is a real merge), so it is for
small runs (the sim-to-real bridge, tests), not the million-task scenarios.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.authz import lacking
from shared.clocks import Timestamp
from shared.crdt import (
    AttemptStatus,
    TaskRecord,
    merge,
    new_record,
    place,
    set_status,
    start_attempt,
    visible_status,
)

__all__ = [
    "CONTROLLER",
    "LedgerReplay",
    "Send",
    "converged_at",
    "observed_convergence",
    "replay",
]

#: When a message the controller sends ``node`` at ``t`` arrives there.
Send = Callable[[str, float], float]

CONTROLLER = "controller"
_OUTCOME = {
    "ok": AttemptStatus.SUCCEEDED,
    "fail": AttemptStatus.FAILED,
    "fenced": AttemptStatus.FAILED,
    "lost": AttemptStatus.LOST,
    "refused": AttemptStatus.CANCELLED,  # lease refused: it never ran
}


@dataclass(slots=True)
class LedgerReplay:
    """Replicas at the horizon and the controller's merge history."""

    controller: dict[str, TaskRecord]
    nodes: dict[tuple[str, str], TaskRecord]
    #: per node: times at which a delta from it reached the controller
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    #: per node: (written, reached the controller) of every delta it sent
    sent: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        """Successful attempts beyond the first, over every replica's knowledge."""
        succeeded: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for rec in (*self.controller.values(), *self.nodes.values()):
            for dot, attempt in rec.attempts.items():
                if attempt.status == AttemptStatus.SUCCEEDED:
                    succeeded[rec.task_id].add(dot)
        return sum(max(0, len(dots) - 1) for dots in succeeded.values())

    def status(self) -> Counter[str]:
        """The controller's visible status of every task it knows, counted."""
        return Counter(str(visible_status(rec)) for rec in self.controller.values())

    def in_sync(self, node: str, now: float, ack_s: float) -> bool:
        """The testbed's test at ``now``: every delta ``node`` wrote by then was
        acknowledged (reached the controller ``ack_s`` before), and each record it
        holds equals the controller's."""
        if any(
            written <= now and reached + ack_s > now for written, reached in self.sent.get(node, ())
        ):
            return False
        return all(self.controller.get(t) == rec for (n, t), rec in self.nodes.items() if n == node)

    def converged(self, node: str) -> bool:
        """Does the controller hold everything ``node`` holds (at the horizon)?"""
        for (n, task_id), rec in self.nodes.items():
            if n != node:
                continue
            mine = self.controller.get(task_id)
            if mine is None or merge(mine, rec) != mine:
                return False
        return True


def _stamp(t: float, seq: int, writer: str) -> Timestamp:
    return Timestamp(int(t * 1000), seq, writer)


def replay(
    attempts: Iterable[Any],
    specs: Mapping[str, dict[str, Any]],
    horizon: float,
    digests: Mapping[str, Iterable[tuple[float, float]]] | None = None,
    send: Send | None = None,
) -> LedgerReplay:
    """Build the replicas from traced attempts (``simulations.sim.model`` ``_Attempt``
    objects with ``node_id``/``task_id`` resolved by the caller: each item needs
    ``task_id, node_id, epoch, level, local, t_ctrl, t_place, t_recv, start,
    start_rep, stop, report, outcome, cancel_at, fence``). ``specs`` maps task ids to
    the spec dict each record is created with; ``send`` times the fan-out (see the
    module docstring)."""
    attempts = list(attempts)
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, payload: Any) -> None:
        nonlocal seq
        if t <= horizon:
            seq += 1
            heapq.heappush(events, (t, seq, kind, payload))

    for a in attempts:
        push(a.t_place if not a.local else a.start, "attempt", a)
    for node, exchanges in (digests or {}).items():
        for reached, back in exchanges:
            push(reached, "digest", (node, back))
    ctrl: dict[str, TaskRecord] = {}
    nodes: dict[tuple[str, str], TaskRecord] = {}
    arrivals: dict[str, list[float]] = defaultdict(list)
    sent: dict[str, list[tuple[float, float]]] = defaultdict(list)
    dots: dict[int, tuple[str, int]] = {}
    origin: dict[str, str | None] = {}
    placed: dict[str, dict[int, str]] = defaultdict(dict)
    fenced = {(a.task_id, a.epoch) for a in attempts if getattr(a, "fence", False)}
    n = 0

    def apply(key: tuple[str, str] | str, delta: TaskRecord) -> None:
        if isinstance(key, str):
            ctrl[key] = merge(ctrl[key], delta) if key in ctrl else delta
        else:
            nodes[key] = merge(nodes[key], delta) if key in nodes else delta

    def fan_out(t: float, tid: str, before: TaskRecord | None, skip: set[str]) -> None:
        if send is None:
            return
        rec = ctrl[tid]
        for node in sorted(lacking(before, rec, origin.get(tid), placed[tid]) - skip):
            push(send(node, t), "deliver", ((node, tid), rec, CONTROLLER))

    while events:
        t, _, kind, payload = heapq.heappop(events)
        n += 1
        if kind == "deliver":
            key, delta, source = payload
            before = ctrl.get(key) if isinstance(key, str) else None
            apply(key, delta)
            if isinstance(key, str):
                arrivals[source].append(t)
                fan_out(t, key, before, set())
            continue
        if kind == "digest":  # the controller answers with its copy of the node's records
            node, back = payload
            for key in [k for k in nodes if k[0] == node]:
                tid = key[1]
                if tid in ctrl and ctrl[tid] != nodes[key]:
                    push(back, "deliver", (key, ctrl[tid], CONTROLLER))
            continue
        a = payload
        tid, node = a.task_id, a.node_id
        if kind == "attempt":
            if getattr(a, "retry", 0):
                pass  # the node retries under the same placement: no new record or place
            elif a.local:
                origin.setdefault(tid, node)
                if (node, tid) not in nodes:
                    delta = new_record(tid, specs[tid], writer=node, hlc=_stamp(t, n, node))
                    apply((node, tid), delta)
            else:
                before = ctrl.get(tid)
                if tid not in ctrl:
                    apply(
                        tid,
                        new_record(
                            tid, specs[tid], writer=CONTROLLER, hlc=_stamp(t, n, CONTROLLER)
                        ),
                    )
                delta = place(
                    ctrl[tid],
                    epoch=a.epoch,
                    node=node,
                    level=str(a.level),
                    lease_s=None,
                    writer=CONTROLLER,
                    hlc=_stamp(t, n, CONTROLLER),
                )
                apply(tid, delta)
                # the node it leaves is told at once only when the move fenced it
                held = placed[tid]
                last = max(held, default=None)
                skip = {node} if last is None or (tid, last) in fenced else {node, held[last]}
                held[a.epoch] = node
                fan_out(t, tid, before, skip)
                push(a.t_recv, "deliver", ((node, tid), ctrl[tid], CONTROLLER))
            if a.start < a.stop:
                push(a.start, "start", a)
            else:
                push(a.stop, "placed", a)
            continue
        key = (node, tid)
        if key not in nodes:  # the placement has not arrived (crash before it did)
            continue
        if kind in ("start", "placed"):
            status = AttemptStatus.STARTED if kind == "start" else AttemptStatus.PLACED
            dot, delta = start_attempt(
                nodes[key],
                node=node,
                epoch=a.epoch,
                writer=node,
                hlc=_stamp(t, n, node),
                status=status,
            )
            dots[id(a)] = dot
            apply(key, delta)
            if kind == "start":
                sent[node].append((t, a.start_rep))
                push(a.start_rep, "deliver", (tid, delta, node))
            end = min(a.stop, a.cancel_at)
            push(end, "end", a)
        elif kind == "end":
            dot = dots[id(a)]
            status = AttemptStatus.CANCELLED if a.cancel_at < a.stop else _OUTCOME[a.outcome]
            delta = set_status(nodes[key], dot, status, writer=node, hlc=_stamp(t, n, node))
            apply(key, delta)
            sent[node].append((t, a.report))
            push(a.report, "deliver", (tid, nodes[key], node))
    return LedgerReplay(ctrl, nodes, dict(arrivals), dict(sent))


def converged_at(
    attempts: list[Any],
    specs: Mapping[str, dict[str, Any]],
    node: str,
    after: float,
    horizon: float,
) -> float | None:
    """The first time ``>= after`` at which the controller's replica holds everything
    ``node``'s replica holds (replaying up to each arrival from the node in turn), or
    ``None`` if that never happens by ``horizon``."""
    full = replay(attempts, specs, horizon)
    candidates = [after, *sorted(t for t in full.arrivals.get(node, []) if t >= after)]
    for t in candidates:
        if replay(attempts, specs, t).converged(node):
            return t
    return None


def observed_convergence(
    attempts: list[Any],
    specs: Mapping[str, dict[str, Any]],
    node: str,
    after: float,
    horizon: float,
    *,
    digests: Mapping[str, Iterable[tuple[float, float]]],
    ack_s: float,
    poll_s: float,
    send: Send | None = None,
) -> float | None:
    """The first poll (every ``poll_s``, the first one ``poll_s`` after ``after``) at
    which ``node`` is in sync with the controller as the testbed tests it
    (``LedgerReplay.in_sync``; ``send``: the fan-out's timing), or ``None`` if none
    is by ``horizon``."""
    t = after + poll_s
    while t <= horizon:
        if replay(attempts, specs, t, digests, send).in_sync(node, t, ack_s):
            return t
        t += poll_s
    return None
