"""The replicated task record: a product of small join-semilattices (docs/crdt.md).

``merge`` is the join, field by field:

- ``spec``: immutable; ``None`` (not carried, as in most deltas) is bottom. Two
  different specs under one id raise :class:`~shared.errors.SpecConflictError`.
- ``placement``: register ordered by ``epoch`` (only the controller issues
  epochs). Equal epochs with different contents still join deterministically by
  ``(HLC, node, canonical JSON)``, so the order is total and the join commutes.
- ``attempts``: map dot → attempt; keys only grow. Per dot the attempt with the
  higher :class:`AttemptStatus` wins *as a whole* (result, exit code, reason and
  timestamps travel with the status). Equal status, different contents: the later
  HLC wins, then canonical JSON, again a total order.
- ``cancel_requested``: or.
- causal context ``context`` + ``dots``: the exact set of writer events
  ``(writer, counter)`` folded in. ``context`` is the contiguous prefix per
  writer (a version vector), ``dots`` the events beyond a gap (a delta that
  arrived before its predecessors). Join is set union, kept compact (a dot that
  closes a gap moves into the vector), so one event set has one representation.

Mutators never modify a record: they return a **delta**, a record holding only
what changed plus exactly one new event of its writer, to be applied with
``merge`` locally and shipped to peers. A writer must apply each delta before
making the next one: the next counter comes from its own events in the record.
The one exception is :func:`new_record`: the spec is immutable, so its delta
names no event (the spec's presence is its own one-bit context).

Because every record is the join of the deltas whose events its context names
(plus the spec when present), and a delta names only its own event, the
context is *exact*: two records with the same context and spec presence are
equal, and a record whose context contains another's (and holds the spec if
the other does) is above it. Anti-entropy digests rely on that
(``shared.crdt._digest``). A
delta's event is never implied by a later one of the same writer (that is why
gaps are kept as dots instead of being rounded up into the vector: drops and
reordering would otherwise make a replica claim events it never saw).

Records are tuples (``NamedTuple``) with read-only attempt maps; merge returns an
operand itself whenever the join equals it, which keeps the hot path (a status
delta into a full record, a duplicate full record) allocation-light and lets the
replica detect "nothing changed" by identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from shared.clocks import Timestamp, VersionVector
from shared.crdt._canonical import canonical_json, json_problems, sha256_hex
from shared.errors import Problem, SpecConflictError, ValidationError
from shared.ids import check_node_id, check_task_id
from shared.vocab import Level, TaskStatus

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_LOG_TAIL",
    "MAX_REASON_LEN",
    "Attempt",
    "AttemptLog",
    "AttemptStatus",
    "Dot",
    "Placement",
    "TaskRecord",
    "attempt_beats",
    "compact",
    "covers",
    "join_context",
    "log_limit",
    "log_problems",
    "log_tail",
    "max_attempts",
    "merge",
    "new_record",
    "place",
    "placement_beats",
    "record_tail_room",
    "request_cancel",
    "set_status",
    "start_attempt",
    "visible_status",
]

#: Retry budget assumed while the spec is unknown (a delta arrived before it).
DEFAULT_MAX_ATTEMPTS = 3
#: Longest free-text ``reason`` an attempt carries.
MAX_REASON_LEN = 1_000
#: Longest stdout or stderr tail an attempt carries, counted in characters of its JSON
#: (ASCII, escaped) form: two tails and a result still fit one protocol message.
MAX_LOG_TAIL = 16_384
#: A full record travels in one protocol message (``shared.protocol.MAX_MESSAGE_BYTES``,
#: 256 KiB): to a node it is placed on, and in anti-entropy. What the tails of all its
#: attempts may take is what that leaves beside its spec, one result (the agent's bound,
#: 64 KiB as JSON), each attempt's other fields (a reason may be 1,000 chars) and the
#: record's own (placement, context, envelope) — :func:`log_limit`.
_RECORD_BYTES = 256 * 1024
_RESULT_ROOM = 64 * 1024
_ATTEMPT_ROOM = 1_536
_RECORD_ROOM = 4_096
#: The largest spec (``shared.model.MAX_SPEC_BYTES``): the limit for it holds for any.
_SPEC_ROOM = 131_072


class AttemptStatus(IntEnum):
    """Attempt status; an attempt only moves up. A node's own report (failed,
    succeeded) beats the controller's inference (lost, cancelled); success wins."""

    PLACED = 0
    STARTED = 1
    LOST = 2
    CANCELLED = 3
    FAILED = 4
    SUCCEEDED = 5

    @property
    def terminal(self) -> bool:
        return self >= AttemptStatus.LOST


