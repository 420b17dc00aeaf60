"""Encode and decode envelopes: the one door network bytes come in through.

Blame is typed as in h11. :func:`encode` raises :class:`~shared.errors.LocalProtocolError`
(we built something the protocol forbids: a bug to log, never to send). :func:`decode` and
:func:`decode_from` raise only :class:`~shared.errors.RemoteProtocolError`, whatever the
bytes, with a short ``reason`` for the rejection metric:

=================== ==============================================================
``too_large``       over :data:`MAX_MESSAGE_BYTES`
``not_json``        not UTF-8 JSON (NaN, Infinity, 1e999, over-long integers too)
``too_deep``        JSON nested deeper than :data:`MAX_JSON_DEPTH`
``bad_version``     ``v`` missing or not this protocol major
``unknown_type``    ``type`` names no body
``invalid``         any field failing validation (the message lists every problem)
``bad_topic``       the topic is not ``continuum/v1/nodes/{node}/{kind}``
``wrong_topic``     the body type is not allowed on that topic kind
``sender_mismatch`` a node topic carrying an envelope from another node
=================== ==============================================================

``encode`` validates by decoding its own output, so what we send is exactly what a peer
of the same version accepts.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any, Final, NoReturn

from shared import PROTOCOL_VERSION
from shared.clocks import Timestamp
from shared.errors import LocalProtocolError, RemoteProtocolError, ValidationError
from shared.ids import check_node_id, is_node_id
from shared.model import Fields
from shared.protocol._bodies import BODY_TYPES, MAX_INT, Body, check_message_id
from shared.protocol._envelope import MAX_MESSAGE_BYTES, Envelope
from shared.protocol._topics import ALLOWED_TYPES, NODE_KINDS, parse_topic

__all__ = ["MAX_JSON_DEPTH", "PARSED_TOPICS", "decode", "decode_from", "encode"]

#: Deepest JSON nesting accepted. Records nest specs and results (each bounded to 32 by
#: ``shared.crdt``) inside ``body.records[i]``; 64 leaves room and keeps every later
#: recursive walk far from Python's recursion limit.
MAX_JSON_DEPTH: Final = 64

_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=True
)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """``1e999`` parses to infinity in Python; JSON has no infinity, so refuse it here
    rather than let it reach a record or a score."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _too_deep(value: object, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative: no recursion;
    only containers are visited, one level of them at a time: no pair or call per value)."""
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) in _CONTAINERS:
                    below.append(child)
        level = below
        depth += 1
    return False


_CONTAINERS = (dict, list)  # what json.loads nests

#: One decoder for every message (``json.loads`` with options builds one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _json(text: str) -> object:
    """``_DECODER.decode(text)``: a document starting at the first character and ending
    at the last (every message we send) is scanned without the decoder's two whitespace
    matches; anything else goes to ``decode``, which says what is wrong with it."""
    try:
        doc, end = _DECODER.scan_once(text, 0)
    except StopIteration:  # nothing scannable at the start: decode names the problem
        return _DECODER.decode(text)
    return doc if end == len(text) else _DECODER.decode(text)


def _may_be_too_deep(text: str, limit: int) -> bool:
    """Cheap bound before the walk: JSON with no more than ``limit`` opening brackets
    (in strings or not) cannot nest deeper than ``limit``; most messages have a few."""
    return text.count("[") + text.count("{") > limit


def encode(env: Envelope) -> bytes:
    """The envelope as compact ASCII JSON; ``LocalProtocolError`` if it is not a valid
    message (wrong body for ``type``, bad field, over the size limit)."""
    cls = BODY_TYPES.get(env.type)
    if cls is None:
        raise LocalProtocolError(f"unknown message type {env.type!r}", reason="unknown_type")
    if type(env.body) is not cls:
        raise LocalProtocolError(
            f"type {env.type!r} needs a {cls.__name__} body, not {type(env.body).__name__}",
            reason="type_mismatch",
        )
    try:
        doc: dict[str, Any] = {
            "v": PROTOCOL_VERSION,
            "type": env.type,
            "id": env.id,
            "from": env.sender,
            "hlc": _short_hlc(env.hlc, env.sender),
        }
        if env.seq is not None:
            doc["seq"] = env.seq
        doc["body"] = env.body.to_dict()
        payload = _ENCODER.encode(doc).encode("ascii")
    except (AttributeError, TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(
            f"cannot encode {env.type}: {type(exc).__name__}: {exc}", reason="invalid"
        ) from exc
    if len(payload) > MAX_MESSAGE_BYTES:
        raise LocalProtocolError(
            f"{env.type} message is {len(payload)} bytes (limit {MAX_MESSAGE_BYTES})",
            reason="too_large",
        )
    try:
        decode(payload)
    except RemoteProtocolError as exc:
        raise LocalProtocolError(f"refusing to send: {exc}", reason=exc.reason) from exc
    return payload


def _short_hlc(hlc: str, sender: str) -> str:
    """The envelope's stamp without its node when that is the sender (``wall.logical``);
    the reader restores it from ``from``."""
    suffix = "." + sender
    short = hlc[: -len(suffix)]
    return short if hlc.endswith(suffix) and short.count(".") == 1 else hlc


def decode(payload: object) -> Envelope:
    """Parse and validate one message. Raises only ``RemoteProtocolError``."""
    try:
        return _decode(payload)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # the last line of defence: no input may crash a shell
        raise RemoteProtocolError(
            f"undecodable message ({type(exc).__name__}: {exc})", reason="invalid"
        ) from exc


#: Topics parsed (a fleet's few nodes times a few kinds, each read in every message):
#: bounded, since the texts come from the network. Failures are not cached.
PARSED_TOPICS: Final = 4096

_parsed_topic = lru_cache(maxsize=PARSED_TOPICS)(parse_topic)


def decode_from(topic: object, payload: object) -> Envelope:
    """:func:`decode` for a message received on ``topic``: also checks that its type is
    allowed on that topic kind and, on a node's own topics, that the node sent it."""
    # Exact str only: a subclass's __eq__/__hash__ must not reach the cache.
    node_id, kind = _parsed_topic(topic) if type(topic) is str else parse_topic(topic)
    env = decode(payload)
    if env.type not in ALLOWED_TYPES[kind]:
        raise RemoteProtocolError(
            f"{env.type!r} is not allowed on {kind.value!r} topics", reason="wrong_topic"
        )
    if kind in NODE_KINDS and env.sender != node_id:
        raise RemoteProtocolError(
            f"envelope from {env.sender!r} on node {node_id!r}'s topic", reason="sender_mismatch"
        )
    return env


