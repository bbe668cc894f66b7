"""A pipelining MQTT 3.1.1 client on a raw asyncio socket, for benchmarks and tests of the ingest path.

Unlike amqtt's client (one PUBLISH at a time per ``await publish``, PUBACKs waited on one by one)
this client behaves like a fast real device or ``mosquitto_pub -M``: it keeps up to ``window``
QoS 1 PUBLISH packets in flight, fills every freed slot at once (several PUBLISH in one TCP
write), and records for each one the moment its PUBACK arrived. It can also be rude on
purpose: ``send_publishes`` writes any number of PUBLISH packets in a single write regardless
of the window, and ``abort`` closes the socket without DISCONNECT (optionally with a TCP RST).

What it records:

- every PUBLISH gets a *sequence number* ``seq`` (0, 1, 2, ... in the order written), which
  unlike the MQTT packet id is never reused, so ``acked_seqs`` says exactly which of the
  messages the broker acknowledged, however many were sent on the connection;
- ``acks``: one :class:`Ack` per PUBACK (``seq``, packet id, latency from the write to the
  PUBACK's arrival, in seconds of ``time.perf_counter``);
- incoming PUBLISH packets (a subscriber) go to ``on_message`` as :class:`Incoming`; QoS 1 is
  answered with PUBACK, QoS 2 with PUBREC / PUBCOMP.

Only what a device needs is implemented: CONNECT (clean session, keep-alive, optional
username/password), PUBLISH QoS 0/1 out, PUBLISH QoS 0/1/2 in, SUBSCRIBE, PINGREQ, DISCONNECT.
Everything runs on the event loop that called :meth:`PipelineClient.connect`.

Example (a device flushing its buffer and leaving right after the last PUBACK)::

    client = PipelineClient("esp32-0123456789ab")
    await client.connect("127.0.0.1", 1883)
    await client.publish_all(Message(topic, payload) for payload in payloads)  # 50 in flight
    await client.disconnect()
    assert len(client.acked_seqs) == len(payloads)
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "Ack",
    "ConnectRefused",
    "ConnectionClosed",
    "Incoming",
    "Message",
    "PipelineClient",
    "ProtocolError",
    "connect_packet",
    "disconnect_packet",
    "publish_packet",
    "remaining_length",
    "subscribe_packet",
]

# fixed-header packet types (high nibble)
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 10, 11, 12, 13, 14

MAX_PACKET_ID = 0xFFFF
MAX_REMAINING_LENGTH = 268_435_455


class ProtocolError(Exception):
    """The broker sent something this client cannot parse, or a packet it did not expect."""


class ConnectRefused(Exception):
    """The broker answered CONNECT with a non-zero CONNACK return code."""

    def __init__(self, return_code: int) -> None:
        super().__init__(f"CONNACK return code {return_code}")
        self.return_code = return_code


class ConnectionClosed(Exception):
    """The connection ended (closed by the peer, by ``abort``/``disconnect``, or a protocol error)."""


# encoding --------------------------------------------------------------------------------------


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length encoding of the remaining length (§2.2.3)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(value: str | bytes) -> bytes:
    """A length-prefixed UTF-8 string (§1.5.3)."""
    data = value.encode() if isinstance(value, str) else value
    if len(data) > 0xFFFF:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + remaining_length(len(body)) + body


def connect_packet(client_id: str, *, keep_alive: int = 60, clean_session: bool = True,
                   username: str | None = None, password: str | bytes | None = None,
                   will: tuple[str, bytes, int, bool] | None = None) -> bytes:
    """CONNECT for MQTT 3.1.1; ``will`` is (topic, payload, qos, retain)."""
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _string(topic) + _string(message)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keep_alive) + payload
    return _packet(CONNECT << 4, body)


def publish_packet(topic: str, payload: bytes, *, qos: int = 1, packet_id: int | None = None,
                   retain: bool = False, dup: bool = False) -> bytes:
    """PUBLISH; ``packet_id`` is required for QoS > 0 and ignored for QoS 0."""
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = _string(topic)
    if qos:
        if packet_id is None or not 0 < packet_id <= MAX_PACKET_ID:
            raise ValueError("QoS > 0 needs a packet id in 1..65535")
        body += struct.pack("!H", packet_id)
    return _packet(first, body + payload)


def subscribe_packet(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE to ``filters`` (topic filter, requested QoS)."""
    body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([q]) for f, q in filters)
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def _ack_packet(kind: int, packet_id: int) -> bytes:
    return bytes([(kind << 4) | (0x02 if kind == PUBREL else 0), 2]) + struct.pack("!H", packet_id)


