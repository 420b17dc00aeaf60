"""Message bodies: one frozen dataclass per envelope ``type`` (docs/protocol.md).

Each body writes its JSON form with ``to_dict()`` and reads one with ``read(fields)``, a
:class:`shared.model.Fields` reader that collects every problem with its path instead of
stopping at the first. Readers are non-strict: unknown fields are ignored, so a newer peer
may add fields without breaking an older one (forward compatibility). ``from_dict`` is the
stand-alone form and raises :class:`~shared.errors.ValidationError`.

Field names are the ones the agent and the controller read; bounds keep a hostile peer from
making either side allocate without limit (the codec also caps the whole message's bytes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

from shared.crdt import TaskRecord, record_from_dict, record_to_wire
from shared.errors import Problem, ValidationError
from shared.ids import MAX_TASK_ID_LEN, check_task_id
from shared.model import (
    MAX_DEADLINE_S,
    MAX_DEPENDS_ON,
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    Fields,
    check_label_key,
    join_path,
)
from shared.vocab import Level, Tier

__all__ = [
    "BODY_TYPES",
    "MAX_DELTAS",
    "MAX_DIGEST_ENTRIES",
    "MAX_DIGEST_VALUE_LEN",
    "MAX_INT",
    "MAX_LEASE_S",
    "MAX_REASON_LEN",
    "MAX_SLOTS",
    "PRESENCE_STATUSES",
    "Ack",
    "Body",
    "Cancel",
    "Capacity",
    "Deltas",
    "Digest",
    "Heartbeat",
    "Hello",
    "LeaseGrant",
    "LeaseRequest",
    "LevelChange",
    "Ping",
    "Place",
    "Pong",
    "Presence",
    "Telemetry",
    "check_message_id",
]

#: Largest integer on the wire (SQLite's INTEGER range on both sides).
MAX_INT: Final = 2**63 - 1
#: Records in one ``deltas`` body (the agent sends at most ``autonomy.batch_max``, 64 by default).
MAX_DELTAS: Final = 4_096
#: Entries in one ``digest`` body, and the length of one entry's summary string (the
#: longest summary ``shared.crdt`` parses; the message size limit bounds the total).
MAX_DIGEST_ENTRIES: Final = 10_000
MAX_DIGEST_VALUE_LEN: Final = 16_384
#: Free-text reasons (cancel, lease refusal, level change).
MAX_REASON_LEN: Final = 1_000
#: Longest lease that may be requested or granted (one day).
MAX_LEASE_S: Final = 86_400.0
#: Largest round trip a heartbeat may report (ms): a minute is no longer a link, but an outage.
MAX_RTT_MS: Final = 60_000.0
#: Most executor slots a node may advertise (``capacity.slots``; the agent's
#: ``executor.max_concurrent`` is bounded by it too): more attempts at once than any
#: node has cores (``capacity.cpus`` ≤ 1e6) is no limit.
MAX_SLOTS: Final = 1_000_000
#: Longest lease ``request_id`` (the agent's ``<incarnation>-<n>``).
MAX_REQUEST_ID_LEN: Final = 128
#: ``presence.status`` values (``offline`` is also the last will).
PRESENCE_STATUSES: Final = frozenset({"online", "offline"})

_MAX_VERSION_LEN = 64
_MAX_METRICS = 16


def check_message_id(value: object) -> str | None:
    """Envelope ids, heartbeat ids and ping ids use the task-id alphabet and bound:
    they are stored (the agent's seen-message table) and echoed, never interpreted."""
    return check_task_id(value)


class Body:
    """Base of every body. ``TYPE`` is the envelope ``type`` naming it."""

    __slots__ = ()
    TYPE: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def read(cls, f: Fields) -> Self:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: object, path: str = "body") -> Self:
        """Parse untrusted data; raise ``ValidationError`` listing every problem."""
        f = Fields(data, path, strict=False)
        body = cls.read(f)
        f.raise_if_problems(f"{cls.TYPE} body")
        return body


def _task_id(f: Fields) -> str:
    return f.string("task_id", max_len=256, check=check_task_id)