#: An attempt's identity: (writer node, that writer's context counter at creation).
Dot = tuple[str, int]


class Placement(NamedTuple):
    """Where the task should run under ``epoch``; ``hlc`` stamps the decision."""

    epoch: int
    node: str
    level: str
    lease_s: float | None
    hlc: str


class AttemptLog(NamedTuple):
    """The end of an attempt's output. The node that ran the attempt writes it once, with
    the attempt's terminal status, so it travels, joins and is authorised with the attempt
    as a whole (``shared.authz``: only that node writes its attempts, only moving them up).
    ``stdout_bytes``/``stderr_bytes``: what the stream wrote in all (the tail may be less)."""

    stdout: str = ""
    stderr: str = ""
    stdout_bytes: int = 0
    stderr_bytes: int = 0


class Attempt(NamedTuple):
    """One attempt to run the task. ``node`` runs it (usually the dot's writer);
    ``counter`` is the dot's counter; ``hlc`` stamps the latest status change;
    ``log`` the output tails its node sent with its end (``None``: none sent)."""

    node: str
    counter: int
    epoch: int
    status: AttemptStatus
    hlc: str
    exit_code: int | None = None
    result: Any = None
    reason: str | None = None
    started_hlc: str | None = None
    log: AttemptLog | None = None

    @property
    def ended_hlc(self) -> str | None:
        """When the attempt became terminal: the stamp of its terminal status."""
        return self.hlc if self.status >= AttemptStatus.LOST else None


_NO_ATTEMPTS: Mapping[Dot, Attempt] = MappingProxyType({})
_EMPTY_VV = VersionVector()
_NO_DOTS: frozenset[Dot] = frozenset()


class TaskRecord(NamedTuple):
    """A task's replicated state, or a delta of it (see the module docstring)."""

    task_id: str
    spec: dict[str, Any] | None = None
    placement: Placement | None = None
    attempts: Mapping[Dot, Attempt] = _NO_ATTEMPTS
    cancel_requested: bool = False
    context: VersionVector = _EMPTY_VV
    dots: frozenset[Dot] = _NO_DOTS

    def merge(self, other: TaskRecord) -> TaskRecord:
        return merge(self, other)

    def to_dict(self) -> dict[str, Any]:
        """Canonical JSON-able form (absent/default fields omitted)."""
        from shared.crdt._serialize import record_to_dict

        return record_to_dict(self)

    @classmethod
    def from_dict(cls, data: object) -> TaskRecord:
        """Parse untrusted input; raise :class:`~shared.errors.ValidationError`
        listing every problem (never ``KeyError``/``TypeError``)."""
        from shared.crdt._serialize import record_from_dict

        return record_from_dict(data)


# ---------------------------------------------------------------- the join


def attempt_beats(x: Attempt, y: Attempt) -> bool:
    """``x`` strictly above ``y`` in the per-dot attempt order (joining ``x`` into a
    record holding ``y`` at that dot changes it)."""
    if x.status != y.status:
        return x.status > y.status
    if x == y:
        return False
    return (Timestamp.decode(x.hlc), canonical_json(x)) > (
        Timestamp.decode(y.hlc),
        canonical_json(y),
    )


