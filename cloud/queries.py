"""The controller's read model: what the REST API shows, and the metrics gauges.

Reads the store (task rows, workflows, events) and the in-memory registry and
leases; changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from shared.crdt import TaskRecord
from shared.decisions import workflow_status
from shared.vocab import LinkState

from .api import NotFound
from .metrics import ControllerMetrics
from .registry import NodeEntry, Registry
from .store import Store, TaskRow
from .tasks import TaskTable
from .uow import UnitOfWork

__all__ = ["Queries"]


class Queries:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        tasks: TaskTable,
        uow: UnitOfWork,
        *,
        mono: Callable[[], float],
    ) -> None:
        self.store = store
        self.registry = registry
        self.tasks = tasks
        self.uow = uow
        self.mono = mono

    # -- tasks --------------------------------------------------------------------------

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        rows = self.store.list_tasks(**filters)
        limit = filters.get("limit", 100)
        return {
            "tasks": [_task_summary(r) for r in rows],
            "next": rows[-1].task_id if len(rows) == limit else None,
        }

    def get_task(self, task_id: str) -> dict[str, Any]:
        row = self.store.get_task(task_id)
        if row is None:
            raise NotFound("task", task_id)
        rec = row.record
        assert isinstance(rec, dict)  # rows read back hold dicts
        spec = rec.get("spec") or {}
        history = [
            e.to_dict() for e in self.store.events(task_id=task_id, kind="level_change", limit=1000)
        ]
        consistency = spec.get("consistency") or {}
        lease = self.tasks.leases.get(task_id)
        now = self.mono()
        remaining = 0.0 if lease is None else max(0.0, lease.replace_after - now)
        meta = self.tasks.meta.get(task_id)
        return {
            **_task_summary(row),
            "record": rec,
            "spec": spec,
            "attempts": _attempts_of(TaskRecord.from_dict(rec)),
            "version_vector": rec.get("context") or {},
            "cancel_requested": rec.get("cancel_requested", False),
            "explanation": row.explanation,
            "blocked_reason": meta.blocked_reason if meta is not None else None,
            "lease": None
            if lease is None
            else {
                "epoch": lease.epoch,
                "node_id": lease.node,
                "duration_s": lease.duration_s,
                "live": lease.live(now),
                "replace_after_s": remaining,
                "deadline_ms": self.uow.wall_ms() + int(remaining * 1000),
            },
            "consistency": {
                "mode": "adaptive" if consistency.get("level") == "adaptive" else "fixed",
                "min": consistency.get("min"),
                "max": consistency.get("max"),
                "level": row.level,
                "history": history,
            },
        }

    # -- workflows ----------------------------------------------------------------------

    def list_workflows(self, *, after: str | None, limit: int) -> dict[str, Any]:
        rows = self.store.list_workflows(after=after, limit=limit)
        return {
            "workflows": [
                {
                    "workflow_id": r["workflow_id"],
                    "name": r["name"],
                    "submitted_ms": r["submitted_ms"],
                    "tasks": len(r["spec"].get("tasks", [])),
                }
                for r in rows
            ],
            "next": rows[-1]["workflow_id"] if len(rows) == limit else None,
        }

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        row = self.store.get_workflow(workflow_id)
        if row is None:
            raise NotFound("workflow", workflow_id)
        tasks = []
        for spec in row["spec"].get("tasks", []):
            task = self.store.get_task(spec["id"])
            if task is not None:
                tasks.append({**_task_summary(task), "depends_on": spec.get("depends_on", [])})
        return {
            "workflow_id": workflow_id,
            "name": row["name"],
            "status": workflow_status(t["status"] for t in tasks).status.value,
            "submitted_ms": row["submitted_ms"],
            "spec": row["spec"],
            "tasks": tasks,
        }

    # -- nodes --------------------------------------------------------------------------

    def list_nodes(self) -> dict[str, Any]:
        now = self.mono()
        report = self.registry.system_health(now)
        return {
            "nodes": [self._node(e, now) for _, e in sorted(self.registry.nodes.items())],
            "system_health": {"state": report.health.value, **report.detail()},
        }

    def get_node(self, node_id: str) -> dict[str, Any]:
        """One node with the active tasks placed on it."""
        entry = self.registry.get(node_id)
        if entry is None:
            raise NotFound("node", node_id)
        return {
            **self._node(entry, self.mono()),
            "tasks": sorted(self.tasks.active_on(node_id)),
        }

    def _node(self, entry: NodeEntry, now: float) -> dict[str, Any]:
        """The registry's view plus ``drained``: draining and holding no active task."""
        return {
            **entry.to_dict(now),
            "drained": entry.draining and not self.tasks.active_on(entry.node_id),
        }

    # -- events and metrics -------------------------------------------------------------

    def list_events(self, **filters: Any) -> dict[str, Any]:
        events = self.store.events(**filters)
        return {
            "events": [e.to_dict() for e in events],
            "next": events[-1].seq if events else filters.get("after", 0),
        }

    async def wait_for_events(self, after: int, timeout_s: float, **filters: Any) -> None:
        """Return once an event past ``after`` matching ``filters`` exists, or after
        ``timeout_s``. The waiter is taken before the check, so a commit between
        the two still wakes us."""
        waiter = self.uow.events_changed
        if self.store.events(after=after, limit=1, **filters):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiter.wait(), timeout_s)

    def refresh_gauges(self, m: ControllerMetrics) -> None:
        """Gauges that mirror the registry and the store, filled just before a scrape."""
        now = self.mono()
        m.nodes.clear()
        counts: dict[str, int] = defaultdict(int)
        for entry in self.registry.nodes.values():
            counts[entry.monitor.stats(now).state.value] += 1
        for state in LinkState:
            m.nodes.labels(link_state=state.value).set(counts.get(state.value, 0))
        m.tasks.clear()
        for status, level, n in self.store.count_tasks_by("status", "level"):
            m.tasks.labels(status=status, level=level or "none").set(n)
        m.tasks_in_memory.set(len(self.tasks.records))
        m.tasks_admitted.set(self.tasks.admitted)
        self._node_gauges(m, now)

    def _node_gauges(self, m: ControllerMetrics, now: float) -> None:
        """Per-node series labelled by node: link state, RTT, running tasks, and from the
        node's last telemetry its queue and outbox depth."""
        for gauge in (m.node_link, m.node_rtt, m.node_running, m.node_queued, m.node_outbox):
            gauge.clear()
        for node_id, entry in self.registry.nodes.items():
            stats = entry.monitor.stats(now)
            m.node_link.labels(node=node_id, link_state=stats.state.value).set(1)
            for quantile, ms in (("0.5", stats.rtt_p50_ms), ("0.99", stats.rtt_p99_ms)):
                if ms is not None:
                    m.node_rtt.labels(node=node_id, quantile=quantile).set(ms / 1000.0)
            m.node_running.labels(node=node_id).set(len(self.tasks.active_on(node_id)))
            for gauge, key in ((m.node_queued, "queue_len"), (m.node_outbox, "outbox")):
                value = entry.telemetry.get(key)
                if isinstance(value, int | float):
                    gauge.labels(node=node_id).set(value)


def _task_summary(row: TaskRow) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "status": row.status,
        "node": row.node,
        "epoch": row.epoch,
        "level": row.level,
        "workflow": row.workflow,
        "priority": row.priority,
        "content_hash": row.content_hash,
        "submitted_ms": row.submitted_ms,
        "updated_ms": row.updated_ms,
    }


def _attempts_of(rec: TaskRecord) -> list[dict[str, Any]]:
    """Every attempt, oldest dot first, spelled out for people (the record's own
    form is compact: it omits what the dot implies)."""
    return [
        {
            "dot": f"{writer}:{counter}",
            "node": a.node,
            "epoch": a.epoch,
            "status": a.status.name.lower(),
            "exit_code": a.exit_code,
            "result": a.result,
            "reason": a.reason,
            "started_hlc": a.started_hlc,
            "hlc": a.hlc,
            # sizes only: the text is `continuum logs` (cloud/api_logs.py)
            "log_bytes": None
            if a.log is None
            else {"stdout": a.log.stdout_bytes, "stderr": a.log.stderr_bytes},
        }
        for (writer, counter), a in sorted(rec.attempts.items())
    ]
