"""Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

A timestamp is ``(wall_ms, logical, node)``: ``wall_ms`` follows the largest
physical time seen (local or remote), ``logical`` counts events that share it,
and ``node`` breaks the remaining ties so the order is total. The clock never
reads time itself: every call takes ``physical_ms`` from the caller.

A peer whose clock runs far ahead would drag ours forward for good, so
:meth:`HybridClock.receive` refuses remote timestamps more than ``max_drift_ms``
ahead of our physical time (:class:`~shared.errors.ClockSkewError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from shared.errors import ClockSkewError
from shared.ids import MAX_NODE_ID_LEN, is_node_id

__all__ = ["HybridClock", "Timestamp"]

# Canonical hex without leading zeros, so one timestamp has exactly one encoding
# (records store encoded stamps and are hashed; two spellings would split hashes).
_HEX = r"(0|[1-9a-f][0-9a-f]{0,15})"
_ENCODED = re.compile(rf"{_HEX}\.{_HEX}\.(.{{1,{MAX_NODE_ID_LEN}}})", re.DOTALL)


@dataclass(frozen=True, slots=True, order=True)
class Timestamp:
    """An HLC stamp, totally ordered by ``(wall_ms, logical, node)``.

    The encoded string (``"<wall hex>.<logical hex>.<node>"``) is compact and
    round-trips exactly, but its string order is *not* the logical order (hex
    digits vary in count): always compare decoded :class:`Timestamp` values.
    """

    wall_ms: int
    logical: int
    node: str

    def encode(self) -> str:
        return f"{self.wall_ms:x}.{self.logical:x}.{self.node}"

    @classmethod
    def decode(cls, text: str) -> Timestamp:
        """Parse :meth:`encode` output; raise ``ValueError`` on anything else
        (including non-canonical spellings such as leading zeros)."""
        if not isinstance(text, str):
            raise ValueError(f"HLC timestamp must be a string, not {type(text).__name__}")
        # A plain copy of a str subclass: the cache must never call foreign __eq__/__hash__.
        return _decoded(text if type(text) is str else str.__str__(text))


#: Decoded stamps kept (a message's stamp is read by the codec, the clock and the
#: reactions; an attempt's by the record parser and the learner): bounded, since the
#: texts come from the network. Failures are not cached (lru_cache caches returns only).
DECODED_CACHE = 4096


@lru_cache(maxsize=DECODED_CACHE)
def _decoded(text: str) -> Timestamp:
    match = _ENCODED.fullmatch(text)
    if match is None:
        raise ValueError(f"not an HLC timestamp: {text[:80]!r}")
    wall, logical, node = match.groups()
    if not is_node_id(node):
        raise ValueError(f"not an HLC timestamp: {text[:80]!r}")
    return _stamp(int(wall, 16), int(logical, 16), node)


_new = object.__new__
_set_wall, _set_logical, _set_node = (
    Timestamp.__dict__[name].__set__ for name in ("wall_ms", "logical", "node")
)


def _stamp(wall_ms: int, logical: int, node: str) -> Timestamp:
    """``Timestamp(wall_ms, logical, node)`` for values already checked, at half the
    cost: the slots are set directly, not through the frozen dataclass's ``__init__``
    (three ``object.__setattr__`` calls; a message makes two or three stamps)."""
    stamp = _new(Timestamp)
    _set_wall(stamp, wall_ms)
    _set_logical(stamp, logical)
    _set_node(stamp, node)
    return stamp


class HybridClock:
    """One node's HLC. ``now``/``send`` stamp local and send events; ``receive``
    merges a remote stamp and returns a stamp ordered after it.

    Pass ``last`` (a stamp this node issued before a restart, from its journal)
    to stay monotone across restarts even if the physical clock stepped back.
    """

    __slots__ = ("_logical", "_wall", "max_drift_ms", "node")

    def __init__(
        self, node: str, *, max_drift_ms: int = 60_000, last: Timestamp | None = None
    ) -> None:
        if not is_node_id(node):
            raise ValueError(f"invalid node id {node!r}")
        if max_drift_ms < 0:
            raise ValueError("max_drift_ms must be >= 0")
        self.node = node
        self.max_drift_ms = max_drift_ms
        self._wall = -1 if last is None else last.wall_ms
        self._logical = 0 if last is None else last.logical

    @property
    def last(self) -> Timestamp | None:
        """The latest stamp issued (``None`` before the first)."""
        if self._wall < 0:
            return None
        return Timestamp(self._wall, self._logical, self.node)

    def now(self, physical_ms: int) -> Timestamp:
        """Stamp a local (or send) event; strictly after every earlier stamp."""
        if physical_ms > self._wall:
            self._wall, self._logical = physical_ms, 0
        else:
            self._logical += 1
        return _stamp(self._wall, self._logical, self.node)

    send = now

    def receive(self, remote: Timestamp, physical_ms: int) -> Timestamp:
        """Merge a remote stamp; the result is after ``remote`` and after every
        stamp issued here. The clock is left untouched when the remote clock is
        too far ahead."""
        if remote.wall_ms > physical_ms + self.max_drift_ms:
            raise ClockSkewError(remote.wall_ms, physical_ms, self.max_drift_ms)
        wall = max(self._wall, remote.wall_ms, physical_ms)
        if wall == self._wall and wall == remote.wall_ms:
            logical = max(self._logical, remote.logical) + 1
        elif wall == self._wall:
            logical = self._logical + 1
        elif wall == remote.wall_ms:
            logical = remote.logical + 1
        else:
            logical = 0
        self._wall, self._logical = wall, logical
        return _stamp(wall, logical, self.node)
