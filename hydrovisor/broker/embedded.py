"""The embedded MQTT 3.1.1 broker (amqtt) that the greenhouse nodes connect to.

We own the TCP listener and hand each accepted connection to amqtt through its "external"
listener API (``Broker.external_connected``), instead of letting amqtt bind the port itself:
- the bound port is known without reading amqtt's private server table (port 0 works);
- ``stop()`` can close every connection, including those that never sent CONNECT, which
  amqtt does not track (and on Python >= 3.12 its own ``Server.wait_closed`` would wait for them).

Only our ``DeviceAuthPlugin`` is loaded: giving amqtt an explicit ``plugins`` section replaces
its defaults (anonymous auth, $SYS topics, event and packet loggers). Keep-alive is amqtt's:
a client silent for its keep-alive period is disconnected.
"""

from __future__ import annotations

import asyncio
import logging

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig, ListenerType

from hydrovisor.broker.auth import DeviceAuthenticator, DeviceAuthPlugin, is_refused
from hydrovisor.broker.errors import BrokerNotRunning, BrokerStartFailed
from hydrovisor.runtime.affinity import guard

log = logging.getLogger(__name__)

_LISTENER = "default"  # amqtt requires a listener of that name
_AUTH_PLUGIN = f"{DeviceAuthPlugin.__module__}.{DeviceAuthPlugin.__qualname__}"


class EmbeddedBroker:
    """amqtt broker plus its TCP listener, started and stopped on the caller's event loop.

    ``dev_mode=True`` accepts every connection (anonymous included); otherwise a connection is
    accepted only when ``authenticator.verify(username, password)`` returns True.
    """

    def __init__(
        self, host: str, port: int, *, dev_mode: bool, authenticator: DeviceAuthenticator | None = None
    ) -> None:
        self._host = host
        self._requested_port = port
        self._dev_mode = dev_mode
        self._authenticator = authenticator
        self._broker: Broker | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

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
        if self._broker is None:
            return 0
        return sum(
            1 for session, _ in self._broker.sessions.values()
            if session.transitions.is_connected() and not is_refused(session)
        )

    async def start(self) -> None:
        """Start amqtt, then listen; raise ``BrokerStartFailed`` on failure."""
        guard(self._loop, "EmbeddedBroker.start")
        self._loop = asyncio.get_running_loop()
        if self._server is not None:
            return
        try:
            broker = Broker(self._config())
            await broker.start()
        except Exception as exc:
            raise BrokerStartFailed(f"amqtt broker failed to start: {exc}") from exc
        self._broker = broker
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)
        except OSError as exc:
            self._broker = None
            await broker.shutdown()
            raise BrokerStartFailed(f"cannot listen on {self._host}:{self._requested_port}: {exc}") from exc
        log.info("mqtt broker listening", extra={
            "event": "broker_started", "host": self._host, "port": self.port, "dev_mode": self._dev_mode,
        })

    async def stop(self) -> None:
        """Stop listening, disconnect every client, shut amqtt down; idempotent."""
        guard(self._loop, "EmbeddedBroker.stop")
        server, broker = self._server, self._broker
        if server is None or broker is None:
            return
        self._server = self._broker = None
        self._loop = None
        server.close()
        try:
            await broker.shutdown()
        finally:
            # Whatever amqtt did not close (connections still before or inside CONNECT).
            for task in self._connections:
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await server.wait_closed()
        log.info("mqtt broker stopped", extra={"event": "broker_stopped"})

    def _config(self) -> BrokerConfig:
        return BrokerConfig(
            listeners={_LISTENER: ListenerConfig(type=ListenerType.EXTERNAL)},
            plugins={_AUTH_PLUGIN: {"dev_mode": self._dev_mode, "authenticator": self._authenticator}},
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        broker, task = self._broker, asyncio.current_task()
        if broker is None or task is None:  # accepted while stopping
            writer.close()
            return
        self._connections.add(task)
        try:
            await broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), _LISTENER
            )
        except Exception:
            log.exception("mqtt connection failed", extra={
                "event": "broker_connection_error", "peer": writer.get_extra_info("peername"),
            })
        finally:
            self._connections.discard(task)
            writer.close()