def placement_beats(x: Placement, y: Placement) -> bool:
    """``x`` strictly above ``y`` in the placement order (joining ``x`` into a record
    holding ``y`` changes it)."""
    if x.epoch != y.epoch:
        return x.epoch > y.epoch
    if x == y:
        return False
    return (Timestamp.decode(x.hlc), x.node, canonical_json(x)) > (
        Timestamp.decode(y.hlc),
        y.node,
        canonical_json(y),
    )


def merge(a: TaskRecord, b: TaskRecord) -> TaskRecord:
    """Join two records (or deltas) of one task. Commutative, associative,
    idempotent; returns ``a`` (or ``b``) itself when the join equals it."""
    if a is b:
        return a
    if a.task_id != b.task_id:
        raise ValueError(f"cannot merge records of {a.task_id!r} and {b.task_id!r}")

    spec_a, spec = a.spec, b.spec
    if spec is None or spec is spec_a:
        spec = spec_a
    elif spec_a is not None:
        if spec_a != spec:
            raise SpecConflictError(
                a.task_id, sha256_hex(canonical_json(spec_a)), sha256_hex(canonical_json(spec))
            )
        spec = spec_a

    placement_a, placement = a.placement, b.placement
    if (
        placement is None
        or placement is placement_a
        or (placement_a is not None and not placement_beats(placement, placement_a))
    ):
        placement = placement_a

    attempts_a, attempts_b = a.attempts, b.attempts
    if not attempts_b or attempts_a is attempts_b:
        attempts = attempts_a
    elif not attempts_a:
        attempts = attempts_b
    else:
        # Walk the smaller map, copy the larger one only if something changes.
        small, large = attempts_b, attempts_a
        if len(small) > len(large):
            small, large = large, small
        changed: dict[Dot, Attempt] | None = None
        for dot, theirs in small.items():
            ours = large.get(dot)
            if ours is None or (ours is not theirs and attempt_beats(theirs, ours)):
                if changed is None:
                    changed = dict(large)
                changed[dot] = theirs
        if changed is None:
            attempts = large
        elif len(changed) == len(small) and _same_attempts(changed, small):
            attempts = small  # ``large`` lost an entry to ``small``: it cannot be the join
        else:
            attempts = MappingProxyType(changed)

    cancel = a.cancel_requested or b.cancel_requested
    context, dots = join_context(a.context, a.dots, b.context, b.dots)

    if (
        spec is spec_a
        and placement is placement_a
        and attempts is attempts_a
        and cancel == a.cancel_requested
        and context is a.context
        and dots is a.dots
    ):
        return a
    if (
        spec is b.spec
        and placement is b.placement
        and attempts is attempts_b
        and cancel == b.cancel_requested
        and context is b.context
        and dots is b.dots
    ):
        return b
    return TaskRecord(a.task_id, spec, placement, attempts, cancel, context, dots)


def _same_attempts(merged: dict[Dot, Attempt], attempts: Mapping[Dot, Attempt]) -> bool:
    return all(attempts.get(dot) is attempt for dot, attempt in merged.items())


# ---------------------------------------------------------------- causal context


def join_context(
    va: VersionVector, da: frozenset[Dot], vb: VersionVector, db: frozenset[Dot]
) -> tuple[VersionVector, frozenset[Dot]]:
    """Union of two compact event sets, compact again. Returns an operand's own
    objects when the union equals it (identity is how ``merge`` sees no change)."""
    vv = va.merge(vb)
    if not da and not db:
        return vv, _NO_DOTS
    if db is da or not db:
        dots = da
    elif not da:
        dots = db
    else:
        dots = da | db
    return compact(vv, dots, (da, db))


