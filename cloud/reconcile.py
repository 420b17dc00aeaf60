"""Keeping placed work where it should be: link changes, reconciliation with a node
that reappears, level adaptation, re-placement (partition, policy trigger, retry,
drain) and fencing of the old node; the evacuation of a node the operator removes.

The decisions are ``shared.decisions``' (``partition_move``, ``fired_triggers`` and
``trigger_move``, ``retry_move``, ``adapt_level``); this module gathers their facts
from the task table and the registry and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from shared.authz import pinned_to_origin
from shared.crdt import (
    AttemptStatus,
    TaskRecord,
    digest,
    request_cancel,
    set_status,
    visible_status,
)
from shared.decisions import (
    DOWN,
    Movability,
    MoveDecision,
    NodeFacts,
    PartitionFacts,
    RetryFacts,
    TriggerFacts,
    adapt_level,
    drain_move,
    fired_triggers,
    link_degraded,
    partition_move,
    retry_move,
    trigger_move,
)
from shared.health import LinkStateChanged
from shared.placement import NodeTable
from shared.protocol import Cancel, LevelChange, digest_parts
from shared.vocab import Level, PlacementMode

from .fanout import forward, share
from .metrics import ControllerMetrics
from .registry import NodeEntry, Registry
from .scheduling import Scheduler
from .tasks import TaskTable, attempt_facts
from .uow import UnitOfWork

__all__ = ["Reconciler"]

#: Why a re-placement marks the old node's unfinished attempts ``lost``.
_PRESUMED = "node partitioned; re-placed"


class Reconciler:
    def __init__(
        self,
        registry: Registry,
        tasks: TaskTable,
        uow: UnitOfWork,
        scheduler: Scheduler,
        metrics: ControllerMetrics,
    ) -> None:
        self.registry = registry
        self.tasks = tasks
        self.uow = uow
        self.scheduler = scheduler
        self.metrics = metrics
        self.drained: set[str] = set()  # draining nodes reported empty (``drained`` event)

    # -- links and reconciliation ---------------------------------------------------

    def link_changes(self, changes: Iterable[LinkStateChanged | None], now: float) -> None:
        """Record link transitions (as the registry last reported them, so a
        transition noticed by a read-only ``stats`` call is still logged once)."""
        for change in changes:
            if change is None:
                continue
            entry = self.registry.get(change.node_id)
            old = change.old
            if entry is not None:
                old, entry.reported = entry.reported, change.new
            if old is change.new:
                continue
            self.registry.changed()
            self.uow.dirty_nodes.add(change.node_id)
            self.uow.event(
                "link_state",
                change.reason,
                node_id=change.node_id,
                old=old.value,
                new=change.new.value,
            )
            if entry is not None and (
                trigger := link_degraded(
                    old,
                    change.new,
                    strong_tasks=sum(
                        1
                        for t in self.tasks.active_on(change.node_id)
                        if self.tasks.meta[t].level is Level.STRONG
                    ),
                    node_id=change.node_id,
                )
            ):
                entry.triggers.append(trigger)
            if old in DOWN and change.new not in DOWN:
                self.uow.event(
                    "node_reconnected", "heard again after a partition", node_id=change.node_id
                )
                self.reconcile(change.node_id)

    def reconcile(self, node_id: str) -> None:
        """A node (re)appeared: re-send cancels (idempotent: a flag) and start
        anti-entropy. Placements are *not* re-sent blindly: the node may have run
        one whose report is still in its outbox, and a second ``place`` would run
        it again; the digest handler re-sends only those the node's digest shows
        it never received: the first digest after this ``hello`` may re-send every one
        (a reconnect may follow a lost session; ``shared.decisions.place_resend_due``)."""
        for task_id in sorted(self.tasks.active_on(node_id)):
            rec = self.tasks.records[task_id]
            self.tasks.meta[task_id].place_sent_at = None
            if rec.cancel_requested:
                self.send_cancel(node_id, rec, "cancel requested")
        relevant = self.tasks.relevant(node_id)
        if relevant:
            for part in digest_parts(digest(relevant)):
                self.uow.queue(node_id, "digest", part)

    def send_cancel(self, node_id: str, rec: TaskRecord, reason: str) -> None:
        """A user's cancel reaches the node as state and as a command: the record
        carries the task-wide flag (the agent never raises it itself: a ``cancel``
        only revokes its attempts up to the epoch), the command stops them now. Every
        other node holding the record (an earlier holder) gets the flag too."""
        assert rec.placement is not None
        share(self.tasks, self.uow, rec.task_id)
        self.uow.queue(
            node_id, "cancel", Cancel(task_id=rec.task_id, epoch=rec.placement.epoch, reason=reason)
        )

    # -- levels -----------------------------------------------------------------------

    def adapt_levels(self, now: float) -> None:
        """One sample of every adaptive task's level on its own node, by cost
        (``Scheduler.level_facts``)."""
        for task_id in sorted(self.tasks.adaptive):
            node_id = self.tasks.placed_node(task_id)
            meta = self.tasks.meta[task_id]
            spec = self.tasks.records[task_id].spec
            if node_id is None or meta.adaptive is None or spec is None:
                continue
            facts = self.scheduler.level_facts(task_id, node_id, now)
            change = adapt_level(meta.adaptive, spec, facts, now=now)
            if change is None:
                continue
            meta.level = change.new
            self.uow.dirty_tasks.add(task_id)
            direction = "down" if change.downgrade else "up"
            self.metrics.level_changes.labels(direction=direction).inc()
            rec = self.tasks.records[task_id]
            epoch = rec.placement.epoch if rec.placement else 0
            self.uow.event(
                "level_change",
                change.reason,
                task_id=task_id,
                node_id=node_id,
                epoch=epoch,
                **{"from": change.old.value, "to": change.new.value},
            )
            self.uow.queue(
                node_id,
                "level_change",
                LevelChange(
                    task_id=task_id, epoch=epoch, level=change.new.value, reason=change.reason
                ),
            )

    # -- re-placement -------------------------------------------------------------------

    def replace(self, now: float) -> None:
        """Every re-placement rule, one pass: partitions, ended attempts, triggers, drains."""
        self._moves(now, self._partition_decision, self._on_down_nodes())
        self._moves(now, self._retry_decision, self._with_ended_attempts())
        self._replace_on_triggers(now)
        self._drain(now)

    def _moves(self, now: float, decide: _Decide, placed: Iterable[tuple[str, NodeEntry]]) -> None:
        """Apply one per-task rule to ``placed`` (task, its node), placing each task
        it moves on one table shared by the pass."""
        pass_: _Pass | None = None
        for task_id, entry in placed:
            decision = decide(task_id, entry, now)
            if not decision.move:
                continue
            pass_ = pass_ or _Pass(self.scheduler.table(now), now)
            if self._move(task_id, decision, pass_) and decision.fence:
                self._fence_old(task_id, entry.node_id)

    def _on_down_nodes(self) -> list[tuple[str, NodeEntry]]:
        """Active tasks placed on nodes out of reach."""
        return [
            (task_id, entry)
            for node_id in sorted(self.tasks.on_node)
            if (entry := self.registry.get(node_id)) is not None and entry.link_state in DOWN
            for task_id in sorted(self.tasks.active_on(node_id))
        ]

    def _with_ended_attempts(self) -> list[tuple[str, NodeEntry]]:
        """Placed tasks with an attempt that ended since the retry rule last decided
        (``TaskTable.ended``); others are forgotten."""
        out = []
        for task_id in sorted(self.tasks.ended):
            node_id = self.tasks.placed_node(task_id)
            entry = self.registry.get(node_id) if node_id is not None else None
            if entry is None:
                self.tasks.ended.discard(task_id)
            else:
                out.append((task_id, entry))
        return out

    def _move(self, task_id: str, decision: MoveDecision, pass_: _Pass) -> bool:
        if pinned_to_origin(self.tasks.meta[task_id].origin, self.tasks.records[task_id].spec):
            return False  # submitted on its node, it stays there (shared.authz)
        return self.scheduler.place(
            task_id,
            pass_.table,
            trigger=decision.trigger,
            exclude=decision.exclude,
            now=pass_.now,
        )

    def _partition_decision(self, task_id: str, entry: NodeEntry, now: float) -> MoveDecision:
        rec = self.tasks.records[task_id]
        assert rec.placement is not None and rec.spec is not None
        # The level the agent was told at placement: it cannot hear a downgrade
        # while partitioned.
        return partition_move(
            PartitionFacts(
                node_id=entry.node_id,
                link=entry.link_state,
                level=Level(rec.placement.level),
                lease=self.tasks.leases.get(task_id),
                out_of_contact_s=self.registry.out_of_contact_for(entry, now),
                max_disconnect_s=float(rec.spec.get("max_disconnect_s", 300.0)),
            ),
            now=now,
        )

    def _retry_decision(self, task_id: str, entry: NodeEntry, now: float) -> MoveDecision:
        """``retry_move``; the task stays watched while it is to move (until a move
        succeeds: the new epoch then has no attempt) or time alone may change the
        answer; otherwise a new report of the task puts it back."""
        rec = self.tasks.records[task_id]
        assert rec.placement is not None and rec.spec is not None
        epoch = rec.placement.epoch
        decision = retry_move(
            RetryFacts(
                node_id=entry.node_id,
                link=entry.link_state,
                level=Level(rec.placement.level),
                epoch=epoch,
                status=visible_status(rec),
                idempotent=bool(rec.spec.get("idempotent")),
                attempts=attempt_facts(rec, epoch=epoch),
                lease=self.tasks.leases.get(task_id),
            ),
            now=now,
        )
        if not decision.move and not decision.later:
            self.tasks.ended.discard(task_id)
        return decision

    def _replace_on_triggers(self, now: float) -> None:
        """Policy triggers, for tasks whose mode is ``adaptive``: fired per node
        (``fired_triggers``) or per task (the latency bound), each move judged by
        ``trigger_move`` (safety, cooldown, overload budget); the old node gets the
        superseding record."""
        fired = fired_triggers(
            NodeFacts(
                node_id=node_id,
                eligible=_shares_work(entry),
                active_tasks=len(self.tasks.active_on(node_id)),
                failure_ewma=entry.failure_ewma,
                durations=tuple(entry.durations),
                pending=tuple(entry.triggers),
            )
            for node_id, entry in self.registry.nodes.items()
        )
        for entry in self.registry.nodes.values():
            if _shares_work(entry):
                entry.triggers.clear()  # consumed by this pass
        budget = dict(fired.overload_budget)
        pass_: _Pass | None = None
        for node_id in sorted(self.tasks.on_node):
            entry = self.registry.get(node_id)
            if entry is None or entry.link_state in DOWN:
                continue
            placed = self.tasks.active_on(node_id)
            rtt = entry.monitor.stats(now).rtt_p50_ms
            if node_id not in fired.triggers and (
                rtt is None or placed.isdisjoint(self.tasks.latency_bound)
            ):
                continue  # nothing can fire here: spare building the facts
            for task_id in sorted(placed):
                rec = self.tasks.records[task_id]
                meta = self.tasks.meta[task_id]
                assert rec.placement is not None and rec.spec is not None
                decision = trigger_move(
                    TriggerFacts(
                        node_id=node_id,
                        adaptive=self.scheduler.task_mode(rec.spec) is PlacementMode.ADAPTIVE,
                        level=meta.level,
                        node_triggers=fired.triggers.get(node_id, ()),
                        overload_budget=budget.get(node_id, 0),
                        rtt_ms=rtt,
                        max_latency_ms=rec.spec["placement"].get("max_latency_ms"),
                        moved_at=meta.moved_at,
                        movability=self._movability(task_id),
                    ),
                    now=now,
                )
                if not decision.move:
                    continue
                pass_ = pass_ or _Pass(self.scheduler.table(now), now)
                if self._move(task_id, decision, pass_):
                    meta.moved_at = now
                    budget[node_id] = budget.get(node_id, 0) - 1
                    self._supersede(task_id, node_id)

    # -- a node leaving on purpose ------------------------------------------------------

    def _drain(self, now: float) -> None:
        """Work on draining nodes in reach leaves by its level (``drain_move``; an
        unreachable node's work follows the partition rule); a draining node found
        holding nothing is reported once (``drained``)."""
        pass_: _Pass | None = None
        draining = sorted(n for n, e in self.registry.nodes.items() if e.draining)
        self.drained.intersection_update(draining)
        for node_id in draining:
            if self.registry.nodes[node_id].link_state in DOWN:
                continue
            for task_id in sorted(self.tasks.active_on(node_id)):
                decision = drain_move(self._movability(task_id), node_id=node_id, now=now)
                if not decision.move:
                    continue
                pass_ = pass_ or _Pass(self.scheduler.table(now), now)
                if self._move(task_id, decision, pass_):
                    self._leave(task_id, node_id, decision)
            if self.tasks.active_on(node_id):
                self.drained.discard(node_id)
            elif node_id not in self.drained:
                self.drained.add(node_id)
                self.uow.event("drained", "draining and holding no active task", node_id=node_id)

    def evacuate(self, node_id: str, now: float) -> dict[str, list[str]]:
        """Empty a node the operator removes while it holds work: each task moves as
        a drain would move it (``drain_move``) and is cancelled where it may not move
        now or no other node can take it. Returns the task ids by outcome."""
        out: dict[str, list[str]] = {"replaced": [], "cancelled": []}
        pass_: _Pass | None = None
        for task_id in sorted(self.tasks.active_on(node_id)):
            decision = drain_move(self._movability(task_id), node_id=node_id, now=now)
            if decision.move:
                pass_ = pass_ or _Pass(self.scheduler.table(now), now)
                if self._move(task_id, decision, pass_):
                    self._leave(task_id, node_id, decision)
                    out["replaced"].append(task_id)
                    continue
                why = "node removed (--force) and the task could not be placed elsewhere"
            else:
                why = f"node removed (--force); {decision.reason}"
            rec = self.tasks.apply(
                request_cancel(
                    self.tasks.records[task_id], writer=self.uow.node_id, hlc=self.uow.hlc()
                )
            )
            self.uow.event("cancel_requested", why, task_id=task_id, node_id=node_id)
            self.send_cancel(node_id, rec, why)
            out["cancelled"].append(task_id)
        return out

    def _leave(self, task_id: str, node_id: str, decision: MoveDecision) -> None:
        """The old node of a task that left it learns of the new epoch (its attempts
        presumed lost first when the decision fences them)."""
        if decision.fence:
            self._fence_old(task_id, node_id)
        else:
            self._supersede(task_id, node_id)

    def _movability(self, task_id: str) -> Movability:
        """The facts ``shared.decisions.movable`` reads of a placed task."""
        rec = self.tasks.records[task_id]
        assert rec.placement is not None
        epoch = rec.placement.epoch
        return Movability(
            level=Level(rec.placement.level),
            epoch=epoch,
            started=any(
                a.epoch == epoch and a.status >= AttemptStatus.STARTED
                for a in rec.attempts.values()
            ),
            lease=self.tasks.leases.get(task_id),
            idempotent=bool((rec.spec or {}).get("idempotent")),
        )

    def _supersede(self, task_id: str, old_node: str) -> None:
        """Tell the old node its placement was superseded: the record itself (new
        epoch, elsewhere), on which the agent stops and dequeues its attempt. A
        ``cancel`` would cancel the *task* (a flag that only becomes true)."""
        self.uow.queue_records(old_node, [self.tasks.records[task_id]])

    def _fence_old(self, task_id: str, node_id: str) -> None:
        """The old node's attempts are presumed lost (its own report, if it comes,
        outranks this inference in the record, so a ``presumed_lost`` event keeps it)
        and it gets the superseding record (queued at the broker until it returns;
        anti-entropy on reconnect sends it as well); the new holder gets the losses its
        ``place`` predates. Called once the task has left ``node_id``: its placement there was
        the epoch before the new one (each placement takes the next). One of which no
        attempt is known here (its start report not heard before the node went out of
        contact) is presumed lost all the same: the event names its epoch, no attempt."""
        before = self.tasks.records[task_id]
        assert before.placement is not None
        left = before.placement.epoch - 1
        if left > 0 and not any(
            a.node == node_id and a.epoch == left for a in before.attempts.values()
        ):
            self.uow.event("presumed_lost", _PRESUMED, task_id=task_id, node_id=node_id, epoch=left)
        for dot, attempt in sorted(self.tasks.records[task_id].attempts.items()):
            if attempt.node == node_id and not attempt.status.terminal:
                self.tasks.apply(
                    set_status(
                        self.tasks.records[task_id],
                        dot,
                        AttemptStatus.LOST,
                        writer=self.uow.node_id,
                        hlc=self.uow.hlc(),
                        reason=_PRESUMED,
                    )
                )
                self.uow.event(
                    "presumed_lost",
                    _PRESUMED,
                    task_id=task_id,
                    node_id=node_id,
                    epoch=attempt.epoch,
                    attempt=f"{dot[0]}:{dot[1]}",
                )
        forward(self.tasks, self.uow, task_id, before, skip=(node_id,))
        self._supersede(task_id, node_id)


class _Pass:
    """The node table and time one re-placement pass shares (built lazily: most
    passes move nothing)."""

    __slots__ = ("now", "table")

    def __init__(self, table: NodeTable, now: float) -> None:
        self.table = table
        self.now = now


#: A per-task re-placement rule: (task id, its node, now) -> decision.
_Decide = Callable[[str, NodeEntry, float], MoveDecision]


def _shares_work(entry: NodeEntry) -> bool:
    """A node whose triggers fire and whose load counts for overload."""
    return entry.registered and not entry.draining and entry.link_state not in DOWN
