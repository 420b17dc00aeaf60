"""A least-recently-used cache with a byte budget, for the static half of placement
per task shape (``_pipeline.Shape``) and, within one ``place_batch``, the adaptive
mode's leads (``_pipeline.Lead``): bounded in memory whatever the number of
distinct shapes, and emptied by dropping it."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["DEFAULT_CACHE_BYTES", "ShapeCache"]

#: Default budget: about 1,090 shapes on a 5,000-node table (45 KB each: a mask
#: and one float column; a miss costs one ``prepare``, about 0.1 ms there), so the
#: 1,000 shapes of ``benchmarks/bench_placement.py`` stay cached (at 32 MB, 30 % of
#: its decisions missed and it placed 13 % fewer tasks per CPU second).
DEFAULT_CACHE_BYTES = 48 * 1024 * 1024

V = TypeVar("V")


class ShapeCache(Generic[V]):
    """Entries with their size in bytes; adding one past ``budget_bytes`` evicts the
    least recently used until it fits (an entry larger than the budget is not kept)."""

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget must be >= 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, key: Hashable, value: V, nbytes: int) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if nbytes > self.budget_bytes:
            return
        while self.bytes + nbytes > self.budget_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self.bytes -= size
        self._entries[key] = (value, nbytes)
        self.bytes += nbytes

    def clear(self) -> None:
        """Forget everything (call after changing the table's telemetry columns)."""
        self._entries.clear()
        self.bytes = 0
