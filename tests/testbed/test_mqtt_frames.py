"""MQTT framing for the proxy's lossy mode: any sequence of packets, cut into chunks
anywhere, comes back as the same packets; the DUP flag only where MQTT allows it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulations.testbed.mqtt_frames import (
    PUBLISH,
    FrameError,
    Framer,
    encode_length,
    packet_type,
    with_dup,
)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_length(len(body)) + body


#: Bodies around 16,383 bytes, where the length takes a third byte. What the framer
#: reads of a body is only its length, so a long body repeats a short drawn pattern
#: (drawing 16 KiB byte by byte made this the slowest test of the directory).
long_bodies = st.builds(
    lambda pattern, size: (pattern * (size // len(pattern) + 1))[:size],
    st.binary(min_size=1, max_size=64),
    st.integers(min_value=16_380, max_value=16_400),
)
packets = st.builds(
    packet,
    st.integers(min_value=0x10, max_value=0xEF),
    st.one_of(st.binary(max_size=200), long_bodies),
)


@given(st.lists(packets, max_size=12), st.lists(st.integers(min_value=1, max_value=5000)))
def test_any_chunking_gives_back_the_same_packets(pkts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pkts)
    framer, got, pos = Framer(), [], 0
    for size in [*cuts, len(stream)]:
        got += framer.feed(stream[pos : pos + size])
        pos += size
    got += framer.feed(stream[pos:])
    assert got == pkts and framer.pending == 0


@given(st.integers(min_value=0, max_value=268_435_455))
def test_length_encoding_round_trips(n: int) -> None:
    encoded = encode_length(n)
    assert 1 <= len(encoded) <= 4
    big = bytes([0x30]) + encoded
    framer = Framer()
    assert framer.feed(big) == ([] if n else [big])  # the body has not arrived yet
    assert framer.pending == (len(big) if n else 0)


def test_a_five_byte_length_is_not_mqtt() -> None:
    with pytest.raises(FrameError):
        Framer().feed(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))
    with pytest.raises(ValueError):
        encode_length(268_435_456)


def test_take_rest_hands_back_an_unfinished_packet() -> None:
    framer = Framer()
    assert framer.feed(packet(0xC0, b"") + b"\x30\x05ab") == [b"\xc0\x00"]
    assert framer.take_rest() == b"\x30\x05ab" and framer.pending == 0


def test_dup_only_on_publish_with_qos_above_zero() -> None:
    qos1 = packet(0x32, b"\x00\x01t\x00\x07hello")
    qos0 = packet(0x30, b"\x00\x01thello")
    pingreq = packet(0xC0, b"")
    assert packet_type(qos1) == PUBLISH
    assert with_dup(qos1)[0] == 0x3A and with_dup(qos1)[1:] == qos1[1:]
    assert with_dup(qos0) == qos0
    assert with_dup(pingreq) == pingreq
