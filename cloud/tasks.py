"""The controller's task table: the records, what it knows beside them, and indexes
that :meth:`TaskTable.apply` keeps in step by itself.

Every change to a record goes through :meth:`TaskTable.apply` (a lattice join);
it marks the task dirty for the unit of work and refreshes the indexes:
``unplaced`` (ours to place), ``on_node`` (active tasks placed on each node),
``dependents`` (workflow edges) and the resource reservations on the registry's
node entries (an active placed task counts against its node, and only it).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.consistency import AdaptationPolicy, AdaptiveLevel, LeaseBook, LeasePolicy, level_bounds
from shared.crdt import (
    HASH_CHARS,
    TaskRecord,
    canonical_bytes,
    canonical_json,
    merge,
    parse_summary,
    visible_status,
)
from shared.decisions import AttemptFacts
from shared.vocab import Level, TaskStatus

from .registry import Registry
from .rows import LeaseRow, TaskRow, compact_json
from .uow import UnitOfWork

__all__ = ["TaskMeta", "TaskTable", "attempt_facts"]

_ACTIVE = (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass
class TaskMeta:
    """Controller-side facts about a task that are not part of the replicated record."""

    submitted_ms: int
    level: Level | None = None  # level in force (placement level, or adapted since)
    adaptive: AdaptiveLevel | None = None
    explanation: dict[str, Any] | None = None
    blocked_reason: str | None = None  # why it is not placed (reported once)
    moved_at: float = float("-inf")  # last re-placement by a trigger (cooldown)
    origin: str | None = None  # node a locally submitted task came from (None: the API)
    placed: dict[int, str] = field(default_factory=dict)  # epoch -> node (shared.authz)
    flagged: set[frozenset[tuple[str, int]]] = field(default_factory=set)  # conflicts logged
    # The current placement as predicted (cloud.scheduling; not persisted: after a
    # restart the prediction error of the attempts in flight is simply not learned):
    # when it was decided (monotonic), its predicted finish (s) and the work it
    # added to its node's backlog; when the controller heard its attempt start.
    placed_at: float | None = None
    predicted_s: float | None = None
    work_s: float | None = None
    started_at: float | None = None
    # When the current epoch's `place` was last sent (monotonic; None: not since this
    # process started, or the node reconnected since) and how often it was sent again
    # (``shared.decisions.place_resend_due``; not persisted).
    place_sent_at: float | None = None
    place_resends: int = 0
    _explanation_text: tuple[object, str] | None = None
    _spec_text: tuple[object, str] | None = None

    def explanation_json(self) -> str | None:
        """The explanation as stored JSON, serialised once per decision (a task's
        row is rewritten on every status change, its explanation is not)."""
        if self.explanation is None:
            return None
        self._explanation_text = _text_of(self._explanation_text, self.explanation, compact_json)
        return self._explanation_text[1]

    def spec_json(self, spec: dict[str, Any] | None) -> str | None:
        """``canonical_json(spec)`` of the task's record spec, serialised once: the
        spec is immutable (a merge keeps the held object), and keyed by identity, so
        a record that gains its spec, or any other spec object, is encoded anew."""
        if spec is None:
            return None
        self._spec_text = _text_of(self._spec_text, spec, canonical_json)
        return self._spec_text[1]


def _text_of(
    cached: tuple[object, str] | None, value: object, encode: Callable[[object], str]
) -> tuple[object, str]:
    """``cached`` while it was made from this very object, else ``(value, encode(value))``
    (the cache holds the object, so its identity cannot be reused while cached)."""
    if cached is not None and cached[0] is value:
        return cached
    return value, encode(value)


class TaskTable:
    """Records, metadata, leases and the indexes derived from them."""

    def __init__(
        self,
        registry: Registry,
        uow: UnitOfWork,
        *,
        adaptation: AdaptationPolicy,
        lease_policy: LeasePolicy,
        mono: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.uow = uow
        self.adaptation = adaptation
        self.lease_policy = lease_policy
        self.mono = mono
        self.records: dict[str, TaskRecord] = {}
        self.meta: dict[str, TaskMeta] = {}
        self.leases = LeaseBook(lease_policy)
        self.unplaced: set[str] = set()
        self.on_node: dict[str, set[str]] = defaultdict(set)  # node → active tasks placed there
        self.dependents: dict[str, set[str]] = defaultdict(set)
        self._placed_on: dict[str, str] = {}  # active task → node (inverse of on_node)
        self._reserved_on: dict[str, str] = {}  # task → node whose ``reserved`` holds it
        # Bumped whenever a node's reservation of a task ends (resources freed): work
        # blocked on resources is looked at again only then (cloud.scheduling).
        self.freed = 0
        # Tasks changed since the scheduler last looked (it wakes their dependents).
        self.changed: set[str] = set()
        # Placed tasks with an attempt that ended, until the retry rule has decided
        # (cloud.reconcile): only they are asked, not every placed task every tick.
        self.ended: set[str] = set()
        self.adaptive: set[str] = set()  # tasks whose level adapts (bounds not fixed)
        self.admitted = 0  # tasks brought back from the store (:meth:`admit`)
        self.latency_bound: set[str] = set()  # tasks with a ``max_latency_ms``
        # Unfinished tasks each node submitted locally (``shared.authz`` bounds them): a
        # node's new record is checked against it without a walk over every task ever.
        self.originated: dict[str, set[str]] = defaultdict(set)
        # Finished tasks in memory -> when their record last changed (monotonic):
        # :meth:`evict` lets those quiet long enough go, :meth:`admit` brings one back.
        self.quiet_since: dict[str, float] = {}

    # -- changes ------------------------------------------------------------------

    def apply(self, delta: TaskRecord) -> TaskRecord:
        """Join ``delta`` into our copy, mark it dirty and refresh the indexes; the
        task's ``meta`` must exist. Raises ``SpecConflictError``."""
        old = self.records.get(delta.task_id)
        new = delta if old is None else merge(old, delta)
        if new is not old:
            self.records[delta.task_id] = new
            if new.placement is not None:  # the history shared.authz reads (record: latest)
                self.meta[delta.task_id].placed.setdefault(new.placement.epoch, new.placement.node)
            self.uow.dirty_tasks.add(delta.task_id)
            self.changed.add(delta.task_id)
            self.reindex(delta.task_id)
            if delta.task_id in self.quiet_since:
                self.quiet_since[delta.task_id] = self.mono()
        return new

    def reindex(self, task_id: str) -> None:
        """Bring ``unplaced``, ``on_node`` and the reservation in step with the record."""
        rec = self.records[task_id]
        status = visible_status(rec)
        old_node = self._placed_on.pop(task_id, None)
        if old_node is not None:
            self.on_node[old_node].discard(task_id)
        self.unplaced.discard(task_id)
        origin = self.meta[task_id].origin
        if status.terminal:  # for good: no level to adapt, no latency to watch
            self.adaptive.discard(task_id)
            self.latency_bound.discard(task_id)
            if origin is not None:
                self.originated[origin].discard(task_id)
            self.quiet_since.setdefault(task_id, self.mono())
        else:
            self.quiet_since.pop(task_id, None)
            if origin is not None:
                self.originated[origin].add(task_id)
        active = status in _ACTIVE and rec.spec is not None
        if active and rec.placement is not None:
            self.on_node[rec.placement.node].add(task_id)
            self._placed_on[task_id] = rec.placement.node
        elif active and not rec.attempts and self.meta[task_id].origin is None:
            # Submitted here, never placed, no attempt: ours to place. A task
            # submitted locally on a node belongs to that node.
            self.unplaced.add(task_id)
        self._reserve(task_id, rec, active)

    def _reserve(self, task_id: str, rec: TaskRecord, active: bool) -> None:
        """Hold the task's resources on the node it is placed on while it is active (a
        spec never changes, so a reservation on the same, still known node stands)."""
        held = self._reserved_on.get(task_id)
        if (
            held is not None
            and active
            and rec.placement is not None
            and rec.placement.node == held
            and rec.spec is not None
            and (entry := self.registry.get(held)) is not None
            and task_id in entry.reserved
        ):
            return
        old = self._reserved_on.pop(task_id, None)
        if old is not None and (entry := self.registry.get(old)) is not None:
            entry.reserved.pop(task_id, None)
        if rec.placement is None or rec.spec is None or not active:
            if old is not None:
                self.freed += 1
            return
        entry = self.registry.get(rec.placement.node)
        if entry is None:
            entry = self.registry.ensure(rec.placement.node, self.mono(), self.uow.wall_ms())
        res = rec.spec.get("resources") or {}
        entry.reserved[task_id] = (float(res.get("cpu", 0)), float(res.get("memory_mb", 0)))
        self._reserved_on[task_id] = rec.placement.node
        if old is not None and old != rec.placement.node:
            self.freed += 1

    def register_spec(self, task_id: str, spec: Mapping[str, Any], meta: TaskMeta) -> None:
        """A task's spec became known: its level machine and its workflow edges."""
        rec = self.records.get(task_id)
        watch = rec is None or not visible_status(rec).terminal  # a task over needs none
        if not level_bounds(spec)[2]:
            meta.adaptive = AdaptiveLevel.from_spec(
                spec, initial=meta.level, policy=self.adaptation
            )
            if watch:
                self.adaptive.add(task_id)
        if watch and (spec.get("placement") or {}).get("max_latency_ms") is not None:
            self.latency_bound.add(task_id)
        for dep in spec.get("depends_on") or ():
            self.dependents[dep].add(task_id)

    # -- reads --------------------------------------------------------------------

    def placed_node(self, task_id: str) -> str | None:
        """The node an active task is placed on (``None``: not active, or not placed)."""
        return self._placed_on.get(task_id)

    def active_on(self, node_id: str) -> set[str]:
        """Active tasks placed on ``node_id`` (a live view: copy before changing)."""
        return self.on_node.get(node_id, set())

    def next_epoch(self, task_id: str) -> int:
        return self._placed_epoch(task_id) + 1

    def _placed_epoch(self, task_id: str) -> int:
        rec = self.records.get(task_id)
        return rec.placement.epoch if rec is not None and rec.placement is not None else 0

    def relevant(self, node_id: str, remote: Iterable[str] = ()) -> dict[str, TaskRecord]:
        """The records a node should hold: placed on it, or named in its digest."""
        names: set[str] = set(self.active_on(node_id))
        names.update(remote)
        return {t: rec for t in names if (rec := self.records.get(t)) is not None}

    def row(self, task_id: str) -> TaskRow:
        """The store row of a task (derived columns recomputed from the record)."""
        rec = self.records[task_id]
        meta = self.meta[task_id]
        spec = rec.spec or {}
        # One serialisation for the stored text and the hash, the spec's spliced in.
        raw = canonical_bytes(rec, meta.spec_json(rec.spec))
        return TaskRow(
            task_id=task_id,
            record=raw.decode("ascii"),
            status=visible_status(rec).value,
            node=rec.placement.node if rec.placement else None,
            epoch=rec.placement.epoch if rec.placement else 0,
            level=meta.level.value if meta.level else None,
            workflow=spec.get("workflow"),
            priority=int(spec.get("priority", 50)),
            content_hash=hashlib.sha256(raw).hexdigest(),  # = shared.crdt.content_hash
            submitted_ms=meta.submitted_ms,
            updated_ms=self.uow.wall_ms(),
            explanation=meta.explanation_json(),
            origin=meta.origin,
            placed=meta.placed,
        )

    # -- restart ------------------------------------------------------------------

    def load(self, rows: Iterable[TaskRow], leases: Iterable[LeaseRow]) -> None:
        """Task state from the store: records, levels, indexes and leases. ``rows`` are
        those memory should hold (``Store.held_tasks``): a finished task is quiet since
        its row's last write."""
        now = self.mono()
        wall = self.uow.wall_ms()
        self.records.clear()
        self.meta.clear()
        self.unplaced.clear()
        self.on_node.clear()
        self.dependents.clear()
        self.adaptive.clear()
        self.latency_bound.clear()
        self.originated.clear()
        self.quiet_since.clear()
        self._placed_on.clear()
        self._reserved_on.clear()
        for entry in self.registry.nodes.values():
            entry.reserved.clear()
        for row in rows:
            self._hold(row)
            self.quiet_since[row.task_id] = now - max(0.0, (wall - row.updated_ms) / 1000)
        for task_id in self.records:
            self.reindex(task_id)
        unfinished = [t for t in self.records if t not in self.quiet_since]
        for task_id in unfinished:  # a dependency's result is its dependents' input
            for dep in (self.records[task_id].spec or {}).get("depends_on") or ():
                self.admit(dep)
        self.ended = set(self._placed_on)  # after a restart, every placed task is asked once
        # Our monotonic clock did not survive the restart: every stored lease of the
        # current epoch is honoured as if granted now (later than the truth, hence
        # safe). A lease of an older epoch is not: a newer epoch is only ever placed
        # once that lease was dead (shared.decisions), and its holder can never renew
        # it (stale_epoch), so honouring it would only refuse the new holder.
        self.leases = LeaseBook.restore(
            [
                {
                    "task_id": r.task_id,
                    "epoch": r.epoch,
                    "node": r.node_id,
                    "duration_s": r.duration_s,
                    "granted_wall_ms": r.granted_ms,
                }
                for r in leases
                if r.task_id in self.records and r.epoch >= self._placed_epoch(r.task_id)
            ],
            now=now,
            policy=self.lease_policy,
        )

    def _hold(self, row: TaskRow) -> None:
        """Take one stored task into memory (its indexes: the caller reindexes)."""
        rec = TaskRecord.from_dict(row.record)
        self.records[row.task_id] = rec
        meta = TaskMeta(
            submitted_ms=row.submitted_ms, explanation=row.explanation, origin=row.origin
        )
        meta.level = Level(row.level) if row.level else None
        # Placement history: as stored (every epoch, also those whose node never
        # reported an attempt), completed from the record (each attempt was
        # authorised on the node placed at its epoch; a schema-1 row stored none).
        meta.placed = dict(row.placed)
        for attempt in rec.attempts.values():
            meta.placed.setdefault(attempt.epoch, attempt.node)
        if rec.placement is not None:
            meta.placed[rec.placement.epoch] = rec.placement.node
        if rec.spec is not None:
            self.register_spec(row.task_id, rec.spec, meta)
        self.meta[row.task_id] = meta

    # -- what memory holds ----------------------------------------------------------

    def admit(self, task_id: str) -> TaskRecord | None:
        """The task's record, brought back from the store if it left memory (a node's
        late delta or digest, a new dependent, an operator's cancel name it); ``None``
        for a task never stored. Quiet from now on, so it stays a while."""
        rec = self.records.get(task_id)
        if rec is not None:
            return rec
        row = self.uow.store.get_task(task_id)
        if row is None:
            return None
        self._hold(row)
        self.reindex(task_id)
        self.quiet_since[task_id] = self.mono()
        self.admitted += 1
        return self.records[task_id]

    def admit_for(self, node_id: str, task_id: str) -> TaskRecord | None:
        """The record a node's message names: in memory, or brought back from the store
        (a finished task that left it) when the node may read it (its origin or a node
        it was placed on, from the stored columns); ``None`` otherwise. Naming ids a node
        may not read loads nothing."""
        rec = self.records.get(task_id)
        if rec is not None:
            return rec
        facts = self.uow.store.digest_facts([task_id]).get(task_id)
        if facts is None or node_id not in facts[1]:
            return None
        return self.admit(task_id)

    def same_as_stored(self, node_id: str, entries: Mapping[str, str]) -> set[str]:
        """The tasks a node's digest names that left memory and that it holds exactly as
        stored: a summary ends with the record's content hash (``shared.crdt.record_digest``),
        and the same hash is the same record. The caller answers them with the node's own
        summary, and they stay in the store; any other one the node may read comes back
        into memory to be compared as usual."""
        away = [t for t in entries if t not in self.records]
        same: set[str] = set()
        for t, (content, readers) in self.uow.store.digest_facts(away).items():
            theirs = parse_summary(entries[t])
            if theirs is not None and theirs.hash == content[:HASH_CHARS]:
                same.add(t)
            elif node_id in readers:
                self.admit(t)
        return same

    def evict(self, now: float, keep_s: float) -> int:
        """Let finished tasks quiet for ``keep_s`` leave memory (not the store): their
        record and metadata go, so memory holds the recent work, not every task ever.
        Kept: a task changed in the unit of work in hand, one whose ended attempt the
        retry rule has not looked at, one with a lease on record, one an unfinished
        task depends on (its result is that task's input). Returns how many left."""
        cutoff = now - keep_s
        gone = [
            task_id
            for task_id, since in self.quiet_since.items()
            if since <= cutoff
            and task_id not in self.uow.dirty_tasks
            and task_id not in self.ended
            and self.leases.get(task_id) is None
            and all(d in self.quiet_since for d in self.dependents.get(task_id, ()))
        ]
        for task_id in gone:
            self._drop(task_id)
        return len(gone)

    def _drop(self, task_id: str) -> None:
        rec = self.records.pop(task_id)
        self.meta.pop(task_id)
        del self.quiet_since[task_id]
        self.changed.discard(task_id)
        for dep in (rec.spec or {}).get("depends_on") or ():
            edges = self.dependents.get(dep)
            if edges is not None:
                edges.discard(task_id)
                if not edges:
                    del self.dependents[dep]
        self.dependents.pop(task_id, None)  # every dependent is finished (``evict``)


def attempt_facts(rec: TaskRecord, *, epoch: int | None = None) -> tuple[AttemptFacts, ...]:
    """A record's attempts (of ``epoch`` only, if given), oldest dot first, as
    ``shared.decisions`` reads them."""
    return tuple(
        AttemptFacts(node=a.node, epoch=a.epoch, status=a.status, reason=a.reason)
        for _, a in sorted(rec.attempts.items())
        if epoch is None or a.epoch == epoch
    )
