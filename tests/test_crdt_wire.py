"""The compact wire form of task records (``shared.crdt.record_to_wire``) and of envelope
stamps: it decodes back to the same values, hashes are those of the canonical form, the
older canonical form still decodes, and junk in the wire shape fails only with a
ValidationError."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shared.clocks import Timestamp
from shared.crdt import AttemptStatus, TaskRecord, content_hash, record_to_wire
from shared.errors import ValidationError
from shared.protocol import Deltas, Envelope, decode, encode
from shared.vocab import Level

NODES = st.sampled_from(["n1", "n2", "edge.7", "cloud"])
STAMPS = st.builds(
    lambda wall, logical, node: Timestamp(wall, logical, node).encode(),
    st.integers(0, 2**48),
    st.integers(0, 2**16),
    NODES,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def attempts(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "epoch": draw(st.integers(0, 2**63 - 1)),
        "status": draw(st.sampled_from([s.name.lower() for s in AttemptStatus])),
        "hlc": draw(STAMPS),
    }
    optional = {
        "node": NODES,
        "started_hlc": STAMPS,
        "exit_code": st.integers(-(2**63) + 1, 2**63 - 1),
        "result": JSON,
        "reason": st.text(max_size=20),
        "log": st.fixed_dictionaries(
            {}, optional={"stdout": st.text(max_size=10), "stderr_bytes": st.integers(0, 99)}
        ),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            out[key] = draw(values)
    return out


@st.composite
def records(draw: st.DrawFn) -> TaskRecord:
    task_id = draw(st.sampled_from(["t1", "job-00042"]))
    data: dict[str, Any] = {"id": task_id}
    if draw(st.booleans()):
        data["context"] = draw(st.dictionaries(NODES, st.integers(1, 2**40), max_size=3))
    if draw(st.booleans()):
        data["dots"] = [
            f"{node}:{n}"
            for node, n in draw(st.lists(st.tuples(NODES, st.integers(1, 99)), max_size=3))
        ]
    if draw(st.booleans()):
        data["spec"] = {"id": task_id, "command": ["true"], "x": draw(JSON)}
    if draw(st.booleans()):
        data["placement"] = {
            "epoch": draw(st.integers(0, 2**40)),
            "node": draw(NODES),
            "level": draw(st.sampled_from([str(level) for level in Level])),
            "hlc": draw(STAMPS),
        }
        if draw(st.booleans()):
            data["placement"]["lease_s"] = draw(st.floats(0, 1e6))
    keys = draw(st.lists(st.tuples(NODES, st.integers(1, 50)), max_size=3, unique=True))
    data["attempts"] = {f"{node}:{n}": draw(attempts()) for node, n in keys}
    data["cancel"] = draw(st.booleans())
    try:
        return TaskRecord.from_dict(data)
    except ValidationError:
        assume(False)
        raise


@settings(max_examples=300, deadline=None)
@given(records())
def test_wire_form_round_trips_to_the_same_record_and_hash(rec: TaskRecord) -> None:
    wire = json.loads(json.dumps(record_to_wire(rec)))
    back = TaskRecord.from_dict(wire)
    assert back == rec
    assert content_hash(back) == content_hash(rec)
    # The canonical (older) form still decodes to the same record.
    assert TaskRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), max_size=4), st.integers(0, 2**40), st.integers(0, 9), NODES)
def test_envelopes_round_trip_in_both_forms(
    recs: list[TaskRecord], wall: int, logical: int, sender: str
) -> None:
    env = Envelope(
        type="deltas",
        id="m1",
        sender=sender,
        hlc=Timestamp(wall, logical, sender).encode(),
        body=Deltas(records=tuple(recs)),
        seq=3,
    )
    payload = encode(env)
    assert json.loads(payload)["hlc"] == f"{wall:x}.{logical:x}"  # no repeated node id
    assert decode(payload) == env
    old = {
        "v": 1,
        "type": "deltas",
        "id": "m1",
        "from": sender,
        "hlc": env.hlc,
        "seq": 3,
        "body": {"records": [rec.to_dict() for rec in recs]},
    }
    assert decode(json.dumps(old).encode()) == env


WIRE_JUNK = st.fixed_dictionaries(
    {"i": st.sampled_from(["t1", 3, None])},
    optional={
        "c": JSON,
        "d": JSON,
        "s": JSON,
        "p": st.lists(JSON | STAMPS, max_size=6),
        "a": st.dictionaries(
            st.sampled_from(["n1:1", "bad", "n2:x"]),
            st.lists(st.integers(-2, 9) | STAMPS | JSON, max_size=10) | JSON,
            max_size=2,
        ),
        "x": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(WIRE_JUNK)
def test_wire_junk_raises_only_validation_error(data: dict[str, Any]) -> None:
    try:
        rec = TaskRecord.from_dict(data)
    except ValidationError:
        return
    assert TaskRecord.from_dict(json.loads(json.dumps(record_to_wire(rec)))) == rec


# The wire form's meaning, spelled as the translation to the canonical form it
# replaced (the reader used to build this dict, then read it): the reference model the
# direct wire reader must agree with, value for value and problem for problem.
_ATTEMPT_KEYS = ("epoch", "status", "hlc", "started_hlc", "exit_code", "result", "reason")
_ATTEMPT_KEYS += ("log", "node")
_STATUS_NAMES = {int(s): s.name.lower() for s in AttemptStatus}


def _canonical_of_wire(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": data.get("i")}
    for short, key in (("c", "context"), ("d", "dots"), ("s", "spec")):
        if short in data:
            out[key] = data[short]
    placement = data.get("p")
    if isinstance(placement, list) and 4 <= len(placement) <= 5:
        names = ("epoch", "node", "level", "hlc", "lease_s")
        out["placement"] = dict(zip(names, placement, strict=False))
    elif placement is not None:
        out["placement"] = placement
    attempts = data.get("a")
    if isinstance(attempts, dict):
        out["attempts"] = {key: _canonical_attempt(key, value) for key, value in attempts.items()}
    elif attempts is not None:
        out["attempts"] = attempts
    cancel = data.get("x", 0)
    out["cancel"] = cancel == 1 if type(cancel) is int and cancel in (0, 1) else cancel
    return out


def _canonical_attempt(key: str, value: object) -> object:
    if not isinstance(value, list) or not 3 <= len(value) <= len(_ATTEMPT_KEYS):
        return value
    writer = key.partition(":")[0]
    attempt = {k: v for k, v in zip(_ATTEMPT_KEYS, value, strict=False) if v is not None}
    if type(attempt.get("status")) is int:
        attempt["status"] = _STATUS_NAMES.get(attempt["status"], attempt["status"])
    for name in ("hlc", "started_hlc"):
        stamp = attempt.get(name)
        if isinstance(stamp, str) and stamp.count(".") < 2:
            wall, _, logical = stamp.partition(".")
            attempt[name] = f"{wall}.{logical or '0'}.{writer}"
    started, hlc = attempt.get("started_hlc"), attempt.get("hlc")
    if type(started) is int and 0 <= started < 2**63 and isinstance(hlc, str):
        wall_hex = hlc.partition(".")[0]
        try:
            wall = int(wall_hex, 16) if len(wall_hex) <= 16 else None
        except ValueError:
            wall = None
        if wall is not None and wall >= started:
            attempt["started_hlc"] = f"{wall - started:x}.0.{writer}"
    return attempt


def _outcome(data: object) -> object:
    try:
        return TaskRecord.from_dict(data)
    except ValidationError as exc:
        return exc.problems


@settings(max_examples=400, deadline=None)
@given(WIRE_JUNK | records().map(lambda rec: json.loads(json.dumps(record_to_wire(rec)))))
def test_the_wire_reader_agrees_with_the_canonical_reader(data: dict[str, Any]) -> None:
    """Read directly (one pass, no canonical dict), a wire record gives the record, or
    the problems with their canonical paths, that its canonical translation gives."""
    assert _outcome(data) == _outcome(_canonical_of_wire(data))


def test_a_status_delta_is_under_a_tenth_of_the_full_record_on_the_wire() -> None:
    """The figure benchmarks/bench_crdt.py reports, on a small record."""
    stamp = "19ace6f6c06.0.edge-2"
    delta = TaskRecord.from_dict(
        {
            "id": "job-1",
            "dots": ["edge-2:2"],
            "attempts": {
                "edge-2:1": {
                    "epoch": 2,
                    "status": "succeeded",
                    "hlc": stamp,
                    "started_hlc": "19ace6f6c05.0.edge-2",
                    "exit_code": 0,
                }
            },
        }
    )
    wire = json.dumps(record_to_wire(delta), separators=(",", ":"))
    assert wire == '{"i":"job-1","d":["edge-2:2"],"a":{"edge-2:1":[2,5,"19ace6f6c06",1,0]}}'
