"""The embedded MQTT 3.1.1 broker (amqtt) that the greenhouse nodes connect to.

We own the TCP listener (``listener.py``) and hand each connection to amqtt through its
"external" listener API (``Broker.external_connected``), which lets us:

- read and authenticate the CONNECT ourselves *before* amqtt sees the connection. amqtt
  deletes the subscriptions of a live session whose client id a new CONNECT reuses, and keeps
  refused sessions registered, both before authenticating; a refused CONNECT here never
  reaches amqtt, so it can neither disturb a device nor leak a session;
- bound what an unauthenticated peer costs: a CONNECT must arrive within ``connect_timeout``
  and be at most ``max_connect_bytes``;
- enforce the keep-alive (amqtt 0.12 does not) with PROTOCOL's 1.5x margin;
- drop the live connection of a client id when a new CONNECT takes it over (MQTT §3.1.4-2;
  amqtt only discards the old session's state and leaves its connection running), and refuse
  a takeover by another device (CONNACK 2);
- kick devices (``disconnect``) and close every connection on ``stop()``, including those
  that never sent CONNECT.

The server side is in-process: ``on_message`` receives every device publish that passed the
topic ACL (and device wills), ``publish`` sends to subscribed devices without a loopback
client. Only our plugins are loaded: an explicit ``plugins`` section replaces amqtt's defaults
(anonymous auth, $SYS topics, event and packet loggers - the latter would log passwords).

Everything here runs on the event loop that called ``start()``; from actor threads go through
the bridge.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType
from prometheus_client import CollectorRegistry

from hydrovisor.broker.acl import is_topic_name
from hydrovisor.broker.directory import DeviceDirectory
from hydrovisor.broker.engine import DeviceBroker
from hydrovisor.broker.errors import BrokerNotRunning, BrokerStartFailed
from hydrovisor.broker.flow import FlowMetrics, InflightGate
from hydrovisor.broker.inbound import InboundMetrics
from hydrovisor.broker.limits import BrokerLimits
from hydrovisor.broker.listener import DROP_WAIT, LISTENER_NAME, DeviceListener
from hydrovisor.broker.messages import MessageSink
from hydrovisor.broker.plugins import BrokerHooks, DeviceAclPlugin, DeviceAuthPlugin
from hydrovisor.runtime.affinity import guard

log = logging.getLogger(__name__)

_PLUGIN_PATHS = {cls: f"{cls.__module__}.{cls.__qualname__}" for cls in (DeviceAuthPlugin, DeviceAclPlugin)}
_STOP_GRACE = 3.0  # after this, stop() aborts connections amqtt is still closing (dead peers)


class EmbeddedBroker:
    """amqtt broker plus its TCP listener, started and stopped on the caller's event loop.

    ``directory`` holds the device credentials (an empty one is created when omitted; fill it
    through :attr:`directory`). ``dev_mode=True`` additionally admits anonymous clients and
    usernames the directory does not know, without any topic ACL (see ``auth.py``). Metrics go to
    ``registry`` (a private one when omitted).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        dev_mode: bool,
        directory: DeviceDirectory | None = None,
        on_message: MessageSink | None = None,
        limits: BrokerLimits | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._dev_mode = dev_mode
        self._directory = directory if directory is not None else DeviceDirectory()
        self._hooks = BrokerHooks(self._directory, on_message)
        self.limits = limits if limits is not None else BrokerLimits()
        registry = registry if registry is not None else CollectorRegistry()
        self._inbound_metrics = InboundMetrics(registry)
        self._flow_metrics = FlowMetrics(registry)
        self._broker: DeviceBroker | None = None
        self._listener: DeviceListener | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def directory(self) -> DeviceDirectory:
        """The credentials the broker checks; the application keeps it up to date."""
        return self._directory

    @property
    def on_message(self) -> MessageSink | None:
        """Called on the loop with every device publish that passed the ACL; must not block."""
        return self._hooks.on_message

    @on_message.setter
    def on_message(self, sink: MessageSink | None) -> None:
        self._hooks.on_message = sink

    @property
    def is_running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound TCP port (the real one when constructed with port 0).

        With port 0 and a host that resolves to several addresses each socket gets its own
        port; this reports the first, so pass a literal address for ephemeral ports.
        """
        if self._server is None:
            raise BrokerNotRunning("the embedded broker is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def session_count(self) -> int:
        """Number of clients connected and authenticated right now."""
        return len(self.connected_clients())

    def connected_clients(self) -> list[str]:
        """Client ids of the sessions connected right now, sorted."""
        guard(self._loop, "EmbeddedBroker.connected_clients")
        if self._broker is None:
            return []
        return sorted(
            client_id for client_id, (session, _) in self._broker.sessions.items()
            if session.transitions.is_connected()
        )

    def subscriber_count(self, topic: str) -> int:
        """How many connected sessions have a subscription matching ``topic``.

        0 means a publish to ``topic`` now reaches nobody: amqtt drops QoS 1 messages for
        absent clean sessions, so the command path must not count on later delivery. Only the
        filters matching ``topic`` are visited (the broker indexes them), not every subscription.
        """
        guard(self._loop, "EmbeddedBroker.subscriber_count")
        if self._broker is None:
            return 0
        return len({session.client_id for session in self._broker.subscribed_sessions(topic)
                    if session.transitions.is_connected()})

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start amqtt, then listen; raise ``BrokerStartFailed`` on failure."""
        guard(self._loop, "EmbeddedBroker.start")
        self._loop = asyncio.get_running_loop()
        if self._server is not None:
            return
        self._hooks.delivering = True
        try:
            broker = DeviceBroker(self._config(), self._hooks, self._inbound_metrics)
            await broker.start()
        except Exception as exc:
            raise BrokerStartFailed(f"amqtt broker failed to start: {exc}") from exc
        limits = self.limits
        gate = InflightGate(limits.inflight_total, limits.inflight_total_bytes, self._flow_metrics)
        refused = self._inbound_metrics.refused
        listener = DeviceListener(broker, self._directory, dev_mode=self._dev_mode, limits=limits, gate=gate,
                                  on_refused=lambda reason: refused.labels(reason=reason).inc())
        try:
            self._server = await asyncio.start_server(listener.serve, self._host, self._requested_port)
        except OSError as exc:
            await broker.shutdown()
            raise BrokerStartFailed(f"cannot listen on {self._host}:{self._requested_port}: {exc}") from exc
        self._broker, self._listener = broker, listener
        log.info("mqtt broker listening", extra={
            "event": "broker_started", "host": self._host, "port": self.port, "dev_mode": self._dev_mode,
        })

    async def stop(self) -> None:
        """Stop listening, disconnect every client, shut amqtt down; idempotent."""
        guard(self._loop, "EmbeddedBroker.stop")
        server, broker, listener = self._server, self._broker, self._listener
        if server is None or broker is None or listener is None:
            return
        self._server, self._broker, self._listener = None, None, None
        self._loop = None
        self._hooks.delivering = False
        server.close()
        # amqtt closes each connection gracefully, which waits for unsent data to drain: a dead
        # peer would hold shutdown for minutes, so whatever is left after the grace is aborted.
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(_STOP_GRACE, listener.abort_all, "broker_stopping")
        try:
            await broker.shutdown()
        finally:
            deadline.cancel()
            await listener.close()
            await server.wait_closed()
        log.info("mqtt broker stopped", extra={"event": "broker_stopped"})

    # -- server plane ------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish in-process to every subscribed device (no ACL: this is the server speaking).

        Delivery is at ``qos`` whatever QoS the subscriber asked for (amqtt forces the
        publisher's QoS on in-process broadcasts). Returns once queued for delivery.
        """
        guard(self._loop, "EmbeddedBroker.publish")
        broker = self._running()
        if not is_topic_name(topic):
            raise ValueError(f"not a publishable topic name: {topic!r}")
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        await broker.internal_message_broadcast(topic, bytes(payload), qos)
        if retain:
            await broker.retain_message(None, topic, bytes(payload), qos)

    async def disconnect(self, client_id: str) -> bool:
        """Drop the connection of ``client_id`` as a network fault would (its will goes out).

        Returns once amqtt has processed the drop; False when no such client is connected.
        """
        guard(self._loop, "EmbeddedBroker.disconnect")
        connection = self._listener.find(client_id) if self._listener else None
        if connection is None:
            return False
        connection.drop("kicked")
        await connection.wait_finished(DROP_WAIT)
        return True

    async def disconnect_all(self) -> int:
        """Drop every device connection (wills go out); returns how many were dropped."""
        guard(self._loop, "EmbeddedBroker.disconnect_all")
        if self._listener is None:
            return 0
        victims = self._listener.live()
        self._listener.abort_all("kicked")
        await asyncio.gather(*(c.wait_finished(DROP_WAIT) for c in victims))
        return len(victims)

    async def kick(self, refuse_for: float) -> int:
        """Drop every device and refuse reconnects for ``refuse_for`` s (a broker outage as devices see it)."""
        guard(self._loop, "EmbeddedBroker.kick")
        if self._listener is not None:
            self._listener.refuse_for(refuse_for)
        return await self.disconnect_all()

    def end_kick(self) -> None:
        """Accept connections again before the kick's time is up."""
        if self._listener is not None:
            self._listener.refuse_for(0)

    # -- internals ---------------------------------------------------------------------------

    def _running(self) -> DeviceBroker:
        if self._broker is None:
            raise BrokerNotRunning("the embedded broker is not running")
        return self._broker

    def _config(self) -> BrokerConfig:
        return BrokerConfig(
            listeners={LISTENER_NAME: ListenerConfig(type=ListenerType.EXTERNAL)},
            plugins={
                _PLUGIN_PATHS[DeviceAuthPlugin]: {},
                _PLUGIN_PATHS[DeviceAclPlugin]: {"hooks": self._hooks},
            },
        )
