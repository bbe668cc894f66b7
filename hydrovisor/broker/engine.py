"""amqtt's ``Broker`` with the seams hydrovisor needs that amqtt offers no hook for.

All override *private* amqtt methods (upgrade risk, pinned by ``amqtt>=0.12,<0.13`` and by
the tests in ``tests/broker``):

- ``_initialize_client_session``: the session amqtt built from the CONNECT gets the admission
  our listener decided (read from our :class:`FramedReader`), its handler becomes a
  :class:`DeviceProtocolHandler` (QoS 0/1 publishes acknowledged once kept: ``inbound.py``),
  its password is dropped (no
  device secrets kept in amqtt's memory), and amqtt's own keep-alive read timeout is turned
  off - it never disconnects anyone, it only cancels a read mid-packet; our watchdog in
  ``connection.py`` enforces the keep-alive instead.
- ``_handle_disconnect``: amqtt publishes a client's last will here without any plugin event;
  we mirror its "abnormal disconnect" test to hand the will to the server side as well.
- ``_publish_retained_messages_for_subscription``: on every CONNECT amqtt 0.12 calls it for
  *every* subscription filter of *every* session, scanning all retained messages each time, and
  sends the matches to the new client — other devices' retained status included, and O(N^3) for
  a fleet (500 nodes took over a minute to connect, 1000 never finished). Only filters the
  session itself holds get retained messages, as MQTT says.
- ``_run_broadcast``: amqtt walks every subscription filter of every session for each message and
  formats a debug f-string for each one that does not match, even with DEBUG off. The filters live
  in a :class:`SubscriptionTable` (amqtt's dict plus a trie of its keys), so a broadcast visits only
  the matching ones; the delivery rules per recipient are amqtt's. The RECEIVE check asks
  ``BrokerHooks.allows`` directly: the one topic plugin we load delegates to it, and going through
  amqtt's plugin manager costs a task per recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.session import Session

from hydrovisor.broker.auth import attach
from hydrovisor.broker.connection import FramedReader
from hydrovisor.broker.inbound import DeviceProtocolHandler, Inbound, InboundMetrics
from hydrovisor.broker.plugins import BrokerHooks
from hydrovisor.broker.receipts import settled
from hydrovisor.broker.topic_index import SubscriptionTable


class DeviceBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt broker that carries our admissions and reports device wills."""

    def __init__(self, config: BrokerConfig, hooks: BrokerHooks, inbound: InboundMetrics) -> None:
        super().__init__(config)
        self._hooks = hooks
        self._inbound = Inbound(hooks, self, inbound)
        self._subscriptions: SubscriptionTable = SubscriptionTable()

    def subscribed_sessions(self, topic: str) -> list[Session]:
        """Every session holding a filter that matches the topic name ``topic`` (once per filter)."""
        return [session for subscribers in self._subscriptions.subscribers(topic) for session, _ in subscribers]

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        if isinstance(reader, FramedReader):
            attach(session, reader.connection.admission)
            reader.connection.client_id = session.client_id  # amqtt assigns one to an empty CONNECT id
        else:
            attach(session, None)  # not through our listener: the auth plugin refuses it
        # amqtt builds the handler itself; ours adds no state of its own, only the PUBLISH path
        handler.__class__ = DeviceProtocolHandler
        handler.inbound = self._inbound
        session.password = None
        session.keep_alive = 0
        return handler, session

    async def _handle_disconnect(
        self, client_session: Session, handler: Any, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        if client_session.will_flag and _abnormal(disconnect_waiter):
            self._hooks.emit(
                client_session.client_id or "", client_session, topic=client_session.will_topic or "",
                payload=bytes(client_session.will_message or b""), qos=client_session.will_qos or 0,
                retain=bool(client_session.will_retain), receipt=settled(),
            )
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)


    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        holders = self._subscriptions.get(subscription[0], ())
        if any(holder is session for holder, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


    async def _run_broadcast(self, running_tasks: deque[asyncio.Task[Any]]) -> None:
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        debug = self.logger.isEnabledFor(logging.DEBUG)
        # copies: the awaits below may let a client (un)subscribe; this message goes to the
        # subscribers it had when its turn came, as with amqtt
        for subscribers in self._subscriptions.subscribers(topic):
            for target_session, sub_qos in tuple(subscribers):
                qos = broadcast.get("qos", sub_qos)
                if not self._hooks.allows(target_session, topic, Action.RECEIVE):
                    continue
                connected = target_session.transitions.state == "connected"
                # amqtt's rule [MQTT 3.1.2.4]: keep QoS 1/2 messages for an absent persistent session
                if (not connected and not target_session.clean_session and qos in (QOS_1, QOS_2)
                        and not target_session.is_anonymous):
                    await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                if not connected:
                    continue
                if debug:
                    self.logger.debug("broadcasting on %r to %s", topic, target_session.client_id)
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(asyncio.ensure_future(
                        handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)))


def _abnormal(disconnect_waiter: asyncio.Future[Any]) -> bool:
    """amqtt's test: the connection ended without a DISCONNECT packet (so the will goes out)."""
    if disconnect_waiter.cancelled() or disconnect_waiter.exception() is not None:
        return False
    return not isinstance(disconnect_waiter.result(), DisconnectPacket)
