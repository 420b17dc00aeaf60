"""Placement as the controller runs it: node views, the ready backlog, decisions.

:meth:`Scheduler.node_views` is the one place where what the controller knows of
each node (registry, link monitor, reservations, telemetry, what it learned:
``Registry.learner``) becomes the ``shared.placement.NodeView`` placement reads;
:meth:`Scheduler.demand` is the same for a task (its learned work, the time left
to its deadline). :meth:`Scheduler.schedule` places every ready task
(``shared.decisions.task_readiness``, ``placement_order``); :meth:`Scheduler.place`
places one on a shared table (re-placements). Every decision becomes a new epoch
on the record and a ``place`` message, or a ``placement_blocked`` event logged
once per reason. An adaptive task's level on the chosen node is chosen by cost
(``shared.decisions.placement_level`` on :meth:`Scheduler.level_facts`).

Blocked work waits for a reason to be looked at again (``cloud.backlog``), and at
most ``WAKE_BATCH`` tasks are placed per pass, best first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from shared.consistency import AdaptiveLevel, level_bounds
from shared.crdt import place, request_cancel, visible_status
from shared.decisions import (
    Candidate,
    LevelFacts,
    Readiness,
    demand_level,
    placement_level,
    placement_order,
    task_readiness,
)
from shared.learning import DEFAULT_WORK_S
from shared.model import MAX_DEADLINE_S
from shared.placement import (
    Decision,
    NodeTable,
    NodeView,
    TaskDemand,
    Weights,
    feasibility_key,
    place_batch,
)
from shared.placement import place as place_task
from shared.protocol import Place
from shared.vocab import Level, LinkState, PlacementMode

from .backlog import Backlog
from .config import ControllerConfig
from .fanout import forward
from .inputs import dependency_results, unsendable
from .metrics import ControllerMetrics
from .registry import NodeEntry, Registry, work_key
from .tasks import TaskTable
from .uow import UnitOfWork

__all__ = ["WAKE_BATCH", "Scheduler"]

#: Tasks placed per pass at most, in placement order; the rest wait for the next pass.
WAKE_BATCH = 256


class Scheduler:
    def __init__(
        self,
        cfg: ControllerConfig,
        registry: Registry,
        tasks: TaskTable,
        uow: UnitOfWork,
        metrics: ControllerMetrics,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.tasks = tasks
        self.uow = uow
        self.metrics = metrics
        self.mode = PlacementMode(cfg.placement.mode)
        self.weights = Weights(**cfg.placement.weights)
        self.backlog = Backlog(registry, tasks)

    # -- inputs of placement ---------------------------------------------------------

    def node_views(self, now: float) -> list[NodeView]:
        """Every registered node as placement sees it now: capacity minus the
        controller's reservations, telemetry, the link monitor's grade and round
        trip, and what was learned (speed, prediction error, bandwidth) with the
        backlog of work placed there and not finished (:meth:`backlog_s`)."""
        learner = self.registry.learner
        views = []
        for entry in self.registry.nodes.values():
            tier = entry.tier_of
            if not entry.registered or tier is None:
                continue
            node_id = entry.node_id
            stats = entry.monitor.stats(now)
            cpu_used = sum(c for c, _ in entry.reserved.values())
            mem_used = sum(m for _, m in entry.reserved.values())
            speed = learner.speed_of(node_id, tier).value
            bandwidth = learner.bandwidth_mbps.get(node_id)
            views.append(
                NodeView(
                    node_id=node_id,
                    tier=tier,
                    labels=entry.labels,
                    cpus=max(entry.cpus, 0.0),
                    memory_mb=max(entry.memory_mb, 0.0),
                    cpu_free=max(entry.cpus - cpu_used, 0.0),
                    memory_free_mb=max(entry.memory_mb - mem_used, 0.0),
                    running=len(entry.reserved),
                    load=min(max(float(entry.telemetry.get("cpu_pct") or 0.0) / 100.0, 0.0), 1.0),
                    success_ewma=entry.success_ewma,
                    rtt_ms=self.rtt_ms(entry, stats.rtt_p50_ms),
                    link_state=stats.state,
                    draining=entry.draining,
                    battery_pct=entry.capacity.get("battery_pct"),
                    partition_rate_per_h=stats.partition_rate_per_h,
                    speed=speed,
                    backlog_s=self.backlog_s(entry, speed, now),
                    error=learner.error_of(node_id, tier),
                    slots=entry.slots,
                    **({} if bandwidth is None else {"bandwidth_mbps": bandwidth}),
                )
            )
        return views

    def table(self, now: float) -> NodeTable:
        return NodeTable.from_views(self.node_views(now))

    def rtt_ms(self, entry: NodeEntry, p50_ms: float | None) -> float:
        """The node's round trip: the monitor's p50 over its window, else the
        learned average (kept across restarts), else 0 (nothing measured yet)."""
        if p50_ms is not None:
            return p50_ms
        return self.registry.learner.rtt_ms.get(entry.node_id, 0.0)

    def backlog_s(self, entry: NodeEntry, speed: float, now: float) -> float:
        """Work placed on the node and not finished, in reference-core seconds: the
        controller's own accounting (each active task's predicted work, less what
        its speed got done since its attempt was heard to start), corrected by the
        node's telemetry when that reports more tasks (running and queued) than the
        controller placed there (work it does not know of, such as local
        submissions, counted at the mean of the known, else ``DEFAULT_WORK_S``)."""
        own = [self._remaining(t, speed, now) for t in self.tasks.active_on(entry.node_id)]
        total = sum(own)
        tel = entry.telemetry
        unknown = int(tel.get("running") or 0) + int(tel.get("queue_len") or 0) - len(own)
        if unknown > 0:
            total += unknown * (total / len(own) if own else DEFAULT_WORK_S)
        return total

    def _remaining(self, task_id: str, speed: float, now: float) -> float:
        meta = self.tasks.meta[task_id]
        work = meta.work_s
        if work is None:  # placed before a restart: the kind's estimate now
            spec = self.tasks.records[task_id].spec
            assert spec is not None
            work = self.work_of(spec)
        if meta.started_at is not None:
            work -= max(now - meta.started_at, 0.0) * speed
        return max(work, 0.0)

    def work_of(self, spec: Mapping[str, Any]) -> float:
        """The task's work in reference-core seconds, as learned for its kind
        (``shared.learning``: prior from the spec's optional ``work_s`` hint, else
        the default capped by its deadline)."""
        return self.registry.learner.work_of(*work_key(spec)).value

    def deadline_left(self, task_id: str) -> float | None:
        """Seconds left until the task's deadline (its ``deadline_s`` counted from
        its submission, on the controller's wall clock: the only clock that
        survives a restart); ``None`` without a deadline; negative once passed."""
        spec = self.tasks.records[task_id].spec
        deadline = spec.get("deadline_s") if spec is not None else None
        if deadline is None:
            return None
        waited = (self.uow.wall_ms() - self.tasks.meta[task_id].submitted_ms) / 1000.0
        return float(deadline) - max(waited, 0.0)

    def level_facts(
        self, task_id: str, node_id: str, now: float, *, finish_s: float | None = None
    ) -> LevelFacts:
        """What the cost of each level reads of ``task_id`` on ``node_id`` now: the
        node's link (``None`` while it is graded healthy on no round trip at all:
        the configured prior), round trip, partition history and the predicted run
        (``finish_s``, the placement's prediction, else the remaining work over the
        node's speed plus a round trip) against the deadline left."""
        entry = self.registry.get(node_id)
        tier = entry.tier_of if entry is not None else None
        if entry is None or tier is None:
            return LevelFacts(link=LinkState.FAILED)
        grade = entry.monitor.grade(now)  # as the simulator reads it
        rtt = self.rtt_ms(entry, grade.rtt_p50_ms)
        if finish_s is None:
            speed = self.registry.learner.speed_of(node_id, tier).value
            finish_s = self._remaining(task_id, speed, now) / speed + rtt / 1000.0
        unsampled = grade.rtt_p50_ms is None and grade.state is LinkState.HEALTHY
        left = self.deadline_left(task_id)
        return LevelFacts(
            link=None if unsampled else grade.state,
            run_s=finish_s,
            slack_s=None if left is None else left - finish_s,
            rtt_ms=rtt,
            partition_rate_per_h=grade.partition_rate_per_h,
            outage_s=grade.outage_s,
        )

    def task_mode(self, spec: Mapping[str, Any]) -> PlacementMode:
        mode = (spec.get("placement") or {}).get("mode")
        return PlacementMode(mode) if mode else self.mode

    def demand(self, task_id: str, exclude: Iterable[str] = ()) -> TaskDemand:
        """What placement reads of a task: its learned work, the deadline left, at
        the level placement filters by (``demand_level``: before a node is chosen;
        the chosen node's own facts are judged afterwards, ``placement_level``)."""
        spec = self.tasks.records[task_id].spec
        assert spec is not None
        return TaskDemand.from_spec(
            spec,
            level=demand_level(spec, policy=self.tasks.adaptation),
            exclude=exclude,
            work_s=self.work_of(spec),
            deadline_s=self.deadline_left(task_id),
        )

    # -- decisions --------------------------------------------------------------------

    def schedule(self, now: float) -> None:
        """Place every ready task that is not parked (cancel those whose dependencies
        can never succeed), at most ``WAKE_BATCH`` of them, best first: in rounds
        while the placed tasks wake others of their kind (``Backlog.placed``)."""
        budget = WAKE_BATCH
        while budget > 0:
            looked, woken = self._round(now, budget)
            budget -= looked
            if not woken:
                return

    def _round(self, now: float, budget: int) -> tuple[int, int]:
        """One round of :meth:`schedule`: ``(tasks placed or parked, tasks woken)``."""
        tasks = self.tasks
        ready: list[Candidate] = []
        for task_id in self.backlog.due(now):
            rec = tasks.records[task_id]
            spec = rec.spec
            assert spec is not None
            verdict = task_readiness(
                [
                    visible_status(tasks.records[d]) if d in tasks.records else None
                    for d in spec.get("depends_on") or ()
                ]
            )
            cancel = verdict.reason if verdict.readiness is Readiness.CANCEL else None
            if verdict.readiness is Readiness.READY:
                cancel = unsendable(
                    task_id, spec, dependency_results(tasks.records, spec), self.uow.envelope
                )
            if cancel is not None:
                tasks.apply(request_cancel(rec, writer=self.uow.node_id, hlc=self.uow.hlc()))
                self.uow.event("task_cancelled", cancel, task_id=task_id)
            elif verdict.readiness is Readiness.WAITING:
                self.backlog.park(task_id, "deps", now)
            else:
                ready.append(
                    Candidate(
                        task_id=task_id,
                        priority=int(spec.get("priority", 50)),
                        submitted_ms=tasks.meta[task_id].submitted_ms,
                    )
                )
        if not ready:
            return 0, 0
        by_id = {c.task_id: c for c in ready}
        order = placement_order(ready)[:budget]
        rounds: list[tuple[str, TaskDemand, tuple[object, ...]]] = []
        for task_id in order:
            demand = self.demand(task_id)
            kind = feasibility_key(demand, self.mode)
            if not self._behind_head(task_id, kind, by_id[task_id], now):
                rounds.append((task_id, demand, kind))
        if not rounds:
            return len(order), 0
        started = time.perf_counter()
        decisions = place_batch(
            self.table(now),
            [demand for _, demand, _ in rounds],
            mode=self.mode,
            weights=self.weights,
            seed=self.cfg.placement.seed,
            epochs=[tasks.next_epoch(task_id) for task_id, _, _ in rounds],
        )
        each = (time.perf_counter() - started) / len(rounds)
        woken = 0
        for (task_id, demand, kind), decision in zip(rounds, decisions, strict=True):
            self.metrics.placement_seconds.observe(each)
            if self._decided(task_id, demand, decision, trigger=None, now=now):
                woken += self.backlog.placed(task_id)
            else:
                c = by_id[task_id]
                self.backlog.park(
                    task_id,
                    "resources" if decision.explanation.exhausted else "nodes",
                    now,
                    kind=kind,
                    order=(-c.priority, c.submitted_ms, task_id),
                )
        return len(order), woken

    def _behind_head(
        self, task_id: str, kind: tuple[object, ...], c: Candidate, now: float
    ) -> bool:
        """Park ``task_id`` without a decision when its kind's head is parked: the head
        was found blocked and nothing that could unblock it has happened since (it
        would be awake: ``cloud.backlog``), so the task is blocked as the head is, for
        the same reason, and queues behind it (or heads the kind, when it comes first).
        A POST to a backlog of one kind then costs no node table and no placement."""
        head = self.backlog.parked_head(kind)
        if head is None:
            return False
        head_id, why = head
        blocked = self.tasks.meta[head_id]
        if blocked.blocked_reason is None or blocked.explanation is None:
            return False
        self._blocked(task_id, blocked.blocked_reason, blocked.explanation, trigger=None)
        self.backlog.park(
            task_id, why, now, kind=kind, order=(-c.priority, c.submitted_ms, task_id)
        )
        return True

    def place(
        self,
        task_id: str,
        table: NodeTable,
        *,
        trigger: str | None,
        exclude: Iterable[str] = (),
        now: float,
    ) -> bool:
        """Place one task on ``table`` (allocated in place, its work included) and
        act on the decision."""
        demand = self.demand(task_id, exclude)
        started = time.perf_counter()
        decision = place_task(
            table,
            demand,
            mode=self.mode,
            weights=self.weights,
            seed=self.cfg.placement.seed,
            epoch=self.tasks.next_epoch(task_id),
        )
        self.metrics.placement_seconds.observe(time.perf_counter() - started)
        if decision.node_id is not None:
            table.allocate(
                decision.node_id, demand.cpu, demand.memory_mb, demand.disk_mb, work_s=demand.work
            )
        return self._decided(task_id, demand, decision, trigger=trigger, now=now)

    def _decided(
        self,
        task_id: str,
        demand: TaskDemand,
        decision: Decision,
        *,
        trigger: str | None,
        now: float,
    ) -> bool:
        """Record a placement decision: a new epoch on the chosen node (the
        message is queued), or the reason nothing was feasible (logged once).
        The prediction is kept (``TaskMeta``) for the learner and the backlog."""
        rec = self.tasks.records[task_id]
        meta = self.tasks.meta[task_id]
        spec = rec.spec
        assert spec is not None
        level = demand.level
        epoch = self.tasks.next_epoch(task_id)
        explanation = decision.explanation.to_dict()
        if decision.node_id is None:
            reason = f"no feasible node: {explanation.get('filtered') or explanation}"
            self._blocked(task_id, reason, explanation, trigger=trigger)
            return False
        meta.blocked_reason = None
        node_id = decision.node_id
        finish_s = _predicted_finish(decision)
        meta.placed_at, meta.predicted_s, meta.work_s = now, finish_s, demand.work
        meta.started_at = None
        if not level_bounds(spec)[2]:
            facts = self.level_facts(task_id, node_id, now, finish_s=finish_s)
            level = placement_level(spec, facts, policy=self.tasks.adaptation)
            meta.adaptive = AdaptiveLevel.from_spec(
                spec, initial=level, policy=self.tasks.adaptation
            )
        lease_s = self.cfg.consistency.lease_s if level is Level.STRONG else None
        old_node = rec.placement.node if rec.placement else None
        meta.level = level
        meta.explanation = explanation
        self.tasks.apply(
            place(
                rec,
                epoch=epoch,
                node=node_id,
                level=level.value,
                lease_s=lease_s,
                writer=self.uow.node_id,
                hlc=self.uow.hlc(),
            )
        )
        if trigger is None:
            self.metrics.placements.labels(outcome="placed").inc()
            self.uow.event(
                "placed",
                f"best of {explanation.get('evaluated')} candidates",
                task_id=task_id,
                node_id=node_id,
                epoch=epoch,
                level=level.value,
                explanation=explanation,
            )
        else:
            self.metrics.replacements.labels(trigger=trigger.split(":")[0]).inc()
            self.uow.event(
                "replaced",
                trigger,
                task_id=task_id,
                node_id=node_id,
                epoch=epoch,
                level=level.value,
                old_node=old_node,
                explanation=explanation,
            )
        # Nodes that held the task earlier learn of the new epoch; the node it leaves is
        # the caller's (``cloud.reconcile``: told at once, or after a hedge not at all).
        forward(self.tasks, self.uow, task_id, rec, skip=(node_id, old_node or node_id))
        meta.place_resends = 0
        self.send_place(task_id, now)
        return True

    def _blocked(
        self, task_id: str, reason: str, explanation: dict[str, Any], *, trigger: str | None
    ) -> None:
        """Nothing is feasible for ``task_id``: counted once per task, its reason
        kept and logged once per reason."""
        meta = self.tasks.meta[task_id]
        if meta.blocked_reason is None:  # tasks found blocked, not attempts
            self.metrics.placements.labels(outcome="infeasible").inc()
        if meta.blocked_reason != reason:
            meta.blocked_reason = reason
            meta.explanation = explanation
            self.uow.dirty_tasks.add(task_id)
            self.uow.event(
                "placement_blocked",
                reason,
                task_id=task_id,
                trigger=trigger,
                explanation=explanation,
            )

    def send_place(self, task_id: str, now: float, *, record: bool = True) -> None:
        """Queue the record, then the ``place`` of the task's current placement with the
        seconds left to its deadline (the agent's queue orders by it). With the record
        first the node holds our placement and keeps no copy of its own
        (``edge_agent.inbound``): its record equals ours at once, not after its next
        digest (``record=False``: a re-send on one, ``missing`` brought the record)."""
        rec = self.tasks.records[task_id]
        assert rec.placement is not None and rec.spec is not None
        self.tasks.meta[task_id].place_sent_at = now
        left = self.deadline_left(task_id)
        if record:
            self.uow.queue_records(rec.placement.node, [rec])
        self.uow.queue(
            rec.placement.node,
            "place",
            Place(
                task_id=task_id,
                epoch=rec.placement.epoch,
                spec=rec.spec,
                level=(self.tasks.meta[task_id].level or Level(rec.placement.level)).value,
                lease_s=rec.placement.lease_s,
                inputs=dependency_results(self.tasks.records, rec.spec),
                deadline_left_s=None if left is None else max(left, -MAX_DEADLINE_S),
            ),
        )


def _predicted_finish(decision: Decision) -> float | None:
    """The chosen node's predicted finish (``finish_s``: seconds from the decision
    to the result here), when the mode predicts one (``adaptive``)."""
    candidates = decision.explanation.candidates
    if not candidates or candidates[0].node_id != decision.node_id:
        return None
    return candidates[0].terms.get("finish_s")
