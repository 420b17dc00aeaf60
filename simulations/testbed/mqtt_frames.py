"""MQTT control-packet framing, just enough for the fault proxy's ``lossy`` mode.

An MQTT packet is a fixed header (one byte: type in the high nibble, flags in the low
one; then the remaining length, a variable-length integer of 1 to 4 bytes, 7 bits each,
least significant first) followed by that many bytes (MQTT 3.1.1 and 5 alike). The proxy
cuts the byte stream into whole packets with :class:`Framer`, so it can drop, duplicate
or hold back a PUBLISH and still forward a stream the endpoints can parse. Pure: no I/O.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "FrameError", "Framer", "encode_length", "packet_type", "with_dup"]

PUBLISH = 3
_MAX_LENGTH = 268_435_455  # the largest remaining length four bytes can encode


class FrameError(ValueError):
    """The stream is not MQTT (a remaining length longer than four bytes)."""


def _remaining_length(buf: bytes | bytearray, start: int) -> tuple[int, int] | None:
    """(remaining length, header size) of the packet at ``start``; ``None`` when the
    header is not complete yet."""
    value, shift = 0, 0
    for i in range(4):
        pos = start + 1 + i
        if pos >= len(buf):
            return None
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, 2 + i
        shift += 7
    raise FrameError(f"remaining length of the packet at byte {start} exceeds four bytes")


class Framer:
    """Reassembles whole packets from chunks of a stream, in order.

    ``feed(chunk)`` returns the packets completed by it; bytes of an unfinished packet
    wait for the next chunk. After a :class:`FrameError` the framer is unusable (the
    caller forwards the rest of the stream unframed)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back: an unfinished packet."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buf += chunk
        packets: list[bytes] = []
        pos = 0
        while True:
            header = _remaining_length(self._buf, pos)
            if header is None:
                break
            length, size = header
            end = pos + size + length
            if end > len(self._buf):
                break
            packets.append(bytes(self._buf[pos:end]))
            pos = end
        del self._buf[:pos]
        return packets

    def take_rest(self) -> bytes:
        """The unfinished bytes, handed back (the stream ended, or framing stops)."""
        rest, self._buf = bytes(self._buf), bytearray()
        return rest


def packet_type(packet: bytes) -> int:
    return packet[0] >> 4


def with_dup(packet: bytes) -> bytes:
    """A PUBLISH as re-sent: the DUP flag set when its QoS is above 0 (a QoS 0 PUBLISH
    must keep DUP clear, MQTT-3.3.1-2)."""
    if packet_type(packet) != PUBLISH or not (packet[0] >> 1) & 0x03:
        return packet
    return bytes([packet[0] | 0x08]) + packet[1:]


def encode_length(n: int) -> bytes:
    """The variable-length encoding of ``n`` (tests build packets with it)."""
    if not 0 <= n <= _MAX_LENGTH:
        raise ValueError(f"remaining length out of range: {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