def disconnect_packet() -> bytes:
    """DISCONNECT."""
    return bytes([DISCONNECT << 4, 0])


# records ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One PUBLISH to send."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Ack:
    """A PUBACK: which message (``seq``) under which packet id, and send -> PUBACK in seconds."""

    seq: int
    packet_id: int
    latency: float


@dataclass(frozen=True, slots=True)
class Incoming:
    """A PUBLISH received from the broker; ``received`` is ``time.monotonic()`` at arrival."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    received: float


@dataclass(slots=True)
class _InFlight:
    seq: int
    sent: float  # perf_counter at write


# the client ------------------------------------------------------------------------------------


@dataclass
class PipelineClient:
    """One MQTT connection with many QoS 1 publishes in flight; see the module docstring.

    ``keep_alive`` is announced in CONNECT and honoured with PINGREQ when the connection is idle
    (0 disables both). After the connection ended, ``closed`` is set and ``close_reason`` says
    why (``"disconnect"``, ``"abort"``, ``"peer"`` or the protocol error).
    """

    client_id: str
    keep_alive: int = 60
    clean_session: bool = True
    username: str | None = None
    password: str | None = None
    on_message: Callable[[Incoming], None] | None = None
    acks: list[Ack] = field(default_factory=list)
    sent: int = 0  # PUBLISH packets written, any QoS
    close_reason: str | None = None

    def __post_init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: dict[int, _InFlight] = {}
        self._next_id = 0
        self._progress = asyncio.Event()  # set on every PUBACK and when the connection ends
        self._suback: dict[int, asyncio.Future[list[int]]] = {}
        self._last_write = time.monotonic()
        self.closed = asyncio.Event()

    # connection --------------------------------------------------------------------------------

    async def connect(self, host: str, port: int, *, connect_timeout: float = 10.0,
                      will: tuple[str, bytes, int, bool] | None = None) -> None:
        """Open the TCP connection, send CONNECT and wait for CONNACK.

        Raises :class:`ConnectRefused` for a non-zero return code (the socket is closed then),
        ``TimeoutError`` when no CONNACK arrives within ``connect_timeout``.
        """
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), connect_timeout)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader, self._writer = reader, writer
        self._write(connect_packet(self.client_id, keep_alive=self.keep_alive, clean_session=self.clean_session,
                                   username=self.username, password=self.password, will=will))
        try:
            first, body = await asyncio.wait_for(self._read_packet(), connect_timeout)
            if first >> 4 != CONNACK or len(body) != 2:
                raise ProtocolError(f"expected CONNACK, got packet type {first >> 4}")
            if body[1] != 0:
                raise ConnectRefused(body[1])
        except BaseException:
            writer.close()
            self.closed.set()
            raise
        self._tasks.append(asyncio.create_task(self._read_loop(), name=f"mqtt-read-{self.client_id}"))
        if self.keep_alive > 0:
            self._tasks.append(asyncio.create_task(self._ping_loop(), name=f"mqtt-ping-{self.client_id}"))

    async def disconnect(self, *, close_timeout: float = 5.0) -> None:
        """Send DISCONNECT and close the socket (what ``mosquitto_pub`` does after its last PUBACK)."""
        if self._writer is None or self.closed.is_set():
            return
        self._write(disconnect_packet())
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self._writer.drain(), close_timeout)
        self._close("disconnect")
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), close_timeout)
        await self._stop_tasks()

    def abort(self, *, reset: bool = False) -> None:
        """Close the socket at once, without DISCONNECT; what is still in the send buffer is lost.

        ``reset=True`` makes the kernel send a TCP RST instead of a FIN (SO_LINGER 0), like a
        device losing power mid-burst. PUBACKs arriving after this are not read.
        """
        if self._writer is None or self.closed.is_set():
            return
        if reset:
            sock = self._writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()
        self._close("abort")
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        """Wait until the connection ended (for whatever reason); bound it with ``asyncio.timeout``."""
        await self.closed.wait()

    # publishing --------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """QoS 1 publishes written and not yet acknowledged."""
        return len(self._in_flight)

    @property
    def acked_seqs(self) -> set[int]:
        """Sequence numbers of every acknowledged publish."""
        return {ack.seq for ack in self.acks}

    @property
    def unacked_seqs(self) -> list[int]:
        """Sequence numbers of the QoS 1 publishes still waiting for their PUBACK."""
        return sorted(entry.seq for entry in self._in_flight.values())

    def send_publishes(self, messages: Iterable[Message]) -> list[int]:
        """Write every message in **one** TCP write, ignoring any window; returns their ``seq``s.

        Raises :class:`ConnectionClosed` when the connection has ended, ``RuntimeError`` when
        more than 65535 QoS 1 publishes would be in flight (no packet id left).
        """
        self._check_open()
        chunks: list[bytes] = []
        seqs: list[int] = []
        now = time.perf_counter()
        for message in messages:
            seq = self.sent
            self.sent += 1
            seqs.append(seq)
            packet_id = None
            if message.qos > 0:
                packet_id = self._allocate_id()
                self._in_flight[packet_id] = _InFlight(seq, now)
            chunks.append(publish_packet(message.topic, message.payload, qos=message.qos, packet_id=packet_id,
                                         retain=message.retain))
        if chunks:
            self._write(b"".join(chunks))
        return seqs

    async def publish_all(self, messages: Iterable[Message], *, window: int = 50, rate: float | None = None,
                          ack_timeout: float | None = 60.0) -> None:
        """Send ``messages`` with at most ``window`` QoS 1 publishes in flight, then wait for the last PUBACK.

        Without ``rate`` every slot freed by PUBACKs is refilled at once, the new publishes in a
        single write. With ``rate`` (messages per second) each message is written on its own at
        ``start + i / rate`` (still never more than ``window`` in flight). Raises
        :class:`ConnectionClosed` if the connection ends first, ``TimeoutError`` when
        ``ack_timeout`` passes without any PUBACK while publishes are in flight.
        """
        if window < 1:
            raise ValueError("window must be >= 1")
        pending = iter(messages)
        began = time.monotonic()
        index = 0
        exhausted = False
        while not exhausted:
            await self._wait_for_space(window, ack_timeout)
            free = window - self.in_flight
            if rate is not None:
                delay = began + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                free = 1
            batch: list[Message] = []
            for message in pending:
                batch.append(message)
                if len(batch) >= free:
                    break
            else:
                exhausted = True
            if batch:
                self.send_publishes(batch)
                index += len(batch)
                await self._drain()
        await self.wait_acked(ack_timeout)

    async def wait_acked(self, ack_timeout: float | None = 60.0) -> None:
        """Wait until no QoS 1 publish is in flight; ``ack_timeout`` bounds the wait *between* PUBACKs."""
        await self._wait_for_space(1, ack_timeout)

    async def _wait_for_space(self, window: int, ack_timeout: float | None) -> None:
        while self.in_flight >= window:
            self._check_open()
            self._progress.clear()
            await asyncio.wait_for(self._progress.wait(), ack_timeout)
        self._check_open()

    def _allocate_id(self) -> int:
        if len(self._in_flight) >= MAX_PACKET_ID:
            raise RuntimeError("65535 publishes in flight: no packet id left")
        while True:
            self._next_id = self._next_id % MAX_PACKET_ID + 1
            if self._next_id not in self._in_flight:
                return self._next_id

    # subscribing -------------------------------------------------------------------------------

    async def subscribe(self, filters: Sequence[tuple[str, int]], *, suback_timeout: float = 10.0) -> list[int]:
        """SUBSCRIBE and wait for SUBACK; returns the granted QoS per filter (0x80 = refused)."""
        self._check_open()
        packet_id = self._allocate_id()
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._suback[packet_id] = future
        self._in_flight[packet_id] = _InFlight(-1, time.perf_counter())  # reserves the id
        self._write(subscribe_packet(packet_id, filters))
        try:
            return await asyncio.wait_for(future, suback_timeout)
        finally:
            self._suback.pop(packet_id, None)
            self._in_flight.pop(packet_id, None)

    # internals ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._writer is None:
            raise ConnectionClosed("not connected")
        if self.closed.is_set():
            raise ConnectionClosed(f"connection closed ({self.close_reason})")

    def _write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        self._last_write = time.monotonic()

    async def _drain(self) -> None:
        assert self._writer is not None
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            self._close(f"peer: {exc}")
            raise ConnectionClosed(str(exc)) from exc

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._progress.set()
        if self._writer is not None and reason != "abort":
            self._writer.close()
        for future in self._suback.values():
            if not future.done():
                future.set_exception(ConnectionClosed(reason))

    async def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        for task in self._tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read_packet(self) -> tuple[int, bytes]:
        assert self._reader is not None
        header = await self._reader.readexactly(1)
        length = 0
        for shift in range(0, 28, 7):
            byte = (await self._reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        else:
            raise ProtocolError("malformed remaining length")
        body = await self._reader.readexactly(length) if length else b""
        return header[0], body

    async def _read_loop(self) -> None:
        try:
            while True:
                first, body = await self._read_packet()
                self._dispatch(first, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            self._close("peer")
        except ProtocolError as exc:
            self._close(f"protocol error: {exc}")
            if self._writer is not None:
                self._writer.transport.abort()

    def _dispatch(self, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == PUBACK:
            (packet_id,) = struct.unpack("!H", body[:2])
            entry = self._in_flight.pop(packet_id, None)
            if entry is None or entry.seq < 0:
                raise ProtocolError(f"PUBACK for unknown packet id {packet_id}")
            self.acks.append(Ack(entry.seq, packet_id, time.perf_counter() - entry.sent))
            self._progress.set()
        elif kind == PUBLISH:
            self._on_publish(first, body)
        elif kind == SUBACK:
            (packet_id,) = struct.unpack("!H", body[:2])
            future = self._suback.get(packet_id)
            if future is not None and not future.done():
                future.set_result(list(body[2:]))
        elif kind == PUBREL:
            self._write(_ack_packet(PUBCOMP, struct.unpack("!H", body[:2])[0]))
        elif kind in (PINGRESP, UNSUBACK, PUBREC, PUBCOMP):
            pass  # nothing of ours waits for these (we publish QoS <= 1)
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _on_publish(self, first: int, body: bytes) -> None:
        qos = (first >> 1) & 0x03
        (topic_len,) = struct.unpack("!H", body[:2])
        topic = body[2:2 + topic_len].decode(errors="replace")
        offset = 2 + topic_len
        packet_id = None
        if qos:
            (packet_id,) = struct.unpack("!H", body[offset:offset + 2])
            offset += 2
        if self.on_message is not None:
            self.on_message(Incoming(topic, body[offset:], qos, bool(first & 0x01), bool(first & 0x08), packet_id,
                                     time.monotonic()))
        if qos == 1 and packet_id is not None:
            self._write(_ack_packet(PUBACK, packet_id))
        elif qos == 2 and packet_id is not None:
            self._write(_ack_packet(PUBREC, packet_id))

    async def _ping_loop(self) -> None:
        interval = self.keep_alive / 2
        while not self.closed.is_set():
            await asyncio.sleep(max(0.5, self._last_write + interval - time.monotonic()))
            if not self.closed.is_set() and time.monotonic() - self._last_write >= interval:
                self._write(bytes([PINGREQ << 4, 0]))
