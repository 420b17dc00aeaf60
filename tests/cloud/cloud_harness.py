"""A real controller (``cloud.controller.Controller``) with scripted nodes, on a real
Mosquitto (this module) or on an in-memory bus (``memory_bus``).

The controller object is driven directly: the test feeds it the messages the broker
delivered (:meth:`Harness.pump`) and calls its ``tick``; its monotonic clock is a
:class:`FakeClock`, so partitions, lease deadlines and dwell times are crossed by
advancing time, never by sleeping. Wall time stays real (HLC stamps of the nodes
and the controller must agree within the skew bound).

A :class:`NodeScript` speaks ``shared.protocol`` on its own topics, keeps its own
replica of the records it touched and builds deltas with the ``shared.crdt``
mutators, as an agent does; :class:`ScriptedNode` is one over a paho client.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from cloud.config import ControllerConfig, parse_config
from cloud.controller import Controller
from cloud.metrics import ControllerMetrics
from cloud.store import Store
from shared.clocks import HybridClock
from shared.crdt import (
    AttemptLog,
    AttemptStatus,
    TaskRecord,
    merge,
    set_status,
    start_attempt,
)
from shared.protocol import (
    PROTOCOL_VERSION,
    Body,
    Capacity,
    Deltas,
    Envelope,
    Heartbeat,
    Hello,
    LeaseRequest,
    Pong,
    Presence,
    decode_from,
    encode,
    subscription,
    topic,
)

WAIT_S = 10.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class FakeClock:
    """The controller's monotonic clock, moved by the test."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        self.t += dt
        return self.t


def _client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


class Transport(Protocol):
    """The controller's side of whatever joins it to the nodes."""

    def send(self, node_id: str, payload: bytes, qos: int) -> None: ...
    def batch(self, wait_s: float) -> list[tuple[str, bytes]]: ...
    def close(self) -> None: ...


