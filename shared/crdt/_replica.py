"""A replica: the task records one node holds, with a delta buffer per peer.

Delta-state sync (Almeida et al., "Delta State Replicated Data Types", 2018):
every delta that changes the replica is joined into each peer's buffer (except
the peer it came from); :meth:`Replica.take` hands a peer one joined delta per
task, :meth:`Replica.ack` drops what the peer confirmed. Lost messages are
re-sent from the buffer; what a buffer cannot repair (a peer that was away
long, a restart) digest-driven anti-entropy does: :meth:`Replica.digest` and
:meth:`Replica.missing_for` (see ``_digest``).

A node that keeps its finished work (retention) would name every record in every
periodic digest, and its idle traffic would grow with its history:
:meth:`Replica.periodic_digest` names only the records changed within the last
:data:`RECENT_DIGESTS` periodic digests, the unfinished ones, and a rotating slice of the
rest (each record at least once every :data:`SWEEP_DIGESTS`); a digest after a
(re)connect (:meth:`Replica.full_digest`) names them all. :attr:`Replica.named` is what
the last digest named (``None``: everything), so an answer is compared on that alone.

Pure: no I/O, no clocks. The caller persists records and decides when to send.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from shared.crdt._digest import lacks, record_digest
from shared.crdt._task_record import TaskRecord, merge, visible_status
from shared.ids import check_node_id

__all__ = ["RECENT_DIGESTS", "SWEEP_DIGESTS", "Batch", "Replica"]

#: A periodic digest names every record changed within this many periodic digests (10
#: minutes at the agent's default 30 s period): long enough for any change to be compared
#: many times over, lost messages included.
RECENT_DIGESTS = 20
#: ... and one slice in this many of the records that did not change since (by a hash of
#: the id): every record is compared at least this often (30 minutes by default).
SWEEP_DIGESTS = 60


class Batch(NamedTuple):
    """What :meth:`Replica.take` hands out: one joined delta per task, and the
    mark to :meth:`Replica.ack` once the peer has them."""

    up_to: int
    deltas: tuple[TaskRecord, ...]


class _Pending(NamedTuple):
    delta: TaskRecord
    seq: int


class Replica:
    """The records of one node (``node_id``), keyed by task id.

    ``apply`` is the only way state changes: it joins a delta (or a full
    record) and returns the merged record. A spec conflict raises
    :class:`~shared.errors.SpecConflictError` and changes nothing.
    """

    __slots__ = (
        "_buffers",
        "_changed",
        "_changes",
        "_digests",
        "_marks",
        "_records",
        "_seq",
        "_sweep",
        "named",
        "node_id",
    )

    def __init__(self, node_id: str, peers: Iterable[str] = ()) -> None:
        why = check_node_id(node_id)
        if why is not None:
            raise ValueError(f"node id {why}")
        self.node_id = node_id
        self._records: dict[str, TaskRecord] = {}
        self._buffers: dict[str, dict[str, _Pending]] = {}
        self._digests: dict[str, tuple[TaskRecord, str]] = {}
        self._seq = 0
        self._changes = 0  # every change of a record counts one
        self._changed: dict[str, int] = {}  # task id -> the count at its last change
        self._marks: deque[int] = deque(maxlen=RECENT_DIGESTS)  # counts at periodic digests
        self._sweep = 0
        self.named: frozenset[str] | None = None  # what the last digest named (None: all)
        for peer in peers:
            self.add_peer(peer)

    # ------------------------------------------------------------ records
    def records(self) -> Iterable[TaskRecord]:
        """Every record (a live view: copy it before applying while iterating)."""
        return self._records.values()

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._records

    def as_mapping(self) -> Mapping[str, TaskRecord]:
        """Read-only task id → record view (for :func:`shared.crdt.digest` and friends)."""
        return MappingProxyType(self._records)

    def forget(self, task_id: str) -> None:
        """Drop a task's record, its cached summary and any buffered delta of it: the
        retention of a replica that does not keep finished work forever. A later
        delta for the task starts the record again (joins still hold)."""
        self._records.pop(task_id, None)
        self._digests.pop(task_id, None)
        self._changed.pop(task_id, None)
        for buffer in self._buffers.values():
            buffer.pop(task_id, None)

    def apply(self, delta: TaskRecord, *, origin: str | None = None) -> TaskRecord:
        """Join ``delta`` into the record of its task and return the result.

        When it changes the record, the delta is buffered for every peer but
        ``origin`` (the peer it came from, which has it already).
        """
        current = self._records.get(delta.task_id)
        merged = delta if current is None else merge(current, delta)
        if merged is current:
            return merged
        self._records[delta.task_id] = merged
        self._changes += 1
        self._changed[delta.task_id] = self._changes
        if self._buffers:
            self._seq += 1
            for peer, buffer in self._buffers.items():
                if peer == origin:
                    continue
                pending = buffer.get(delta.task_id)
                joined = delta if pending is None else merge(pending.delta, delta)
                buffer[delta.task_id] = _Pending(joined, self._seq)
        return merged

    # ------------------------------------------------------------ peers
    def add_peer(self, peer: str) -> None:
        """Start buffering deltas for ``peer`` (from now on; anti-entropy covers
        the past). Adding a known peer keeps its buffer."""
        why = check_node_id(peer)
        if why is not None:
            raise ValueError(f"peer node id {why}")
        self._buffers.setdefault(peer, {})

    def remove_peer(self, peer: str) -> None:
        self._buffers.pop(peer, None)

    def peers(self) -> list[str]:
        return sorted(self._buffers)

    def pending(self, peer: str) -> int:
        """Number of tasks with deltas buffered for ``peer``."""
        return len(self._buffers.get(peer, ()))

    def take(self, peer: str) -> Batch:
        """Everything buffered for ``peer``, one joined delta per task. The buffer
        keeps it until :meth:`ack`; taking again re-sends (joins are idempotent)."""
        buffer = self._buffers.get(peer)
        if not buffer:
            return Batch(self._seq, ())
        return Batch(self._seq, tuple(pending.delta for pending in buffer.values()))

    def ack(self, peer: str, up_to: int) -> None:
        """``peer`` has what a :meth:`take` returning ``up_to`` handed out: drop
        it. Deltas buffered after that take stay (re-sending the older part with
        them is harmless)."""
        buffer = self._buffers.get(peer)
        if not buffer:
            return
        for task_id in [t for t, pending in buffer.items() if pending.seq <= up_to]:
            del buffer[task_id]

    # ------------------------------------------------------------ anti-entropy
    def record_digest(self, task_id: str) -> str | None:
        rec = self._records.get(task_id)
        if rec is None:
            return None
        cached = self._digests.get(task_id)
        if cached is not None and cached[0] is rec:
            return cached[1]
        summary = record_digest(rec)
        self._digests[task_id] = (rec, summary)
        return summary

    def digest(self, task_ids: Iterable[str] | None = None) -> dict[str, str]:
        """Summaries of every record (or of ``task_ids`` held here), for a
        ``Digest`` body. Summaries are cached per record version."""
        ids = self._records if task_ids is None else task_ids
        out: dict[str, str] = {}
        for task_id in ids:
            summary = self.record_digest(task_id)
            if summary is not None:
                out[task_id] = summary
        return out

    def full_digest(self) -> dict[str, str]:
        """Summaries of every record: the digest after a (re)connect. The periodic ones
        start over from it."""
        self._marks.clear()
        self.named = None
        return self.digest()

    def periodic_digest(self) -> dict[str, str]:
        """Summaries of the records that may differ from the peer's: changed within the
        last :data:`RECENT_DIGESTS` periodic digests (all of them until that many were
        made), unfinished, or in this digest's slice of the rest."""
        since = self._marks[0] if len(self._marks) == RECENT_DIGESTS else -1
        self._marks.append(self._changes)
        part, self._sweep = self._sweep, (self._sweep + 1) % SWEEP_DIGESTS
        ids = [
            task_id
            for task_id, rec in self._records.items()
            if self._changed.get(task_id, 0) > since
            or not visible_status(rec).terminal
            or zlib.crc32(task_id.encode()) % SWEEP_DIGESTS == part
        ]
        self.named = frozenset(ids)
        return self.digest(ids)

    def missing_for(self, entries: Mapping[str, str]) -> list[TaskRecord]:
        """Full records the side that sent digest ``entries`` lacks or may lack
        (the same answer as :func:`shared.crdt.missing`, with cached summaries)."""
        out: list[TaskRecord] = []
        for task_id, rec in self._records.items():
            theirs = entries.get(task_id)
            if theirs is None:
                out.append(rec)
                continue
            cached = self._digests.get(task_id)
            ours = cached[1] if cached is not None and cached[0] is rec else None
            if lacks(rec, theirs, ours):
                out.append(rec)
        return out
