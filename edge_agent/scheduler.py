"""The local scheduler: the journaled queue, admission and starts, outcomes and retries,
strong tasks' leases, shedding under pressure, and retention of finished work.

Every decision is a ``shared`` policy (``order_queue``, ``admit``, ``may_start``,
``select_for_shedding``, ``backoff_delay``, ``AgentLeases``); this module gathers their
inputs from the journal and the executor and carries the decisions out.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from typing import Any

from edge_agent.core import Core, Running, attempt_key, parse_dot
from edge_agent.deadline_plan import DeadlineInfeasible, DeadlinePlanner
from edge_agent.executor import Launch, Outcome
from edge_agent.journal import ProcessRow, QueuedRow
from edge_agent.leasing import LeaseRequests
from edge_agent.outcomes import attempt_log, log_outcome, status_of
from edge_agent.telemetry import Sampler
from edge_agent.uplink import Uplink
from shared.authz import LOCAL_TOKEN_HEX, local_task_id, origin_of, pinned_to_origin
from shared.autonomy import admit, may_start, select_for_shedding
from shared.crdt import (
    AttemptStatus,
    TaskRecord,
    max_attempts,
    new_record,
    place,
    set_status,
    start_attempt,
)
from shared.decisions import AttemptFacts, agent_retries
from shared.errors import ValidationError
from shared.model import RetryPolicy, backoff_delay, parse_task_spec
from shared.vocab import Level, TaskStatus

__all__ = ["LocalScheduler", "status_of"]

log = logging.getLogger("edge_agent")


#: A spec's priority when it names none (``shared.model`` fills it in for parsed specs).
_DEFAULT_PRIORITY = 50

#: How an attempt ended, as journaled: its status, reason and epoch.
Ended = tuple[AttemptStatus, str | None, int | None]


def _plus(reserved: dict[str, float], resources: dict[str, Any]) -> dict[str, float]:
    return {
        "cpu": reserved["cpu"] + resources["cpu"],
        "memory_mb": reserved["memory_mb"] + resources["memory_mb"],
    }


class LocalScheduler(LeaseRequests):
    def __init__(self, core: Core, uplink: Uplink) -> None:
        self.core = core
        self.uplink = uplink
        self.sampler: Sampler | None = None
        self.deadlines = DeadlinePlanner(core)

    # -- the queue -----------------------------------------------------------------
    def enqueue(
        self,
        task_id: str,
        epoch: int,
        level: str,
        spec: dict[str, Any],
        *,
        source: str,
        lease_s: float | None,
        inputs: dict[str, Any] | None = None,
        failures: int = 0,
        not_before_ms: int | None = None,
        deadline_left_s: float | None = None,
    ) -> None:
        """Journal a queue entry (inside the caller's transaction). A task's deadline
        counts from its submission: a placed one brings the seconds left
        (``deadline_left_s``, from the controller), a local one is submitted now."""
        now_ms = self.core.clock.wall_ms()
        deadline_s = spec.get("deadline_s") if deadline_left_s is None else deadline_left_s
        row = QueuedRow(
            task_id=task_id,
            epoch=epoch,
            level=str(level),
            priority=int(spec.get("priority", _DEFAULT_PRIORITY)),
            deadline_ms=None if deadline_s is None else now_ms + round(deadline_s * 1000),
            enqueued_ms=now_ms,
            not_before_ms=not_before_ms if not_before_ms is not None else now_ms,
            failures=failures,
            source=source,
            lease_s=lease_s,
            inputs=dict(inputs or {}),
        )
        self.core.journal.put_queued(row)

    def submit_local(self, data: object) -> tuple[int, object]:
        """A task submitted to the local API: validated by the shared model, run as causal or
        eventual (strong needs the controller), kept only when its deadline can be met
        (``DeadlinePlanner``: ``503 deadline_infeasible`` otherwise, nothing journaled),
        journaled and synced upstream later."""
        core = self.core
        if isinstance(data, dict) and "id" not in data:
            data = {**data, "id": local_task_id(core.node, uuid.uuid4().hex[:LOCAL_TOKEN_HEX])}
        elif isinstance(data, dict) and origin_of(str(data["id"])) != core.node:
            # The controller accepts new records only in this node's namespace (shared.authz):
            # anything else would stay here, refused upstream, for ever.
            return 400, {
                "error": "invalid_id",
                "message": f"a task submitted here must be named '{core.node}:<name>' "
                f"(or leave out id), not {data['id']!r}",
            }
        try:
            spec_obj = parse_task_spec(data)
        except ValidationError as exc:
            return 400, exc.as_dict()
        level = spec_obj.consistency.clamp(Level.CAUSAL)
        if level == Level.STRONG:
            return 409, {
                "error": "strong_needs_controller",
                "message": "a strong task needs a lease from the controller",
            }
        spec = spec_obj.to_dict()
        if core.replica.get(spec["id"]) is not None:
            return 409, {"error": "exists", "id": spec["id"]}
        if core.admission_stopped is not None:
            return 503, {"error": "admission_stopped", "why": core.admission_stopped}
        try:
            hand_back = self.deadlines.admit(spec, core.clock.wall_ms() / 1000.0)
        except DeadlineInfeasible as exc:
            core.counters["deadline_infeasible"] += 1
            return 503, exc.as_dict()
        created = new_record(spec["id"], spec, writer=core.node, hlc=core.stamp())
        placed = place(
            created,
            epoch=0,
            node=core.node,
            level=str(level),
            lease_s=None,
            writer=core.node,
            hlc=core.stamp(),
        )
        with core.txn():  # one delta (their join): one record write and one outbox row
            core.change(created.merge(placed))
            self.enqueue(spec["id"], 0, str(level), spec, source="local", lease_s=None)
            core.event("submitted_locally", spec["id"], level=str(level))
            self.deadlines.hand_back(hand_back, for_task=spec["id"])
        return 201, {"id": spec["id"], "level": str(level), "status": "pending"}

    # -- starts --------------------------------------------------------------------
    def start_ready(self) -> None:
        """Start what the queue order, admission and (for strong work) a live lease allow."""
        self.settle([], start=True)

    def settle(
        self, outcomes: list[Outcome], *, start: bool, first: Callable[[], None] | None = None
    ) -> None:
        """One pass's journal work in one transaction (one fsync, issue 14): ``first`` (the
        writes of the message that allowed the pass: a lease grant), the attempts that
        ended, then (with ``start``) the starts the queue allows, a slot just freed
        included. Only once it has committed are the ended attempts logged and acknowledged
        to the supervisor (which then forgets them) and the new ones launched: a start and a
        finish are durable before they are acted on or reported (the uplink sends only what
        the journal holds)."""
        if self.deadlines.next_s != math.inf:  # local deadline work waits
            self.core.safely(self.deadlines.replan_if_due)  # a failure never holds the pass
        ended, launches = self.journal_pass(outcomes, start=start, first=first)
        self.carry_out(outcomes, ended, launches)

    def journal_pass(
        self, outcomes: list[Outcome], *, start: bool, first: Callable[[], None] | None = None
    ) -> tuple[list[Ended], list[Launch]]:
        """:meth:`settle`'s transaction: what ended and what to launch once it committed.
        Raises (everything rolled back) when it could not commit."""
        core = self.core
        launches: list[Launch] = []
        if not outcomes and first is None and not (start and self._may_start()):
            return [], launches
        try:
            with core.txn():
                if first is not None:
                    first()
                ended = [self._journal_outcome(outcome) for outcome in outcomes]
                if start and self._may_start():
                    self._plan_starts(launches)
        except BaseException:
            for launch in launches:  # rolled back: these never started
                core.running.pop(launch.attempt, None)
            core.reload_replica()
            raise
        return ended, launches

    def _may_start(self) -> bool:
        """Whether a pass could start something: a free slot, queued work, and a supervisor
        (started here when none runs)."""
        core = self.core
        return (
            core.cfg.executor.max_concurrent > len(core.running)
            and core.journal.has_queued()
            and bool(core.safely(core.executor.supervisor_pid))
        )

    def carry_out(
        self, outcomes: list[Outcome], ended: list[Ended], launches: list[Launch]
    ) -> None:
        """After :meth:`journal_pass` committed: log and acknowledge the ended attempts to the
        supervisor (which then forgets them), and launch the new ones."""
        core = self.core
        for outcome, (status, reason, epoch) in zip(outcomes, ended, strict=True):
            log_outcome(outcome, status, reason, epoch)
            if status is AttemptStatus.SUCCEEDED:
                self._learn(outcome)
            core.counters[f"outcome_{status.name.lower()}"] += 1
            if outcome.reason == "fenced":
                core.leases.drop(outcome.task_id)
            core.executor.cleanup(outcome.task_id, outcome.attempt)
        for launch in launches:
            core.executor.launch(launch)
        if launches:
            self.deadlines.started()

    def _learn(self, outcome: Outcome) -> None:
        """A succeeded attempt teaches the deadline plan its kind's run time."""
        rec = self.core.replica.get(outcome.task_id)
        if rec is not None and rec.spec is not None:
            self.deadlines.runs.observe(rec.spec, outcome.duration_s)

    def _plan_starts(self, launches: list[Launch]) -> None:
        """Journal the starts the queue allows now (inside the caller's transaction) and add
        their launches to ``launches``."""
        core = self.core
        free = core.cfg.executor.max_concurrent - len(core.running)
        now = core.clock.mono()
        now_ms = core.clock.wall_ms()
        metrics = self.sampler.sample(now) if self.sampler else None
        reserved = self._reserved()
        for row in core.journal.runq.ordered(now_ms / 1000.0):
            if free <= 0:
                break
            rec = core.replica.get(row.task_id)
            if row.not_before_ms > now_ms or rec is None or rec.spec is None:
                continue
            if any(True for _ in core.attempts_of(row.task_id)):
                continue
            admission = admit(
                rec.spec["resources"],
                metrics,
                reserved,
                running=len(core.running),
                max_concurrent=core.cfg.executor.max_concurrent,
                headroom_mb=core.cfg.executor.min_free_memory_mb,
            )
            if not admission:
                core.counters[f"not_admitted_{admission.reason}"] += 1
                continue
            deadline = None
            if row.level == Level.STRONG:
                lease = core.leases.for_start(row.task_id, row.epoch, row.lease_s, now)
                self.request_lease(lease, now)
                if not may_start(Level.STRONG, lease, now, epoch=row.epoch):
                    if self._grant_expected(row.task_id, now):
                        free -= 1  # the slot waits for this grant: no more leases than slots
                    continue
                deadline = lease.deadline
            elif not may_start(
                row.level,
                None,
                now,
                out_of_contact_s=self._out_of_contact_s(row, rec.spec, now),
                max_disconnect_s=float(rec.spec.get("max_disconnect_s", 300.0)),
            ):
                core.counters["held_out_of_contact"] += 1
                self.uplink.probe(now)  # the next ack is the contact it waits for
                continue
            launch = self._start(rec, row, deadline)
            if launch is not None:
                launches.append(launch)
                reserved = _plus(reserved, rec.spec["resources"])
            free -= 1

    def _out_of_contact_s(self, row: QueuedRow, spec: dict[str, Any], now: float) -> float:
        """How long the controller has not been heard, as the start gate counts it. A local
        submission that stays on its node (``shared.authz.pinned_to_origin``: the controller
        never moves it) counts as in contact, so a cut-off node keeps running what is
        submitted to it."""
        if row.source == "local" and pinned_to_origin(self.core.node, spec):
            return 0.0
        return self.uplink.out_of_contact_s(now)

    def _reserved(self) -> dict[str, float]:
        """What the running attempts requested (once per pass; each start adds its own)."""
        reserved = {"cpu": 0.0, "memory_mb": 0.0}
        for run in self.core.running.values():
            rec = self.core.replica.get(run.task_id)
            if rec is not None and rec.spec is not None:
                reserved = _plus(reserved, rec.spec["resources"])
        return reserved

    def _start(self, rec: TaskRecord, row: QueuedRow, deadline: float | None) -> Launch | None:
        """Journal one start (inside the caller's transaction): what to launch once it
        commits, ``None`` when the task cannot start."""
        core = self.core
        spec = rec.spec
        assert spec is not None
        target = None
        if spec["callable"] is not None:
            target = core.cfg.executor.callables.get(spec["callable"])
            if target is None:
                self.fail_unstartable(rec, row, "callable_not_allowed", callable=spec["callable"])
                return None
        dot, delta = start_attempt(
            rec, node=core.node, epoch=row.epoch, writer=core.node, hlc=core.stamp()
        )
        attempt = attempt_key(row.task_id, dot)
        process = ProcessRow(
            attempt=attempt,
            task_id=row.task_id,
            epoch=row.epoch,
            level=row.level,
            watchdog_pid=core.executor.link.pid,  # the supervisor, started by settle
            pgid=None,
            started_ms=core.clock.wall_ms(),
            deadline=deadline,
            failures=row.failures,
            source=row.source,
            task_deadline_ms=row.deadline_ms,  # a retry keeps it (maybe_retry)
        )
        core.change(delta)
        core.journal.remove_queued(row.task_id)
        core.journal.put_process(process)
        core.event(
            "started",
            row.task_id,
            attempt=attempt,
            epoch=row.epoch,
            level=row.level,
            deadline=deadline,
        )
        core.running[attempt] = Running(row.task_id, dot, row.epoch, row.level)
        return Launch(
            task_id=row.task_id,
            attempt=attempt,
            epoch=row.epoch,
            argv=spec["command"],
            callable_target=target,
            args=spec["args"],
            env=spec["env"],
            inputs=row.inputs,
            timeout_s=spec["timeout_s"],
            deadline=deadline,
            resources=spec["resources"],  # rlimits (issue 11)
        )

    def fail_unstartable(
        self, rec: TaskRecord, row: QueuedRow, reason: str, **detail: object
    ) -> None:
        """Decline a queued task before it runs (``reason`` in ``shared.decisions.DECLINED``):
        a failed attempt this node never retries; the controller places the task again,
        elsewhere (``retry_move``)."""
        core = self.core
        with core.txn():
            core.fail_unrun(rec, row.epoch, reason)
            core.journal.remove_queued(rec.task_id)
            core.event("unstartable", rec.task_id, reason=reason, **detail)

    # -- outcomes and retries ------------------------------------------------------
    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        """Journal ended attempts in one transaction (:meth:`settle`, no starts)."""
        self.settle(outcomes, start=False)

    def _journal_outcome(self, outcome: Outcome) -> Ended:
        """Journal one ended attempt and its retry (inside the caller's transaction)."""
        core = self.core
        run = core.running.pop(outcome.attempt, None)
        proc = core.journal.process(outcome.attempt)
        rec = core.replica.get(outcome.task_id)
        status, reason = status_of(outcome)
        epoch = proc.epoch if proc is not None else None
        if rec is None:
            return status, reason, epoch
        dot = run.dot if run is not None else parse_dot(outcome.attempt)
        finished = set_status(
            rec,
            dot,
            status,
            writer=core.node,
            hlc=core.stamp(),
            exit_code=outcome.exit_code,
            result=outcome.result,
            reason=reason,
            log=attempt_log(outcome),
        )
        core.change(finished)
        core.journal.remove_process(outcome.attempt)
        core.event(
            "finished",
            outcome.task_id,
            attempt=outcome.attempt,
            status=status.name.lower(),
            reason=outcome.reason,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            duration_s=round(outcome.duration_s, 4),
            deadline=outcome.deadline,
            fenced_at=outcome.fenced_at,
            stdout_tail=outcome.stdout_tail[-1024:],
            stderr_tail=outcome.stderr_tail[-1024:],
        )
        if proc is not None:
            self.maybe_retry(outcome.task_id, proc, status, reason)
        return status, reason, epoch

    def maybe_retry(
        self, task_id: str, proc: ProcessRow, status: AttemptStatus, reason: str | None
    ) -> None:
        """Re-queue an ended attempt on this node, same epoch, with the task's backoff, when
        ``shared.decisions.agent_retries`` says so and the retry budget lasts. The retry keeps
        the task's deadline (counted from its submission: the attempt's journal row carries
        it); one already past is queued like any task past its deadline (it ranks first in its
        priority band)."""
        core = self.core
        rec = core.replica.get(task_id)
        if (
            rec is None
            or rec.spec is None
            or rec.cancel_requested
            or (rec.placement is not None and rec.placement.epoch > proc.epoch)
            or not agent_retries(
                AttemptFacts(node=core.node, epoch=proc.epoch, status=status, reason=reason),
                level=Level(proc.level),
                idempotent=bool(rec.spec.get("idempotent")),
            )
        ):
            return
        failures = proc.failures + 1
        if failures >= max_attempts(rec.spec):
            core.event("retries_exhausted", task_id, failures=failures)
            return
        delay = backoff_delay(RetryPolicy(**rec.spec["retry"]), failures, core.rng)
        now_ms = core.clock.wall_ms()
        deadline_ms = proc.task_deadline_ms  # None from an earlier version's row: from now
        self.enqueue(
            task_id,
            proc.epoch,
            proc.level,
            rec.spec,
            source=proc.source or "placed",
            lease_s=None,
            failures=failures,
            not_before_ms=now_ms + int(delay * 1000),
            deadline_left_s=None if deadline_ms is None else (deadline_ms - now_ms) / 1000,
        )
        core.event("retry_scheduled", task_id, failures=failures, delay_s=round(delay, 3))

    # -- pressure and retention ----------------------------------------------------
    def shed(self) -> None:
        core = self.core
        if self.sampler is None:
            return
        metrics = self.sampler.sample(core.clock.mono())
        runq = core.journal.runq
        victims = select_for_shedding(
            runq.tasks(),
            metrics,
            min_free_memory_mb=core.cfg.executor.min_free_memory_mb,
            max_cpu_percent=core.cfg.executor.max_cpu_percent,
        )
        for task in victims:
            rec = core.replica.get(task.task_id)
            row = runq.get(task.task_id)
            if rec is None or row is None:
                continue
            self.fail_unstartable(rec, row, "shed")
            core.counters["shed"] += 1

    def forget_finished(self, retain_s: float, keep_max: int = 0) -> None:
        """Retention: a device does not keep finished work forever. Records that ended
        (succeeded, failed, cancelled) that the controller has acknowledged (no outbox
        row) leave the journal and the replica after ``retain_s`` (0: never for their
        age) or beyond the ``keep_max`` most recent (0: no bound), so memory, the journal
        and every digest stay bounded by the recent work. The controller keeps them; it
        only asks a node about tasks placed on it and active, or named in its digest."""
        core = self.core
        terminal = [str(status) for status in TaskStatus if status.terminal]
        older_than = core.clock.wall_ms() - int(retain_s * 1000) if retain_s > 0 else 0
        with core.txn():
            gone = core.journal.prune_records(terminal, older_than, keep_max)
            if gone:
                core.event("records_forgotten", None, count=len(gone))
        for task_id in gone:
            core.replica.forget(task_id)
