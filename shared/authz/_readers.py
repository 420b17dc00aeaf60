"""Who holds a task record, and which of them lack a change: the controller's fan-out.

A node may read a record (``may_read``) when it originated the task, is or was placed
there, or ran an attempt of it; those are exactly the nodes that hold a copy (a ``place``
or a local submission created it there). A node holds what it wrote itself and what the
controller sent it, nothing else (nodes never talk to each other). So when the
controller's record gains events (a delta merged from a node, or a change of its own),
every reader that did not write *all* of the new events lacks some of them, and only
anti-entropy would bring them: :func:`lacking` names those readers, and the controller
sends them the record at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from shared.crdt import TaskRecord

__all__ = ["lacking", "new_writers", "readers"]

_NO_HISTORY: Mapping[int, str] = MappingProxyType({})


def readers(
    rec: TaskRecord, origin: str | None, placed: Mapping[int, str] = _NO_HISTORY
) -> frozenset[str]:
    """The nodes that may be sent ``rec``: its ``origin`` (``None``: the controller's API),
    the node of every placement (``placed``: the history, epoch -> node; the record keeps
    only the latest) and every node that ran an attempt."""
    nodes = {a.node for a in rec.attempts.values()}
    nodes.update(placed.values())
    if rec.placement is not None:
        nodes.add(rec.placement.node)
    if origin is not None:
        nodes.add(origin)
    return frozenset(nodes)


def new_writers(before: TaskRecord | None, after: TaskRecord) -> frozenset[str]:
    """The writers of the events ``after`` holds and ``before`` does not (each change
    but a new record's spec is exactly one event of its writer, ``shared.crdt``)."""
    if before is None:
        return frozenset({w for w, _ in after.context.items()} | {w for w, _ in after.dots})
    grown = {w for w, n in after.context.items() if n > before.context.get(w)}
    grown.update(w for w, _ in after.dots - before.dots)
    return frozenset(grown)


def lacking(
    before: TaskRecord | None,
    after: TaskRecord,
    origin: str | None,
    placed: Mapping[int, str] = _NO_HISTORY,
) -> frozenset[str]:
    """The readers of ``after`` that lack an event it gained over ``before``: every one
    but a reader that wrote each new event itself (it holds its own writes)."""
    writers = new_writers(before, after)
    if not writers:
        return frozenset()
    if len(writers) == 1 and _sole_reader(next(iter(writers)), after, origin, placed):
        return frozenset()  # the usual report: its node is the record's only reader
    return frozenset(n for n in readers(after, origin, placed) if writers - {n})


def _sole_reader(node: str, rec: TaskRecord, origin: str | None, placed: Mapping[int, str]) -> bool:
    """``readers(rec, origin, placed) <= {node}``, without building the set."""
    return (
        (origin is None or origin == node)
        and (rec.placement is None or rec.placement.node == node)
        and all(n == node for n in placed.values())
        and all(a.node == node for a in rec.attempts.values())
    )
