"""How many refusal events a node can cause: at most one per node and reason per window.

A stolen device can send messages as fast as the broker takes them; each refused part is
counted (a metric), but a row in the event log per message would let it fill the
controller's disk. :class:`RefusalEvents` admits the first refusal of a (node, reason)
and then one per ``window_ms``, handing the next admitted event the number held back
meanwhile. Pure: the caller passes the time.
"""

from __future__ import annotations

__all__ = ["RefusalEvents"]


class RefusalEvents:
    def __init__(self, window_ms: int = 10_000) -> None:
        self.window_ms = window_ms
        self._state: dict[tuple[str, str], tuple[int, int]] = {}  # -> (last event, held)

    def admit(self, node: str, reason: str, count: int, now_ms: int) -> int | None:
        """``None``: no event now (``count`` is held back); else an event is due and this
        is how many refusals were held back since the previous one."""
        key = (node, reason)
        last = self._state.get(key)
        if last is not None and now_ms - last[0] < self.window_ms:
            self._state[key] = (last[0], last[1] + count)
            return None
        self._state[key] = (now_ms, 0)
        return 0 if last is None else last[1]
