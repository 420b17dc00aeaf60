"""``decode_from`` remembers parsed topics (``shared.protocol._codec``): only exact ``str``
texts, bounded, failures never remembered, and the answer is always the parser's."""

from __future__ import annotations

import pytest

from shared.errors import RemoteProtocolError
from shared.protocol import Pong, decode_from, encode, topic
from shared.protocol._codec import PARSED_TOPICS, _parsed_topic
from shared.protocol._envelope import Envelope


def _pong(sender: str) -> bytes:
    return encode(
        Envelope(
            type="pong", id="p1", sender=sender, hlc=f"18bcfe56800.0.{sender}", body=Pong("p0")
        )
    )


def _liar(like: str) -> type[str]:
    class Liar(str):
        def __eq__(self, other: object) -> bool:
            return True

        def __hash__(self) -> int:
            return hash(like)

    return Liar


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
