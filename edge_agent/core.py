"""What every part of the agent shares: its state and the journal-first way to change it.

One thread (the core loop in ``edge_agent/agent.py``) owns all of this. The ordering rule is
**journal first, then act**: a change is committed to the journal inside a transaction,
then applied in memory, then acted on (a process started or stopped, a message published).
When a transaction fails, memory is rebuilt from what *is* committed (``reload_replica``),
so nothing half-written is ever shown or sent.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from edge_agent.clock import Clock
from edge_agent.config import AgentConfig
from edge_agent.executor import Executor, prepare_state_dir
from edge_agent.journal import Journal, JournalError, row_json
from shared.clocks import HybridClock, Timestamp
from shared.crdt import (
    AttemptStatus,
    Dot,
    Replica,
    TaskRecord,
    canonical_bytes,
    canonical_json,
    set_status,
    start_attempt,
    visible_status,
)
from shared.protocol import AgentLeases

__all__ = ["Core", "Running", "attempt_key", "parse_dot"]

log = logging.getLogger("edge_agent")

#: Specs whose JSON ``Core._row_text`` keeps (a miss only costs encoding the spec again).
_SPEC_TEXTS = 256


def attempt_key(task_id: str, dot: Dot) -> str:
    """The agent's key for one attempt: ``task/node:counter``. A dot's counter is per task,
    so the dot alone would collide across tasks; ``/`` never occurs in a task id."""
    return f"{task_id}/{dot[0]}:{dot[1]}"


def parse_dot(key: str) -> Dot:
    node, _, counter = key.rpartition("/")[2].rpartition(":")
    return node, int(counter)


@dataclass
class Running:
    """An attempt running here now (``level`` follows level changes)."""

    task_id: str
    dot: Dot
    epoch: int
    level: str


class Core:
    def __init__(self, cfg: AgentConfig, clock: Clock, rng: random.Random) -> None:
        self.cfg = cfg
        self.node = cfg.node.id
        self.state_dir = cfg.state_dir
        prepare_state_dir(self.state_dir, cfg.executor.run_as)  # issue 11: private, umask 077
        self.journal = Journal(self.state_dir / "journal.sqlite")
        self.executor = Executor(self.state_dir / "runs", cfg.executor)
        self.clock = clock
        self.hlc = HybridClock(self.node)
        self.replica = Replica(self.node)
        self.rng = rng
        self.running: dict[str, Running] = {}  # by attempt key
        # Strong tasks' leases; the incarnation makes this process's request ids its own.
        self.leases = AgentLeases(
            uuid.uuid4().hex[:16],
            period_s=cfg.autonomy.period_s,
            margin_s=cfg.autonomy.lease_margin_s,
            rng=rng,
        )
        self.counters: Counter[str] = Counter()
        self.draining = False
        self.admission_stopped: str | None = None  # why (journal failure), or None
        self._spec_texts: dict[str, tuple[dict[str, Any], str]] = {}  # _row_text

    # -- time ----------------------------------------------------------------------
    def stamp(self) -> Timestamp:
        """A fresh HLC timestamp for a change made here."""
        return self.hlc.now(self.clock.wall_ms())

    # -- journal -------------------------------------------------------------------
    def txn(self) -> AbstractContextManager[Journal]:
        return self.journal.transaction()

    def event(self, kind: str, task_id: str | None = None, **data: Any) -> None:
        """Append to the event log (inside the caller's transaction when there is one)."""
        self.journal.event(
            kind,
            task_id=task_id,
            data=data,
            now_ms=self.clock.wall_ms(),
            mono=self.clock.mono(),
            hlc=self.hlc.last.encode() if self.hlc.last else None,
        )

    def persist_event(self, kind: str, task_id: str | None = None, **data: Any) -> None:
        with self.txn():
            self.event(kind, task_id, **data)

    def change(self, *deltas: TaskRecord, send: bool = True) -> None:
        """Journal each delta's merge (and queue the delta upstream unless ``send`` is
        false), then apply it in memory: call inside a transaction. Mutators read the
        record they extend, so each is applied before the next is journaled. A new record
        is its own delta: its JSON is made once for both rows."""
        for delta in deltas:
            current = self.replica.get(delta.task_id)
            merged = delta if current is None else current.merge(delta)
            placement = merged.placement
            now_ms = self.clock.wall_ms()
            text = self._row_text(merged)
            self.journal.put_record(
                merged.task_id,
                text,
                status=str(visible_status(merged)),
                epoch=placement.epoch if placement else None,
                node=placement.node if placement else None,
                level=placement.level if placement else None,
                now_ms=now_ms,
            )
            if send:
                row = text if merged is delta else delta.to_dict()
                self.journal.add_outbox(merged.task_id, row, now_ms=now_ms, obj=delta)
            if self.hlc.last is not None:  # the latest, once per transaction
                self.journal.set_meta_at_commit("hlc", self._hlc_last)
            self.replica.apply(delta)

    def _row_text(self, rec: TaskRecord) -> str:
        """``row_json(rec.to_dict())`` (the sorted-key form ``canonical_bytes`` writes), with
        the spec's JSON made once per task: a task's record is rewritten whole at each of
        its changes (submission, start, end), and its spec, which never changes, is most of
        it. Kept for the latest :data:`_SPEC_TEXTS` specs, each with the spec object it is
        the JSON of (another object under that id is encoded again)."""
        spec = rec.spec
        if spec is None:
            return row_json(rec.to_dict())
        kept = self._spec_texts.pop(rec.task_id, None)
        if kept is None or kept[0] is not spec:
            kept = (spec, canonical_json(spec))
        self._spec_texts[rec.task_id] = kept  # the most recent last
        if len(self._spec_texts) > _SPEC_TEXTS:
            del self._spec_texts[next(iter(self._spec_texts))]
        return canonical_bytes(rec, kept[1]).decode("ascii")

    def _hlc_last(self) -> str:
        last = self.hlc.last
        assert last is not None  # a change stamped it
        return last.encode()

    def fail_unrun(self, rec: TaskRecord, epoch: int, reason: str) -> None:
        """Record an attempt of ``epoch`` that failed before it could run (an invalid spec,
        a callable not allow-listed, shed under pressure): call inside a transaction."""
        dot, placed = start_attempt(
            rec,
            node=self.node,
            epoch=epoch,
            writer=self.node,
            hlc=self.stamp(),
            status=AttemptStatus.PLACED,
        )
        self.change(placed)
        current = self.replica.get(rec.task_id)
        assert current is not None
        failed = set_status(
            current, dot, AttemptStatus.FAILED, writer=self.node, hlc=self.stamp(), reason=reason
        )
        self.change(failed)
        self.counters["outcome_failed"] += 1
        log.warning(
            "task %s failed before it ran (%s)",
            rec.task_id,
            reason,
            extra={"fields": {"task_id": rec.task_id, "epoch": epoch, "reason": reason}},
        )

    def safely(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a step; a journal failure stops admission, any other error is a logged bug.
        Nothing from outside may take the core loop down. Returns ``None`` on failure."""
        try:
            return fn(*args, **kwargs)
        except JournalError as exc:
            if self.admission_stopped is None:
                log.error(
                    "journal write failed; admission stopped", extra={"fields": {"error": str(exc)}}
                )
            self.admission_stopped = str(exc)
            self.counters["journal_errors"] += 1
            self.reload_replica()
        except Exception:
            log.exception("internal error in %s", getattr(fn, "__name__", fn))
            self.counters["internal_errors"] += 1
        return None

    def reload_replica(self) -> None:
        """After a failed transaction, memory holds merges the journal rolled back: rebuild
        the replica from what *is* committed, so nothing unjournaled is ever sent or shown."""
        try:
            replica = Replica(self.node)
            for data in self.journal.records():
                replica.apply(TaskRecord.from_dict(data))
        except Exception:  # reads failing too: keep memory, admission stays stopped
            log.exception("cannot reload the journal after a write failure")
            return
        self.replica = replica

    # -- running attempts ----------------------------------------------------------
    def attempts_of(self, task_id: str) -> Iterator[tuple[str, Running]]:
        """The running attempts of ``task_id`` (a snapshot: callers may stop them)."""
        return iter([(key, run) for key, run in self.running.items() if run.task_id == task_id])
