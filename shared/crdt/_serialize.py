"""Canonical dict form of task records, and its validating parser.

The dict form is the storage and hashing form: absent and default fields are
omitted, attempt dots become ``"writer:counter"`` keys, statuses their lowercase
names, the causal context is ``context`` (the version vector) plus ``dots`` (the
sorted ``"writer:counter"`` events beyond a gap).
``canonical_bytes`` is its sorted-key compact JSON, ``content_hash`` that
hashed, so replicas holding the same state report the same hash.

The *wire* form (:func:`record_to_wire`) carries the same values in fewer bytes,
so that a status-change delta is a small fraction of a full record on the wire:
one-letter keys, an attempt as a positional list with trailing absent values
cut, its status as the integer :class:`AttemptStatus`, and its HLC stamps
without the node when that node is the attempt's writer (the dot key names it).
Hashes never see the wire form: they hash the canonical dict.

``record_from_dict`` is reached by network data (through the protocol
decoder): it reads either form (a dict with ``"i"`` is the wire form), checks
every field, collects every problem with its path, and raises only
:class:`~shared.errors.ValidationError`. The wire form is read directly, in
one pass, into the same checks the canonical form goes through (an attempt's
fields are checked by one function whichever form carried them), so a delta
from the network is decoded and validated once, without an intermediate
canonical dict, and its problems are named by their canonical paths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from shared.clocks import Timestamp, VersionVector
from shared.crdt._canonical import MAX_INT, canonical_json, json_problems, sha256_hex
from shared.crdt._task_record import (
    MAX_REASON_LEN,
    Attempt,
    AttemptLog,
    AttemptStatus,
    Dot,
    Placement,
    TaskRecord,
    compact,
    log_problems,
)
from shared.errors import Problem, ValidationError
from shared.ids import check_node_id, check_task_id
from shared.vocab import Level

__all__ = [
    "MAX_ATTEMPTS_PER_RECORD",
    "MAX_DOTS_PER_RECORD",
    "canonical_bytes",
    "content_hash",
    "record_from_dict",
    "record_to_wire",
]

#: Bound on attempts accepted from untrusted input.
MAX_ATTEMPTS_PER_RECORD = 1_000
#: Bound on context dots (events beyond a gap) accepted from untrusted input.
MAX_DOTS_PER_RECORD = 4_096

_NO_CONTEXT = VersionVector()
_NO_DOTS: frozenset[Dot] = frozenset()
_STATUS_BY_NAME = {status.name.lower(): status for status in AttemptStatus}
_STATUS_NAME = {status: name for name, status in _STATUS_BY_NAME.items()}
_LEVELS = frozenset(str(level) for level in Level)
_COUNTER = re.compile(r"[1-9][0-9]{0,17}")


def record_to_dict(rec: TaskRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rec.task_id}
    if rec.context:
        out["context"] = rec.context.to_dict()
    if rec.dots:
        out["dots"] = [f"{writer}:{counter}" for writer, counter in sorted(rec.dots)]
    if rec.spec is not None:
        out["spec"] = rec.spec
    placement = rec.placement
    if placement is not None:
        p: dict[str, Any] = {
            "epoch": placement.epoch,
            "node": placement.node,
            "level": placement.level,
            "hlc": placement.hlc,
        }
        if placement.lease_s is not None:
            p["lease_s"] = placement.lease_s
        out["placement"] = p
    if rec.attempts:
        out["attempts"] = {
            f"{writer}:{counter}": _attempt_to_dict(writer, attempt)
            for (writer, counter), attempt in rec.attempts.items()
        }
    if rec.cancel_requested:
        out["cancel"] = True
    return out


def _attempt_to_dict(writer: str, attempt: Attempt) -> dict[str, Any]:
    out: dict[str, Any] = {
        "epoch": attempt.epoch,
        "status": _STATUS_NAME[attempt.status],
        "hlc": attempt.hlc,
    }
    if attempt.node != writer:
        out["node"] = attempt.node
    # Unrolled (every stored row encodes each attempt of its record).
    if attempt.exit_code is not None:
        out["exit_code"] = attempt.exit_code
    if attempt.result is not None:
        out["result"] = attempt.result
    if attempt.reason is not None:
        out["reason"] = attempt.reason
    if attempt.started_hlc is not None:
        out["started_hlc"] = attempt.started_hlc
    if attempt.log is not None:
        # Empty tails and zero counts are left out: most tails are one stream.
        out["log"] = {key: value for key, value in attempt.log._asdict().items() if value}
    return out


# Positions of an attempt's fields in its wire list (``node`` only when not the writer).
_ATTEMPT_WIRE = (
    "epoch",
    "status",
    "hlc",
    "started_hlc",
    "exit_code",
    "result",
    "reason",
    "log",
    "node",
)
_WIRE_STAMPS = (2, 3)  # the positions holding HLC stamps
_STATUS_BY_CODE = {int(status): name for status, name in _STATUS_NAME.items()}


def record_to_wire(rec: TaskRecord) -> dict[str, Any]:
    """The compact wire form of ``rec`` (module docstring); ``record_from_dict`` reads it
    back to an equal record."""
    canonical = record_to_dict(rec)
    out: dict[str, Any] = {"i": rec.task_id}
    for key, short in (("context", "c"), ("dots", "d"), ("spec", "s")):
        if key in canonical:
            out[short] = canonical[key]
    placement = rec.placement
    if placement is not None:
        p = [placement.epoch, placement.node, placement.level, placement.hlc]
        out["p"] = p if placement.lease_s is None else [*p, placement.lease_s]
    if rec.attempts:
        out["a"] = {
            key: _attempt_to_wire(key.rpartition(":")[0], attempt)
            for key, attempt in canonical["attempts"].items()
        }
    if rec.cancel_requested:
        out["x"] = 1
    return out


def _attempt_to_wire(writer: str, attempt: dict[str, Any]) -> list[Any]:
    values = [attempt.get(key) for key in _ATTEMPT_WIRE]
    values[1] = int(_STATUS_BY_NAME[values[1]])
    values[3] = _started_offset(values[2], values[3], writer)
    for at in _WIRE_STAMPS:
        if isinstance(values[at], str):
            values[at] = _short_stamp(values[at], writer)
    while values[-1] is None:
        values.pop()
    return values


def _short_stamp(hlc: str, writer: str) -> str:
    """``wall.logical.writer`` as ``wall`` (logical 0) or ``wall.logical``; a stamp of
    another node stays whole."""
    wall, logical, node = hlc.split(".", 2)
    if node != writer:
        return hlc
    return wall if logical == "0" else f"{wall}.{logical}"


def _started_offset(hlc: str, started: str | None, writer: str) -> str | int | None:
    """``started_hlc`` as the milliseconds before ``hlc`` when it is the writer's stamp
    with logical 0 (a run's length is shorter than a stamp); else the stamp itself."""
    if started is None:
        return None
    wall, logical, node = started.split(".", 2)
    if node != writer or logical != "0":
        return started
    offset = int(hlc.split(".", 1)[0], 16) - int(wall, 16)
    return offset if offset >= 0 else started


def _record_from_wire(data: dict[str, Any]) -> TaskRecord:
    """Read a wire-form record (``record_to_wire``) straight into the checks of the
    canonical reader: same values, same problems and paths, no canonical dict built."""
    placement = data.get("p")
    if isinstance(placement, list) and 4 <= len(placement) <= 5:
        placement = dict(zip(("epoch", "node", "level", "hlc", "lease_s"), placement, strict=False))
    attempts = data.get("a")
    cancel = data.get("x", 0)
    return _record(
        data.get("i"),
        data.get("c", {}),
        data.get("d", []),
        data.get("s"),
        placement,
        ({} if attempts is None else attempts, _wire_attempt),
        cancel == 1 if type(cancel) is int and cancel in (0, 1) else cancel,
    )


def _wire_attempt(
    value: object, writer: str, counter: int, path: str, problems: list[Problem]
) -> Attempt | None:
    """One wire attempt (a positional list; a canonical object is read as such), its
    values restored as ``_attempt_to_wire`` shortened them, then checked."""
    if not isinstance(value, list) or not 3 <= len(value) <= len(_ATTEMPT_WIRE):
        return _parse_attempt(value, writer, counter, path, problems)
    epoch, status, hlc, started, exit_code, result, reason, log, node = (
        *value,
        *(None,) * (len(_ATTEMPT_WIRE) - len(value)),
    )
    if type(status) is int:
        status = _STATUS_BY_CODE.get(status, status)
    hlc, started = _full_stamp(hlc, writer), _full_stamp(started, writer)
    if type(started) is int and 0 <= started <= MAX_INT and isinstance(hlc, str):
        wall = _wall_ms(hlc)
        if wall is not None and wall >= started:
            started = f"{wall - started:x}.0.{writer}"
    return _check_attempt(
        writer,
        writer if node is None else node,
        counter,
        (epoch, status, hlc, exit_code, result, reason, started, log),
        path,
        problems,
    )


def _full_stamp(stamp: object, writer: str) -> object:
    """A stamp as ``_short_stamp`` wrote it, whole again (anything else as it is)."""
    if isinstance(stamp, str) and stamp.count(".") < 2:
        wall, _, logical = stamp.partition(".")
        return f"{wall}.{logical or '0'}.{writer}"
    return stamp


def _wall_ms(hlc: str) -> int | None:
    """The wall clock of an encoded stamp (``None`` if it has none: the parser then
    reports the stamp itself)."""
    wall = hlc.partition(".")[0]
    try:
        return int(wall, 16) if len(wall) <= 16 else None
    except ValueError:
        return None


def canonical_bytes(rec: TaskRecord, spec_json: str | None = None) -> bytes:
    """Sorted-key compact JSON of ``rec.to_dict()`` (ASCII).

    ``spec_json``, when given, must be ``canonical_json(rec.spec)``: a holder of
    the record that kept its spec's encoding (the spec never changes, see
    ``shared/crdt/_task_record.py``) passes it, and it is spliced in instead of
    re-encoded, the same bytes at a fraction of the cost (the spec is most of a
    record). The splice needs ``"spec"`` to sort after every other key of the
    dict form (it is then the last member of the object): checked, and a key
    sorting after it (none does today) gets the full encoding.
    """
    if spec_json is None or rec.spec is None:
        return canonical_json(record_to_dict(rec)).encode("ascii")
    rest = record_to_dict(rec)
    del rest["spec"]
    if max(rest) > "spec":
        return canonical_json(record_to_dict(rec)).encode("ascii")
    return f'{canonical_json(rest)[:-1]},"spec":{spec_json}}}'.encode("ascii")


def content_hash(rec: TaskRecord) -> str:
    """Hex SHA-256 of :func:`canonical_bytes`: equal states, equal hashes."""
    return sha256_hex(canonical_json(record_to_dict(rec)))


# ---------------------------------------------------------------- parsing


def record_from_dict(data: object) -> TaskRecord:
    if isinstance(data, dict) and "i" in data and "id" not in data:
        return _record_from_wire(data)
    if not isinstance(data, dict):
        raise ValidationError(
            [Problem("", f"must be an object, not {type(data).__name__}")], what="task record"
        )
    return _record(
        data.get("id"),
        data.get("context", {}),
        data.get("dots", []),
        data.get("spec"),
        data.get("placement"),
        (data.get("attempts", {}), _parse_attempt),
        data.get("cancel", False),
    )


#: Reads one attempt of a form: (value, writer, counter, path, problems) -> the attempt.
_AttemptReader = Callable[[object, str, int, str, list[Problem]], "Attempt | None"]


def _record(
    task_id: object,
    context_data: object,
    dots_data: object,
    spec: object,
    placement_data: object,
    attempts_data: tuple[object, _AttemptReader],
    cancel: object,
) -> TaskRecord:
    """Check every field (either form: ``attempts_data`` pairs the attempt map with its
    form's reader) and build the record, or raise with every problem."""
    problems: list[Problem] = []
    why = check_task_id(task_id)
    if why is not None:
        problems.append(Problem("id", f"task id {why}"))

    context = _NO_CONTEXT
    if type(context_data) is not dict or context_data:  # a delta: a context or a dot
        try:
            context = VersionVector.from_dict(context_data, path="context")
        except ValidationError as exc:
            problems.extend(exc.problems)
    dots = (
        _NO_DOTS if type(dots_data) is list and not dots_data else _parse_dots(dots_data, problems)
    )

    if spec is not None:
        if not isinstance(spec, dict):
            problems.append(Problem("spec", "must be an object or null"))
        else:
            problems.extend(json_problems(spec, "spec"))
            if spec.get("id") != task_id:
                problems.append(Problem("spec.id", "must equal the record's id"))

    placement = _parse_placement(placement_data, problems)
    attempts = _parse_attempts(*attempts_data, problems)

    if not isinstance(cancel, bool):
        problems.append(Problem("cancel", "must be a boolean"))

    if problems:
        raise ValidationError(problems, what="task record")
    assert isinstance(task_id, str)
    context, compact_dots = compact(context, dots)
    return TaskRecord(task_id, spec, placement, attempts, cancel, context, compact_dots)  # type: ignore[arg-type]


def _parse_dot(text: object) -> Dot | None:
    if not isinstance(text, str):
        return None
    writer, _, counter = text.partition(":")
    if check_node_id(writer) is not None or not _COUNTER.fullmatch(counter):
        return None
    return writer, int(counter)


def _parse_dots(data: object, problems: list[Problem]) -> frozenset[Dot]:
    if not isinstance(data, list):
        problems.append(Problem("dots", "must be a list"))
        return frozenset()
    if len(data) > MAX_DOTS_PER_RECORD:
        problems.append(Problem("dots", f"at most {MAX_DOTS_PER_RECORD} dots"))
        return frozenset()
    dots: set[Dot] = set()
    for i, item in enumerate(data):
        dot = _parse_dot(item)
        if dot is None:
            problems.append(Problem(f"dots[{i}]", "must be '<writer node id>:<counter >= 1>'"))
        else:
            dots.add(dot)
    return frozenset(dots)


def _int_problem(value: object, minimum: int) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "must be an integer"
    if not minimum <= value <= MAX_INT:
        return f"must be between {minimum} and {MAX_INT}"
    return None


def _hlc_problem(value: object) -> str | None:
    try:
        Timestamp.decode(value)  # type: ignore[arg-type]
    except ValueError:
        return "must be an encoded HLC timestamp"
    return None


def _parse_placement(data: object, problems: list[Problem]) -> Placement | None:
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(Problem("placement", "must be an object or null"))
        return None
    before = len(problems)
    epoch, node, level = data.get("epoch"), data.get("node"), data.get("level")
    lease_s, hlc = data.get("lease_s"), data.get("hlc")
    if (why := _int_problem(epoch, 0)) is not None:
        problems.append(Problem("placement.epoch", why))
    if (why := check_node_id(node)) is not None:
        problems.append(Problem("placement.node", f"node id {why}"))
    if not isinstance(level, str) or level not in _LEVELS:
        problems.append(Problem("placement.level", f"must be one of {sorted(_LEVELS)}"))
    if lease_s is not None and (
        not isinstance(lease_s, int | float)
        or isinstance(lease_s, bool)
        or not math.isfinite(lease_s)
        or lease_s < 0
    ):
        problems.append(Problem("placement.lease_s", "must be a finite number >= 0 or null"))
    if (why := _hlc_problem(hlc)) is not None:
        problems.append(Problem("placement.hlc", why))
    if len(problems) > before:
        return None
    return Placement(epoch, node, level, None if lease_s is None else float(lease_s), hlc)  # type: ignore[arg-type]


def _parse_attempts(
    data: object, read: _AttemptReader, problems: list[Problem]
) -> MappingProxyType[Dot, Attempt]:
    if not isinstance(data, dict):
        problems.append(Problem("attempts", "must be an object"))
        return MappingProxyType({})
    if len(data) > MAX_ATTEMPTS_PER_RECORD:
        problems.append(Problem("attempts", f"at most {MAX_ATTEMPTS_PER_RECORD} attempts"))
        return MappingProxyType({})
    attempts: dict[Dot, Attempt] = {}
    for key, value in data.items():
        path = f"attempts.{str(key)[:80]}"
        dot = _parse_dot(key)
        if dot is None:
            problems.append(Problem(path, "key must be '<writer node id>:<counter >= 1>'"))
            continue
        writer, counter = dot
        attempt = read(value, writer, counter, path, problems)
        if attempt is not None:
            attempts[dot] = attempt
    return MappingProxyType(attempts)


def _parse_attempt(
    data: object, writer: str, counter: int, path: str, problems: list[Problem]
) -> Attempt | None:
    """One attempt in the canonical form (an object)."""
    if not isinstance(data, dict):
        problems.append(Problem(path, "must be an object"))
        return None
    fields = (
        data.get("epoch"),
        data.get("status"),
        data.get("hlc"),
        data.get("exit_code"),
        data.get("result"),
        data.get("reason"),
        data.get("started_hlc"),
        data.get("log"),
    )
    return _check_attempt(writer, data.get("node", writer), counter, fields, path, problems)


def _check_attempt(
    writer: str,
    node: object,
    counter: int,
    fields: tuple[object, object, object, object, object, object, object, object],
    path: str,
    problems: list[Problem],
) -> Attempt | None:
    """The attempt of dot ``(writer, counter)`` run by ``node`` from its ``fields``
    (epoch, status name, hlc, exit code, result, reason, started hlc, log), whichever
    form carried them; ``None`` with every problem added to ``problems``. ``writer``
    was checked with the dot's key: ``node`` is checked only when it is another."""
    epoch, status, hlc, exit_code, result, reason, started, log_data = fields
    before = len(problems)
    if node is not writer and (why := check_node_id(node)) is not None:
        problems.append(Problem(f"{path}.node", f"node id {why}"))
    if (why := _int_problem(epoch, 0)) is not None:
        problems.append(Problem(f"{path}.epoch", why))
    if not isinstance(status, str) or status not in _STATUS_BY_NAME:
        problems.append(Problem(f"{path}.status", f"must be one of {list(_STATUS_BY_NAME)}"))
    if (why := _hlc_problem(hlc)) is not None:
        problems.append(Problem(f"{path}.hlc", why))
    if exit_code is not None and (why := _int_problem(exit_code, -MAX_INT)) is not None:
        problems.append(Problem(f"{path}.exit_code", why))
    if result is not None:
        problems.extend(json_problems(result, f"{path}.result"))
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LEN):
        problems.append(
            Problem(f"{path}.reason", f"must be a string of at most {MAX_REASON_LEN} chars")
        )
    if started is not None and (why := _hlc_problem(started)) is not None:
        problems.append(Problem(f"{path}.started_hlc", why))
    log = _parse_log(log_data, f"{path}.log", problems)
    if len(problems) > before:
        return None
    return Attempt(
        node,  # type: ignore[arg-type]
        counter,
        epoch,  # type: ignore[arg-type]
        _STATUS_BY_NAME[status],  # type: ignore[index]
        hlc,  # type: ignore[arg-type]
        exit_code,  # type: ignore[arg-type]
        result,
        reason,  # type: ignore[arg-type]
        started,  # type: ignore[arg-type]
        log,
    )


def _parse_log(data: object, path: str, problems: list[Problem]) -> AttemptLog | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not set(data) <= set(AttemptLog._fields):
        problems.append(Problem(path, f"must be an object with keys in {AttemptLog._fields}"))
        return None
    log = AttemptLog(**data)
    found = log_problems(log, path)
    problems.extend(found)
    return None if found else log
