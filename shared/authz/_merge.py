"""What a node may write into the controller's task records, decided before the merge.

An edge device is the least trusted party of a fleet (it may be stolen), and the
broker's ACL only keeps it on its own topics: what it *says* there is checked here.
:func:`authorize_delta` splits a delta from node ``N`` into the part ``N`` may write
and the reasons the rest was refused. ``N``'s rights over one task record:

- **attempts** under its own dots (``(N, counter)``, run by ``N``): a new one only on a
  task placed on ``N`` at the attempt's epoch (now, or at an earlier epoch the caller's
  placement history names: a node may finish what it started before a re-placement
  reached it); an existing one only moving its status up, at the same epoch (a
  success's result is final).
- **placement**: never a decision of its own, with two narrow exceptions: the
  epoch-0 placement on itself of a task it originated, and a restamp of the
  placement in force on itself (same epoch, node, level and lease: the agent keeps
  its own copy of each ``place`` it receives).
- **spec** and **cancel flag**: only on tasks it originated (the spec only when the
  record has none yet).
- **new records**: only with a spec, in its own id namespace (``shared.authz._namespace``),
  while it has fewer than the quota of active tasks it originated.
- **causal context**: only its own events. Another writer's event it names that the
  record lacks is refused; its own events are kept only when nothing of the delta
  was refused, so the record never claims an event whose content was not stored.

Anything the record already holds (or that loses the join) is dropped silently: a
full record sent back by an honest node repeats what the controller told it.
Pure: the caller supplies the record, its origin and the node's active count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from shared.authz._namespace import origin_of
from shared.authz._readers import readers
from shared.clocks import VersionVector
from shared.crdt import Attempt, Dot, Placement, TaskRecord, attempt_beats, placement_beats

__all__ = [
    "DEFAULT_POLICY",
    "MergePolicy",
    "Reason",
    "Refusal",
    "Verdict",
    "accept_seq",
    "authorize_delta",
    "may_read",
    "pinned_to_origin",
]


class Reason(StrEnum):
    """Why part of a node's message was refused (a metric label: a closed set)."""

    UNKNOWN_TASK = "unknown_task"  # a record the controller never saw, without its spec
    NAMESPACE = "namespace"  # a new record outside the node's id namespace
    QUOTA = "quota"  # the node already has its quota of active originated tasks
    SPEC = "spec"
    PLACEMENT = "placement"
    CANCEL = "cancel"
    FOREIGN_ATTEMPT = "foreign_attempt"  # another writer's dot, or run by another node
    NOT_PLACED = "not_placed"  # a new attempt on a task not placed on the node at that epoch
    REWRITE = "rewrite"  # an own attempt changed without moving its status up
    CONTEXT = "context"  # another writer's event the record lacks
    SEQ_JUMP = "seq_jump"  # an outbox sequence number far beyond the last one
    UNREADABLE = "unreadable"  # a digest naming a task the node may not read


class Refusal(NamedTuple):
    reason: Reason
    detail: str


class Verdict(NamedTuple):
    """``accepted``: the delta to merge (``None``: nothing); ``refusals``: the rest, why."""

    accepted: TaskRecord | None
    refusals: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class MergePolicy:
    """``max_originated``: active (pending or running) tasks a node may have created;
    ``max_seq_step``: how far one message may move a node's acknowledged outbox mark."""

    max_originated: int = 1_000
    max_seq_step: int = 100_000


DEFAULT_POLICY = MergePolicy()

_NO_ATTEMPTS: Mapping[Dot, Attempt] = MappingProxyType({})
_NO_HISTORY: Mapping[int, str] = MappingProxyType({})
_NO_EVENTS: tuple[VersionVector, frozenset[Dot]] = (VersionVector(), frozenset())