def _epoch(f: Fields) -> int:
    return f.integer("epoch", min=0, max=MAX_INT)


def _check_request_id(value: str) -> str | None:
    """Empty (a peer that predates request ids) or an id in the message-id alphabet."""
    return None if value == "" else check_message_id(value)


def _request_id(f: Fields) -> str:
    return f.string("request_id", "", max_len=MAX_REQUEST_ID_LEN, check=_check_request_id)


def _labels(f: Fields) -> dict[str, str]:
    return f.string_map(
        "labels",
        max_entries=MAX_LABELS,
        key_check=check_label_key,
        max_value_len=MAX_LABEL_VALUE_LEN,
    )


def _number_tuple(f: Fields, key: str, size: int) -> tuple[float, ...]:
    """A list of exactly ``size`` finite numbers ≥ 0 (``Fields`` has no number list)."""
    items = f.sequence(key, max_items=size, required=True)
    if items is None:
        return (0.0,) * size
    if len(items) != size:
        f.error(key, f"must have exactly {size} items (got {len(items)})")
        return (0.0,) * size
    out: list[float] = []
    for index, item in enumerate(items):
        ok = (
            isinstance(item, int | float)
            and not isinstance(item, bool)
            and math.isfinite(item)
            and item >= 0
        )
        if not ok:
            f.problems.append(Problem(join_path(f.path_of(key), index), "must be a number ≥ 0"))
        out.append(float(item) if ok else 0.0)  # type: ignore[arg-type]
    return tuple(out)


def _averages(f: Fields) -> dict[str, dict[str, float]]:
    """``{metric: {window: value}}`` (e.g. ``{"cpu_pct": {"1m": 3.5}}``), small and bounded."""
    table = f.sub("averages")
    if table is None or not table.valid:
        return {}
    if len(table.data) > _MAX_METRICS:
        f.error("averages", f"must have at most {_MAX_METRICS} entries")
        return {}
    out: dict[str, dict[str, float]] = {}
    for name in list(table.data):
        if not isinstance(name, str) or (why := check_label_key(name)) is not None:
            table.error(str(name)[:80], "bad key: " + (why or "must be a string"))
            continue
        windows = table.sub(name)
        if windows is None or not windows.valid:
            continue
        if len(windows.data) > _MAX_METRICS:
            table.error(name, f"must have at most {_MAX_METRICS} entries")
            continue
        values: dict[str, float] = {}
        for window in list(windows.data):
            if not isinstance(window, str) or check_label_key(window) is not None:
                windows.error(str(window)[:80], "bad key")
                continue
            values[window] = windows.number(window, min=0)
        out[name] = values
    return out


# ---------------------------------------------------------------- node → cloud: own topics


@dataclass(frozen=True, slots=True)
class Capacity(Body):
    """What a node offers (part of ``hello``): CPUs, memory and disk in MiB, battery %,
    and ``slots``, the attempts its agent runs at once (``executor.max_concurrent``;
    ``None`` from an agent that predates it: as many as the cpus allow). Left out of
    the dict when ``None``."""

    TYPE: ClassVar[str] = "capacity"

    cpus: float
    memory_mb: float
    disk_mb: float
    battery_pct: float | None = None
    slots: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "cpus": self.cpus,
            "memory_mb": self.memory_mb,
            "disk_mb": self.disk_mb,
            "battery_pct": self.battery_pct,
        }
        return out if self.slots is None else {**out, "slots": self.slots}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            cpus=f.number("cpus", min=0, exclusive_min=True, max=1e6),
            memory_mb=f.number("memory_mb", min=0),
            disk_mb=f.number("disk_mb", min=0),
            battery_pct=f.opt_number("battery_pct", min=0, max=100),
            slots=f.opt_integer("slots", min=1, max=MAX_SLOTS),
        )


