"""Property tests of the codec: valid messages round-trip; any input, however broken, is
either a valid envelope or a ``RemoteProtocolError`` — never another exception."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clocks import HybridClock
from shared.crdt import new_record
from shared.errors import RemoteProtocolError, ValidationError
from shared.ids import MAX_NODE_ID_LEN
from shared.protocol import (
    ALLOWED_TYPES,
    BODY_TYPES,
    LOG_STREAMS,
    MAX_LOG_CHUNK,
    NODE_KINDS,
    Ack,
    Body,
    Cancel,
    Capacity,
    Deltas,
    Digest,
    Envelope,
    Heartbeat,
    Hello,
    LeaseGrant,
    LeaseRequest,
    LevelChange,
    LogChunk,
    LogRequest,
    Ping,
    Place,
    Pong,
    Presence,
    Telemetry,
    TopicKind,
    decode,
    decode_from,
    encode,
    parse_topic,
    topic,
)
from shared.vocab import Level, Tier

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ID_HEAD = string.ascii_letters + string.digits
node_ids = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(_ID_HEAD),
    st.text(_ID_HEAD + "._-", max_size=MAX_NODE_ID_LEN - 1),
)
task_ids = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(_ID_HEAD),
    st.text(_ID_HEAD + "._:-", max_size=40),
)
epochs = st.integers(0, 2**63 - 1)
reasons = st.text(max_size=60)
sizes = st.floats(0, 1e12, allow_nan=False)
pcts = st.floats(0, 100, allow_nan=False)
leases = st.floats(0.001, 86_400, allow_nan=False)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

_CLOCK = HybridClock("n1")
_RECORD = new_record(
    "t1", {"id": "t1", "command": ["true"]}, writer="n1", hlc=_CLOCK.now(1_700_000_000_000)
)

bodies: dict[str, st.SearchStrategy[Body]] = {
    "hello": st.builds(
        Hello,
        tier=st.sampled_from(Tier),
        labels=st.dictionaries(
            st.text("abc./-", min_size=1, max_size=5).map(lambda s: "k" + s),
            st.text(max_size=10),
            max_size=3,
        ),
        agent_version=st.text(min_size=1, max_size=64),
        protocol_version=st.integers(1, 10),
        capacity=st.builds(
            Capacity,
            cpus=st.floats(0.01, 1e6, allow_nan=False),
            memory_mb=sizes,
            disk_mb=sizes,
            battery_pct=st.none() | pcts,
        ),
        api_port=st.none() | st.integers(1, 65_535),
    ),
    "presence": st.builds(Presence, status=st.sampled_from(["online", "offline"])),
    "telemetry": st.builds(
        Telemetry,
        cpu_pct=sizes,
        memory_pct=pcts,
        memory_free_mb=sizes,
        disk_free_mb=sizes,
        load=st.tuples(sizes, sizes, sizes),
        battery_pct=st.none() | pcts,
        queue_len=st.integers(0, 10**6),
        running=st.integers(0, 10**6),
        rtt_ms_p50=st.none() | sizes,
        reconnects=st.integers(0, 10**6),
        outbox=st.integers(0, 10**6),
        averages=st.dictionaries(
            st.sampled_from(["cpu_pct", "memory_pct"]),
            st.dictionaries(st.sampled_from(["1m", "5m", "15m"]), pcts),
        ),
    ),
    "deltas": st.lists(st.just(_RECORD), max_size=3).map(lambda r: Deltas(records=tuple(r))),
    "digest": st.builds(
        Digest, entries=st.dictionaries(task_ids, st.text(max_size=30), max_size=8)
    ),
    "lease_request": st.builds(LeaseRequest, task_id=task_ids, epoch=epochs, duration_s=leases),
    "heartbeat": st.just(Heartbeat()),
    "pong": st.builds(Pong, ping_id=task_ids),
    "place": st.builds(
        Place,
        task_id=task_ids,
        epoch=epochs,
        spec=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
        level=st.sampled_from(Level),
        lease_s=st.none() | leases,
        inputs=st.dictionaries(task_ids, json_values, max_size=3),
    ),
    "cancel": st.builds(Cancel, task_id=task_ids, epoch=epochs, reason=reasons),
    "lease_grant": st.one_of(
        st.builds(
            LeaseGrant,
            task_id=task_ids,
            epoch=epochs,
            granted=st.just(True),
            duration_s=leases,
            reason=st.none() | reasons,
        ),
        st.builds(
            LeaseGrant,
            task_id=task_ids,
            epoch=epochs,
            granted=st.just(False),
            duration_s=st.just(0.0),
            reason=st.none() | reasons,
        ),
    ),
    "level_change": st.builds(
        LevelChange, task_id=task_ids, epoch=epochs, level=st.sampled_from(Level), reason=reasons
    ),
    "ack": st.builds(Ack, up_to_seq=st.none() | epochs, heartbeat_id=st.none() | task_ids),
    "ping": st.just(Ping()),
    "log_request": st.builds(
        LogRequest,
        request_id=task_ids,
        task_id=task_ids,
        attempt=node_ids.map(lambda n: f"{n}:1"),
        stream=st.sampled_from(LOG_STREAMS),
        offset=epochs,
        max_bytes=st.integers(1, MAX_LOG_CHUNK),
    ),
    "log_chunk": st.builds(
        LogChunk,
        request_id=task_ids,
        task_id=task_ids,
        attempt=node_ids.map(lambda n: f"{n}:1"),
        stream=st.sampled_from(LOG_STREAMS),
        running=st.booleans(),
        text=st.text(max_size=40),
        offset=st.just(0),
        next_offset=st.integers(0, 40),
        total=st.just(40),
    ),
}


@st.composite
def envelopes(draw: st.DrawFn) -> Envelope:
    type_ = draw(st.sampled_from(sorted(BODY_TYPES)))
    sender = draw(node_ids)
    hlc = HybridClock(sender).now(draw(st.integers(0, 2**52))).encode()
    return Envelope(
        type=type_,
        id=draw(task_ids),
        sender=sender,
        hlc=hlc,
        body=draw(bodies[type_]),
        seq=draw(st.none() | epochs),
    )


def test_strategies_cover_every_body() -> None:
    assert set(bodies) == set(BODY_TYPES)


def _decode_or_reject(payload: object, topic_name: str | None = None) -> Envelope | None:
    try:
        return decode(payload) if topic_name is None else decode_from(topic_name, payload)
    except RemoteProtocolError as exc:
        assert exc.reason in {
            "too_large",
            "not_json",
            "too_deep",
            "bad_version",
            "unknown_type",
            "invalid",
            "bad_topic",
            "wrong_topic",
            "sender_mismatch",
        }
        # The codec's catch-all keeps a shell alive if a reader has a bug; the fuzzer must
        # never reach it (every rejection is a deliberate one).
        assert not str(exc).startswith("undecodable message"), exc
        return None


# ---------------------------------------------------------------- valid messages


@FUZZ
@given(envelopes())
def test_valid_envelopes_round_trip(env: Envelope) -> None:
    assert decode(encode(env)) == env


@FUZZ
@given(envelopes(), st.sampled_from(list(TopicKind)))
def test_decode_from_accepts_exactly_the_allowed_types(env: Envelope, kind: TopicKind) -> None:
    payload = encode(env)
    name = topic(env.sender, kind)
    if env.type in ALLOWED_TYPES[kind]:
        assert decode_from(name, payload) == env
    else:
        assert _decode_or_reject(payload, name) is None


# ---------------------------------------------------------------- hostile input


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_raise_only_remote_protocol_error(payload: bytes) -> None:
    _decode_or_reject(payload)
    _decode_or_reject(payload, "continuum/v1/nodes/n1/up")


@FUZZ
@given(json_values)
def test_random_json_raises_only_remote_protocol_error(value: Any) -> None:
    _decode_or_reject(json.dumps(value).encode())


@st.composite
def envelope_shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A document with a plausible header and a body whose known field names carry
    random JSON values: reaches deep into every body reader."""
    type_ = draw(st.sampled_from(sorted(BODY_TYPES)))
    known = sorted(
        {
            "task_id",
            "epoch",
            "records",
            "entries",
            "capacity",
            "load",
            "averages",
            "spec",
            "inputs",
            "level",
            "granted",
            "duration_s",
            "reason",
            "status",
            "up_to_seq",
            "heartbeat_id",
            "ping_id",
            "tier",
            "labels",
            "cpus",
        }
    )
    body = draw(
        st.dictionaries(st.sampled_from(known) | st.text(max_size=6), json_values, max_size=8)
    )
    if type_ == "deltas" and draw(st.booleans()):
        body["records"] = draw(
            st.lists(
                st.dictionaries(
                    st.sampled_from(["id", "spec", "placement", "attempts", "cancel", "context"]),
                    json_values,
                    max_size=6,
                ),
                max_size=3,
            )
        )
    doc: dict[str, Any] = {
        "v": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "type": type_,
        "id": draw(task_ids | json_values),
        "from": "n1",
        "hlc": draw(st.sampled_from(["18bcfe56800.0.n1", "18bcfe56800.0.n2", "x"]) | json_values),
        "body": body,
    }
    if draw(st.booleans()):
        doc["seq"] = draw(json_values)
    return doc