def _decode(payload: object) -> Envelope:
    exact = type(payload) is bytes  # every received message: decoded without a copy
    if not exact and not isinstance(payload, bytes | bytearray | memoryview):
        raise RemoteProtocolError(
            f"payload must be bytes, not {type(payload).__name__}", reason="invalid"
        )
    size = payload.nbytes if isinstance(payload, memoryview) else len(payload)
    if size > MAX_MESSAGE_BYTES:
        raise RemoteProtocolError(
            f"message is {size} bytes (limit {MAX_MESSAGE_BYTES})", reason="too_large"
        )
    try:
        text = (payload if exact else bytes(payload)).decode("utf-8")
        doc = _json(text)
    except RecursionError as exc:
        raise RemoteProtocolError("JSON nested too deep", reason="too_deep") from exc
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RemoteProtocolError(f"not JSON: {str(exc)[:200]}", reason="not_json") from exc
    if type(doc) in _CONTAINERS and (
        _may_be_too_deep(text, MAX_JSON_DEPTH) and _too_deep(doc, MAX_JSON_DEPTH)
    ):
        raise RemoteProtocolError(f"JSON nested deeper than {MAX_JSON_DEPTH}", reason="too_deep")
    if not isinstance(doc, dict):
        raise RemoteProtocolError("a message must be a JSON object", reason="invalid")
    version = doc.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise RemoteProtocolError(
            f"protocol version {str(version)[:40]!r} is not {PROTOCOL_VERSION}",
            reason="bad_version",
        )
    type_ = doc.get("type")
    cls = BODY_TYPES.get(type_) if isinstance(type_, str) else None
    if cls is None:
        raise RemoteProtocolError(
            f"unknown message type {str(type_)[:80]!r}", reason="unknown_type"
        )
    assert isinstance(type_, str)
    return _envelope(doc, type_, cls)