@dataclass(frozen=True, slots=True)
class Hello(Body):
    """Registration, sent on every (re)connect: who the node is and what it offers."""

    TYPE: ClassVar[str] = "hello"

    tier: Tier
    labels: dict[str, str]
    agent_version: str
    protocol_version: int
    capacity: Capacity
    api_port: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tier": str(self.tier),
            "labels": dict(self.labels),
            "agent_version": self.agent_version,
            "protocol_version": self.protocol_version,
            "capacity": self.capacity.to_dict(),
            "api_port": self.api_port,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        tier = f.choice("tier", Tier)
        labels = _labels(f)
        version = f.string("agent_version", max_len=_MAX_VERSION_LEN, non_empty=True)
        protocol_version = f.integer("protocol_version", min=1, max=MAX_INT)
        cap = f.sub("capacity", required=True)
        capacity = Capacity.read(cap) if cap is not None else Capacity(0.0, 0.0, 0.0)
        return cls(
            tier=tier,
            labels=labels,
            agent_version=version,
            protocol_version=protocol_version,
            capacity=capacity,
            api_port=f.opt_integer("api_port", min=1, max=65_535),
        )


@dataclass(frozen=True, slots=True)
class Presence(Body):
    """``online`` (retained, on connect) or ``offline`` (retained; also the last will)."""

    TYPE: ClassVar[str] = "presence"

    status: str

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status}

    @classmethod
    def read(cls, f: Fields) -> Self:
        status = f.string("status", max_len=16)
        if status not in PRESENCE_STATUSES:
            f.error("status", f"must be one of {', '.join(sorted(PRESENCE_STATUSES))}")
        return cls(status=status)


#: Telemetry fields always written; the rest are left out at their defaults (null, the
#: integer 0, no averages), which the reader restores.
_SAMPLE = frozenset({"cpu_pct", "memory_pct", "memory_free_mb", "disk_free_mb", "load"})


def _at_default(value: object) -> bool:
    return value is None or (type(value) is int and value == 0) or value == {}


@dataclass(frozen=True, slots=True)
class Telemetry(Body):
    """A host sample (CPU, memory, disk, battery), the local queue and link statistics
    (QoS 0: a lost one is replaced)."""

    TYPE: ClassVar[str] = "telemetry"

    cpu_pct: float
    memory_pct: float
    memory_free_mb: float
    disk_free_mb: float
    load: tuple[float, float, float]
    battery_pct: float | None = None
    queue_len: int = 0
    running: int = 0
    rtt_ms_p50: float | None = None
    reconnects: int = 0
    averages: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Changes journaled on the node and not yet acknowledged (its outbox), at the sample.
    outbox: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "cpu_pct": self.cpu_pct,
            "memory_pct": self.memory_pct,
            "memory_free_mb": self.memory_free_mb,
            "disk_free_mb": self.disk_free_mb,
            "load": list(self.load),
            "battery_pct": self.battery_pct,
            "queue_len": self.queue_len,
            "running": self.running,
            "rtt_ms_p50": self.rtt_ms_p50,
            "reconnects": self.reconnects,
            "averages": {k: dict(v) for k, v in self.averages.items()},
            "outbox": self.outbox,
        }
        # Optional fields at their defaults are left out (the reader restores them).
        return {k: v for k, v in out.items() if k in _SAMPLE or not _at_default(v)}

    @classmethod
    def read(cls, f: Fields) -> Self:
        load = _number_tuple(f, "load", 3)
        return cls(
            cpu_pct=f.number("cpu_pct", min=0),
            memory_pct=f.number("memory_pct", min=0, max=100),
            memory_free_mb=f.number("memory_free_mb", min=0),
            disk_free_mb=f.number("disk_free_mb", min=0),
            load=(load[0], load[1], load[2]),
            battery_pct=f.opt_number("battery_pct", min=0, max=100),
            queue_len=f.integer("queue_len", 0, min=0, max=MAX_INT),
            running=f.integer("running", 0, min=0, max=MAX_INT),
            rtt_ms_p50=f.opt_number("rtt_ms_p50", min=0),
            reconnects=f.integer("reconnects", 0, min=0, max=MAX_INT),
            averages=_averages(f),
            outbox=f.integer("outbox", 0, min=0, max=MAX_INT),
        )


# ---------------------------------------------------------------- both directions