@FUZZ
@given(envelope_shaped())
def test_envelope_shaped_garbage_raises_only_remote_protocol_error(doc: dict[str, Any]) -> None:
    _decode_or_reject(json.dumps(doc).encode(), "continuum/v1/nodes/n1/up")


@FUZZ
@given(envelopes(), st.data())
def test_mutated_valid_messages_raise_only_remote_protocol_error(
    env: Envelope, data: st.DataObject
) -> None:
    payload = bytearray(encode(env))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "flip" and at < len(payload):
            payload[at] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            payload[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del payload[at : at + data.draw(st.integers(1, 8))]
        else:
            del payload[at:]
    _decode_or_reject(bytes(payload), topic(env.sender, "up"))


@FUZZ
@given(
    st.sampled_from(sorted(BODY_TYPES)),
    json_values | st.tuples(json_values) | st.sets(st.integers()),
)
def test_body_from_dict_raises_only_validation_error(type_: str, value: Any) -> None:
    with contextlib.suppress(ValidationError):
        BODY_TYPES[type_].from_dict(value)


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=50) | st.none() | st.integers())
def test_random_topics_raise_only_remote_protocol_error(name: Any) -> None:
    try:
        node_id, kind = parse_topic(name)
    except RemoteProtocolError as exc:
        assert exc.reason == "bad_topic"
        return
    assert topic(node_id, kind) == name


@FUZZ
@given(node_ids, st.sampled_from(list(TopicKind)))
def test_topic_round_trip(node_id: str, kind: TopicKind) -> None:
    name = topic(node_id, kind)
    assert parse_topic(name) == (node_id, kind)
    assert (kind in NODE_KINDS) == (kind is not TopicKind.DOWN)
