"""MQTT topics (docs/protocol.md): one namespace per node, so a ``%u`` broker ACL confines an agent.

``continuum/v1/nodes/{node}/{kind}``. The node id is a topic level and the broker username,
so it must pass :func:`shared.ids.check_node_id` (no ``/``, ``+``, ``#``; bounded length).
Which message types may travel on which kind is the table :data:`ALLOWED_TYPES`: the decoder
refuses a ``place`` arriving on an ``up`` topic the same way it refuses bad JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from shared import PROTOCOL_VERSION
from shared.errors import LocalProtocolError, RemoteProtocolError
from shared.ids import check_node_id

__all__ = [
    "ALLOWED_TYPES",
    "MAX_TOPIC_LEN",
    "NODE_KINDS",
    "TOPIC_PREFIX",
    "TOPIC_RULES",
    "TopicKind",
    "TopicRule",
    "parse_topic",
    "subscription",
    "topic",
]

#: Every topic starts with this; the protocol major is part of it, so two majors never mix.
TOPIC_PREFIX: Final = f"continuum/v{PROTOCOL_VERSION}/nodes"

#: Longer topics are refused before they are split (prefix + a maximal node id + a kind fits).
MAX_TOPIC_LEN: Final = 160


class TopicKind(StrEnum):
    """The last topic level: what the messages on the topic are for."""

    HELLO = "hello"
    PRESENCE = "presence"
    TELEMETRY = "telemetry"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class TopicRule:
    """How a topic kind is published: who writes it, with what QoS, retained or not."""

    from_node: bool  # True: agent → cloud (the sender must be the topic's node)
    qos: int
    retain: bool


#: docs/protocol.md's topic table. ``presence`` is retained and is also the last will (``offline``).
TOPIC_RULES: Final[Mapping[TopicKind, TopicRule]] = MappingProxyType(
    {
        TopicKind.HELLO: TopicRule(from_node=True, qos=1, retain=False),
        TopicKind.PRESENCE: TopicRule(from_node=True, qos=1, retain=True),
        TopicKind.TELEMETRY: TopicRule(from_node=True, qos=0, retain=False),
        TopicKind.UP: TopicRule(from_node=True, qos=1, retain=False),
        TopicKind.DOWN: TopicRule(from_node=False, qos=1, retain=False),
    }
)

#: Kinds a node publishes (and on which the envelope's sender must be that node).
NODE_KINDS: Final = frozenset(kind for kind, rule in TOPIC_RULES.items() if rule.from_node)

#: Envelope ``type`` values accepted on each topic kind. Anything else is ``wrong_topic``.
ALLOWED_TYPES: Final[Mapping[TopicKind, frozenset[str]]] = MappingProxyType(
    {
        TopicKind.HELLO: frozenset({"hello"}),
        TopicKind.PRESENCE: frozenset({"presence"}),
        TopicKind.TELEMETRY: frozenset({"telemetry"}),
        TopicKind.UP: frozenset(
            {"deltas", "lease_request", "digest", "heartbeat", "pong", "log_chunk"}
        ),
        TopicKind.DOWN: frozenset(
            {
                "place",
                "cancel",
                "lease_grant",
                "level_change",
                "ack",
                "digest",
                "deltas",
                "ping",
                "log_request",
            }
        ),
    }
)


def _kind(kind: str) -> TopicKind:
    try:
        return TopicKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in TopicKind)
        raise LocalProtocolError(
            f"unknown topic kind {kind!r} (one of {allowed})", reason="bad_kind"
        ) from None


def topic(node_id: str, kind: str) -> str:
    """``continuum/v1/nodes/{node_id}/{kind}``; raises ``LocalProtocolError`` for an unsafe
    node id (a wildcard or separator would widen the topic) or an unknown kind."""
    why = check_node_id(node_id)
    if why is not None:
        raise LocalProtocolError(f"node id {str(node_id)[:80]!r} {why}", reason="bad_node_id")
    return f"{TOPIC_PREFIX}/{node_id}/{_kind(kind).value}"


def subscription(kind: str) -> str:
    """The filter matching ``kind`` for every node (``continuum/v1/nodes/+/{kind}``)."""
    return f"{TOPIC_PREFIX}/+/{_kind(kind).value}"


def parse_topic(name: object) -> tuple[str, TopicKind]:
    """``(node_id, kind)`` of a received topic; ``RemoteProtocolError`` (``bad_topic``) for
    anything that :func:`topic` could not have built."""
    if not isinstance(name, str) or len(name) > MAX_TOPIC_LEN:
        raise RemoteProtocolError("topic is not a string of bounded length", reason="bad_topic")
    prefix, sep, rest = name.rpartition("/")  # rest = kind
    head, sep2, node_id = prefix.rpartition("/")
    if not (sep and sep2) or head != TOPIC_PREFIX:
        raise RemoteProtocolError(f"not a Continuum node topic: {name!r}", reason="bad_topic")
    why = check_node_id(node_id)
    if why is not None:
        raise RemoteProtocolError(f"topic {name!r}: node id {why}", reason="bad_topic")
    try:
        kind = TopicKind(rest)
    except ValueError:
        raise RemoteProtocolError(f"topic {name!r}: unknown kind", reason="bad_topic") from None
    return node_id, kind
