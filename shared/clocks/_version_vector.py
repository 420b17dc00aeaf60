"""Version vectors: per-writer event counters, a missing entry meaning 0.

They form a lattice: ``a <= b`` iff every entry of ``a`` is at most that of
``b``, and :meth:`VersionVector.merge` (entry-wise max) is the least upper
bound. Zero entries are never stored, so equal vectors have equal internals,
equal hashes and one digest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from enum import Enum

from shared.errors import Problem, ValidationError
from shared.ids import check_node_id

__all__ = ["Ordering", "VersionVector"]

#: Bound on entries accepted from untrusted input (one per writer of a record).
MAX_ENTRIES = 4096
_COUNT = re.compile(r"[0-9]{1,19}")


class Ordering(Enum):
    """Causal relation of one vector to another."""

    BEFORE = "before"
    AFTER = "after"
    EQUAL = "equal"
    CONCURRENT = "concurrent"


class VersionVector:
    """Immutable, hashable version vector. Operations return new vectors and
    return an operand itself when the result equals it (cheap merges)."""

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        clean: dict[str, int] = {}
        if entries:
            for node, count in entries.items():
                if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                    raise ValueError(f"counter for {node!r} must be an int >= 0, not {count!r}")
                if count:
                    clean[node] = count
        self._entries = clean
        self._hash: int | None = None

    @classmethod
    def _trusted(cls, entries: dict[str, int]) -> VersionVector:
        """Wrap an already-clean dict (no zeros) without copying or checking."""
        vv = object.__new__(cls)
        vv._entries = entries
        vv._hash = None
        return vv

    def get(self, node: str) -> int:
        return self._entries.get(node, 0)

    def items(self) -> Iterator[tuple[str, int]]:
        return iter(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def increment(self, node: str) -> VersionVector:
        entries = dict(self._entries)
        entries[node] = entries.get(node, 0) + 1
        return VersionVector._trusted(entries)

    def merge(self, other: VersionVector) -> VersionVector:
        """Least upper bound (entry-wise max)."""
        if other is self:
            return self
        mine = self._entries
        merged: dict[str, int] | None = None
        for node, count in other._entries.items():
            if count > mine.get(node, 0):
                if merged is None:
                    merged = dict(mine)
                merged[node] = count
        if merged is None:
            return self
        if len(merged) == len(other._entries) and merged == other._entries:
            return other
        return VersionVector._trusted(merged)

    def dominates(self, other: VersionVector) -> bool:
        """``self >= other`` in every entry."""
        mine = self._entries
        return all(count <= mine.get(node, 0) for node, count in other._entries.items())

    def compare(self, other: VersionVector) -> Ordering:
        ge = self.dominates(other)
        le = other.dominates(self)
        if ge and le:
            return Ordering.EQUAL
        if ge:
            return Ordering.AFTER
        if le:
            return Ordering.BEFORE
        return Ordering.CONCURRENT

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionVector):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"VersionVector({dict(sorted(self._entries.items()))!r})"

    def to_dict(self) -> dict[str, int]:
        """Sorted plain dict (JSON-able)."""
        return dict(sorted(self._entries.items()))

    @classmethod
    def from_dict(cls, data: object, *, path: str = "") -> VersionVector:
        """Parse untrusted input; raise :class:`ValidationError` listing every problem."""
        problems = cls._check(data, path)
        if problems:
            raise ValidationError(problems, what="version vector")
        assert isinstance(data, dict)
        return cls._trusted({node: count for node, count in data.items() if count})

    @staticmethod
    def _check(data: object, path: str) -> list[Problem]:
        if not isinstance(data, dict):
            return [Problem(path, f"must be an object, not {type(data).__name__}")]
        if len(data) > MAX_ENTRIES:
            return [Problem(path, f"at most {MAX_ENTRIES} entries")]
        problems = []
        for node, count in data.items():
            why = check_node_id(node)
            if why:
                problems.append(Problem(f"{path}[{str(node)[:70]!r}]", f"node id {why}"))
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                problems.append(Problem(f"{path}.{str(node)[:70]}", "must be an integer >= 0"))
        return problems

    def digest(self) -> str:
        """Compact canonical text ``"a:3,b:5"`` (sorted by node; empty vector: ``""``)."""
        return ",".join(f"{node}:{count}" for node, count in sorted(self._entries.items()))

    @classmethod
    def from_digest(cls, text: object) -> VersionVector:
        """Parse :meth:`digest` output; raise :class:`ValidationError` on garbage."""
        if not isinstance(text, str):
            raise ValidationError([Problem("", "digest must be a string")], what="digest")
        entries: dict[str, int] = {}
        parts = text.split(",") if text else []
        if len(parts) > MAX_ENTRIES:
            raise ValidationError([Problem("", f"at most {MAX_ENTRIES} entries")], what="digest")
        for part in parts:
            node, sep, count = part.partition(":")
            if not (sep and _COUNT.fullmatch(count)) or node in entries:
                raise ValidationError([Problem("", f"bad entry {part[:80]!r}")], what="digest")
            entries[node] = int(count)
        return cls.from_dict(entries)