def authorize_delta(
    node: str,
    current: TaskRecord | None,
    delta: TaskRecord,
    *,
    origin: str | None,
    originated: int,
    placed: Mapping[int, str] = _NO_HISTORY,
    policy: MergePolicy = DEFAULT_POLICY,
) -> Verdict:
    """The part of ``delta`` (from ``node``) that may be merged into ``current``.

    ``current`` is the controller's record (``None``: never seen); ``origin`` the node
    that created it (``None``: the controller's API); ``originated`` the number of
    active tasks ``node`` created (for the quota); ``placed`` the node each earlier
    placement of the task named, by epoch (the controller's history; the record keeps
    only the latest). Merging ``accepted`` into
    ``current`` changes nothing outside ``node``'s rights (see the module docstring).
    """
    task_id = delta.task_id
    if current is None:
        refusal = _creation_refused(node, delta, originated, policy)
        if refusal is not None:
            return Verdict(None, (refusal,))
        base, owns = TaskRecord(task_id), True
    else:
        base, owns = current, origin == node
    refusals: list[Refusal] = []
    spec = _spec(base, delta.spec, owns, refusals)
    placement = _placement(node, base, delta.placement, owns, refusals)
    in_force = base.placement if placement is None else placement
    attempts = _NO_ATTEMPTS
    if delta.attempts:
        # The placement in force overrides the history at its epoch (read, not copied).
        history = placed if in_force is None else _History(placed, in_force)
        attempts = _attempts(node, base, delta.attempts, history, refusals)
    cancel = delta.cancel_requested and not base.cancel_requested
    if cancel and not owns:
        refusals.append(Refusal(Reason.CANCEL, "only the task's origin may cancel it"))
        cancel = False
    foreign = _foreign_events(node, base, delta)
    if foreign:
        refusals.append(Refusal(Reason.CONTEXT, f"events the record lacks: {foreign}"))
    context, dots = _NO_EVENTS
    if not refusals:
        context, dots = _own_events(node, delta)
    if not (spec or placement or attempts or cancel or context or dots):
        return Verdict(None, tuple(refusals))
    accepted = TaskRecord(task_id, spec, placement, attempts, cancel, context, dots)
    return Verdict(accepted, tuple(refusals))


class _History(NamedTuple):
    """The placement history ``placed`` with the placement in force at its epoch: the
    ``get`` of ``{**placed, in_force.epoch: in_force.node}`` without building it."""

    placed: Mapping[int, str]
    in_force: Placement

    def get(self, epoch: int, default: str | None = None) -> str | None:
        if epoch == self.in_force.epoch:
            return self.in_force.node
        return self.placed.get(epoch, default)


def _own_events(node: str, delta: TaskRecord) -> tuple[VersionVector, frozenset[Dot]]:
    """``node``'s own events of ``delta``'s causal context: its entry of the vector and
    its dots (the delta's own objects when they hold nothing else, as an honest node's
    delta does)."""
    context = delta.context
    if not _only_own(node, context):
        context = VersionVector({node: context.get(node)})
    dots = delta.dots
    if any(dot[0] != node for dot in dots):
        dots = frozenset(dot for dot in dots if dot[0] == node)
    return context, dots


def _creation_refused(
    node: str, delta: TaskRecord, originated: int, policy: MergePolicy
) -> Refusal | None:
    if delta.spec is None:
        return Refusal(Reason.UNKNOWN_TASK, "a new record must carry its spec")
    owner = origin_of(delta.task_id)
    if owner != node:
        return Refusal(
            Reason.NAMESPACE,
            f"a node creates only ids '{node}-<12 hex>' or '{node}:<name>', not {delta.task_id!r}",
        )
    if originated >= policy.max_originated:
        return Refusal(
            Reason.QUOTA, f"{originated} active tasks originated (at most {policy.max_originated})"
        )
    return None


def _spec(
    base: TaskRecord, spec: dict[str, Any] | None, owns: bool, refusals: list[Refusal]
) -> dict[str, Any] | None:
    if spec is None or spec == base.spec:
        return None
    if base.spec is None and owns:
        return spec
    refusals.append(Refusal(Reason.SPEC, "only the origin writes a spec, once"))
    return None


def _placement(
    node: str,
    base: TaskRecord,
    new: Placement | None,
    owns: bool,
    refusals: list[Refusal],
) -> Placement | None:
    ours = base.placement
    if new is None or (ours is not None and not placement_beats(new, ours)):
        return None  # loses the join: nothing to write
    if ours is None and owns and new.epoch == 0 and new.node == node:
        return new  # the origin's own placement of a task submitted on it
    if (
        ours is not None
        and ours.node == node
        and (new.epoch, new.node, new.level, new.lease_s)
        == (ours.epoch, ours.node, ours.level, ours.lease_s)
    ):
        return new  # a restamp of the placement in force on this node
    refusals.append(
        Refusal(Reason.PLACEMENT, f"epoch {new.epoch} on {new.node}: only the controller places")
    )
    return None