@dataclass(frozen=True, slots=True)
class Deltas(Body):
    """CRDT deltas (``shared.crdt.TaskRecord``). Up: an outbox batch, with the envelope's
    ``seq`` = the last outbox row in it (the controller acks it cumulatively). Down: what
    anti-entropy found the node lacks. Joins, so duplicates and reordering are harmless."""

    TYPE: ClassVar[str] = "deltas"

    records: tuple[TaskRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        # The compact wire form (shared.crdt.record_to_wire); either form is read back.
        return {"records": [record_to_wire(rec) for rec in self.records]}

    @classmethod
    def read(cls, f: Fields) -> Self:
        items = f.sequence("records", max_items=MAX_DELTAS, required=True) or []
        records: list[TaskRecord] = []
        for index, item in enumerate(items):
            try:
                records.append(record_from_dict(item))
            except ValidationError as exc:
                at = join_path(f.path_of("records"), index)  # paths built for problems only
                f.problems.extend(
                    Problem(join_path(at, p.path) if p.path else at, p.message)
                    for p in exc.problems
                )
        return cls(records=tuple(records))


@dataclass(frozen=True, slots=True)
class Digest(Body):
    """Anti-entropy digest: task id → the summary ``shared.crdt`` makes of its record
    (opaque here). The receiver answers with the full records the sender may lack
    **among the ids the digest covers**.

    A large replica's digest does not fit one message, so it travels in parts (see
    :func:`digest_parts`): each part covers the sorted task ids ``after < id ≤ upto``
    (``None`` is unbounded), and an id in that range but absent from ``entries`` is one
    the sender lacks. A whole digest has both bounds ``None``. Without the bounds a
    receiver would take every id missing from a part as lacking and resend it."""

    TYPE: ClassVar[str] = "digest"

    entries: Mapping[str, str]
    after: str | None = None
    upto: str | None = None

    def covers(self, task_id: str) -> bool:
        """Whether ``task_id`` falls in this part's range."""
        return (self.after is None or task_id > self.after) and (
            self.upto is None or task_id <= self.upto
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entries": dict(self.entries)}
        if self.after is not None:
            out["after"] = self.after
        if self.upto is not None:
            out["upto"] = self.upto
        return out

    @classmethod
    def read(cls, f: Fields) -> Self:
        if not f.has("entries"):
            f.error("entries", "is required")
        entries = f.string_map(
            "entries",
            max_entries=MAX_DIGEST_ENTRIES,
            key_check=check_task_id,
            max_value_len=MAX_DIGEST_VALUE_LEN,
        )
        after = f.opt_string("after", max_len=MAX_TASK_ID_LEN, check=check_task_id)
        upto = f.opt_string("upto", max_len=MAX_TASK_ID_LEN, check=check_task_id)
        if after is not None and upto is not None and after >= upto:
            f.error("after", "must sort before upto")
        digest = cls(entries=entries, after=after, upto=upto)
        outside = [t for t in entries if not digest.covers(t)]
        if outside:
            f.error("entries", f"{len(outside)} id(s) outside after/upto, e.g. {outside[0]!r}")
        return digest


#: Bytes of digest entries per message part: well under ``MAX_MESSAGE_BYTES`` with the
#: envelope and JSON escaping.
DIGEST_PART_BYTES: Final = 96_000


def digest_parts(
    entries: Mapping[str, str],
    *,
    after: str | None = None,
    upto: str | None = None,
    budget: int = DIGEST_PART_BYTES,
) -> list[Digest]:
    """Split a digest of the ids in ``after < id ≤ upto`` (unbounded by default) into
    parts of about ``budget`` bytes whose contiguous ranges cover, together, exactly that
    range. An empty digest is one part: it still says the sender holds nothing there.
    Entries outside the range are a caller bug (``ValueError``)."""
    scope = Digest(entries={}, after=after, upto=upto)
    ids = sorted(entries)
    if any(not scope.covers(t) for t in ids):
        raise ValueError(f"digest entries outside after={after!r} upto={upto!r}")
    parts: list[Digest] = []
    chunk: dict[str, str] = {}
    size = 0
    for task_id in ids:
        n = len(task_id) + len(entries[task_id]) + 6
        if chunk and size + n > budget:
            last = next(reversed(chunk))
            parts.append(Digest(entries=chunk, after=after, upto=last))
            after, chunk, size = last, {}, 0
        chunk[task_id] = entries[task_id]
        size += n
    parts.append(Digest(entries=chunk, after=after, upto=upto))
    return parts


# ---------------------------------------------------------------- node → cloud: up


@dataclass(frozen=True, slots=True)
class LeaseRequest(Body):
    """A strong task's holder asks for (or renews) the lease on ``epoch``; the agent counts
    the deadline from when it sent this (docs/consistency.md). ``request_id`` names this request
    uniquely (``<incarnation>-<n>``, fresh per agent process): the grant echoes it, so a
    grant queued for an earlier request or an earlier process is never taken for this one.
    It reads as ``""`` from a peer that predates it."""

    TYPE: ClassVar[str] = "lease_request"

    task_id: str
    epoch: int
    duration_s: float
    request_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "epoch": self.epoch,
            "duration_s": self.duration_s,
            "request_id": self.request_id,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            task_id=_task_id(f),
            epoch=_epoch(f),
            duration_s=f.number("duration_s", min=0, exclusive_min=True, max=MAX_LEASE_S),
            request_id=_request_id(f),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat(Body):
    """Liveness probe from the node; the controller answers with an ``ack`` whose
    ``heartbeat_id`` is this envelope's id (the agent measures its RTT from it)."""

    TYPE: ClassVar[str] = "heartbeat"

    #: The latest round trip the node measured (of a heartbeat or an outbox batch, to its
    #: ack), in ms: the controller grades the link on it without a ping of its own.
    rtt_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {} if self.rtt_ms is None else {"rtt_ms": self.rtt_ms}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(rtt_ms=f.opt_number("rtt_ms", min=0, max=MAX_RTT_MS))


@dataclass(frozen=True, slots=True)
class Pong(Body):
    """Answer to a controller ``ping``; ``ping_id`` is the ping envelope's id."""

    TYPE: ClassVar[str] = "pong"

    ping_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"ping_id": self.ping_id}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(ping_id=f.string("ping_id", max_len=256, check=check_message_id))


# ---------------------------------------------------------------- cloud → node: down


@dataclass(frozen=True, slots=True)
class Place(Body):
    """Run ``spec`` under ``epoch`` at ``level``. The spec is only checked to be a table
    here: the agent validates it with ``shared.model`` and reports an invalid one as a
    failed attempt. ``inputs`` holds the JSON results of the task's dependencies.
    ``deadline_left_s``: seconds left, when sent, until the task's deadline (its
    ``deadline_s`` counts from its submission; negative once passed; ``None``: no
    deadline, or a controller that does not send it)."""

    TYPE: ClassVar[str] = "place"

    task_id: str
    epoch: int
    spec: dict[str, Any]
    level: Level
    lease_s: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    deadline_left_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "epoch": self.epoch,
            "spec": self.spec,
            "level": str(self.level),
            "lease_s": self.lease_s,
            "inputs": dict(self.inputs),
            "deadline_left_s": self.deadline_left_s,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        task_id = _task_id(f)
        epoch = _epoch(f)
        spec = f.sub("spec", required=True)
        level = f.choice("level", Level)
        lease_s = f.opt_number("lease_s", min=0, exclusive_min=True, max=MAX_LEASE_S)
        inputs: dict[str, Any] = {}
        table = f.sub("inputs")
        if table is not None and table.valid:
            if len(table.data) > MAX_DEPENDS_ON:
                f.error("inputs", f"must have at most {MAX_DEPENDS_ON} entries")
            else:
                for dep, value in table.data.items():
                    if (why := check_task_id(dep)) is not None:
                        table.error(str(dep)[:80], f"bad key: task id {why}")
                    else:
                        inputs[dep] = value
        left = f.opt_number("deadline_left_s", min=-MAX_DEADLINE_S, max=MAX_DEADLINE_S)
        return cls(
            task_id=task_id,
            epoch=epoch,
            spec=dict(spec.data) if spec is not None else {},
            level=level,
            lease_s=lease_s,
            inputs=inputs,
            deadline_left_s=left,
        )


@dataclass(frozen=True, slots=True)
class Cancel(Body):
    """Stop the task's attempt under ``epoch`` (or any, when the task is cancelled)."""

    TYPE: ClassVar[str] = "cancel"

    task_id: str
    epoch: int
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "epoch": self.epoch, "reason": self.reason}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            task_id=_task_id(f),
            epoch=_epoch(f),
            reason=f.string("reason", "", max_len=MAX_REASON_LEN),
        )


