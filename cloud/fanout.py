"""Every node that holds a task record is sent each change it lacks, when it happens.

A node holds a copy of a record from its ``place`` (or its own local submission) on;
it keeps it after the task moved away. The controller's record gains events from other
nodes (a hedged task's attempt elsewhere, the new holder's result) and from its own
decisions (a new epoch, attempts presumed lost, a cancel). A holder that is not sent
them holds a stale copy until its next anti-entropy digest (``antientropy_s``, 30 s by
default): the testbed measured exactly that wait after every heal. So whoever changes
a record calls :func:`forward` with the record as it was before; the readers that lack
the change (``shared.authz.lacking``: what a node may read, less the node that wrote
everything new) get the whole record, which is idempotent and never partial.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.authz import lacking, readers
from shared.crdt import TaskRecord

from .tasks import TaskTable
from .uow import UnitOfWork

__all__ = ["forward", "share"]


def forward(
    tasks: TaskTable,
    uow: UnitOfWork,
    task_id: str,
    before: TaskRecord | None,
    *,
    skip: Iterable[str] = (),
) -> None:
    """Queue the task's record to each reader lacking what it gained over ``before``
    (``skip``: nodes the caller sends it to itself)."""
    rec = tasks.records[task_id]
    meta = tasks.meta[task_id]
    for node_id in sorted(lacking(before, rec, meta.origin, meta.placed) - set(skip)):
        uow.queue_records(node_id, [rec])


def share(tasks: TaskTable, uow: UnitOfWork, task_id: str) -> None:
    """Queue the task's record to every node that may read it (a change re-sent, not
    one just made: a cancel repeated to a node that came back)."""
    rec = tasks.records[task_id]
    meta = tasks.meta[task_id]
    for node_id in sorted(readers(rec, meta.origin, meta.placed)):
        uow.queue_records(node_id, [rec])
