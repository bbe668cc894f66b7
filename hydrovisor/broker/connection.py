"""One admitted device connection: the stream amqtt reads, and our keep-alive watchdog.

amqtt reads the connection through :class:`FramedReader`, which first replays the CONNECT we
already consumed to authenticate it, then reads whole, checked packets from the socket - and notes
the time of every read, which is what the keep-alive watchdog looks at.

Keep-alive: amqtt 0.12.1's broker never disconnects a silent client (its read timeout handler
is a no-op), so we enforce MQTT §3.1.2.10 ourselves, with the 1.5x margin PROTOCOL §9 asks
for: a client that sends nothing for ``factor * keep_alive`` seconds is dropped (abnormally,
so its will is published). Keep-alive 0 means no limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NoReturn

from amqtt.adapters import ReaderAdapter

from hydrovisor.broker import packets
from hydrovisor.broker.auth import Admission
from hydrovisor.broker.flow import AckWindow, InflightGate

log = logging.getLogger(__name__)


class DeviceConnection:
    """An admitted TCP connection as long as amqtt serves it."""

    def __init__(
        self, writer: asyncio.StreamWriter, admission: Admission, gate: InflightGate, per_connection: int,
        peer: object = None,
    ) -> None:
        self.writer = writer
        self.peer = peer
        self.admission = admission
        self.client_id = admission.client_id  # amqtt's id once it has assigned one (empty CONNECT id)
        self.last_read = time.monotonic()
        self.finished = asyncio.Event()
        self.dropped_because: str | None = None
        self.window = AckWindow(self._write, self.drop, gate, per_connection)
        self.paused = False  # we hold the socket unread (backpressure): its silence is ours

    def drop(self, reason: str) -> None:
        """Abort the TCP connection at once (amqtt sees EOF: an abnormal disconnect)."""
        if self.dropped_because is None:
            self.dropped_because = reason
        self.window.close()
        self.writer.transport.abort()

    def _write(self, data: bytes) -> None:
        """Write ``data`` now; amqtt writes whole packets in one call too, so nothing interleaves."""
        if not self.writer.transport.is_closing():
            self.writer.write(data)

    async def wait_finished(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds until amqtt is done with the connection; False on timeout."""
        try:
            await asyncio.wait_for(self.finished.wait(), grace)
        except TimeoutError:
            return False
        return True


class FramedReader(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's reader of one connection: whole, checked MQTT packets, taken as room allows.

    It first replays the CONNECT we already consumed to authenticate the connection. After that,
    at each packet boundary it waits for room in the connection's :class:`AckWindow` (backpressure:
    a socket is not read while its device's messages wait for storage), reads one whole packet -
    refusing one larger than ``max_packet`` before reading its body - and checks it
    (``packets.problem_with``). A bad packet closes the connection (its will goes out); amqtt then
    sees EOF. amqtt reads the packet out of the buffer; a read beyond the packet's end means amqtt
    and the packet disagree, and closes the connection too.

    Mirrors amqtt's ``StreamReaderAdapter``: ``read(n)`` returns exactly ``n`` bytes or raises
    ``IncompleteReadError``.
    """

    def __init__(
        self, reader: asyncio.StreamReader, replay: bytes, connection: DeviceConnection, *,
        max_packet: int, on_refused: Callable[[str], None],
    ) -> None:
        self._reader = reader
        self._buffer = replay
        self._at = 0
        self.connection = connection
        self._max_packet = max_packet
        self._on_refused = on_refused

    async def read(self, n: int = -1) -> bytes:
        """Read ``n`` bytes of the current packet (the next packet when the current one is used up)."""
        if self._at >= len(self._buffer):
            await self._next_packet()
        end = len(self._buffer) if n < 0 else self._at + n
        if end > len(self._buffer):
            self._refuse("read_past_packet")
        data = self._buffer[self._at:end]
        self._at = end
        return data

    def feed_eof(self) -> None:
        """Acknowledge EOF."""
        self._reader.feed_eof()

    async def _next_packet(self) -> None:
        connection = self.connection
        connection.paused = True
        try:
            if await connection.window.wait_for_room():
                connection.last_read = time.monotonic()  # a paused connection is not a silent one
        finally:
            connection.paused = False
        first = (await self._reader.readexactly(1))[0]
        length, length_bytes = 0, bytearray()
        for shift in range(0, 28, 7):
            byte = (await self._reader.readexactly(1))[0]
            length_bytes.append(byte)
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            self._refuse("bad_remaining_length")
        if length + 1 + len(length_bytes) > self._max_packet:
            self._refuse("packet_too_large")
        body = await self._reader.readexactly(length)
        connection.last_read = time.monotonic()
        problem = packets.problem_with(first, body)
        if problem is not None:
            self._refuse(problem)
        self._buffer = bytes((first,)) + bytes(length_bytes) + body
        self._at = 0

    def _refuse(self, reason: str) -> NoReturn:
        log.warning("device sent a packet MQTT 3.1.1 forbids; closing", extra={
            "event": "mqtt_packet_refused", "client_id": self.connection.client_id, "reason": reason,
        })
        self._on_refused(reason)
        self.connection.drop(reason)
        raise asyncio.IncompleteReadError(b"", None)


async def enforce_keep_alive(connection: DeviceConnection, factor: float) -> None:
    """Drop ``connection`` once it has been silent for ``factor`` x its keep-alive."""
    keep_alive = connection.admission.keep_alive
    if keep_alive <= 0:
        return
    limit = keep_alive * factor
    while True:
        silent = time.monotonic() - connection.last_read
        if connection.paused:
            silent = 0.0
        elif silent >= limit:
            log.info("device keep-alive expired", extra={
                "event": "keepalive_expired", "client_id": connection.client_id,
                "keep_alive": keep_alive, "silent_s": round(silent, 3),
            })
            connection.drop("keepalive_expired")
            return
        await asyncio.sleep(limit - silent)