@dataclass(frozen=True, slots=True)
class LeaseGrant(Body):
    """Answer to a ``lease_request``: granted for ``duration_s``, or refused with ``reason``
    (fencing: a request for an older epoch than the placement's is refused). ``request_id``
    echoes the request answered; the agent accepts a grant only for an exact match of
    request id, task and epoch among its own outstanding requests (``""`` from a peer that
    predates request ids, which such an agent never accepts)."""

    TYPE: ClassVar[str] = "lease_grant"

    task_id: str
    epoch: int
    granted: bool
    duration_s: float = 0.0
    reason: str | None = None
    request_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "epoch": self.epoch,
            "granted": self.granted,
            "duration_s": self.duration_s,
            "reason": self.reason,
            "request_id": self.request_id,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        granted = f.boolean("granted")
        duration = f.number("duration_s", 0.0, min=0, max=MAX_LEASE_S)
        if granted and duration <= 0:
            f.error("duration_s", "must be > 0 when the lease is granted")
        return cls(
            task_id=_task_id(f),
            epoch=_epoch(f),
            granted=granted,
            duration_s=duration,
            reason=f.opt_string("reason", max_len=MAX_REASON_LEN, non_empty=False),
            request_id=_request_id(f),
        )


@dataclass(frozen=True, slots=True)
class LevelChange(Body):
    """The consistency manager moved the task's level under ``epoch`` (docs/consistency.md)."""

    TYPE: ClassVar[str] = "level_change"

    task_id: str
    epoch: int
    level: Level
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "epoch": self.epoch,
            "level": str(self.level),
            "reason": self.reason,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            task_id=_task_id(f),
            epoch=_epoch(f),
            level=f.choice("level", Level),
            reason=f.string("reason", "", max_len=MAX_REASON_LEN),
        )