def _attempts(
    node: str,
    base: TaskRecord,
    attempts: Mapping[Dot, Attempt],
    placed: Mapping[int, str] | _History,
    refusals: list[Refusal],
) -> Mapping[Dot, Attempt]:
    keep: dict[Dot, Attempt] = {}
    for dot, attempt in attempts.items():
        ours = base.attempts.get(dot)
        if ours is not None and not attempt_beats(attempt, ours):
            continue  # loses the join: nothing to write
        refusal = _attempt_refused(node, dot, attempt, ours, placed)
        if refusal is None:
            keep[dot] = attempt
        else:
            refusals.append(refusal)
    return MappingProxyType(keep) if keep else _NO_ATTEMPTS


def _attempt_refused(
    node: str,
    dot: Dot,
    attempt: Attempt,
    ours: Attempt | None,
    placed: Mapping[int, str] | _History,
) -> Refusal | None:
    if dot[0] != node or attempt.node != node:
        return Refusal(Reason.FOREIGN_ATTEMPT, f"{_where(dot)} run by {attempt.node}")
    if ours is None:
        if placed.get(attempt.epoch) != node:
            at = placed.get(attempt.epoch, "nowhere")
            return Refusal(
                Reason.NOT_PLACED, f"{_where(dot)} at epoch {attempt.epoch}, placed on {at}"
            )
        return None
    if attempt.status <= ours.status or attempt.epoch != ours.epoch:
        return Refusal(
            Reason.REWRITE,
            f"{_where(dot)}: {ours.status.name} -> {attempt.status.name} is not forward",
        )
    return None


def _where(dot: Dot) -> str:
    """How a refusal names an attempt (built only for a refusal)."""
    return f"attempt {dot[0]}:{dot[1]}"


def _only_own(node: str, context: VersionVector) -> bool:
    """``context`` names no writer but ``node`` (a vector stores no zero entries)."""
    return len(context) == (1 if context.get(node) else 0)


def _foreign_events(node: str, base: TaskRecord, delta: TaskRecord) -> list[str]:
    """Events of writers other than ``node`` named by ``delta`` that ``base`` lacks."""
    if _only_own(node, delta.context) and all(dot[0] == node for dot in delta.dots):
        return []  # only the node's own events (an honest delta): nothing foreign
    lacking = [
        f"{writer}:{count}"
        for writer, count in delta.context.items()
        if writer != node and count > base.context.get(writer)
    ]
    lacking.extend(
        f"{writer}:{count}"
        for writer, count in sorted(delta.dots)
        if writer != node and count > base.context.get(writer) and (writer, count) not in base.dots
    )
    return lacking[:8]


def may_read(
    node: str, rec: TaskRecord, origin: str | None, placed: Mapping[int, str] = _NO_HISTORY
) -> bool:
    """Whether ``node`` may be sent ``rec`` (answering its digest): it originated the
    task, it is or was placed there (``placed``: the placement history), or it ran an
    attempt of it."""
    return node in readers(rec, origin, placed)


def accept_seq(
    last: int, seq: int, policy: MergePolicy = DEFAULT_POLICY
) -> tuple[int, Refusal | None]:
    """The outbox mark to acknowledge for a message numbered ``seq`` when ``last`` is
    acknowledged: ``seq`` itself within ``policy.max_seq_step``, else clamped there
    (an honest node whose mark the controller lost still converges, a few steps at a
    time; a forged 2**62 moves it one step)."""
    limit = last + policy.max_seq_step
    if seq <= limit:
        return seq, None
    return limit, Refusal(Reason.SEQ_JUMP, f"seq {seq} beyond {last} + {policy.max_seq_step}")


def pinned_to_origin(origin: str | None, spec: Mapping[str, Any] | None) -> bool:
    """An agent-originated task stays on its origin node unless its submitter chose a
    placement mode (``placement.mode`` in the spec): then the controller may move it."""
    if origin is None:
        return False
    placement = (spec or {}).get("placement") or {}
    return placement.get("mode") is None
