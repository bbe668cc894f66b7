"""Helpers for the broker tests: a running broker, real amqtt clients, a raw MQTT socket."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from amqtt.client import MQTTClient
from amqtt.errors import ConnectError

from hydrovisor.broker.directory import DeviceDirectory, DeviceIdentity, hash_password
from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.messages import DeviceMessage
from hydrovisor.broker.receipts import Receipt
from hydrovisor.sim.pipeline_client import remaining_length

# amqtt's client logs its URI - password included - at DEBUG: keep it quieter everywhere.
logging.getLogger("amqtt.client").setLevel(logging.INFO)

SECRET_A, SECRET_B, SECRET_NEW = "secret-a-0123456789abcdef", "secret-b-0123456789abcdef", "secret-n-x"
NODE_A = DeviceIdentity(username="nd-a", node_uid="nd-a", hardware_id="esp32-aaaaaaaaaaaa",
                        gh_uid="gh-1", zone_uid="zn-1", password_hash=hash_password(SECRET_A))
NODE_B = DeviceIdentity(username="nd-b", node_uid="nd-b", hardware_id="esp32-bbbbbbbbbbbb",
                        gh_uid="gh-1", zone_uid="zn-1", password_hash=hash_password(SECRET_B))
# An unbound device that authenticates with its hardware id.
FRESH = DeviceIdentity(username="esp32-cccccccccccc", hardware_id="esp32-cccccccccccc",
                       password_hash=hash_password(SECRET_NEW))


def fleet() -> DeviceDirectory:
    """A directory with two bound nodes and one unbound device."""
    return DeviceDirectory([NODE_A, NODE_B, FRESH])


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    """Run one async scenario on a fresh loop with a hard deadline."""
    asyncio.run(asyncio.wait_for(scenario(), timeout=timeout))


class Inbox:
    """An ``on_message`` sink that records and lets a test wait for messages."""

    def __init__(self) -> None:
        self.messages: list[DeviceMessage] = []

    def __call__(self, message: DeviceMessage, receipt: Receipt) -> None:
        self.messages.append(message)
        receipt.settle()

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    async def wait_for(self, topic: str) -> DeviceMessage:
        await eventually(lambda: topic in self.topics())
        return next(m for m in self.messages if m.topic == topic)


@asynccontextmanager
async def running(*, dev_mode: bool = False, **kwargs: Any) -> AsyncIterator[EmbeddedBroker]:
    """A started broker on an ephemeral loopback port, stopped afterwards."""
    broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=dev_mode, **kwargs)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def connect(
    port: int, credentials: str = "", *, client_id: str | None = None, will: dict[str, Any] | None = None
) -> MQTTClient:
    """A connected amqtt client (no client plugins: the packet logger would log the password)."""
    config: dict[str, Any] = {"auto_reconnect": False, "plugins": {}}
    if will is not None:
        config["will"] = will
    client = MQTTClient(client_id=client_id, config=config)
    await client.connect(f"mqtt://{credentials}127.0.0.1:{port}")
    return client


async def refused_code(port: int, credentials: str = "", *, client_id: str | None = None) -> int | None:
    """The CONNACK return code of a connection attempt that must fail."""
    with pytest.raises(ConnectError) as info:
        await connect(port, credentials, client_id=client_id)
    code: int | None = info.value.return_code
    return code


async def eventually(condition: Callable[[], bool], within: float = 3.0) -> None:
    """Poll broker-side state (amqtt offers nothing to wait on) for up to ``within`` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {within} s")
        await asyncio.sleep(0.01)


async def no_message(client: MQTTClient, within: float = 0.3) -> None:
    """Assert ``client`` receives nothing for ``within`` s."""
    with pytest.raises(TimeoutError):
        await client.deliver_message(timeout_duration=within)


# -- raw MQTT 3.1.1 on a socket, for what amqtt's client cannot do (malformed, silent) ----------


def _text(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str, *, username: str | None = None, password: str | bytes | None = None,
    keep_alive: int = 0, clean: bool = True, will: tuple[str, bytes] | None = None,
    level: int = 4, flags_extra: int = 0,
) -> bytes:
    """Encode a CONNECT; ``flags_extra`` ORs raw bits into the connect flags (to break it)."""
    flags = (0x02 if clean else 0) | (0x80 if username is not None else 0)
    flags |= (0x40 if password is not None else 0) | (0x04 if will else 0) | flags_extra
    body = _text("MQTT") + bytes([level, flags]) + struct.pack("!H", keep_alive) + _text(client_id)
    if will:
        body += _text(will[0]) + _text(will[1])
    if username is not None:
        body += _text(username)
    if password is not None:
        body += _text(password)
    return bytes([0x10]) + remaining_length(len(body)) + body


def subscribe_packet(packet_id: int, topic_filter: str, qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + _text(topic_filter) + bytes([qos])
    return bytes([0x82]) + remaining_length(len(body)) + body


def publish_packet(topic: str | bytes, payload: bytes, *, qos: int = 1, packet_id: int = 1, flags: int = -1) -> bytes:
    """Encode a PUBLISH; ``flags`` (0-15) replaces the fixed-header flags to break it."""
    body = _text(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    first = 0x30 | (qos << 1 if flags < 0 else flags)
    return bytes([first]) + remaining_length(len(body)) + body


class RawClient:
    """An MQTT peer driven byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def connack(self, within: float = 3.0) -> int:
        """Read a CONNACK and return its return code."""
        packet = await asyncio.wait_for(self.reader.readexactly(4), within)
        assert packet[:2] == b"\x20\x02", packet
        return packet[3]

    async def closed(self, within: float = 3.0) -> bool:
        """True when the broker closes the connection within ``within`` s (data is discarded)."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(1024):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    def abort(self) -> None:
        """Vanish without DISCONNECT, like a device losing power."""
        self.writer.transport.abort()

    def close(self) -> None:
        self.writer.close()