class Bus:
    """The controller's side of the broker: every node's up-kinds in, ``down`` out."""

    def __init__(self, port: int) -> None:
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.sent: list[tuple[str, bytes]] = []
        subscribed: queue.Queue[object] = queue.Queue()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"ctl-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        c.on_message = lambda _c, _u, m: self.inbox.put((m.topic, m.payload))
        c.on_subscribe = lambda *_a: subscribed.put(True)
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe([(subscription(k), 1) for k in ("hello", "presence", "telemetry", "up")])
        subscribed.get(timeout=WAIT_S)
        self.client = c

    def send(self, node_id: str, payload: bytes, qos: int) -> None:
        self.sent.append((node_id, payload))
        self.client.publish(topic(node_id, "down"), payload, qos=qos)

    def batch(self, wait_s: float) -> list[tuple[str, bytes]]:
        """What the broker delivered so far (waiting up to ``wait_s`` for a first one)."""
        batch: list[tuple[str, bytes]] = []
        try:
            batch.append(self.inbox.get(timeout=wait_s))
            while True:
                batch.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        return batch

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class NodeScript:
    """A node that says exactly what the test tells it to; subclasses carry the bytes
    (:meth:`_transmit` out, :meth:`deliver` in)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.clock = HybridClock(node_id)
        self.inbox: queue.Queue[Envelope] = queue.Queue()
        self.records: dict[str, TaskRecord] = {}
        self.seq = 0
        self.answer_pings = True
        self.stash: list[Envelope] = []

    def _transmit(self, topic_: str, payload: bytes, *, wait: bool) -> None:
        raise NotImplementedError

    def deliver(self, topic_: str, payload: bytes) -> None:
        """A message on our ``down`` topic: pings are answered at once, the rest kept."""
        env = decode_from(topic_, payload)
        if env.type == "ping" and self.answer_pings:
            # paho's own thread: publish without waiting for the PUBACK it must read
            self.publish("up", Pong(ping_id=env.id), wait=False)
            return
        self.inbox.put(env)

    def close(self) -> None:
        """Release the transport (nothing to release by default)."""

    def publish(self, kind: str, body: Body, *, seq: int | None = None, wait: bool = True) -> str:
        env = Envelope(
            type=body.TYPE,
            id=uuid.uuid4().hex[:16],
            sender=self.node_id,
            hlc=self.clock.now(wall_ms()).encode(),
            body=body,
            seq=seq,
        )
        self._transmit(topic(self.node_id, kind), encode(env), wait=wait)
        return env.id

    # -- what an agent says ------------------------------------------------------

    def hello(
        self,
        tier: str = "edge",
        labels: dict[str, str] | None = None,
        cpus: float = 4.0,
        memory_mb: float = 4096.0,
        slots: int | None = None,
    ) -> None:
        self.publish(
            "hello",
            Hello(
                tier=tier,  # type: ignore[arg-type]
                labels=labels or {},
                agent_version="test",
                protocol_version=PROTOCOL_VERSION,
                capacity=Capacity(cpus=cpus, memory_mb=memory_mb, disk_mb=10_000.0, slots=slots),
            ),
        )
        self.publish("presence", Presence(status="online"))

    def heartbeat(self) -> str:
        return self.publish("up", Heartbeat())

    def request_lease(
        self, task_id: str, epoch: int, duration_s: float = 10.0, request_id: str = ""
    ) -> None:
        self.publish(
            "up",
            LeaseRequest(
                task_id=task_id, epoch=epoch, duration_s=duration_s, request_id=request_id
            ),
        )

    def send_deltas(self, deltas: Iterable[TaskRecord]) -> int:
        self.seq += 1
        self.publish("up", Deltas(records=tuple(deltas)), seq=self.seq)
        return self.seq

    def _apply(self, delta: TaskRecord) -> TaskRecord:
        old = self.records.get(delta.task_id)
        self.records[delta.task_id] = delta if old is None else merge(old, delta)
        return delta

    def start(self, task_id: str, epoch: int) -> tuple[str, int]:
        """Start an attempt (as the agent does on a placement) and report it."""
        rec = self.records.get(task_id) or TaskRecord(task_id)
        dot, delta = start_attempt(
            rec, node=self.node_id, epoch=epoch, writer=self.node_id, hlc=self.clock.now(wall_ms())
        )
        self.send_deltas([self._apply(delta)])
        return dot

    def finish(
        self,
        task_id: str,
        dot: tuple[str, int],
        status: AttemptStatus = AttemptStatus.SUCCEEDED,
        result: Any = None,
        reason: str | None = None,
        log: AttemptLog | None = None,
    ) -> None:
        delta = set_status(
            self.records[task_id],
            dot,
            status,
            writer=self.node_id,
            hlc=self.clock.now(wall_ms()),
            exit_code=0 if status == AttemptStatus.SUCCEEDED else 1,
            result=result,
            reason=reason,
            log=log,
        )
        self.send_deltas([self._apply(delta)])

    def take(self, type_: str, pred: Callable[[Envelope], Any] = lambda e: True) -> Envelope | None:
        """The first received ``down`` message of ``type_`` matching ``pred``, if any
        (removed; the others stay for later calls)."""
        while True:
            try:
                self.stash.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        for i, env in enumerate(self.stash):
            if env.type == type_ and pred(env):
                return self.stash.pop(i)
        return None

    def expect(self, type_: str, pred: Callable[[Envelope], Any] = lambda e: True) -> Envelope:
        """Wait for :meth:`take` to find a message (the controller must already have sent it)."""
        deadline = time.monotonic() + WAIT_S
        while (env := self.take(type_, pred)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.node_id}: no {type_} message")
            time.sleep(0.01)
        return env

    def received(self, type_: str, pred: Callable[[Envelope], Any] = lambda e: True) -> bool:
        """Whether a matching message is already here (not consumed)."""
        env = self.take(type_, pred)
        if env is not None:
            self.stash.insert(0, env)
        return env is not None

    def pong(self, ping: Envelope) -> None:
        self.publish("up", Pong(ping_id=ping.id))


class ScriptedNode(NodeScript):
    """A scripted node over its own paho client on the test's Mosquitto."""

    def __init__(self, port: int, node_id: str) -> None:
        super().__init__(node_id)
        subscribed: queue.Queue[object] = queue.Queue()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{node_id}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        c.on_message = lambda _c, _u, msg: self.deliver(msg.topic, msg.payload)
        c.on_subscribe = lambda *_a: subscribed.put(True)
        c.connect("127.0.0.1", port)
        c.loop_start()
        c.subscribe(topic(node_id, "down"), qos=1)
        subscribed.get(timeout=WAIT_S)
        self.client = c

    def _transmit(self, topic_: str, payload: bytes, *, wait: bool) -> None:
        info = self.client.publish(topic_, payload, qos=1)
        if wait:
            info.wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