def _envelope(doc: dict[str, Any], type_: str, cls: type[Body]) -> Envelope:
    head = _plain_head(doc)
    if head is None:
        return _checked_envelope(doc, type_, cls)
    f = Fields(doc["body"], "body", strict=False)
    body = cls.read(f)
    if f.problems:
        error = ValidationError(f.problems, what=f"{type_} message")
        raise RemoteProtocolError(str(error), reason="invalid") from error
    ident, sender, hlc, seq = head
    return Envelope(type=type_, id=ident, sender=sender, hlc=hlc, body=body, seq=seq)


def _plain_head(doc: dict[str, Any]) -> tuple[str, str, str, int | None] | None:
    """(id, sender, whole hlc, seq) of an envelope whose every header field passes the
    checks of :func:`_checked_envelope` and whose body is an object; ``None`` for any
    other (``_checked_envelope`` then names every problem). The common case without the
    ``Fields`` bookkeeping: it accepts a subset of what that path accepts, with the
    same values (tests/test_protocol_fuzz.py holds the two paths to that)."""
    ident, sender, hlc, seq = doc.get("id"), doc.get("from"), doc.get("hlc"), doc.get("seq")
    if not (
        type(ident) is str
        and len(ident) <= 256
        and check_message_id(ident) is None
        and type(sender) is str
        and is_node_id(sender)
        and type(hlc) is str
        and len(hlc) <= 256
        and (seq is None or (type(seq) is int and 0 <= seq <= MAX_INT))
        and type(doc.get("body")) is dict
    ):
        return None
    if hlc.count(".") == 1:
        hlc = f"{hlc}.{sender}"  # written without the sender's id (``_short_hlc``)
    try:
        stamp = Timestamp.decode(hlc)
    except ValueError:
        return None
    return (ident, sender, hlc, seq) if stamp.node == sender else None


def _checked_envelope(doc: dict[str, Any], type_: str, cls: type[Body]) -> Envelope:
    """Every header field checked through ``Fields``, every problem collected."""
    f = Fields(doc, "", strict=False)  # unknown fields are ignored (forward compatibility)
    ident = f.string("id", max_len=256, check=check_message_id)
    sender = f.string("from", max_len=256, check=check_node_id)
    sender_ok = is_node_id(sender)
    hlc = f.string("hlc", max_len=256)
    if sender_ok and hlc.count(".") == 1:
        hlc = f"{hlc}.{sender}"  # written without the sender's id (``_short_hlc``)
    stamp: Timestamp | None = None
    if f.has("hlc") and len(hlc) <= 256:
        try:
            stamp = Timestamp.decode(hlc)
        except ValueError as exc:
            f.error("hlc", str(exc))
    seq = f.opt_integer("seq", min=0, max=MAX_INT)
    body_fields = f.sub("body", required=True)
    body = cls.read(body_fields) if body_fields is not None and body_fields.valid else None
    if stamp is not None and sender_ok and stamp.node != sender:
        f.error("hlc", f"stamped by {stamp.node!r}, not by the sender {sender!r}")
    if f.problems or body is None:
        error = ValidationError(f.problems, what=f"{type_} message")
        raise RemoteProtocolError(str(error), reason="invalid") from error
    return Envelope(type=type_, id=ident, sender=sender, hlc=hlc, body=body, seq=seq)
