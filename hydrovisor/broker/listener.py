"""Accepting device connections: CONNECT first, authenticated, then handed to amqtt.

For each accepted socket: read the CONNECT within ``connect_timeout`` and ``max_connect_bytes``,
decide on it (``auth.admit``), answer a refusal with its CONNACK and close - amqtt never sees a
refused connection. An admitted one first takes its client id over (dropping a live
predecessor, or being refused with CONNACK 2 if that belongs to another device), then amqtt
serves it through ``Broker.external_connected``, replaying the CONNECT bytes, while the
keep-alive watchdog runs beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from amqtt.adapters import StreamWriterAdapter

from hydrovisor.broker.auth import Refusal, admit, may_take_over
from hydrovisor.broker.connect import (
    IDENTIFIER_REJECTED,
    SERVER_UNAVAILABLE,
    UNACCEPTABLE_PROTOCOL,
    ConnectRequest,
    MalformedConnect,
    UnsupportedProtocol,
    connack,
    read_connect,
)
from hydrovisor.broker.connection import DeviceConnection, FramedReader, enforce_keep_alive
from hydrovisor.broker.directory import DeviceDirectory
from hydrovisor.broker.engine import DeviceBroker
from hydrovisor.broker.flow import InflightGate
from hydrovisor.broker.limits import BrokerLimits

log = logging.getLogger(__name__)

LISTENER_NAME = "default"  # amqtt requires a listener of that name
_WRITE_TIMEOUT = 2.0  # for the CONNACK of a refusal
DROP_WAIT = 5.0  # how long a takeover / kick waits for amqtt to finish the old connection


class DeviceListener:
    """The ``asyncio.start_server`` callback and the registry of what it accepted."""

    def __init__(
        self, broker: DeviceBroker, directory: DeviceDirectory, *, dev_mode: bool, limits: BrokerLimits,
        gate: InflightGate, on_refused: Callable[[str], None],
    ) -> None:
        self._broker = broker
        self._directory = directory
        self._dev_mode = dev_mode
        self._limits = limits
        self._gate = gate
        self._on_refused = on_refused
        self._tasks: set[asyncio.Task[None]] = set()  # every accepted socket, CONNECT or not
        self._admitted: set[DeviceConnection] = set()  # handed (or about to be handed) to amqtt
        self._by_client_id: dict[str, DeviceConnection] = {}  # the latest admitted per client id
        self._closing = False
        self._refuse_until = 0.0

    def refuse_for(self, seconds: float) -> None:
        """Answer every CONNECT with CONNACK 3 (server unavailable) for ``seconds`` (0 ends it now)."""
        self._refuse_until = time.monotonic() + seconds if seconds > 0 else 0.0

    def find(self, client_id: str) -> DeviceConnection | None:
        """The live admitted connection of ``client_id`` (amqtt-assigned ids included)."""
        connection = self._by_client_id.get(client_id)
        if connection is None:  # amqtt assigned the id (empty client id in CONNECT)
            connection = next((c for c in self._admitted if c.client_id == client_id), None)
        return connection if connection is not None and not connection.finished.is_set() else None

    def live(self) -> list[DeviceConnection]:
        """Every admitted connection amqtt has not finished with."""
        return [c for c in self._admitted if not c.finished.is_set()]

    def abort_all(self, reason: str) -> None:
        """Drop every admitted connection at once."""
        for connection in self.live():
            connection.drop(reason)

    async def close(self) -> None:
        """Cancel whatever is still running (sockets before or inside CONNECT, takeovers)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Handle one accepted socket from first byte to close."""
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.close()
            return
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            read = await self._read_connect(reader, writer, peer)
            if read is None:
                return
            request, raw = read
            verdict = admit(request, self._directory, dev_mode=self._dev_mode)
            if time.monotonic() < self._refuse_until:
                verdict = Refusal(SERVER_UNAVAILABLE, "server_unavailable")
            if isinstance(verdict, Refusal):
                await _refuse(writer, verdict, request.client_id, request.username, peer)
                return
            connection = DeviceConnection(writer, verdict, self._gate, self._limits.inflight_per_client, peer)
            self._admitted.add(connection)
            try:
                await self._hand_over(reader, raw, connection)
            finally:
                connection.finished.set()
                self._admitted.discard(connection)
                if self._by_client_id.get(verdict.client_id) is connection:
                    del self._by_client_id[verdict.client_id]
        except Exception:
            log.exception("mqtt connection failed", extra={"event": "broker_connection_error", "peer": peer})
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read_connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object
    ) -> tuple[ConnectRequest, bytes] | None:
        """The CONNECT and its raw bytes, or None when the connection is to be closed."""
        try:
            async with asyncio.timeout(self._limits.connect_timeout):
                return await read_connect(reader, self._limits.max_connect_bytes)
        except TimeoutError:
            log.info("no CONNECT in time; closing", extra={
                "event": "connect_timeout", "peer": peer, "timeout_s": self._limits.connect_timeout,
            })
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("peer left before CONNECT", extra={"event": "connect_aborted", "peer": peer})
        except UnsupportedProtocol as exc:
            log.info("unsupported MQTT protocol", extra={
                "event": "connect_refused", "peer": peer, "reason": str(exc),
            })
            await _write_connack(writer, UNACCEPTABLE_PROTOCOL)
        except MalformedConnect as exc:
            log.warning("malformed CONNECT; closing", extra={
                "event": "connect_malformed", "peer": peer, "reason": str(exc),
            })
        return None

    async def _hand_over(self, reader: asyncio.StreamReader, raw: bytes, connection: DeviceConnection) -> None:
        """Take the client id over if needed, then let amqtt serve the connection."""
        admission, peer = connection.admission, connection.peer
        if not await self._claim_client_id(connection):
            refusal = Refusal(IDENTIFIER_REJECTED, "client_id_in_use")
            await _refuse(connection.writer, refusal, admission.client_id, admission.username, peer)
            return
        if connection.dropped_because is not None:  # superseded while waiting for the old one
            return
        log.info("device connected", extra={
            "event": "device_connected", "client_id": admission.client_id, "username": admission.username,
            "verified": admission.verified, "keep_alive": admission.keep_alive, "peer": peer,
        })
        watchdog = asyncio.create_task(enforce_keep_alive(connection, self._limits.keep_alive_factor))
        framed = FramedReader(reader, raw, connection, max_packet=self._limits.max_packet_bytes,
                              on_refused=self._on_refused)
        try:
            await self._broker.external_connected(framed, StreamWriterAdapter(connection.writer), LISTENER_NAME)
        finally:
            watchdog.cancel()
            log.info("device disconnected", extra={
                "event": "device_disconnected", "client_id": connection.client_id,
                "reason": connection.dropped_because or "closed",
            })

    async def _claim_client_id(self, connection: DeviceConnection) -> bool:
        """Make ``connection`` the holder of its client id, dropping a live predecessor.

        False when the predecessor belongs to another device (see ``auth.may_take_over``).
        """
        client_id = connection.admission.client_id
        if not client_id:
            return True  # amqtt assigns a fresh id
        old = self._by_client_id.get(client_id)
        if old is not None and not old.finished.is_set():
            if not may_take_over(connection.admission, old.admission):
                return False
            self._by_client_id[client_id] = connection
            old.drop("taken_over")
            await old.wait_finished(DROP_WAIT)
            return True
        self._by_client_id[client_id] = connection
        return True


async def _refuse(
    writer: asyncio.StreamWriter, refusal: Refusal, client_id: str, username: str | None, peer: object
) -> None:
    log.warning("device connection refused", extra={
        "event": "device_auth_rejected", "client_id": client_id, "username": username,
        "reason": refusal.reason, "return_code": refusal.return_code, "peer": peer,
    })
    await _write_connack(writer, refusal.return_code)


async def _write_connack(writer: asyncio.StreamWriter, return_code: int) -> None:
    writer.write(connack(return_code))
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT)
