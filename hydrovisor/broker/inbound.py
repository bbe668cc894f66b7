"""A device's QoS 0/1 PUBLISH, from packet to receipt: acknowledged once kept, never before.

amqtt 0.12 answers a QoS 1 PUBLISH with PUBACK as soon as it has queued the message in the
session, and a session's queue dies with its connection: a device that disconnects right after its
last PUBACK (a battery node, a firmware flushing its offline buffer) lost almost all of a burst.
:class:`DeviceProtocolHandler` takes QoS 0 and 1 publishes out of amqtt's flow: the topic ACL is
checked, the message goes to the server side with a :class:`Receipt` from the connection's
:class:`AckWindow`, and the PUBACK is sent when the receipt is settled (``flow.py``). The message
is also distributed to subscribed clients as amqtt would (dev tools, ``mosquitto_sub``).

QoS 2 stays amqtt's (PUBREC/PUBREL/PUBCOMP, then its delivery queue): Protocol 2.0 devices use
QoS 1 only, so a QoS 2 message is delivered as amqtt delivers it, not acknowledged-after-stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from amqtt.contexts import Action
from amqtt.mqtt.constants import QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.publish import PublishPacket
from prometheus_client import CollectorRegistry, Counter

from hydrovisor.broker.connection import FramedReader
from hydrovisor.broker.plugins import BrokerHooks

log = logging.getLogger(__name__)


class InboundMetrics:
    """What happened to device publishes at the broker, and packets it refused."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.publishes = Counter("hydrovisor_mqtt_publishes_total",
                                 "Device PUBLISH packets taken in, by QoS and what the broker did with them.",
                                 ["qos", "outcome"], registry=registry)
        self.refused = Counter("hydrovisor_mqtt_packets_refused_total",
                               "Packets that closed the device's connection (MQTT 3.1.1 forbids them), by reason.",
                               ["reason"], registry=registry)


class Inbound:
    """What the handlers of one broker share: the hooks, the broker for distribution, the metrics."""

    def __init__(self, hooks: BrokerHooks, broker: Any, metrics: InboundMetrics) -> None:
        self.hooks = hooks
        self.broker = broker
        self.metrics = metrics
        self._retaining: set[asyncio.Task[None]] = set()

    def take(self, handler: BrokerProtocolHandler, packet: PublishPacket) -> None:
        """One QoS 0/1 PUBLISH; synchronous, so messages reach the sink in the order they came."""
        session, reader = handler.session, handler.reader
        if session is None or not isinstance(reader, FramedReader):
            return  # detached while the task was queued: the connection is gone, nothing was acknowledged
        topic, data, qos = packet.topic_name or "", bytes(packet.data or b""), packet.qos or 0
        packet_id = packet.packet_id if qos else 0
        receipt = reader.connection.window.open(packet_id or 0, len(data))
        if not self.hooks.allows(session, topic, Action.PUBLISH):
            self.metrics.publishes.labels(qos=str(qos), outcome="acl_denied").inc()
            receipt.settle()  # refused for good: acknowledged, so the device does not send it again
            return
        self.metrics.publishes.labels(qos=str(qos), outcome="accepted").inc()
        self.hooks.emit(session.client_id or "", session, topic=topic, payload=data, qos=qos,
                        retain=bool(packet.retain_flag), receipt=receipt)
        if packet.retain_flag:
            task = asyncio.ensure_future(self.broker.retain_message(session, topic, data, qos))
            self._retaining.add(task)
            task.add_done_callback(self._retaining.discard)
        if self.broker.subscribed_sessions(topic):
            self.broker._broadcast_queue.put_nowait({"session": session, "topic": topic, "data": data})


class DeviceProtocolHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker-side protocol handler with QoS 0/1 publishes taken by :class:`Inbound`."""

    inbound: Inbound

    async def handle_publish(self, publish_packet: PublishPacket) -> None:
        """amqtt calls this in a task per PUBLISH, tasks started in arrival order."""
        if publish_packet.qos == QOS_2:
            await super().handle_publish(publish_packet)
            return
        self.inbound.take(self, publish_packet)
