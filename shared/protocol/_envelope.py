"""The envelope every MQTT message travels in (docs/protocol.md).

On the wire (JSON)::

    {"v": 1, "type": "deltas", "id": "3f2a...", "from": "pi-7",
     "hlc": "18c1f2a3b4.0.pi-7", "seq": 42, "body": {...}}

``from`` is a Python keyword, so the attribute is :attr:`Envelope.sender`. ``hlc`` stays the
encoded :class:`shared.clocks.Timestamp` text (the receiver feeds it to its own clock); the
codec checks that it parses and that its node is the sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared import PROTOCOL_VERSION
from shared.protocol._bodies import Body

__all__ = ["MAX_MESSAGE_BYTES", "PROTOCOL_VERSION", "Envelope"]

#: Largest encoded message accepted or sent (docs/protocol.md: 256 KiB). The agent's ``up`` batches
#: stop adding deltas at 200 kB of delta JSON, which leaves room for the envelope.
MAX_MESSAGE_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message. ``type`` names the body class (``body.TYPE``); ``id`` is unique per
    message (receivers de-duplicate on it; acks and pongs echo it); ``sender`` is the
    node id of the writer (the controller's own id on ``down``); ``seq`` is the outbox
    sequence number of the last delta in an ``up`` batch, absent elsewhere."""

    type: str
    id: str
    sender: str
    hlc: str
    body: Body
    seq: int | None = None
