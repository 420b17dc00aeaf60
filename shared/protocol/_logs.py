"""Live output of a running attempt: ``log_request`` (down) and ``log_chunk`` (up).

The controller asks the node that runs an attempt for its output from a byte ``offset`` of
one stream; the node answers with what its watchdog still holds from there (at most
:data:`MAX_LOG_CHUNK` bytes of text), the byte offsets that text spans and the stream's total
so far. Nothing is journaled on either side: a lost request or answer is asked again. What
an attempt wrote once it ended travels with its end in the task record (``shared.crdt``).

Offsets count the bytes the task wrote to the stream (UTF-8 as written); ``text`` is those
bytes decoded (invalid sequences replaced), so ``next_offset - offset`` is the byte length
of the span, not ``len(text)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, NamedTuple, Self

from shared.ids import check_node_id
from shared.model import Fields
from shared.protocol._bodies import MAX_INT, Body, _task_id, check_message_id

__all__ = [
    "LOG_STREAMS",
    "MAX_LOG_CHUNK",
    "LogChunk",
    "LogRequest",
    "LogSpan",
    "check_attempt_dot",
    "log_span",
]

#: Bytes of output in one ``log_chunk`` (its JSON escapes stay far under the message limit).
MAX_LOG_CHUNK: Final = 16_384
#: The streams an attempt has.
LOG_STREAMS: Final = ("stdout", "stderr")


def check_attempt_dot(value: object) -> str | None:
    """``node:counter``, the attempt's dot as the API and ``shared.crdt`` write it."""
    if not isinstance(value, str) or len(value) > 96:
        return "must be a string node:counter"
    node, sep, counter = value.rpartition(":")
    if not sep or check_node_id(node) is not None:
        return "must be node:counter with a valid node id"
    if not (counter.isascii() and counter.isdigit() and 0 < len(counter) <= 18):
        return "must end in :counter (a positive integer)"
    return None


def _stream(f: Fields) -> str:
    stream = f.string("stream", max_len=16)
    if stream not in LOG_STREAMS:
        f.error("stream", f"must be one of {', '.join(LOG_STREAMS)}")
    return stream


def _common(f: Fields) -> dict[str, Any]:
    return {
        "request_id": f.string("request_id", max_len=128, check=check_message_id),
        "task_id": _task_id(f),
        "attempt": f.string("attempt", max_len=96, check=check_attempt_dot),
        "stream": _stream(f),
    }


@dataclass(frozen=True, slots=True)
class LogRequest(Body):
    """Send ``stream`` of the running ``attempt`` (``node:counter``) of ``task_id`` from byte
    ``offset`` (what the asker already has), at most ``max_bytes``; answered by a
    ``log_chunk`` echoing ``request_id``."""

    TYPE: ClassVar[str] = "log_request"

    request_id: str
    task_id: str
    attempt: str
    stream: str
    offset: int = 0
    max_bytes: int = MAX_LOG_CHUNK

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "stream": self.stream,
            "offset": self.offset,
            "max_bytes": self.max_bytes,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            **_common(f),
            offset=f.integer("offset", 0, min=0, max=MAX_INT),
            max_bytes=f.integer("max_bytes", MAX_LOG_CHUNK, min=1, max=MAX_LOG_CHUNK),
        )


@dataclass(frozen=True, slots=True)
class LogChunk(Body):
    """The answer to a ``log_request``: ``text`` spans bytes ``offset`` to ``next_offset``
    of the stream, which has written ``total`` bytes so far. ``running`` is false when the
    node runs no such attempt (ended, or never here): the asker reads the record then."""

    TYPE: ClassVar[str] = "log_chunk"

    request_id: str
    task_id: str
    attempt: str
    stream: str
    running: bool
    text: str = ""
    offset: int = 0
    next_offset: int = 0
    total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "stream": self.stream,
            "running": self.running,
            "text": self.text,
            "offset": self.offset,
            "next_offset": self.next_offset,
            "total": self.total,
        }

    @classmethod
    def read(cls, f: Fields) -> Self:
        chunk = cls(
            **_common(f),
            running=f.boolean("running"),
            text=f.string("text", "", max_len=MAX_LOG_CHUNK),
            offset=f.integer("offset", 0, min=0, max=MAX_INT),
            next_offset=f.integer("next_offset", 0, min=0, max=MAX_INT),
            total=f.integer("total", 0, min=0, max=MAX_INT),
        )
        if not chunk.offset <= chunk.next_offset <= chunk.total:
            f.error("next_offset", "must lie between offset and total")
        elif chunk.next_offset - chunk.offset > MAX_LOG_CHUNK:
            f.error("next_offset", f"spans more than {MAX_LOG_CHUNK} bytes")
        return chunk


class LogSpan(NamedTuple):
    """Part of a stream: ``text`` decodes bytes ``offset`` to ``next_offset``."""

    text: str
    offset: int
    next_offset: int


def log_span(tail: bytes, total: int, offset: int, max_bytes: int = MAX_LOG_CHUNK) -> LogSpan:
    """What a reader who has the stream up to byte ``offset`` reads next from ``tail``, the
    last bytes of a stream that wrote ``total`` bytes: from ``offset`` (or from the tail's
    start, when the bytes in between are no longer kept), at most ``max_bytes``, cut before a
    split UTF-8 character. An ``offset`` past ``total`` (another attempt's) reads nothing."""
    base = max(0, total - len(tail))
    start = min(max(offset, base), total)
    end = min(total, start + max(0, max_bytes))
    while start < end < total and tail[end - base] & 0xC0 == 0x80:
        end -= 1  # a continuation byte: the character goes with the next span
    if end == start < total and max_bytes > 0:
        end = min(total, start + max_bytes)  # a "character" longer than the budget
    return LogSpan(tail[start - base : end - base].decode("utf-8", "replace"), start, end)
