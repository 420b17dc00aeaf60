"""The agent's one source of time. Every module takes a :class:`Clock` instead of reading
``time`` itself, so the core can be driven by a test's clock and the only monotonic and
wall-clock reads of the agent's own logic are the two lines of :class:`SystemClock`."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def mono(self) -> float:
        """Monotonic seconds: deadlines, leases, cadences (never compared across processes,
        except with the task supervisor on the same host reading ``CLOCK_MONOTONIC`` too)."""
        ...

    def wall_ms(self) -> int:
        """Wall-clock milliseconds: the HLC, journal timestamps, queue ordering."""
        ...


class SystemClock:
    def mono(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000
