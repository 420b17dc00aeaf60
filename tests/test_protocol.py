"""The wire protocol: every body round-trips, every rejection has its reason, topics are safe."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from shared.clocks import HybridClock
from shared.crdt import AttemptStatus, TaskRecord, new_record, place, set_status, start_attempt
from shared.errors import LocalProtocolError, RemoteProtocolError
from shared.model import parse_task_spec
from shared.protocol import (
    ALLOWED_TYPES,
    BODY_TYPES,
    MAX_DIGEST_VALUE_LEN,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    MAX_SLOTS,
    NODE_KINDS,
    PROTOCOL_VERSION,
    TOPIC_RULES,
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
    subscription,
    topic,
)
from shared.vocab import Level, Tier

NODE = "pi-7"
CTL = "controller"


def _stamp(node: str = NODE, wall_ms: int = 1_700_000_000_000) -> str:
    return HybridClock(node).now(wall_ms).encode()


def _spec(task_id: str = "t1", **extra: Any) -> dict[str, Any]:
    return parse_task_spec({"id": task_id, "command": ["echo", "hi"], **extra}).to_dict()


def _records(task_id: str = "t1") -> tuple[TaskRecord, ...]:
    """A creation delta, a placement delta and a start+finish of one attempt."""
    clock = HybridClock(NODE)
    created = new_record(task_id, _spec(task_id), writer=NODE, hlc=clock.now(1))
    placed = place(
        created, epoch=1, node=NODE, level="strong", lease_s=30.0, writer=NODE, hlc=clock.now(2)
    )
    rec = created.merge(placed)
    dot, started = start_attempt(rec, node=NODE, epoch=1, writer=NODE, hlc=clock.now(3))
    rec = rec.merge(started)
    done = set_status(
        rec,
        dot,
        AttemptStatus.SUCCEEDED,
        writer=NODE,
        hlc=clock.now(4),
        exit_code=0,
        result={"answer": 42},
    )
    return created, placed, started, done


def _hello() -> Hello:
    return Hello(
        tier=Tier.EDGE,
        labels={"site": "plant-3", "gpu": "no"},
        agent_version="0.1.0",
        protocol_version=PROTOCOL_VERSION,
        capacity=Capacity(cpus=4, memory_mb=3906.2, disk_mb=29000.5, battery_pct=None),
        api_port=8710,
    )


def _telemetry() -> Telemetry:
    return Telemetry(
        cpu_pct=12.5,
        memory_pct=40.0,
        memory_free_mb=1200.0,
        disk_free_mb=20000.0,
        load=(0.5, 0.25, 0.125),
        battery_pct=87.0,
        queue_len=3,
        running=1,
        rtt_ms_p50=12.0,
        reconnects=2,
        averages={"cpu_pct": {"1m": 10.0, "5m": 8.0, "15m": 5.0}, "memory_pct": {"1m": 40.0}},
        outbox=5,
    )


#: One example of every body, with the sender that would send it.
EXAMPLES: dict[str, tuple[Body, str]] = {
    "hello": (_hello(), NODE),
    "presence": (Presence(status="online"), NODE),
    "telemetry": (_telemetry(), NODE),
    "deltas": (Deltas(records=_records()), NODE),
    "digest": (Digest(entries={"t1": "a:3,b:5", "t2": "pi-7:1"}), NODE),
    "lease_request": (
        LeaseRequest(task_id="t1", epoch=3, duration_s=30.0, request_id="9f3c2a1b-7"),
        NODE,
    ),
    "heartbeat": (Heartbeat(), NODE),
    "pong": (Pong(ping_id="p17"), NODE),
    "place": (
        Place(
            task_id="t2",
            epoch=4,
            spec=_spec("t2", depends_on=["t1"]),
            level=Level.STRONG,
            lease_s=30.0,
            inputs={"t1": {"answer": 42}},
            deadline_left_s=-1.5,
        ),
        CTL,
    ),
    "cancel": (Cancel(task_id="t1", epoch=3, reason="cancel requested"), CTL),
    "lease_grant": (
        LeaseGrant(
            task_id="t1",
            epoch=3,
            granted=True,
            duration_s=30.0,
            reason=None,
            request_id="9f3c2a1b-7",
        ),
        CTL,
    ),
    "level_change": (
        LevelChange(task_id="t1", epoch=3, level=Level.CAUSAL, reason="link degraded"),
        CTL,
    ),
    "ack": (Ack(up_to_seq=41, heartbeat_id="0f3a9c"), CTL),
    "ping": (Ping(), CTL),
    "log_request": (LogRequest("r-1", "t1", f"{NODE}:2", "stderr", offset=7), CTL),
    "log_chunk": (LogChunk("r-1", "t1", f"{NODE}:2", "stderr", True, "oops\n", 7, 12, 12), NODE),
}


def _env(type_: str, *, seq: int | None = None, sender: str | None = None) -> Envelope:
    body, default_sender = EXAMPLES[type_]
    who = sender or default_sender
    return Envelope(type=type_, id="m-1", sender=who, hlc=_stamp(who), body=body, seq=seq)


def _doc(type_: str = "cancel") -> dict[str, Any]:
    """A valid message as a JSON document, for tests that break one field."""
    return json.loads(encode(_env(type_)))


def _raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _reason(payload: object, topic_name: str | None = None) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        if topic_name is None:
            decode(payload)
        else:
            decode_from(topic_name, payload)
    return info.value.reason


# ---------------------------------------------------------------- round trips


def test_examples_cover_every_body_type() -> None:
    assert set(EXAMPLES) == set(BODY_TYPES)
    for type_, (body, _) in EXAMPLES.items():
        assert type_ == type(body).TYPE


@pytest.mark.parametrize("type_", sorted(BODY_TYPES))
def test_every_body_round_trips(type_: str) -> None:
    env = _env(type_, seq=7 if type_ == "deltas" else None)
    back = decode(encode(env))
    assert back == env
    assert back.body.to_dict() == env.body.to_dict()


@pytest.mark.parametrize("type_", sorted(BODY_TYPES))
def test_every_body_arrives_on_its_topic(type_: str) -> None:
    """``decode_from`` accepts each type on every topic kind the table allows."""
    kinds = [kind for kind, types in ALLOWED_TYPES.items() if type_ in types]
    assert kinds, f"{type_} is allowed on no topic"
    for kind in kinds:
        env = _env(type_, sender=NODE if kind in NODE_KINDS else CTL)
        assert decode_from(topic(NODE, kind), encode(env)) == env


def test_wire_form_is_compact_ascii_json_with_design_field_names() -> None:
    body = Cancel(task_id="t1", epoch=2, reason="opérateur:arrêt☕")
    env = Envelope(type="cancel", id="abc", sender=CTL, hlc=_stamp(CTL), body=body, seq=9)
    payload = encode(env)
    payload.decode("ascii")
    assert b" " not in payload
    doc = json.loads(payload)
    assert set(doc) == {"v", "type", "id", "from", "hlc", "seq", "body"}
    assert doc["v"] == PROTOCOL_VERSION and doc["from"] == CTL and doc["seq"] == 9
    assert decode(payload).body == body


def test_seq_is_omitted_when_absent() -> None:
    assert "seq" not in json.loads(encode(_env("heartbeat")))


def test_decoded_values_use_the_shared_vocabularies() -> None:
    hello = decode(encode(_env("hello"))).body
    assert isinstance(hello, Hello) and hello.tier is Tier.EDGE
    place_body = decode(encode(_env("place"))).body
    assert isinstance(place_body, Place) and place_body.level is Level.STRONG
    deltas = decode(encode(_env("deltas"))).body
    assert isinstance(deltas, Deltas) and all(isinstance(r, TaskRecord) for r in deltas.records)


def test_nulls_and_defaults_round_trip() -> None:
    bodies = [
        Ack(up_to_seq=None, heartbeat_id=None),
        Ack(up_to_seq=0, heartbeat_id=None),
        LeaseGrant(task_id="t1", epoch=0, granted=False, duration_s=0.0, reason="stale_epoch"),
        Place(task_id="t1", epoch=0, spec=_spec(), level=Level.EVENTUAL),
        Presence(status="offline"),
        Digest(entries={}),
        Deltas(records=()),
    ]
    for body in bodies:
        sender = NODE if body.TYPE in ("presence", "digest", "deltas") else CTL
        env = Envelope(type=body.TYPE, id="x", sender=sender, hlc=_stamp(sender), body=body)
        assert decode(encode(env)) == env


def test_agents_largest_up_batch_fits() -> None:
    """The agent cuts ``up`` batches at 200,000 bytes of its outbox rows' compact JSON
    (``edge_agent/uplink.py``); such a batch must encode under the message limit with the
    envelope around it."""
    records: list[TaskRecord] = []
    size = 0
    index = 0
    while True:
        rec = _records(f"task-{index:05d}")[0]
        raw = len(json.dumps(rec.to_dict(), separators=(",", ":")))
        if size + raw > 200_000:
            break
        records.append(rec)
        size += raw
        index += 1
    env = Envelope(
        type="deltas",
        id="b" * 32,
        sender="n" * 64,
        hlc=_stamp("n" * 64),
        body=Deltas(records=tuple(records)),
        seq=2**62,
    )
    payload = encode(env)
    assert len(payload) <= MAX_MESSAGE_BYTES
    assert decode(payload) == env


def test_unknown_fields_are_ignored() -> None:
    """Forward compatibility (docs/protocol.md): a newer peer may add fields anywhere."""
    doc = _doc("lease_grant")
    doc["trace"] = {"span": 1}
    doc["body"]["priority_hint"] = [1, 2, 3]
    env = decode(_raw(doc))
    assert env.body == EXAMPLES["lease_grant"][0]


# ---------------------------------------------------------------- rejections by reason


def test_too_large_is_refused_before_parsing() -> None:
    assert _reason(b"{" + b" " * MAX_MESSAGE_BYTES + b"}") == "too_large"
    assert _reason(bytearray(MAX_MESSAGE_BYTES + 1)) == "too_large"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"\xff\xfe{}",
        b'{"v": 1, "x": NaN}',
        b'{"v": Infinity}',
        b'{"v": 1e999}',
        b'{"v": ' + b"9" * 5000 + b"}",
        b"{'v': 1}",
    ],
)
def test_not_json(payload: bytes) -> None:
    assert _reason(payload) == "not_json"


def test_too_deep() -> None:
    assert _reason(b"[" * 100_000 + b"]" * 100_000) == "too_deep"
    deep: object = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = [deep]
    doc = _doc()
    doc["body"]["extra"] = deep
    assert _reason(_raw(doc)) == "too_deep"


@pytest.mark.parametrize("version", [None, 0, 2, "1", 1.0, True, [1]])
def test_bad_version(version: object) -> None:
    doc = _doc()
    if version is None:
        del doc["v"]
    else:
        doc["v"] = version
    assert _reason(_raw(doc)) == "bad_version"


@pytest.mark.parametrize("type_", [None, "", "capacity", "Place", "shutdown", 3, ["place"]])
def test_unknown_type(type_: object) -> None:
    doc = _doc()
    if type_ is None:
        del doc["type"]
    else:
        doc["type"] = type_
    assert _reason(_raw(doc)) == "unknown_type"


@pytest.mark.parametrize("payload", [b"[]", b"1", b'"v"', b"null"])
def test_a_message_must_be_an_object(payload: bytes) -> None:
    assert _reason(payload) == "invalid"


@pytest.mark.parametrize("payload", ["{}", None, 3, ["{}"]])
def test_payload_must_be_bytes(payload: object) -> None:
    assert _reason(payload) == "invalid"


def test_memoryview_payload_is_accepted() -> None:
    payload = encode(_env("ping"))
    assert decode(memoryview(payload)) == _env("ping")


def test_invalid_lists_every_problem_with_its_path() -> None:
    doc = _doc("place")
    doc["id"] = "bad id with spaces"
    doc["from"] = "a/b"
    doc["seq"] = -1
    doc["body"].update(task_id="#", epoch=-3, level="weak", lease_s=0, spec="rm -rf /")
    doc["body"]["inputs"] = {"+": 1}
    with pytest.raises(RemoteProtocolError) as info:
        decode(_raw(doc))
    assert info.value.reason == "invalid"
    text = str(info.value)
    for path in (
        "id:",
        "from:",
        "seq:",
        "body.task_id:",
        "body.epoch:",
        "body.level:",
        "body.lease_s:",
        "body.spec:",
        "body.inputs.+:",
    ):
        assert path in text, (path, text)


def test_missing_fields_are_reported() -> None:
    doc = _doc("lease_request")
    del doc["id"], doc["hlc"], doc["body"]["duration_s"]
    with pytest.raises(RemoteProtocolError) as info:
        decode(_raw(doc))
    text = str(info.value)
    assert "id: is required" in text and "hlc: is required" in text
    assert "body.duration_s: is required" in text
    doc = _doc("ack")
    del doc["body"]
    with pytest.raises(RemoteProtocolError, match="body: is required"):
        decode(_raw(doc))


def test_body_must_be_an_object() -> None:
    doc = _doc("ping")
    doc["body"] = []
    with pytest.raises(RemoteProtocolError, match="body: must be a table") as info:
        decode(_raw(doc))
    assert info.value.reason == "invalid"


@pytest.mark.parametrize("hlc", ["", "garbage", "18c.00.pi-7", "1.0.a/b", 17, None])
def test_bad_hlc(hlc: object) -> None:
    doc = _doc()
    doc["hlc"] = hlc
    with pytest.raises(RemoteProtocolError, match="hlc") as info:
        decode(_raw(doc))
    assert info.value.reason == "invalid"


def test_hlc_must_be_stamped_by_the_sender() -> None:
    doc = _doc()
    doc["hlc"] = _stamp("someone-else")
    with pytest.raises(RemoteProtocolError, match="not by the sender") as info:
        decode(_raw(doc))
    assert info.value.reason == "invalid"


def test_invalid_delta_record_is_reported_inside_the_batch() -> None:
    doc = _doc("deltas")
    doc["body"]["records"][1]["id"] = "no spaces allowed"
    doc["body"]["records"][2] = "not a record"
    with pytest.raises(RemoteProtocolError) as info:
        decode(_raw(doc))
    text = str(info.value)
    assert "body.records[1].id" in text and "body.records[2]" in text


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        target = body
        *parents, last = path.split(".")
        for key in parents:
            target = target[key]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("type_", "change", "where"),
    [
        ("hello", _set("tier", "moon"), "body.tier"),
        ("hello", _set("labels", {"bad key!": "x"}), "body.labels"),
        ("hello", _set("capacity.cpus", 0), "body.capacity.cpus"),
        ("hello", _set("capacity", None), "body.capacity"),
        ("hello", _set("capacity.slots", 0), "body.capacity.slots"),
        ("hello", _set("capacity.slots", -1), "body.capacity.slots"),
        ("hello", _set("capacity.slots", 1_000_001), "body.capacity.slots"),
        ("hello", _set("capacity.slots", 2.5), "body.capacity.slots"),
        ("hello", _set("capacity.slots", "4"), "body.capacity.slots"),
        ("hello", _set("capacity.slots", True), "body.capacity.slots"),
        ("hello", _set("api_port", 70_000), "body.api_port"),
        ("hello", _set("agent_version", ""), "body.agent_version"),
        ("presence", _set("status", "away"), "body.status"),
        ("telemetry", _set("load", [1, 2]), "body.load"),
        ("telemetry", _set("load", [1, -2, 3]), "body.load[1]"),
        ("telemetry", _set("memory_pct", 101), "body.memory_pct"),
        ("telemetry", _set("cpu_pct", True), "body.cpu_pct"),
        ("telemetry", _set("averages", {"cpu_pct": {"1m": "hot"}}), "body.averages.cpu_pct.1m"),
        ("digest", _set("entries", {"t/1": "x"}), "body.entries"),
        ("digest", _set("entries", {"t1": 5}), "body.entries.t1"),
        ("digest", _set("entries", [["t1", "x"]]), "body.entries"),
        ("lease_request", _set("duration_s", 0), "body.duration_s"),
        ("lease_request", _set("duration_s", 1e9), "body.duration_s"),
        ("lease_request", _set("request_id", "a b"), "body.request_id"),
        ("lease_request", _set("request_id", 7), "body.request_id"),
        ("lease_request", _set("request_id", "r" * 129), "body.request_id"),
        ("pong", _set("ping_id", ""), "body.ping_id"),
        ("cancel", _set("epoch", "3"), "body.epoch"),
        ("cancel", _set("reason", "x" * 1001), "body.reason"),
        ("lease_grant", _set("granted", "yes"), "body.granted"),
        ("lease_grant", _set("duration_s", 0), "body.duration_s"),
        ("lease_grant", _set("request_id", "-leading-dash"), "body.request_id"),
        ("lease_grant", _set("request_id", "r" * 129), "body.request_id"),
        ("level_change", _set("level", "STRONG"), "body.level"),
        ("ack", _set("up_to_seq", 2**63), "body.up_to_seq"),
        ("ack", _set("heartbeat_id", "a b"), "body.heartbeat_id"),
        ("deltas", _set("records", {}), "body.records"),
        ("place", _set("inputs", []), "body.inputs"),
        ("place", _set("deadline_left_s", 1e12), "body.deadline_left_s"),
    ],
)
def test_body_field_validation(
    type_: str, change: Callable[[dict[str, Any]], None], where: str
) -> None:
    doc = _doc(type_)
    change(doc["body"])
    with pytest.raises(RemoteProtocolError) as info:
        decode(_raw(doc))
    assert info.value.reason == "invalid"
    assert f"- {where}" in str(info.value), str(info.value)


def test_capacity_slots_are_optional_and_written_only_when_known() -> None:
    """An agent that predates ``slots`` sends a capacity without it: it decodes to
    ``None`` (placement: as many as the cpus allow); a known one round-trips, bounded
    by ``MAX_SLOTS``."""
    doc = _doc("hello")
    assert "slots" not in doc["body"]["capacity"]
    assert decode(_raw(doc)).body.capacity.slots is None
    doc["body"]["capacity"]["slots"] = MAX_SLOTS
    assert decode(_raw(doc)).body.capacity.slots == MAX_SLOTS
    cap = Capacity(cpus=2, memory_mb=1.0, disk_mb=1.0, slots=4)
    assert cap.to_dict()["slots"] == 4
    assert Capacity.from_dict(cap.to_dict()) == cap


@pytest.mark.parametrize("type_", ["lease_request", "lease_grant"])
def test_lease_request_id_reads_empty_from_an_older_peer(type_: str) -> None:
    """A request or grant without ``request_id`` (a peer that predates it) still decodes,
    with ``""``, which no agent request ever carries; the field is always written."""
    doc = _doc(type_)
    del doc["body"]["request_id"]
    body = decode(_raw(doc)).body
    assert isinstance(body, LeaseRequest | LeaseGrant)
    assert body.request_id == ""
    assert body.to_dict()["request_id"] == ""


@pytest.mark.parametrize("type_", ["lease_request", "lease_grant"])
def test_lease_request_id_round_trips_up_to_its_bound(type_: str) -> None:
    doc = _doc(type_)
    doc["body"]["request_id"] = "a" * 128
    body = decode(_raw(doc)).body
    assert isinstance(body, LeaseRequest | LeaseGrant)
    assert body.request_id == "a" * 128
    assert json.loads(encode(decode(_raw(doc))))["body"]["request_id"] == "a" * 128


def test_digest_entries_are_bounded() -> None:
    doc = _doc("digest")
    doc["body"]["entries"] = {f"t{i}": "" for i in range(10_001)}
    with pytest.raises(RemoteProtocolError, match="at most 10000 entries"):
        decode(_raw(doc))


def test_wrong_topic() -> None:
    assert _reason(encode(_env("place")), topic(NODE, "up")) == "wrong_topic"
    assert _reason(encode(_env("deltas")), topic(NODE, "hello")) == "wrong_topic"
    assert _reason(encode(_env("heartbeat")), topic(NODE, "down")) == "wrong_topic"
    assert _reason(encode(_env("ack", sender=NODE)), topic(NODE, "presence")) == "wrong_topic"


@pytest.mark.parametrize("kind", sorted(NODE_KINDS))
def test_sender_must_own_the_node_topic(kind: TopicKind) -> None:
    type_ = next(iter(sorted(ALLOWED_TYPES[kind])))
    payload = encode(_env(type_, sender="n2"))
    assert _reason(payload, topic(NODE, kind)) == "sender_mismatch"
    assert decode_from(topic("n2", kind), payload).sender == "n2"


def test_down_may_come_from_any_valid_sender() -> None:
    env = _env("cancel", sender="ctl-eu-1")
    assert decode_from(topic(NODE, "down"), encode(env)) == env


@pytest.mark.parametrize(
    "name",
    [
        "continuum/v1/nodes/pi-7",
        "continuum/v1/nodes/pi-7/up/extra",
        "continuum/v2/nodes/pi-7/up",
        "/continuum/v1/nodes/pi-7/up",
        "continuum/v1/nodes//up",
        "continuum/v1/nodes/+/up",
        "continuum/v1/nodes/#",
        "continuum/v1/nodes/pi-7/+",
        "continuum/v1/nodes/pi-7/commands",
        "continuum/v1/nodes/" + "n" * 65 + "/up",
        "continuum/v1/nodes/" + "n" * 200 + "/up",
        "",
    ],
)
def test_bad_topic(name: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_topic(name)
    assert info.value.reason == "bad_topic"
    assert _reason(encode(_env("heartbeat")), name) == "bad_topic"


def test_non_string_topic_is_bad_topic() -> None:
    assert _reason(encode(_env("heartbeat")), b"continuum/v1/nodes/pi-7/up") == "bad_topic"


def test_topic_is_checked_before_the_payload() -> None:
    assert _reason(b"garbage", "elsewhere/x") == "bad_topic"


# ---------------------------------------------------------------- encode (our own bugs)


def test_encode_refuses_a_body_of_the_wrong_type() -> None:
    env = Envelope(type="place", id="x", sender=CTL, hlc=_stamp(CTL), body=Ping())
    with pytest.raises(LocalProtocolError) as info:
        encode(env)
    assert info.value.reason == "type_mismatch"


def test_encode_refuses_an_unknown_type() -> None:
    env = Envelope(type="reboot", id="x", sender=CTL, hlc=_stamp(CTL), body=Ping())
    with pytest.raises(LocalProtocolError) as info:
        encode(env)
    assert info.value.reason == "unknown_type"


@pytest.mark.parametrize(
    "env",
    [
        Envelope(type="presence", id="x", sender=NODE, hlc=_stamp(), body=Presence("away")),
        Envelope(type="ping", id="has space", sender=CTL, hlc=_stamp(CTL), body=Ping()),
        Envelope(type="ping", id="x", sender="a+b", hlc=_stamp(CTL), body=Ping()),
        Envelope(type="ping", id="x", sender=CTL, hlc=_stamp(NODE), body=Ping()),
        Envelope(type="ping", id="x", sender=CTL, hlc=_stamp(CTL), body=Ping(), seq=-1),
        Envelope(
            type="lease_grant",
            id="x",
            sender=CTL,
            hlc=_stamp(CTL),
            body=LeaseGrant(task_id="t1", epoch=1, granted=True, duration_s=0.0),
        ),
    ],
)
def test_encode_refuses_what_a_peer_would_reject(env: Envelope) -> None:
    with pytest.raises(LocalProtocolError) as info:
        encode(env)
    assert info.value.reason == "invalid"


def test_encode_refuses_values_json_cannot_carry() -> None:
    spec = {**_spec(), "args": {"x": float("nan")}}
    body = Place(task_id="t1", epoch=1, spec=spec, level=Level.CAUSAL)
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode(Envelope(type="place", id="x", sender=CTL, hlc=_stamp(CTL), body=body))
    body = Place(task_id="t1", epoch=1, spec={**_spec(), "x": {1, 2}}, level=Level.CAUSAL)
    with pytest.raises(LocalProtocolError, match="cannot encode"):
        encode(Envelope(type="place", id="x", sender=CTL, hlc=_stamp(CTL), body=body))


def test_encode_refuses_too_large() -> None:
    body = Digest(entries={f"task-{i:06d}": "x" * 100 for i in range(5000)})
    with pytest.raises(LocalProtocolError) as info:
        encode(Envelope(type="digest", id="x", sender=NODE, hlc=_stamp(), body=body))
    assert info.value.reason == "too_large"


# ---------------------------------------------------------------- topics


def test_topic_layout_matches_design() -> None:
    assert topic("pi-7", "up") == "continuum/v1/nodes/pi-7/up"
    assert topic("pi-7", TopicKind.DOWN) == "continuum/v1/nodes/pi-7/down"
    assert subscription("hello") == "continuum/v1/nodes/+/hello"


@pytest.mark.parametrize("node_id", ["a", "pi-7", "Edge_01.site-3", "9" * 64])
@pytest.mark.parametrize("kind", list(TopicKind))
def test_topic_round_trip_and_subscription_match(node_id: str, kind: TopicKind) -> None:
    name = topic(node_id, kind)
    assert parse_topic(name) == (node_id, kind)
    assert mqtt.topic_matches_sub(subscription(kind), name)
    for other in TopicKind:
        if other != kind:
            assert not mqtt.topic_matches_sub(subscription(other), name)


@pytest.mark.parametrize(
    "node_id",
    ["", "a/b", "a+b", "+", "#", "a#", "n" * 65, "-leading", ".x", "spa ce", "é", "a\0b", 7],
)
def test_topic_refuses_unsafe_node_ids(node_id: Any) -> None:
    with pytest.raises(LocalProtocolError) as info:
        topic(node_id, "up")
    assert info.value.reason == "bad_node_id"


@pytest.mark.parametrize("kind", ["", "commands", "+", "#", "UP"])
def test_topic_refuses_unknown_kinds(kind: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        topic(NODE, kind)
    assert info.value.reason == "bad_kind"
    with pytest.raises(LocalProtocolError):
        subscription(kind)


def test_topic_rules_match_design() -> None:
    assert {TopicKind.HELLO, TopicKind.PRESENCE, TopicKind.TELEMETRY, TopicKind.UP} == NODE_KINDS
    assert TOPIC_RULES[TopicKind.PRESENCE].retain
    assert TOPIC_RULES[TopicKind.TELEMETRY].qos == 0
    assert all(
        rule.qos == 1 and not rule.retain
        for kind, rule in TOPIC_RULES.items()
        if kind not in (TopicKind.PRESENCE, TopicKind.TELEMETRY)
    )


def test_allowed_types_table_is_closed_and_directional() -> None:
    """Every body travels somewhere; node topics never carry commands, ``down`` never
    carries a node's reports; only digests and deltas go both ways."""
    assert set(ALLOWED_TYPES) == set(TopicKind)
    every = set().union(*ALLOWED_TYPES.values())
    assert every == set(BODY_TYPES)
    up = set().union(*(ALLOWED_TYPES[k] for k in NODE_KINDS))
    assert up & ALLOWED_TYPES[TopicKind.DOWN] == {"digest", "deltas"}
    assert ALLOWED_TYPES[TopicKind.UP] == {
        "deltas",
        "lease_request",
        "digest",
        "heartbeat",
        "pong",
        "log_chunk",
    }


def test_a_reader_bug_is_still_only_a_remote_protocol_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last line of defence: whatever a body reader raises, the shell sees one type."""
    payload = encode(_env("cancel"))

    def broken(cls: type, f: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(Cancel, "read", classmethod(broken))
    with pytest.raises(RemoteProtocolError, match="undecodable message") as info:
        decode(payload)
    assert info.value.reason == "invalid"


def test_digest_summaries_up_to_the_crdt_bound_are_accepted() -> None:
    from shared.crdt._digest import MAX_SUMMARY_LEN

    assert MAX_DIGEST_VALUE_LEN >= MAX_SUMMARY_LEN
    body = Digest(entries={"t1": "x" * MAX_SUMMARY_LEN})
    env = Envelope(type="digest", id="x", sender=NODE, hlc=_stamp(), body=body)
    assert decode(encode(env)) == env
