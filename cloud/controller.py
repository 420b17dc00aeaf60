"""The controller: one object the server drives, over the parts that do the work.

:class:`Controller` is driven by three kinds of input, all on one thread (the
asyncio loop of ``cloud.server``): batches of MQTT messages (:meth:`ingest`), the
periodic tick (:meth:`tick`) and API calls. Each input runs as one unit of work
(``cloud.uow``): one store transaction, messages published only after the commit.

The parts, each in its own module:

- ``cloud.tasks.TaskTable``: records, metadata, leases and the indexes its
  ``apply`` keeps;
- ``cloud.ingest.Ingest``: one handler per message type from nodes;
- ``cloud.reactions.Reactions``: what a merged change means;
- ``cloud.scheduling.Scheduler``: node views and placement, over ``cloud.backlog.Backlog``
  (blocked work parked until something that could unblock it changes);
- ``cloud.reconcile.Reconciler``: links, reconciliation, levels, re-placement;
- ``cloud.queries.Queries``: the read model the API shows;
- ``cloud.registry.Registry``: nodes and their link monitors.

Decisions are ``shared``'s: ``shared.decisions`` (readiness, what may move and
when, system health, per-task levels), ``shared.placement``, ``shared.consistency``
(leases), ``shared.crdt`` (the record lattice). See docs/controller.md.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from shared.clocks import HybridClock
from shared.consistency import AdaptationPolicy, LeaseBook, LeasePolicy
from shared.crdt import TaskRecord, content_hash, new_record, request_cancel
from shared.errors import Problem, SpecConflictError, ValidationError
from shared.health import LinkPolicy
from shared.model import TaskSpec, WorkflowSpec, parse_task_spec, parse_workflow
from shared.protocol import LogChunk, Ping
from shared.vocab import LinkState

from .api import NodeBusy, NotFound
from .api_group import Outcome
from .config import ControllerConfig
from .ingest import Ingest
from .log_stream import LiveLogs
from .logs import log_events
from .metrics import ControllerMetrics
from .queries import Queries
from .reactions import Reactions
from .reconcile import Reconciler
from .registry import Registry
from .scheduling import Scheduler
from .store import Store
from .tasks import TaskMeta, TaskTable
from .uow import UnitOfWork

__all__ = ["Controller"]

log = logging.getLogger(__name__)

#: Seconds between saves of the learned placement inputs (``_persist``).
LEARNER_SAVE_S = 10.0
#: Seconds between looks for finished tasks quiet long enough to leave memory (at most:
#: half of ``keep_finished_s`` when that is shorter).
EVICT_EVERY_S = 60.0


class Controller:
    """See the module docstring. ``mono`` and ``wall_ms`` are injectable clocks."""

    def __init__(
        self,
        cfg: ControllerConfig,
        store: Store,
        metrics: ControllerMetrics,
        *,
        send: Callable[[str, bytes, int], None],
        mono: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.cfg = cfg
        self.node_id = cfg.controller.node_id
        self.store = store
        self.metrics = metrics
        self.mono = mono
        self.wall_ms = wall_ms
        self.clock = HybridClock(self.node_id)
        self._learner_saved_at = -math.inf
        self._evicted_at = -math.inf
        h, c = cfg.health, cfg.consistency
        self.registry = Registry(
            LinkPolicy(
                heartbeat_interval_s=h.heartbeat_interval_s,
                suspect_missed=h.suspect_missed,
                confirm_after_s=h.confirm_after_s,
                window_s=h.window_s,
            ),
            departed_after_s=cfg.controller.departed_after_s,
        )
        lease_policy = LeasePolicy(
            duration_s=c.lease_s,
            min_duration_s=min(LeasePolicy().min_duration_s, c.lease_s),
            max_duration_s=max(c.max_lease_s, c.lease_s),
            controller_margin_s=c.lease_margin_s,
        )
        self.uow = UnitOfWork(
            store, node_id=self.node_id, clock=self.clock, wall_ms=wall_ms, send=send
        )
        self.tasks = TaskTable(
            self.registry,
            self.uow,
            adaptation=AdaptationPolicy(
                dwell_s=c.upgrade_dwell_s, prior_link=LinkState(c.prior_link)
            ),
            lease_policy=lease_policy,
            mono=mono,
        )
        self.scheduler = Scheduler(cfg, self.registry, self.tasks, self.uow, metrics)
        self.reconciler = Reconciler(self.registry, self.tasks, self.uow, self.scheduler, metrics)
        self.live_logs = LiveLogs(self.registry, self.uow, metrics)
        self._ingest = Ingest(
            clock=self.clock,
            registry=self.registry,
            tasks=self.tasks,
            uow=self.uow,
            store=store,
            scheduler=self.scheduler,
            reconciler=self.reconciler,
            reactions=Reactions(self.registry, self.tasks, self.uow, store, metrics),
            metrics=metrics,
            on_log_chunk=self.live_logs.deliver,
        )
        self.queries = Queries(store, self.registry, self.tasks, self.uow, mono=mono)
        self.broker_connected = False
        self._connected_once = False
        self.registry.restore(self.store.nodes(), self.mono(), self.wall_ms())
        self._restore_learner()
        self._load_tasks()

    @property
    def records(self) -> dict[str, TaskRecord]:
        return self.tasks.records

    @property
    def leases(self) -> LeaseBook:
        return self.tasks.leases

    # -- units of work ----------------------------------------------------------------

    def _load_tasks(self) -> None:
        """Task state and acknowledged sequences from the store."""
        keep = self.cfg.controller.keep_finished_s
        since = None if keep <= 0 else self.wall_ms() - int(keep * 1000)
        self.tasks.load(self.store.held_tasks(since), self.store.leases())
        self.scheduler.backlog.forget()  # memory was reloaded: look at everything again
        self._ingest.acked = self.store.acked_seqs()

    def _restore_learner(self) -> None:
        """What placement learned before a restart (a bad stored copy is dropped:
        learning starts over from the priors)."""
        try:
            problem = self.registry.restore_learner(self.store.learner())
        except ValueError as exc:
            problem = str(exc)
        if problem is not None:
            log.warning("stored learner state dropped: %s", problem)

    def _commit(self, work: Callable[[], None]) -> None:
        """Run one input as a unit of work; its operational events are logged once
        the commit made them true (``cloud.logs.log_events``)."""
        committed: list[dict[str, Any]] = []

        def persist() -> None:
            self._persist()
            committed.extend(self.uow.events)

        self.uow.commit(work, persist=persist, recover=self._load_tasks)
        log_events(committed)

    def _persist(self) -> None:
        """Write what this input changed (inside its transaction). Link
        measurements, which are not transactional, survive a rollback."""
        uow = self.uow
        if uow.dirty_tasks:
            self.store.put_tasks([self.tasks.row(t) for t in sorted(uow.dirty_tasks)])
        for node_id in sorted(uow.dirty_nodes):
            entry = self.registry.get(node_id)
            if entry is not None:
                self.store.upsert_node(node_id, **entry.to_row())
        if uow.dirty_acks:
            acked = self._ingest.acked
            self.store.set_acked_seqs({n: acked[n] for n in uow.dirty_acks})
        # A finished run taught something (pongs alone: not). Saved at most every
        # LEARNER_SAVE_S, not with every batch: the state is an estimate (what a crash
        # loses is learned again from the next runs), and its size grows with the kinds
        # run (up to shared.learning.MAX_KINDS), not with the batch.
        now = self.mono()
        if self.registry.learned and now - self._learner_saved_at >= LEARNER_SAVE_S:
            self.store.put_learner(self.registry.learner.to_dict())
            self.registry.learned = False
            self._learner_saved_at = now

    def flush(self) -> None:
        """Publish what the committed input queued (the commit already does)."""
        self.uow.flush()

    # -- inputs -------------------------------------------------------------------------

    def ingest(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Merge and persist one batch of MQTT messages in one transaction, then
        send the acknowledgements and replies it produced."""
        started = time.perf_counter()
        now = self.mono()
        self._commit(lambda: self._ingest.batch(messages, now))
        self.metrics.merge_seconds.observe(time.perf_counter() - started)

    def tick(self) -> None:
        """Periodic work: pings, link grading, levels, re-placement, pending work.

        Nothing happens while the controller's own broker connection is down: it
        observes nothing then, and silence it caused must not read as every node
        partitioned (nor trigger re-placements)."""
        if not self.broker_connected:
            return
        now = self.mono()
        self._commit(lambda: self._tick(now))

    def _tick(self, now: float) -> None:
        for node_id, ping_id in self.registry.due_pings(now):
            self.uow.queue_ping(node_id, Ping(), ping_id)
        self.reconciler.link_changes(self.registry.expire_pings(now), now)
        self.reconciler.link_changes(self.registry.poll(now), now)
        for entry, silent in self.registry.departures(now, self.wall_ms()):
            self.uow.event("node_departed", f"no contact for {silent:.0f} s", node_id=entry.node_id)
        self.reconciler.adapt_levels(now)
        self.reconciler.replace(now)
        self.scheduler.schedule(now)
        keep = self.cfg.controller.keep_finished_s
        if keep > 0 and now - self._evicted_at >= min(EVICT_EVERY_S, keep / 2):
            self._evicted_at = now
            gone = self.tasks.evict(now, keep)
            if gone:
                log.info(
                    "%d finished tasks left memory (%d held)",
                    gone,
                    len(self.tasks.records),
                    extra={"fields": {"evicted": gone, "held": len(self.tasks.records)}},
                )

    def set_broker_connected(self, connected: bool) -> None:
        """The MQTT shell reports our own broker connection. After an outage of
        ours, every link is measured afresh (``Registry.reset_links``): what the
        monitors hold spans a time we could not observe, and blaming the nodes
        for it would grade every link down and block strong work for a window."""
        was, self.broker_connected = self.broker_connected, connected
        if connected and not was and self._connected_once:
            now = self.mono()

            def work() -> None:
                self.registry.reset_links(now)
                self.uow.event(
                    "controller_reconnected",
                    "links re-measured after the controller's own broker outage",
                )

            self._commit(work)
        self._connected_once = self._connected_once or connected

    # -- API commands -------------------------------------------------------------------

    def _create(self, spec_dict: dict[str, Any], submitted_ms: int) -> tuple[str, bool]:
        task_id = spec_dict["id"]
        existing = self.tasks.admit(task_id)  # a finished one may have left memory
        for dep in spec_dict.get("depends_on") or ():
            self.tasks.admit(dep)  # its result is this one's input
        if existing is not None and existing.spec is not None:
            if existing.spec != spec_dict:
                raise SpecConflictError(task_id, content_hash(existing), "submitted")
            return task_id, False
        meta = self.tasks.meta.setdefault(task_id, TaskMeta(submitted_ms=submitted_ms))
        self.tasks.apply(new_record(task_id, spec_dict, writer=self.node_id, hlc=self.uow.hlc()))
        self.tasks.register_spec(task_id, spec_dict, meta)
        self.uow.event("submitted", "via API", task_id=task_id, workflow=spec_dict.get("workflow"))
        return task_id, True

    def submit_task(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        (outcome,) = self.submit_tasks([data])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit_tasks(self, batch: list[dict[str, Any]]) -> list[Outcome]:
        """Lone tasks in one unit of work: one transaction, one placement pass (the
        API's group commit, ``cloud.api_group``). Each item's outcome is
        ``(task, created)`` or the error it alone raised (a bad spec, an id taken by
        another spec); a failed commit raises for all."""
        outcomes: list[Outcome | None] = [None] * len(batch)
        specs: dict[int, TaskSpec] = {}
        for i, data in enumerate(batch):
            try:
                if "tasks" in data:
                    raise ValidationError(
                        [Problem("tasks", "a workflow: POST it to /api/v1/workflows")],
                        what="task spec",
                    )
                specs[i] = parse_task_spec({"id": f"t-{uuid.uuid4().hex[:12]}", **data})
            except ValidationError as exc:
                outcomes[i] = exc
        now = self.mono()
        created: dict[int, bool] = {}

        def work() -> None:
            submitted_ms = self.wall_ms()
            for i, spec in specs.items():
                try:
                    created[i] = self._create(spec.to_dict(), submitted_ms)[1]
                except SpecConflictError as exc:
                    outcomes[i] = exc
            self.scheduler.schedule(now)

        if specs:
            self._commit(work)
        for i, was_created in created.items():
            outcomes[i] = (self.get_task(specs[i].id), was_created)
        answered = [o for o in outcomes if o is not None]
        assert len(answered) == len(batch)  # each item was created, or raised
        return answered

    def submit_workflow(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        wf: WorkflowSpec = parse_workflow({"id": f"w-{uuid.uuid4().hex[:12]}", **data})
        now = self.mono()
        created_any = False

        def work() -> None:
            nonlocal created_any
            existing = self.store.get_workflow(wf.id)
            if existing is not None and existing["spec"] != wf.to_dict():
                raise SpecConflictError(wf.id, "stored", "submitted")
            ts = self.wall_ms()
            for task_id in wf.topological_order():
                _, created = self._create(wf.task(task_id).to_dict(), ts)
                created_any = created_any or created
            if existing is None:
                self.store.put_workflow(wf.id, wf.name, wf.to_dict(), ts)
                self.uow.event("workflow_submitted", f"{len(wf.tasks)} tasks", workflow=wf.id)
            self.scheduler.schedule(now)

        self._commit(work)
        return self.get_workflow(wf.id), created_any

    def cancel_task(self, task_id: str, reason: str) -> dict[str, Any]:
        if self.tasks.admit(task_id) is None:
            raise NotFound("task", task_id)

        def work() -> None:
            rec = self.tasks.records[task_id]
            if not rec.cancel_requested:
                rec = self.tasks.apply(request_cancel(rec, writer=self.node_id, hlc=self.uow.hlc()))
                self.uow.event("cancel_requested", reason, task_id=task_id)
            if rec.placement is not None:
                self.reconciler.send_cancel(rec.placement.node, rec, reason)

        self._commit(work)
        return self.get_task(task_id)

    def set_draining(self, node_id: str, draining: bool) -> dict[str, Any]:
        entry = self.registry.get(node_id)
        if entry is None:
            raise NotFound("node", node_id)

        def work() -> None:
            if entry.draining != draining:
                entry.draining = draining
                self.registry.changed()
                self.uow.dirty_nodes.add(node_id)
                self.uow.event("drain" if draining else "undrain", "operator", node_id=node_id)

        self._commit(work)
        return self.get_node(node_id)

    def remove_node(self, node_id: str, *, force: bool) -> dict[str, Any]:
        """Forget a node. While it holds active work this raises ``NodeBusy`` unless
        ``force``: then each task moves as a drain would move it or is cancelled
        (``Reconciler.evacuate``). Its events and its tasks' records stay; its
        broker credentials are the operator's to revoke."""
        if self.registry.get(node_id) is None:
            raise NotFound("node", node_id)
        active = sorted(self.tasks.active_on(node_id))
        if active and not force:
            raise NodeBusy(node_id, active)
        now = self.mono()
        outcome: dict[str, list[str]] = {"replaced": [], "cancelled": []}

        def work() -> None:
            outcome.update(self.reconciler.evacuate(node_id, now))
            self.registry.remove(node_id)
            self.store.delete_node(node_id)
            self.uow.dirty_nodes.discard(node_id)
            self.uow.event(
                "node_removed",
                "operator" + (" (--force)" if force else ""),
                node_id=node_id,
                **outcome,
            )

        self._commit(work)
        return {"node_id": node_id, "removed": True, **outcome}

    # -- API reads (cloud.queries) ----------------------------------------------------

    def list_tasks(self, **filters: Any) -> dict[str, Any]:
        return self.queries.list_tasks(**filters)

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self.queries.get_task(task_id)

    def list_workflows(self, *, after: str | None, limit: int) -> dict[str, Any]:
        return self.queries.list_workflows(after=after, limit=limit)

    def get_workflow(self, workflow_id: str) -> dict[str, Any]:
        return self.queries.get_workflow(workflow_id)

    def list_nodes(self) -> dict[str, Any]:
        return self.queries.list_nodes()

    def get_node(self, node_id: str) -> dict[str, Any]:
        return self.queries.get_node(node_id)

    def list_events(self, **filters: Any) -> dict[str, Any]:
        return self.queries.list_events(**filters)

    async def wait_for_events(self, after: int, timeout_s: float, **filters: Any) -> None:
        await self.queries.wait_for_events(after, timeout_s, **filters)

    async def live_log(
        self, node_id: str, task_id: str, attempt: str, stream: str, offset: int
    ) -> LogChunk | None:
        return await self.live_logs.fetch(node_id, task_id, attempt, stream, offset)

    def is_ready(self) -> tuple[bool, dict[str, Any]]:
        return self.broker_connected, {"broker_connected": self.broker_connected}

    def metrics_text(self) -> bytes:
        return self.metrics.render(self.queries.refresh_gauges)