BASE_CONFIG: dict[str, Any] = {
    "controller": {"node_id": "controller", "state_dir": "state"},
    "api": {"token": "test-token", "port": 0},
    "placement": {"mode": "hybrid_dynamic"},
    "health": {
        "heartbeat_interval_s": 1.0,
        "suspect_missed": 3,
        "confirm_after_s": 1000.0,
        "window_s": 5.0,
    },
    "consistency": {"lease_s": 10.0, "lease_margin_s": 2.0, "upgrade_dwell_s": 30.0},
}


def make_config(tmp: Path, **overrides: dict[str, Any]) -> ControllerConfig:
    data = {k: dict(v) for k, v in BASE_CONFIG.items()}
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return parse_config(data, base_dir=tmp)


class Harness:
    """A controller on a real Mosquitto (``memory_bus.MemoryHarness``: on no broker)."""

    def __init__(self, tmp: Path, port: int, cfg: ControllerConfig | None = None) -> None:
        self.tmp = tmp
        self.port = port
        self.cfg = cfg or make_config(tmp)
        self.clock = FakeClock()
        self.bus = self._bus()
        self.nodes: dict[str, NodeScript] = {}
        self.controller = self._controller()

    def _bus(self) -> Transport:
        return Bus(self.port)

    def _new_node(self, node_id: str) -> NodeScript:
        return ScriptedNode(self.port, node_id)

    def _controller(self) -> Controller:
        self.store = Store(self.cfg.db_path)
        controller = Controller(
            self.cfg,
            self.store,
            ControllerMetrics(),
            send=self.bus.send,
            mono=self.clock,
            wall_ms=wall_ms,
        )
        controller.set_broker_connected(True)  # the bus is connected and subscribed
        return controller

    def restart(self, clock_start: float = 50.0) -> Controller:
        """A new controller process on the same store, with a fresh monotonic clock."""
        self.store.close()
        self.clock.t = clock_start
        self.controller = self._controller()
        return self.controller

    def node(self, node_id: str, **hello: Any) -> NodeScript:
        n = self._new_node(node_id)
        self.nodes[node_id] = n
        n.hello(**hello)
        self.pump_until(
            lambda: (
                (e := self.controller.registry.get(node_id)) is not None
                and e.registered
                and e.presence == "online"
            )
        )
        return n

    def pump(self, wait_s: float = 0.05) -> int:
        """Hand the controller what the broker delivered so far (one ingest batch)."""
        batch = self.bus.batch(wait_s)
        if batch:
            self.controller.ingest(batch)
        return len(batch)

    def pump_until(self, pred: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            self.pump()

    def tick(self, dt: float = 0.0) -> None:
        self.clock.advance(dt)
        self.controller.tick()

    def await_msg(
        self, node: NodeScript, type_: str, pred: Callable[[Envelope], Any] = lambda e: True
    ) -> Envelope:
        """Pump the controller until ``node`` receives a matching message."""
        deadline = time.monotonic() + WAIT_S
        while (env := node.take(type_, pred)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{node.node_id}: no {type_} message")
            self.pump(0.02)
        return env

    def keep_alive(self, *node_ids: str) -> None:
        """The named nodes heartbeat and the controller hears it (at the current time)."""
        for n in node_ids:
            hb = self.nodes[n].heartbeat()
            self.await_msg(self.nodes[n], "ack", lambda e, hb=hb: e.body.heartbeat_id == hb)

    def events(self, **filters: Any) -> list[dict[str, Any]]:
        return self.controller.list_events(limit=1000, **filters)["events"]

    def close(self) -> None:
        for n in self.nodes.values():
            n.close()
        self.bus.close()
        self.store.close()
