"""One admitted device connection: the stream amqtt reads, and our keep-alive watchdog.

amqtt reads the connection through :class:`ReplayReader`, which first replays the CONNECT we
already consumed to authenticate it, then reads on from the socket - and notes the time of
every read, which is what the keep-alive watchdog looks at.

Keep-alive: amqtt 0.12.1's broker never disconnects a silent client (its read timeout handler
is a no-op), so we enforce MQTT §3.1.2.10 ourselves, with the 1.5x margin PROTOCOL §9 asks
for: a client that sends nothing for ``factor * keep_alive`` seconds is dropped (abnormally,
so its will is published). Keep-alive 0 means no limit.
"""

from __future__ import annotations

import asyncio
import logging
import time

from amqtt.adapters import ReaderAdapter

from hydrovisor.broker.auth import Admission

log = logging.getLogger(__name__)


class DeviceConnection:
    """An admitted TCP connection as long as amqtt serves it."""

    def __init__(self, writer: asyncio.StreamWriter, admission: Admission, peer: object = None) -> None:
        self.writer = writer
        self.peer = peer
        self.admission = admission
        self.client_id = admission.client_id  # amqtt's id once it has assigned one (empty CONNECT id)
        self.last_read = time.monotonic()
        self.finished = asyncio.Event()
        self.dropped_because: str | None = None

    def drop(self, reason: str) -> None:
        """Abort the TCP connection at once (amqtt sees EOF: an abnormal disconnect)."""
        if self.dropped_because is None:
            self.dropped_because = reason
        self.writer.transport.abort()

    async def wait_finished(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds until amqtt is done with the connection; False on timeout."""
        try:
            await asyncio.wait_for(self.finished.wait(), grace)
        except TimeoutError:
            return False
        return True


class ReplayReader(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt reader adapter: replays ``replay`` first, then reads the socket.

    Mirrors amqtt's ``StreamReaderAdapter``: ``read(n)`` returns exactly ``n`` bytes (or raises
    ``IncompleteReadError`` at EOF), ``read(-1)`` reads to EOF.
    """

    def __init__(self, reader: asyncio.StreamReader, replay: bytes, connection: DeviceConnection) -> None:
        self._reader = reader
        self._replay = replay
        self.connection = connection

    async def read(self, n: int = -1) -> bytes:
        """Read ``n`` bytes (all until EOF for ``n == -1``)."""
        if n < 0:
            data, self._replay = self._replay + await self._reader.read(), b""
        elif self._replay:
            data, self._replay = self._replay[:n], self._replay[n:]
            if len(data) < n:
                data += await self._reader.readexactly(n - len(data))
        else:
            data = await self._reader.readexactly(n)
        if data:
            self.connection.last_read = time.monotonic()
        return data

    def feed_eof(self) -> None:
        """Acknowledge EOF."""
        self._reader.feed_eof()


async def enforce_keep_alive(connection: DeviceConnection, factor: float) -> None:
    """Drop ``connection`` once it has been silent for ``factor`` x its keep-alive."""
    keep_alive = connection.admission.keep_alive
    if keep_alive <= 0:
        return
    limit = keep_alive * factor
    while True:
        silent = time.monotonic() - connection.last_read
        if silent >= limit:
            log.info("device keep-alive expired", extra={
                "event": "keepalive_expired", "client_id": connection.client_id,
                "keep_alive": keep_alive, "silent_s": round(silent, 3),
            })
            connection.drop("keepalive_expired")
            return
        await asyncio.sleep(limit - silent)
