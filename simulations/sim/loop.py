"""Event loops behind one small interface: the model schedules callbacks in virtual time.

Two backends run the same model (``Loop``): ``HeapLoop``, a specialised loop over
a ``heapq`` of ``(time, seq, callback, argument)`` tuples, and ``SimPyLoop``,
which hands every callback to a ``simpy.Environment`` as a timeout event. The
model only calls ``at``/``after``/``run``/``now``, so both give identical results
(the sequence number breaks time ties in scheduling order in both), and the
benchmark can report their speed ratio on the same scenario.

Why both: SimPy is the reference discrete-event kernel (processes, resources) and
what the anchors recommend; its per-event cost (an ``Event`` object, a callback
list, a generator-free trampoline here) is about three times that of a bare heap
entry, which matters at a million tasks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count
from typing import Any, Protocol

__all__ = ["LOOPS", "HeapLoop", "Loop", "SimPyLoop", "make_loop"]

Callback = Callable[[Any], None]
_push = heapq.heappush


class Loop(Protocol):
    """What the model needs of an event loop (times in seconds of virtual time)."""

    events: int

    @property
    def now(self) -> float: ...

    def at(self, when: float, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(arg)`` at ``when`` (never before ``now``)."""

    def after(self, delay: float, callback: Callback, arg: Any = None) -> None:
        """Run ``callback(arg)`` ``delay`` seconds from now."""

    def run(self, until: float) -> None:
        """Process every event with time ``<= until``; ``now`` ends at ``until``."""


class HeapLoop:
    """A binary heap of ``(time, seq, callback, arg)``; ``seq`` keeps FIFO order on ties."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callback, Any]] = []
        self._seq = count(1)  # one ``next`` per event: no attribute to read and write back
        self._now = 0.0
        self.events = 0

    @property
    def now(self) -> float:
        return self._now

    def at(self, when: float, callback: Callback, arg: Any = None) -> None:
        now = self._now
        _push(self._heap, (when if when > now else now, next(self._seq), callback, arg))

    def after(self, delay: float, callback: Callback, arg: Any = None) -> None:
        self.at(self._now + delay, callback, arg)

    def run(self, until: float) -> None:
        heap = self._heap
        pop = heapq.heappop
        count = 0
        while heap and heap[0][0] <= until:
            when, _, callback, arg = pop(heap)
            self._now = when
            callback(arg)
            count += 1
        self.events += count
        self._now = max(self._now, until)


class SimPyLoop:
    """The same interface on ``simpy.Environment`` (one timeout event per callback)."""

    def __init__(self) -> None:
        import simpy  # the sim extra; imported here so the heap loop needs nothing
        from simpy.events import NORMAL, Event

        self._env = simpy.Environment()
        self._event, self._normal = Event, NORMAL
        self.events = 0

    @property
    def now(self) -> float:
        return float(self._env.now)

    def at(self, when: float, callback: Callback, arg: Any = None) -> None:
        # A timeout is scheduled at ``now + delay``, and ``now + (when - now)`` is not
        # always ``when`` in floats (nor is any ``now + d`` for some ``when``: rounding
        # ties), so events the heap loop has in one order could run in another. The
        # event is what ``Timeout`` builds, queued at ``when`` itself as
        # ``Environment.schedule`` queues it (simpy 4's ``_queue`` entry).
        env = self._env
        event = self._event(env)
        event._ok, event._value = True, None
        event.callbacks.append(lambda _event: self._fire(callback, arg))  # type: ignore[union-attr]
        now = env.now
        entry = (when if when > now else now, self._normal, next(env._eid), event)
        heapq.heappush(env._queue, entry)  # type: ignore[misc]

    def after(self, delay: float, callback: Callback, arg: Any = None) -> None:
        event = self._env.timeout(delay if delay > 0 else 0.0)
        event.callbacks.append(lambda _event: self._fire(callback, arg))  # type: ignore[union-attr]

    def _fire(self, callback: Callback, arg: Any) -> None:
        self.events += 1
        callback(arg)

    def run(self, until: float) -> None:
        # SimPy processes events strictly before ``until``; nudge so ``<= until`` holds.
        self._env.run(until=until + 1e-9) if until + 1e-9 > self._env.now else None


LOOPS: dict[str, Callable[[], Loop]] = {"heap": HeapLoop, "simpy": SimPyLoop}


def make_loop(name: str) -> Loop:
    """A fresh loop by name (``heap`` or ``simpy``)."""
    try:
        return LOOPS[name]()
    except KeyError:
        raise ValueError(f"unknown event loop {name!r}; choose from {sorted(LOOPS)}") from None
