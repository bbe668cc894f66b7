"""amqtt's ``Broker`` with the seams hydrovisor needs that amqtt offers no hook for.

All override *private* amqtt methods (upgrade risk, pinned by ``amqtt>=0.12,<0.13`` and by
the tests in ``tests/broker``):

- ``_initialize_client_session``: the session amqtt built from the CONNECT gets the admission
  our listener decided (read from our :class:`ReplayReader`), its password is dropped (no
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
"""

from __future__ import annotations

import asyncio
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.session import Session

from hydrovisor.broker.auth import attach
from hydrovisor.broker.connection import DeviceConnection
from hydrovisor.broker.plugins import BrokerHooks


class DeviceBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt broker that carries our admissions and reports device wills."""

    def __init__(self, config: BrokerConfig, hooks: BrokerHooks) -> None:
        super().__init__(config)
        self._hooks = hooks

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[Any, Session]:
        handler, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        connection = getattr(reader, "connection", None)
        if isinstance(connection, DeviceConnection):
            attach(session, connection.admission)
            connection.client_id = session.client_id  # amqtt assigns one to an empty CONNECT id
        else:
            attach(session, None)  # not through our listener: the auth plugin refuses it
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
                retain=bool(client_session.will_retain),
            )
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)


    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        holders = self._subscriptions.get(subscription[0], ())
        if any(holder is session for holder, _ in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def _abnormal(disconnect_waiter: asyncio.Future[Any]) -> bool:
    """amqtt's test: the connection ended without a DISCONNECT packet (so the will goes out)."""
    if disconnect_waiter.cancelled() or disconnect_waiter.exception() is not None:
        return False
    return not isinstance(disconnect_waiter.result(), DisconnectPacket)