@dataclass(frozen=True, slots=True)
class Ack(Body):
    """Cumulative acknowledgement: every ``up`` batch with ``seq`` ≤ ``up_to_seq`` is merged
    and durable at the controller (the agent may drop those outbox rows). Also the answer
    to a heartbeat (``heartbeat_id``). Either field may be null."""

    TYPE: ClassVar[str] = "ack"

    up_to_seq: int | None = None
    heartbeat_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"up_to_seq": self.up_to_seq, "heartbeat_id": self.heartbeat_id}
        return {k: v for k, v in out.items() if v is not None}  # null = absent

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            up_to_seq=f.opt_integer("up_to_seq", min=0, max=MAX_INT),
            heartbeat_id=f.opt_string("heartbeat_id", max_len=256, check=check_message_id),
        )


@dataclass(frozen=True, slots=True)
class Ping(Body):
    """Controller probe of a node's link; the node answers ``pong`` with this envelope's id."""

    TYPE: ClassVar[str] = "ping"

    def to_dict(self) -> dict[str, Any]:
        return {}

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls()


# The live-log bodies subclass Body, so they are defined after it (shared/protocol/_logs.py).
from shared.protocol._logs import LogChunk, LogRequest  # noqa: E402

#: Envelope ``type`` → body class (``capacity`` is nested in ``hello``, never a message).
BODY_TYPES: Final[Mapping[str, type[Body]]] = MappingProxyType(
    {
        cls.TYPE: cls
        for cls in (
            Hello,
            Presence,
            Telemetry,
            Deltas,
            Digest,
            LeaseRequest,
            Heartbeat,
            Pong,
            Place,
            Cancel,
            LeaseGrant,
            LevelChange,
            Ack,
            Ping,
            LogRequest,
            LogChunk,
        )
    }
)
