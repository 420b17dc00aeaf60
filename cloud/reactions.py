"""What a merged change means: events, outcome statistics, learning, conflicts,
lease release, and the change sent on to the other nodes that hold the record
(``cloud.fanout``: a hedged task's old holder hears of the new holder's attempt).

Learning (``shared.learning`` on ``Registry.learner``): a succeeded attempt's run
(start to exit, the node's own stamps) teaches its node's speed and its kind's
work; the current placement's predicted finish against the time from the
decision to the result heard teaches the node's prediction error. A task that is
not idempotent and has a further attempt start is counted (the harm metric).

Called once per task changed by an ingest batch, after every message of the batch
was merged (``TaskTable.apply`` already refreshed the indexes).
"""

from __future__ import annotations

from typing import Any

from shared.clocks import Timestamp
from shared.crdt import Attempt, AttemptStatus, TaskRecord, visible_status
from shared.decisions import RunningAttempt, holder_stopped, running_conflicts
from shared.learning import observe_finish, observe_run

from .fanout import forward
from .metrics import ControllerMetrics
from .registry import NodeEntry, Registry, work_key
from .store import Store
from .tasks import TaskMeta, TaskTable, attempt_facts
from .uow import UnitOfWork

__all__ = ["Reactions"]


class Reactions:
    def __init__(
        self,
        registry: Registry,
        tasks: TaskTable,
        uow: UnitOfWork,
        store: Store,
        metrics: ControllerMetrics,
    ) -> None:
        self.registry = registry
        self.tasks = tasks
        self.uow = uow
        self.store = store
        self.metrics = metrics
        # Per node, the labelled children of the learning gauges (a ``labels`` call
        # costs a lock and a lookup; nodes are few and their children never removed).
        self._gauges: dict[str, tuple[Any, Any]] = {}

    def after_change(self, task_id: str, before: TaskRecord | None) -> None:
        rec = self.tasks.records[task_id]
        meta = self.tasks.meta[task_id]
        if before is None and meta.origin is not None:
            self.uow.event(
                "task_adopted", "first seen from a node", task_id=task_id, node_id=meta.origin
            )
        if rec.spec is not None and (before is None or before.spec is None):
            self.tasks.register_spec(task_id, rec.spec, meta)
        old_status = visible_status(before) if before is not None else None
        new_status = visible_status(rec)
        if new_status != old_status:
            self.uow.event(
                f"task_{new_status.value}",
                f"status {old_status} -> {new_status}",
                task_id=task_id,
                node_id=rec.placement.node if rec.placement else None,
                epoch=rec.placement.epoch if rec.placement else None,
            )
        self._record_outcomes(before, rec)
        self._note_starts(task_id, before, rec, meta)
        if _an_attempt_ended(before, rec):
            self.tasks.ended.add(task_id)
        self._check_conflict(task_id, rec, meta)
        self._release_lease(task_id, rec, new_status.terminal)
        forward(self.tasks, self.uow, task_id, before)

    def _release_lease(self, task_id: str, rec: TaskRecord, terminal: bool) -> None:
        """A lease ends with its task, or as soon as its holder reported every attempt
        of the leased epoch ended (``shared.decisions.holder_stopped``): a new epoch
        need not wait out the deadline of a process that is known to be gone."""
        lease = self.tasks.leases.get(task_id)
        if lease is None:
            return
        if terminal or holder_stopped(lease, attempt_facts(rec)):
            self.tasks.leases.release(task_id, lease.epoch)
            self.store.delete_lease(task_id)
            self.uow.event(
                "lease_released",
                "task ended" if terminal else "the holder reported its attempt ended",
                task_id=task_id,
                node_id=lease.node,
                epoch=lease.epoch,
            )

    def _record_outcomes(self, before: TaskRecord | None, rec: TaskRecord) -> None:
        """Per node: success and failure EWMAs and run durations (placement terms
        and the failure-rate and slowdown triggers)."""
        for dot, attempt in rec.attempts.items():
            old = before.attempts.get(dot) if before is not None else None
            if old is not None and old.status == attempt.status:
                continue
            if attempt.status in (AttemptStatus.SUCCEEDED, AttemptStatus.FAILED):
                entry = self.registry.get(attempt.node)
                if entry is None:
                    continue
                seconds = _run_seconds(attempt)
                succeeded = attempt.status == AttemptStatus.SUCCEEDED
                entry.record_outcome(succeeded, duration_s=seconds)
                if succeeded:
                    self._learn(rec, attempt, entry, seconds)

    def _learn(
        self, rec: TaskRecord, attempt: Attempt, entry: NodeEntry, seconds: float | None
    ) -> None:
        """A succeeded attempt teaches the learner (see the module doc)."""
        tier = entry.tier_of
        if rec.spec is None or tier is None:
            return
        learner = self.registry.learner
        node_id = attempt.node
        if seconds is not None and seconds > 0:
            kind, hint_s, bound_s = work_key(rec.spec)
            observe_run(
                learner,
                node_id=node_id,
                tier=tier,
                kind=kind,
                seconds=seconds,
                hint_s=hint_s,
                bound_s=bound_s,
            )
            self._gauges_of(node_id)[0].set(learner.speed_of(node_id, tier).value)
            self.registry.learned = True
        meta = self.tasks.meta[rec.task_id]
        current = rec.placement is not None and rec.placement.epoch == attempt.epoch
        if current and meta.predicted_s is not None and meta.placed_at is not None:
            actual = self.tasks.mono() - meta.placed_at
            observe_finish(learner, node_id, meta.predicted_s, actual, tier)
            meta.predicted_s = None  # one sample per placement
            self._gauges_of(node_id)[1].set(learner.error_of(node_id, tier))
            self.registry.learned = True

    def _gauges_of(self, node_id: str) -> tuple[Any, Any]:
        """(speed, prediction error) gauges of ``node_id``."""
        gauges = self._gauges.get(node_id)
        if gauges is None:
            gauges = self._gauges[node_id] = (
                self.metrics.node_speed.labels(node=node_id),
                self.metrics.prediction_error.labels(node=node_id),
            )
        return gauges

    def _note_starts(
        self, task_id: str, before: TaskRecord | None, rec: TaskRecord, meta: TaskMeta
    ) -> None:
        """When the current placement's attempt was heard to start (its backlog
        then shrinks as it runs), and the harm metric: every further attempt that
        started of a task that is not idempotent."""
        old = before.attempts if before is not None else {}
        new = [
            a
            for dot, a in rec.attempts.items()
            if a.started_hlc is not None and (dot not in old or old[dot].started_hlc is None)
        ]
        if not new:
            return
        epoch = rec.placement.epoch if rec.placement is not None else None
        if meta.started_at is None and any(a.epoch == epoch for a in new):
            meta.started_at = self.tasks.mono()
        if rec.spec is not None and not rec.spec.get("idempotent", False):
            started = sum(1 for a in rec.attempts.values() if a.started_hlc is not None)
            further = started - max(started - len(new), 1)
            if further > 0:
                self.metrics.reexecutions.inc(further)

    def _check_conflict(self, task_id: str, rec: TaskRecord, meta: TaskMeta) -> None:
        """Two attempts running at once on different nodes, for a task whose level
        forbids it (``shared.decisions.running_conflicts``): flagged once per pair (a
        pair needs two attempts)."""
        if len(rec.attempts) < 2:
            return
        attempts = [
            RunningAttempt(dot=dot, node=a.node, status=a.status) for dot, a in rec.attempts.items()
        ]
        for a, b in running_conflicts(meta.level, attempts, flagged=meta.flagged):
            meta.flagged.add(frozenset((a.dot, b.dot)))
            self.metrics.conflicts.inc()
            self.uow.event(
                "conflict",
                f"two attempts running at once at level {meta.level}",
                task_id=task_id,
                attempts=[f"{a.dot[0]}:{a.dot[1]}", f"{b.dot[0]}:{b.dot[1]}"],
                nodes=[a.node, b.node],
            )


def _an_attempt_ended(before: TaskRecord | None, rec: TaskRecord) -> bool:
    old = before.attempts if before is not None else {}
    return any(
        a.status.terminal and (dot not in old or not old[dot].status.terminal)
        for dot, a in rec.attempts.items()
    )


def _run_seconds(attempt: Attempt) -> float | None:
    """Wall duration of a finished attempt from its HLC stamps (``None`` if unknown)."""
    if attempt.started_hlc is None:
        return None
    try:
        start = Timestamp.decode(attempt.started_hlc).wall_ms
        end = Timestamp.decode(attempt.hlc).wall_ms
    except ValueError:
        return None
    return max(0.0, (end - start) / 1000.0)