def compact(
    vv: VersionVector, dots: frozenset[Dot], reuse: tuple[frozenset[Dot], ...] = ()
) -> tuple[VersionVector, frozenset[Dot]]:
    """Canonical form of the event set ``vv + dots``: drop dots the vector
    covers, move dots that extend a writer's prefix into the vector."""
    if not dots:
        return vv, _NO_DOTS
    if len(dots) == 1:  # the common case: one delta's own event
        ((writer, counter),) = dots
        have = vv.get(writer)
        if counter <= have:
            return vv, _NO_DOTS
        if counter == have + 1:
            return vv.increment(writer), _NO_DOTS
        return vv, dots
    rest = {dot for dot in dots if dot[1] > vv.get(dot[0])}
    advance: dict[str, int] = {}
    for writer, counter in sorted(rest):
        if counter == advance.get(writer, vv.get(writer)) + 1:
            advance[writer] = counter
            rest.discard((writer, counter))
    if advance:
        vv = vv.merge(VersionVector(advance))
    if not rest:
        return vv, _NO_DOTS
    for candidate in (*reuse, dots):
        if len(candidate) == len(rest) and candidate == rest:
            return vv, candidate
    return vv, frozenset(rest)


def _contains(vv: VersionVector, dots: frozenset[Dot], event: Dot) -> bool:
    return event[1] <= vv.get(event[0]) or event in dots


def covers(va: VersionVector, da: frozenset[Dot], vb: VersionVector, db: frozenset[Dot]) -> bool:
    """Whether the compact event set ``(va, da)`` contains every event of ``(vb, db)``.

    In compact form a writer's contiguous prefix is exactly its vector entry, so
    containment needs ``va >= vb`` entry-wise and each of ``db`` inside ``(va, da)``.
    """
    return va.dominates(vb) and all(_contains(va, da, dot) for dot in db)


# ---------------------------------------------------------------- mutators


def _next_event(rec: TaskRecord | None, writer: str) -> tuple[int, VersionVector, frozenset[Dot]]:
    """The writer's next counter on this record and the delta's compact context
    (that one event: in the vector when it is the writer's first, else a dot)."""
    if check_node_id(writer) is not None:
        raise ValueError(f"invalid writer node id {writer!r}")
    last = 0
    if rec is not None:
        last = rec.context.get(writer)
        for dot_writer, counter in rec.dots:
            if dot_writer == writer and counter > last:
                last = counter
    counter = last + 1
    if counter == 1:
        return counter, VersionVector({writer: 1}), _NO_DOTS
    return counter, _EMPTY_VV, frozenset({(writer, counter)})


def new_record(task_id: str, spec: dict[str, Any], *, writer: str, hlc: Timestamp) -> TaskRecord:
    """The creation delta: the only delta that carries the spec.

    It names no event: the spec is immutable (one value per task, or a conflict),
    so "has the spec" is all a context needs to know about it, and digests carry
    that as a flag. Creating is therefore idempotent and safe from any writer at
    any time (even on a record that already holds other events). ``writer`` is
    checked and ``hlc`` accepted for a uniform mutator signature.
    """
    why = check_task_id(task_id)
    if why is not None:
        raise ValueError(f"task id {why}")
    if not isinstance(spec, dict) or spec.get("id", task_id) != task_id:
        raise ValueError(f"spec of {task_id!r} must be a dict whose 'id' is the task id")
    if check_node_id(writer) is not None:
        raise ValueError(f"invalid writer node id {writer!r}")
    return TaskRecord(task_id, spec)


def place(
    rec: TaskRecord,
    *,
    epoch: int,
    node: str,
    level: str,
    lease_s: float | None,
    writer: str,
    hlc: Timestamp,
) -> TaskRecord:
    """Delta placing the task on ``node`` under ``epoch`` (controller only)."""
    if check_node_id(node) is not None:
        raise ValueError(f"invalid node id {node!r}")
    _, context, dots = _next_event(rec, writer)
    lease = None if lease_s is None else float(lease_s)
    placement = Placement(int(epoch), node, str(Level(level)), lease, hlc.encode())
    return TaskRecord(rec.task_id, None, placement, _NO_ATTEMPTS, False, context, dots)


