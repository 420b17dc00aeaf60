"""The restart sweep: resume from the journal after a crash, ``kill -9`` or power cut.

Records come back into memory and the HLC resumes past its last stamp; then every attempt
the journal says was running is settled: one the task supervisor still runs is *re-attached*
(a strong attempt's lease is renewed from now on; the supervisor still fences at the recorded
deadline), one that finished while the agent was down is harvested by the executor's next
poll (the supervisor kept its outcome, or left it in ``status.json``), and the rest are
``failed`` with reason ``agent_restart`` (idempotent non-strong tasks are then re-queued).
"""

from __future__ import annotations

import contextlib

from edge_agent.core import Core, Running, attempt_key, parse_dot
from edge_agent.journal import ProcessRow
from edge_agent.scheduler import LocalScheduler
from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, set_status
from shared.errors import ClockSkewError
from shared.vocab import Level

__all__ = ["recover"]


def recover(core: Core, scheduler: LocalScheduler) -> None:
    """Resume from the journal: records into memory, then sweep recorded processes."""
    for data in core.journal.records():
        core.replica.apply(TaskRecord.from_dict(data))
    stored = core.journal.get_meta("hlc")
    if stored:
        with contextlib.suppress(ClockSkewError, ValueError):
            core.hlc.receive(Timestamp.decode(stored), core.clock.wall_ms())
    known = set()
    for proc in core.journal.processes():
        known.add(proc.attempt)
        adopted = None
        if proc.watchdog_pid:
            adopted = core.executor.adopt(proc.task_id, proc.attempt, proc.watchdog_pid)
        if adopted is None:
            _fail_lost(core, scheduler, proc.task_id, proc.attempt, proc)
            continue
        core.running[proc.attempt] = Running(
            proc.task_id, parse_dot(proc.attempt), proc.epoch, proc.level
        )
        if proc.level == Level.STRONG and proc.deadline:
            core.leases.adopt(proc.task_id, proc.epoch, proc.deadline, core.clock.mono())
        core.persist_event("adopted", proc.task_id, attempt=proc.attempt)
    # Started attempts of ours with no process row (crash between journal and spawn).
    for rec in list(core.replica.records()):
        for dot, attempt in rec.attempts.items():
            key = attempt_key(rec.task_id, dot)
            if (
                attempt.node == core.node
                and attempt.status == AttemptStatus.STARTED
                and key not in known
            ):
                _fail_lost(core, scheduler, rec.task_id, key, None)
    core.executor.release_unclaimed()  # outcomes already journaled: the supervisor forgets them


def _fail_lost(
    core: Core, scheduler: LocalScheduler, task_id: str, attempt: str, proc: ProcessRow | None
) -> None:
    killed = core.executor.kill_leftovers(task_id, attempt)
    rec = core.replica.get(task_id)
    if rec is None:
        return
    dot = parse_dot(attempt)
    with core.txn():
        if dot in rec.attempts:
            failed = set_status(
                rec,
                dot,
                AttemptStatus.FAILED,
                writer=core.node,
                hlc=core.stamp(),
                reason="agent_restart",
            )
            core.change(failed)
        if proc is not None:
            core.journal.remove_process(attempt)
        core.event(
            "lost_on_restart",
            task_id,
            attempt=attempt,
            killed_survivors=killed,
            supervisor=core.executor.whereabouts() if proc is not None else "never launched",
        )
        if proc is not None:
            scheduler.maybe_retry(task_id, proc, AttemptStatus.FAILED, "agent_restart")
    core.executor.cleanup(task_id, attempt)
