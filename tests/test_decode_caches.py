"""The decode caches (``shared.clocks`` stamps, ``shared.ids`` node ids, the topics
``shared.protocol.decode_from`` parsed) key on exact ``str`` texts only: a string subclass
lying about its hash and equality cannot pull a remembered answer for another text, and a
failure is never remembered; the topic cache is bounded and each topic answers for its own
node."""

from __future__ import annotations

import pytest

from shared.clocks import Timestamp
from shared.errors import RemoteProtocolError
from shared.ids import is_node_id
from shared.protocol import Pong, decode_from, encode, topic
from shared.protocol._codec import PARSED_TOPICS, _parsed_topic
from shared.protocol._envelope import Envelope

VALID_STAMP = "18bcfe56800.0.n1"


def _liar(like: str) -> type[str]:
    class Liar(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash(like)

    return Liar


def test_a_lying_string_gets_no_remembered_stamp() -> None:
    assert Timestamp.decode(VALID_STAMP) == Timestamp(0x18BCFE56800, 0, "n1")  # remembered
    with pytest.raises(ValueError):
        Timestamp.decode(_liar(VALID_STAMP)("zz"))
    assert Timestamp.decode(_liar(VALID_STAMP)(VALID_STAMP)) == Timestamp.decode(VALID_STAMP)


def test_a_failed_stamp_is_not_remembered() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            Timestamp.decode("018bc.0.n1")  # leading zero: not canonical


def test_a_lying_string_gets_no_remembered_node_id() -> None:
    assert is_node_id("n1")
    assert not is_node_id(_liar("n1")("no/slash"))
    assert not is_node_id("no/slash")
    assert is_node_id(_liar("n1")("n1"))


def _pong(sender: str) -> bytes:
    return encode(
        Envelope(
            type="pong", id="p1", sender=sender, hlc=f"18bcfe56800.0.{sender}", body=Pong("p0")
        )
    )


def test_each_topic_answers_for_its_own_node() -> None:
    for sender in ("n1", "n2", "n1"):
        assert decode_from(topic(sender, "up"), _pong(sender)).sender == sender
    with pytest.raises(RemoteProtocolError) as exc:
        decode_from(topic("n1", "up"), _pong("n2"))
    assert exc.value.reason == "sender_mismatch"


def test_a_lying_string_gets_no_remembered_topic() -> None:
    good = topic("n1", "up")
    assert decode_from(good, _pong("n1")).sender == "n1"  # remembered
    with pytest.raises(RemoteProtocolError) as exc:
        decode_from(_liar(good)("continuum/v1/nodes/n+/up"), _pong("n1"))
    assert exc.value.reason == "bad_topic"
    with pytest.raises(RemoteProtocolError) as exc:
        decode_from(_liar(good)(topic("n2", "up")), _pong("n1"))
    assert exc.value.reason == "sender_mismatch"


def test_a_bad_topic_is_refused_every_time_and_the_cache_is_bounded() -> None:
    for _ in range(2):
        with pytest.raises(RemoteProtocolError) as exc:
            decode_from("continuum/v1/nodes/n1/nonsense", _pong("n1"))
        assert exc.value.reason == "bad_topic"
    assert _parsed_topic.cache_info().maxsize == PARSED_TOPICS