def start_attempt(
    rec: TaskRecord,
    *,
    node: str,
    epoch: int,
    writer: str,
    hlc: Timestamp,
    status: AttemptStatus = AttemptStatus.STARTED,
) -> tuple[Dot, TaskRecord]:
    """A new attempt (status ``PLACED`` or ``STARTED``) under a fresh dot
    ``(writer, counter)``; returns the dot and the delta."""
    if status not in (AttemptStatus.PLACED, AttemptStatus.STARTED):
        raise ValueError(f"a new attempt is placed or started, not {status!r}")
    if check_node_id(node) is not None:
        raise ValueError(f"invalid node id {node!r}")
    counter, context, dots = _next_event(rec, writer)
    stamp = hlc.encode()
    attempt = Attempt(
        node,
        counter,
        int(epoch),
        AttemptStatus(status),
        stamp,
        started_hlc=stamp if status == AttemptStatus.STARTED else None,
    )
    dot = (writer, counter)
    return dot, TaskRecord(
        rec.task_id, None, None, MappingProxyType({dot: attempt}), False, context, dots
    )


def set_status(
    rec: TaskRecord,
    dot: Dot,
    status: AttemptStatus,
    *,
    writer: str,
    hlc: Timestamp,
    exit_code: int | None = None,
    result: Any = None,
    reason: str | None = None,
    log: AttemptLog | None = None,
) -> TaskRecord:
    """Delta moving attempt ``dot`` to ``status`` with its outcome (``log``: the output
    tails, see :func:`log_tail`). A status not above the current one yields a delta that
    loses the join (harmless)."""
    current = rec.attempts.get(dot)
    if current is None:
        raise KeyError(f"task {rec.task_id!r} has no attempt {dot!r}")
    status = AttemptStatus(status)
    if log is not None:
        log = fit_log(log, rec.spec)
    problems = json_problems(result, "result")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LEN):
        problems.append(Problem("reason", f"must be a string of at most {MAX_REASON_LEN} chars"))
    if exit_code is not None and (not isinstance(exit_code, int) or isinstance(exit_code, bool)):
        problems.append(Problem("exit_code", "must be an integer"))
    problems.extend(log_problems(log, "log"))
    if problems:
        raise ValidationError(problems, what=f"outcome of attempt {dot!r}")
    _, context, dots = _next_event(rec, writer)
    stamp = hlc.encode()
    started = current.started_hlc
    if started is None and status >= AttemptStatus.STARTED:
        started = stamp
    attempt = current._replace(
        status=status,
        hlc=stamp,
        exit_code=exit_code,
        result=result,
        reason=reason,
        started_hlc=started,
        log=log,
    )
    return TaskRecord(
        rec.task_id, None, None, MappingProxyType({dot: attempt}), False, context, dots
    )


def request_cancel(rec: TaskRecord, *, writer: str, hlc: Timestamp) -> TaskRecord:
    """Delta raising the cancel flag (``hlc`` accepted for a uniform signature;
    the flag carries no time, it only ever becomes true)."""
    _, context, dots = _next_event(rec, writer)
    return TaskRecord(rec.task_id, None, None, _NO_ATTEMPTS, True, context, dots)


# ---------------------------------------------------------------- output tails


def _json_size(text: str) -> int:
    return len(canonical_json(text)) - 2


def log_tail(text: str, limit: int = MAX_LOG_TAIL) -> str:
    """The longest end of ``text`` whose JSON form fits ``limit`` characters (an escaped
    character counts as what it costs on the wire)."""
    if _json_size(text) <= limit:
        return text
    size, start = 0, len(text)
    while start > 0:
        cost = _json_size(text[start - 1])
        if size + cost > limit:
            break
        size += cost
        start -= 1
    return text[start:]


