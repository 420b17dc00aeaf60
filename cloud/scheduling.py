"""Placement as the controller runs it: node views, the ready backlog, decisions.

:meth:`Scheduler.node_views` is the one place where what the controller knows of
each node (registry, link monitor, reservations, telemetry) becomes the
``shared.placement.NodeView`` placement reads. :meth:`Scheduler.schedule` places
every ready task (``shared.decisions.task_readiness``, ``placement_order``);
:meth:`Scheduler.place` places one on a shared table (re-placements). Every
decision becomes a new epoch on the record and a ``place`` message, or a
``placement_blocked`` event logged once per reason.

Blocked work waits for a reason to be looked at again (``cloud.backlog``), and at
most ``WAKE_BATCH`` tasks are placed per pass, best first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from shared.consistency import AdaptiveLevel, level_bounds
from shared.crdt import AttemptStatus, place, request_cancel, visible_status
from shared.decisions import (
    Candidate,
    Readiness,
    demand_level,
    placement_level,
    placement_order,
    task_readiness,
)
from shared.health import SystemHealth
from shared.placement import (
    Decision,
    NodeTable,
    NodeView,
    TaskDemand,
    Weights,
    place_batch,
)
from shared.placement import place as place_task
from shared.protocol import Place
from shared.vocab import Level, LinkState, PlacementMode, Tier

from .backlog import Backlog
from .config import ControllerConfig
from .metrics import ControllerMetrics
from .registry import Registry
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
        """Every registered node as placement sees it now."""
        views = []
        for entry in self.registry.nodes.values():
            if not entry.registered:
                continue
            stats = entry.monitor.stats(now)
            cpu_used = sum(c for c, _ in entry.reserved.values())
            mem_used = sum(m for _, m in entry.reserved.values())
            tel = entry.telemetry
            try:
                tier = Tier(entry.tier)
            except ValueError:
                continue
            views.append(
                NodeView(
                    node_id=entry.node_id,
                    tier=tier,
                    labels=entry.labels,
                    cpus=max(entry.cpus, 0.0),
                    memory_mb=max(entry.memory_mb, 0.0),
                    cpu_free=max(entry.cpus - cpu_used, 0.0),
                    memory_free_mb=max(entry.memory_mb - mem_used, 0.0),
                    running=len(entry.reserved),
                    load=min(max(float(tel.get("cpu_pct") or 0.0) / 100.0, 0.0), 1.0),
                    success_ewma=entry.success_ewma,
                    rtt_ms=stats.rtt_p50_ms or 0.0,
                    link_state=stats.state,
                    draining=entry.draining,
                    battery_pct=entry.capacity.get("battery_pct"),
                    partition_rate_per_h=stats.partition_rate_per_h,
                )
            )
        return views

    def table(self, now: float) -> NodeTable:
        return NodeTable.from_views(self.node_views(now))

    def health(self, now: float) -> SystemHealth:
        return self.registry.system_health(now).health

    def task_mode(self, spec: Mapping[str, Any]) -> PlacementMode:
        mode = (spec.get("placement") or {}).get("mode")
        return PlacementMode(mode) if mode else self.mode

    def _demand(
        self, task_id: str, health: SystemHealth, exclude: Iterable[str] = ()
    ) -> TaskDemand:
        """What placement reads of a task, at the level the system allows now
        (the node's own link is judged afterwards, by ``placement_level``)."""
        spec = self.tasks.records[task_id].spec
        assert spec is not None
        return TaskDemand.from_spec(spec, level=demand_level(spec, system=health), exclude=exclude)

    # -- decisions --------------------------------------------------------------------

    def schedule(self, now: float) -> None:
        """Place every ready task that is not parked (cancel those whose dependencies
        can never succeed), at most ``WAKE_BATCH`` of them, best first."""
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
            if verdict.readiness is Readiness.CANCEL:
                tasks.apply(request_cancel(rec, writer=self.uow.node_id, hlc=self.uow.hlc()))
                self.uow.event("task_cancelled", verdict.reason, task_id=task_id)
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
            return
        order = placement_order(ready)[:WAKE_BATCH]
        health = self.health(now)
        demands = [self._demand(task_id, health) for task_id in order]
        started = time.perf_counter()
        decisions = place_batch(
            self.table(now),
            demands,
            mode=self.mode,
            weights=self.weights,
            seed=self.cfg.placement.seed,
            epochs=[tasks.next_epoch(task_id) for task_id in order],
        )
        each = (time.perf_counter() - started) / len(order)
        for task_id, demand, decision in zip(order, demands, decisions, strict=True):
            self.metrics.placement_seconds.observe(each)
            if not self._decided(task_id, demand, decision, trigger=None, health=health):
                why = "resources" if decision.explanation.exhausted else "nodes"
                self.backlog.park(task_id, why, now)

    def place(
        self,
        task_id: str,
        table: NodeTable,
        *,
        trigger: str | None,
        exclude: Iterable[str] = (),
        health: SystemHealth,
    ) -> bool:
        """Place one task on ``table`` (allocated in place) and act on the decision."""
        demand = self._demand(task_id, health, exclude)
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
            table.allocate(decision.node_id, demand.cpu, demand.memory_mb, demand.disk_mb)
        return self._decided(task_id, demand, decision, trigger=trigger, health=health)

    def _decided(
        self,
        task_id: str,
        demand: TaskDemand,
        decision: Decision,
        *,
        trigger: str | None,
        health: SystemHealth,
    ) -> bool:
        """Record a placement decision: a new epoch on the chosen node (the
        message is queued), or the reason nothing was feasible (logged once)."""
        rec = self.tasks.records[task_id]
        meta = self.tasks.meta[task_id]
        spec = rec.spec
        assert spec is not None
        level = demand.level
        epoch = self.tasks.next_epoch(task_id)
        explanation = decision.explanation.to_dict()
        if decision.node_id is None:
            if meta.blocked_reason is None:  # tasks found blocked, not attempts
                self.metrics.placements.labels(outcome="infeasible").inc()
            reason = f"no feasible node: {explanation.get('filtered') or explanation}"
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
            return False
        meta.blocked_reason = None
        node_id = decision.node_id
        if not level_bounds(spec)[2]:
            entry = self.registry.get(node_id)
            link = entry.link_state if entry else LinkState.HEALTHY
            level = placement_level(spec, link=link, system=health)
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
        self.send_place(task_id)
        return True

    def send_place(self, task_id: str) -> None:
        """Queue the ``place`` message of the task's current placement."""
        rec = self.tasks.records[task_id]
        assert rec.placement is not None and rec.spec is not None
        self.uow.queue(
            rec.placement.node,
            "place",
            Place(
                task_id=task_id,
                epoch=rec.placement.epoch,
                spec=rec.spec,
                level=(self.tasks.meta[task_id].level or Level(rec.placement.level)).value,
                lease_s=rec.placement.lease_s,
                inputs=self._inputs(rec.spec),
            ),
        )

    def _inputs(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """JSON results of the dependencies (their succeeded attempt's result)."""
        out: dict[str, Any] = {}
        for dep in spec.get("depends_on") or ():
            rec = self.tasks.records.get(dep)
            if rec is None:
                continue
            for attempt in rec.attempts.values():
                if attempt.status == AttemptStatus.SUCCEEDED:
                    out[dep] = attempt.result
                    break
        return out
