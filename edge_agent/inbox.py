"""What the agent's core thread is handed by the others: typed events, one at a time.

The MQTT thread, the HTTP threads and the signal handler only put one of these on the
inbox; the core loop takes them in order (see ``edge_agent/agent.py``), so the journal has
a single writer and handlers never race.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = [
    "ApiCall",
    "InboxEvent",
    "LinkChanged",
    "MessageArrived",
    "StopRequested",
    "TasksReported",
]


@dataclass(frozen=True, slots=True)
class MessageArrived:
    """A message on one of the agent's subscriptions (untrusted until decoded)."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The MQTT connection came up or went down."""

    up: bool


@dataclass(slots=True)
class ApiCall:
    """A local API request; the HTTP thread waits on ``done`` for ``result``."""

    method: str
    path: str
    body: bytes
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[int, object] = (500, {"error": "no reply"})


@dataclass(frozen=True, slots=True)
class StopRequested:
    """SIGTERM/SIGINT: drain and stop."""


@dataclass(frozen=True, slots=True)
class TasksReported:
    """The task supervisor reported something (an exit): the tick that follows polls it."""


InboxEvent = MessageArrived | LinkChanged | ApiCall | StopRequested | TasksReported