def log_limit(spec: Mapping[str, Any] | None, spec_chars: int = _SPEC_ROOM) -> int:
    """Per stream, the tail one attempt of this task may carry (JSON chars, at most
    :data:`MAX_LOG_TAIL`): the room a full record has for tails, shared by the two
    streams of each attempt its retry policy allows, so that the record, with every
    attempt ended and one succeeded with a full result, still fits one message. A task
    retried 100 times keeps short tails; one that runs three times with a small spec
    keeps the full 16 KiB. ``spec_chars``: the spec's JSON size (default: the largest)."""
    n = max_attempts(spec)
    return max(0, min(MAX_LOG_TAIL, record_tail_room(spec_chars, n) // (2 * n)))


def record_tail_room(spec_chars: int, attempts: int) -> int:
    """JSON chars a full record of a task with a ``spec_chars`` spec and ``attempts``
    attempts has left for output tails in one message; negative: it may not fit even
    without any (``shared.model`` refuses such a spec at submission)."""
    return _RECORD_BYTES - spec_chars - _RESULT_ROOM - _RECORD_ROOM - attempts * _ATTEMPT_ROOM


def fit_log(log: AttemptLog, spec: Mapping[str, Any] | None) -> AttemptLog:
    """``log`` with each tail cut to :func:`log_limit` for the task (the byte counts
    kept). The spec is measured only when a tail passes the limit of the largest one."""
    floor = log_limit(spec)
    if _json_size(log.stdout) <= floor and _json_size(log.stderr) <= floor:
        return log
    limit = log_limit(spec, len(canonical_json(spec)) if spec is not None else _SPEC_ROOM)
    return log._replace(stdout=log_tail(log.stdout, limit), stderr=log_tail(log.stderr, limit))


def log_problems(log: object, path: str) -> list[Problem]:
    """Every reason ``log`` is not ``None`` or a bounded :class:`AttemptLog`."""
    if log is None:
        return []
    if not isinstance(log, AttemptLog):
        return [Problem(path, "must be an attempt log")]
    problems = [
        Problem(f"{path}.{name}", f"must be a string of at most {MAX_LOG_TAIL} JSON chars")
        for name in ("stdout", "stderr")
        if not isinstance(getattr(log, name), str) or _json_size(getattr(log, name)) > MAX_LOG_TAIL
    ]
    problems.extend(
        Problem(f"{path}.{name}", "must be an integer >= 0")
        for name in ("stdout_bytes", "stderr_bytes")
        if not isinstance(getattr(log, name), int)
        or isinstance(getattr(log, name), bool)
        or not 0 <= getattr(log, name) <= 1 << 62
    )
    return problems


# ---------------------------------------------------------------- derived


def max_attempts(spec: Mapping[str, Any] | None) -> int:
    """The retry budget from ``spec["retry"]["max_attempts"]``, or the default
    while the spec is unknown or does not say."""
    retry = spec.get("retry") if spec is not None else None
    value = retry.get("max_attempts") if isinstance(retry, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return DEFAULT_MAX_ATTEMPTS


def visible_status(rec: TaskRecord) -> TaskStatus:
    """Derived status (docs/crdt.md): succeeded if any attempt succeeded; cancelled
    if cancel was requested; running if an attempt is started and not terminal;
    failed once failed/lost attempts spend the retry budget; pending otherwise."""
    running = False
    spent = 0
    for attempt in rec.attempts.values():
        status = attempt.status
        if status == AttemptStatus.SUCCEEDED:
            return TaskStatus.SUCCEEDED
        if status == AttemptStatus.STARTED:
            running = True
        elif status in (AttemptStatus.FAILED, AttemptStatus.LOST):
            spent += 1
    if rec.cancel_requested:
        return TaskStatus.CANCELLED
    if running:
        return TaskStatus.RUNNING
    if spent >= max_attempts(rec.spec):
        return TaskStatus.FAILED
    return TaskStatus.PENDING
