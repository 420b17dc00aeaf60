"""MQTT transport: one paho-mqtt 2.x client driven by our own network thread.

We drive ``client.loop()`` ourselves instead of paho's ``loop_start()`` because paho's built-in
reconnect backs off without jitter: after a broker restart every agent of a fleet would come
back in lock-step. Here the delay comes from ``shared.protocol.reconnect_wait`` (the shared
policy, not a copy of it): exponential, capped, jittered between ``reconnect_min_s`` and
``reconnect_max_s``, and counted from the start of the failed probe, so a connect that hung
on a cut link is followed at once and the heal finds one out.

The session is persistent (``clean_session=False``, a stable client id): the broker keeps our
``down`` subscription and queues QoS 1 messages while we are away. paho keeps in-flight QoS 1
messages only in memory, so the agent's durable outbox, not paho, is what guarantees delivery.
Callbacks (``on_message``, ``on_link``) run on the network thread and must only hand off.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.clock import Clock, SystemClock
from edge_agent.config import BrokerConfig
from shared.model import RetryPolicy
from shared.protocol import reconnect_wait

__all__ = ["Transport"]

log = logging.getLogger("edge_agent.transport")
_JITTER = 0.5


def _no_delay(client: mqtt.Client, userdata: object, sock: socket.socket) -> None:
    """Send every packet at once (``TCP_NODELAY``). Under Nagle's algorithm a small packet
    queued behind an unacknowledged one (a lease request right after the placement's
    ``PUBACK``) waits for the broker's delayed ACK: about 40 ms a hop on Linux."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Transport:
    def __init__(
        self,
        cfg: BrokerConfig,
        *,
        client_id: str,
        subscriptions: list[str],
        on_message: Callable[[str, bytes], None],
        on_link: Callable[[bool], None],
        will: Callable[[], tuple[str, bytes]],
        resolve: Callable[[], tuple[str, int] | None],
        rng: random.Random,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self._clock = clock or SystemClock()
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._on_link = on_link
        self._will = will
        self._resolve = resolve
        self._rng = rng
        self._stop = threading.Event()
        self.connected = False
        self.reconnects = 0
        self._policy = RetryPolicy(
            max_attempts=1,
            backoff_s=cfg.reconnect_min_s,
            multiplier=2.0,
            backoff_max_s=cfg.reconnect_max_s / (1 + _JITTER),
            jitter=_JITTER,
        )
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        client.max_inflight_messages_set(100)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            client.tls_set(
                ca_certs=cfg.ca_file or None,
                certfile=cfg.cert_file or None,
                keyfile=cfg.key_file or None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.on_socket_open = _no_delay
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        self._client = client
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message; ``False`` when not connected (the caller keeps it in its outbox)."""
        if not self.connected:
            return False
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def resubscribe(self) -> None:
        """Subscribe again (a broker may have lost the session's subscription)."""
        if self.connected:
            for sub in self._subscriptions:
                self._client.subscribe(sub, qos=1)

    def reconnect(self) -> None:
        """Drop the connection; the network thread connects again (with the usual backoff),
        so the broker starts a fresh connection for the session and we resubscribe."""
        if self.connected:
            self._client.disconnect()

    def stop(self, last: tuple[str, bytes] | None = None) -> None:
        """Publish ``last`` (the retained offline presence) if connected, then disconnect."""
        was_up = self.connected
        if last is not None and self.connected:
            info = self._client.publish(last[0], last[1], qos=1, retain=True)
            self._stop.set()
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._stop.set()
        self._client.disconnect()
        self._thread.join(timeout=5.0)
        if was_up:  # the callback may run after the network thread marked the link down
            _log_disconnect(ReasonCode(PacketTypes.DISCONNECT, identifier=0), was_up=True)

    # network thread ------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            probe_started: float | None = self._clock.mono()  # None once it connected
            target = self._resolve()
            if target is not None:
                topic, payload = self._will()
                self._client.will_set(topic, payload, qos=1, retain=True)
                try:
                    self._client.connect(target[0], target[1], keepalive=self.cfg.keepalive_s)
                except (OSError, ValueError) as exc:
                    _log_connect_failure(exc, target)
                else:
                    while not self._stop.is_set():
                        rc = self._client.loop(timeout=0.2)
                        if rc != mqtt.MQTT_ERR_SUCCESS:
                            break
                        if self.connected:
                            failures, probe_started = 0, None
                    if self._stop.is_set():
                        # let a clean DISCONNECT go out
                        self._client.loop(timeout=0.2)
                    self._set_link(False)
            if self._stop.is_set():
                break
            failures += 1
            probing_s = 0.0 if probe_started is None else self._clock.mono() - probe_started
            self._stop.wait(reconnect_wait(self._policy, failures, probing_s, self._rng))

    def _set_link(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self._on_link(up)

    def _connected(
        self, client: mqtt.Client, userdata: object, flags: object, reason, props
    ) -> None:  # type: ignore[no-untyped-def]
        if reason.is_failure:
            log.warning("broker refused connection", extra={"fields": {"reason": str(reason)}})
            return
        for sub in self._subscriptions:
            client.subscribe(sub, qos=1)
        self.reconnects += 1
        self._set_link(True)

    def _disconnected(self, client, userdata, flags, reason, props) -> None:  # type: ignore[no-untyped-def]
        """Every disconnect is logged with paho's reason: INFO when asked for (a stop, a
        silent session's reconnect), WARNING when the connection was lost or refused."""
        was_up = self.connected
        self._set_link(False)
        if reason.is_failure or (was_up and not self._stop.is_set()):  # stop() logs its own
            _log_disconnect(reason, was_up=was_up)

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg.topic, msg.payload)


def _log_disconnect(reason: ReasonCode, *, was_up: bool) -> None:
    log.log(
        logging.WARNING if reason.is_failure else logging.INFO,
        "disconnected from broker: %s",
        reason,
        extra={"fields": {"reason_code": reason.value, "reason": str(reason), "was_up": was_up}},
    )


def _log_connect_failure(exc: Exception, target: tuple[str, int]) -> None:
    """A failed connect: TLS failures at ERROR with the verification message (they do not
    heal by retrying: a wrong CA, an expired or misnamed certificate), anything else (the
    broker down, unreachable, refusing TCP) at WARNING."""
    fields: dict[str, object] = {"broker": f"{target[0]}:{target[1]}", "error": str(exc)}
    if isinstance(exc, ssl.SSLCertVerificationError):
        fields["verify_code"] = exc.verify_code
        log.error(
            "TLS verification of the broker failed: %s",
            exc.verify_message or exc,
            extra={"fields": fields},
        )
    elif isinstance(exc, ssl.SSLError):
        log.error(
            "TLS handshake with the broker failed: %s", exc.reason or exc, extra={"fields": fields}
        )
    else:
        log.warning("broker unreachable: %s", exc, extra={"fields": fields})
