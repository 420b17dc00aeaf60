"""The controller and scripted nodes joined by an in-memory bus: no broker, no threads.

Like h11's ``ConnectionPair``: bytes go from one side straight to the other. The
controller is the real ``cloud.controller.Controller`` with an injected monotonic
clock; what it publishes is delivered at once to the addressed :class:`MemoryNode`
(pings are answered into the controller's inbox), and what a node publishes waits
in the controller's inbox until :meth:`Harness.pump` hands it to ``ingest``. So a
test is deterministic and fast, and every wait in the shared harness returns at
once. Use the broker harness (``cloud_harness.Harness``) where the broker is the
subject: sessions, QoS, retained messages, the ACL.

A node can be cut off (``connected = False``: nothing reaches it, what it publishes
is lost) and can leave a last will the bus publishes for it (:meth:`MemoryBus.will`),
which is how a frozen (SIGSTOPped) agent looks to the controller.

A real agent joins the same bus through ``tests/pair/agent_pair.py`` (its link is an
:class:`Endpoint` here): the agent's behaviour tested against the real controller.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Protocol

from cloud_harness import Harness, NodeScript, Transport, wall_ms

from cloud.config import ControllerConfig
from shared.protocol import Envelope, Presence, encode, topic


class Endpoint(Protocol):
    """A node's end of the bus: a :class:`MemoryNode`, or a real agent's link
    (``tests/pair/agent_pair.py``)."""

    connected: bool

    def deliver(self, topic_: str, payload: bytes) -> None: ...


class MemoryBus:
    """The controller's side: nodes' messages queued in, ``down`` delivered at once."""

    def __init__(self) -> None:
        self.inbox: deque[tuple[str, bytes]] = deque()
        self.sent: list[tuple[str, bytes]] = []
        self.nodes: dict[str, Endpoint] = {}

    def send(self, node_id: str, payload: bytes, qos: int) -> None:
        self.sent.append((node_id, payload))
        node = self.nodes.get(node_id)
        if node is not None and node.connected:
            node.deliver(topic(node_id, "down"), payload)

    def batch(self, wait_s: float) -> list[tuple[str, bytes]]:
        """Everything published so far (never waits: nothing is in flight)."""
        out = list(self.inbox)
        self.inbox.clear()
        return out

    def will(self, node: MemoryNode) -> None:
        """The broker publishes the node's last will (``offline``) for it, as it does
        when the node's keep-alive expires: the node itself says nothing."""
        env = Envelope(
            type="presence",
            id=f"will-{len(self.sent)}-{node.node_id}",
            sender=node.node_id,
            hlc=node.clock.now(wall_ms()).encode(),
            body=Presence(status="offline"),
        )
        self.inbox.append((topic(node.node_id, "presence"), encode(env)))

    def close(self) -> None:
        """Nothing to release."""


class MemoryNode(NodeScript):
    def __init__(self, bus: MemoryBus, node_id: str) -> None:
        super().__init__(node_id)
        self.bus = bus
        self.connected = True
        bus.nodes[node_id] = self

    def _transmit(self, topic_: str, payload: bytes, *, wait: bool) -> None:
        if self.connected:
            self.bus.inbox.append((topic_, payload))


class MemoryHarness(Harness):
    """``cloud_harness.Harness`` on a :class:`MemoryBus` (same methods, no broker)."""

    def __init__(self, tmp: Path, cfg: ControllerConfig | None = None) -> None:
        self.memory = MemoryBus()
        super().__init__(tmp, 0, cfg)

    def _bus(self) -> Transport:
        return self.memory

    def _new_node(self, node_id: str) -> MemoryNode:
        return MemoryNode(self.memory, node_id)

    def mnode(self, node_id: str) -> MemoryNode:
        """A node of this harness, as the in-memory node it is."""
        node = self.nodes[node_id]
        assert isinstance(node, MemoryNode)
        return node
