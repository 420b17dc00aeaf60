"""MQTT shell of the controller (paho-mqtt 2.x, callback API VERSION2).

Paho (``cloud.mqtt_client``: reads ahead, no self-wake per ``PUBACK``) runs its network
loop in its own thread; received messages are appended
to a buffer there and handed to the asyncio loop as ``(topic, payload)`` pairs,
one loop wake-up per burst (not per message: ``call_soon_threadsafe`` writes
to the loop's self-pipe), and nothing else happens in paho's thread, so all
controller state is touched by one thread only.

The session is persistent (MQTT 5 ``clean_start=False`` with a session expiry,
or MQTT 3.1.1 ``clean_session=False``) under a stable client id: while the
controller is down, the broker queues the agents' QoS 1 ``up`` messages for
it. Commands on ``down`` are QoS 1 and, under MQTT 5, carry a message expiry
so a node that comes back after a long partition does not run stale orders
(the CRDT state it receives by anti-entropy is never stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from shared.protocol import subscription, topic

from .config import BrokerConfig
from .mqtt_client import Client

__all__ = ["MqttTransport"]

log = logging.getLogger(__name__)

SUBSCRIBED_KINDS = ("hello", "presence", "telemetry", "up")


def _no_delay(client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
    """Send every packet at once (``TCP_NODELAY``). Under Nagle's algorithm a small packet
    queued behind an unacknowledged one (a lease grant right after an ``ack``) waits for
    the broker's delayed ACK: about 40 ms a hop on Linux."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class MqttTransport:
    def __init__(
        self,
        cfg: BrokerConfig,
        *,
        client_id: str,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[str, bytes], None],
        on_connected: Callable[[bool], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._loop = loop
        self._on_message = on_message
        self._on_connected = on_connected
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._wake_lock = threading.Lock()
        self._wake_pending = False
        self._v5 = cfg.protocol == "5"
        # Every command's properties (paho only packs them): built once, not per message.
        self._command_props: Properties | None = None
        if self._v5 and cfg.command_expiry_s > 0:
            self._command_props = Properties(PacketTypes.PUBLISH)
            self._command_props.MessageExpiryInterval = cfg.command_expiry_s
        self.connected = threading.Event()
        if self._v5:
            client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            client = Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.ca_file or None,
                certfile=cfg.cert_file or None,
                keyfile=cfg.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_socket_open = _no_delay
        client.on_connect = self._handle_connect
        client.on_subscribe = self._handle_subscribe
        self._subscribe_mid: int | None = None
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        self.client = client

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects on its own after a loss."""
        kwargs: dict[str, object] = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            kwargs = {"clean_start": False, "properties": props}
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, **kwargs)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- paho callbacks (paho's thread) ---------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: object,
        properties: object,
    ) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("broker refused connection: %s", reason_code)
            return
        # Connected is not yet listening: a node's message published before the broker
        # acknowledged our subscriptions finds no subscriber and is dropped. So the
        # transport (and ``/readyz``) reports connected at the SUBACK (``_handle_subscribe``;
        # paho calls it on this thread, after this callback returned).
        _, self._subscribe_mid = client.subscribe(
            [(subscription(kind), 1) for kind in SUBSCRIBED_KINDS]
        )
        log.info("connected to broker %s:%s", self.cfg.host, self.cfg.port)

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[Any],
        properties: object,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [
            kind
            for kind, code in zip(SUBSCRIBED_KINDS, reason_codes, strict=False)
            if getattr(code, "is_failure", False)
        ]
        if refused:  # (an ACL that does not let the controller read the nodes' topics)
            log.error("broker refused the controller's subscriptions to %s", ", ".join(refused))
            return
        self.connected.set()
        log.info("subscribed to the nodes' topics")
        if self._on_connected is not None:
            self._loop.call_soon_threadsafe(self._on_connected, True)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        self.connected.clear()
        # Our own disconnect at a normal stop is no warning (paho: reason 0, not a failure).
        failed = getattr(reason_code, "is_failure", True)
        log.log(
            logging.WARNING if failed else logging.INFO, "disconnected from broker: %s", reason_code
        )
        if self._on_connected is not None:
            self._loop.call_soon_threadsafe(self._on_connected, False)

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._inbox.append((msg.topic, msg.payload))
        if self._wake_pending:  # a hand-over is scheduled and will find this message
            return
        with self._wake_lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the asyncio loop: hand over everything buffered so far."""
        with self._wake_lock:
            self._wake_pending = False
        inbox = self._inbox
        while inbox:
            self._on_message(*inbox.popleft())

    # -- publishing (any thread) ----------------------------------------------

    def send_down(self, node_id: str, payload: bytes, *, qos: int = 1) -> None:
        """QoS 1 on the node's ``down`` (paho queues it while the broker is away);
        QoS 0 for probes (pings), which must not be queued for an absent node."""
        self.client.publish(
            topic(node_id, "down"), payload, qos=qos, properties=self._command_props
        )
