"""amqtt 0.12 made to keep the MQTT 3.1.1 promises the product relies on.

The embedded broker (:mod:`.embedded_broker`) runs amqtt in its own process. Out of the box
it lost messages and sessions in exactly the situations the testbed creates (a link cut
while the TCP connection is held open, then healed), and ``make demo`` on a machine without
Mosquitto was INVALID in 2 runs of 3. Four defects, each fixed here by a small override and
each named by the rule of the MQTT 3.1.1 specification it breaks:

1. **Keep-alive not enforced** (MQTT-3.1.2-24). The broker's read timeout was a no-op, so a
   client behind a cut link stayed "connected" for ever: its QoS 1 messages were written into
   a dead socket instead of being queued in its session, and its will never fired. Here a
   read timeout (keep-alive plus ``timeout_disconnect_delay``) closes the connection.
2. **QoS 1 messages dropped after 5 s** (MQTT-4.4.0-1). A PUBLISH whose PUBACK did not come
   within 5 s was removed from the session ("Timeout waiting for PUBACK … Task failed and
   will be skipped"), so it was never re-sent on reconnect. Here a message leaves the
   session only when its PUBACK arrives; the sender still stops waiting after
   :data:`ACK_WAIT_S` so one silent client cannot stall a session's loop.
3. **Session take-over ends the new connection's session** (MQTT-3.1.4-2). When a client
   reconnected while its old connection was still open, the old connection's end later
   marked the (shared) session *disconnected* and published the will: the new connection
   then received nothing (every message was queued for a session the broker believed
   offline) until it reconnected again. Here the superseded connection just closes.
4. **Retained messages of every subscription sent on reconnect** (MQTT-3.3.1-6). On a
   reconnect amqtt sent the client the retained messages matching *any* client's
   subscription (an agent received every node's ``presence``, which it rejected as
   ``unexpected_type``). Here only the client's own subscriptions are served.

Nothing else of amqtt is changed; the overrides are installed only in the broker's own
process (:func:`install`), never in the testbed or the test process.
"""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt import broker as amqtt_broker
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import OUTGOING, Session

__all__ = ["ACK_WAIT_S", "FixedBroker", "FixedHandler", "install"]

#: How long a sender waits for a PUBACK before it stops waiting (the message stays in the
#: session and is re-sent on the next connection, as the specification asks).
ACK_WAIT_S = 10.0


class FixedHandler(BrokerProtocolHandler):
    """The broker's per-connection handler, with fixes 1 and 2."""

    superseded = False  # set by FixedBroker when a newer connection takes the session over
    _closing: asyncio.Task[None] | None = None

    def handle_read_timeout(self) -> None:
        """Fix 1: nothing read for keep-alive (+ delay) seconds: the client is gone."""
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.handle_connection_closed())

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        """Fix 2: an outgoing QoS 1 message stays in ``session.inflight_out`` until its
        PUBACK arrives (also after the wait ends, or the connection does)."""
        if app_message.direction != OUTGOING:
            await super()._handle_qos1_message_flow(app_message)
            return
        session = self.session
        assert session is not None
        packet_id = app_message.packet_id
        session.inflight_out[packet_id] = app_message
        packet = app_message.build_publish_packet(dup=app_message.publish_packet is not None)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter

        def settled(done: asyncio.Future[Any]) -> None:
            if self._puback_waiters.get(packet_id) is done:
                self._puback_waiters.pop(packet_id, None)
            if not done.cancelled():
                session.inflight_out.pop(packet_id, None)

        waiter.add_done_callback(settled)
        await self._send_packet(packet)
        app_message.publish_packet = packet
        app_message.puback_packet = await asyncio.wait_for(asyncio.shield(waiter), ACK_WAIT_S)


class FixedBroker(amqtt_broker.Broker):
    """amqtt's broker with fixes 3 and 4."""

    async def _handle_client_session(
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: Any,
        server: Any,
        listener_name: str,
    ) -> None:
        current = self._sessions.get(client_session.client_id or "")
        if (
            current is not None
            and current[0] is client_session
            and current[1] is not handler
            and client_session.transitions.is_connected()
        ):
            current[1].superseded = True  # fix 3: about to be taken over
        await super()._handle_client_session(
            reader, writer, client_session, handler, server, listener_name
        )

    async def _handle_disconnect(
        self, client_session: Session, handler: Any, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        if getattr(handler, "superseded", False):
            # Fix 3: the session lives on with the newer connection: no will, no
            # "disconnected" state, only this connection's end.
            await self._stop_handler(handler)
            return
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Fix 4: serve retained messages only for a filter this session subscribed to."""
        subscribers = self._subscriptions.get(subscription[0], [])
        if any(s is session for s, _qos in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def install() -> type[FixedBroker]:
    """Make amqtt build :class:`FixedHandler` for every connection; returns the broker
    class to instantiate. Call once, in the broker's own process."""
    amqtt_broker.BrokerProtocolHandler = FixedHandler  # type: ignore[misc]
    return FixedBroker
