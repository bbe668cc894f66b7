"""Reading an MQTT 3.1.1 CONNECT packet (§3.1) off a fresh connection, and writing CONNACK.

The broker authenticates a connection from this parse before amqtt sees a single byte of it
(see ``embedded.py``), so the parser is strict: anything that is not a well-formed 3.1.1
CONNECT raises :class:`MalformedConnect` (the connection is then closed without CONNACK, as
§3.1.4 allows) or :class:`UnsupportedProtocol` (answered with CONNACK 1).
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from hydrovisor.broker.acl import is_topic_name

# CONNACK return codes (§3.2.2.3)
ACCEPTED = 0
UNACCEPTABLE_PROTOCOL = 1
IDENTIFIER_REJECTED = 2
SERVER_UNAVAILABLE = 3
BAD_USERNAME_PASSWORD = 4
NOT_AUTHORIZED = 5

_CONNECT = 0x10  # packet type 1, flags 0 (§2.2.2)
_PROTOCOL_NAME = "MQTT"
_PROTOCOL_LEVEL = 4
_MAX_LENGTH_BYTES = 4  # the remaining length is at most 4 bytes (§2.2.3)

_USERNAME, _PASSWORD, _WILL_RETAIN = 0x80, 0x40, 0x20
_WILL_QOS_MASK, _WILL, _CLEAN, _RESERVED = 0x18, 0x04, 0x02, 0x01


class MalformedConnect(Exception):
    """The first packet is not a well-formed MQTT 3.1.1 CONNECT."""


class ConnectTooLarge(MalformedConnect):
    """The CONNECT is larger than the broker accepts."""


class UnsupportedProtocol(Exception):
    """A CONNECT for another protocol level than 3.1.1 (answered with CONNACK 1)."""


@dataclass(frozen=True, slots=True)
class Will:
    """The last will carried in a CONNECT."""

    topic: str
    message: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What a CONNECT asks for. ``password`` is excluded from ``repr`` (never log it)."""

    client_id: str
    clean_session: bool
    keep_alive: int
    will: Will | None
    username: str | None
    password: bytes | None = field(repr=False)


async def read_connect(reader: asyncio.StreamReader, max_bytes: int) -> tuple[ConnectRequest, bytes]:
    """Read exactly one CONNECT; return it parsed plus the raw bytes read.

    Raises :class:`MalformedConnect`, :class:`UnsupportedProtocol`, or
    ``asyncio.IncompleteReadError`` when the peer closes mid-packet.
    """
    first = await reader.readexactly(1)
    if first[0] != _CONNECT:
        raise MalformedConnect(f"first packet is not CONNECT (byte 0x{first[0]:02x})")
    length, length_bytes = 0, bytearray()
    for shift in range(0, 7 * _MAX_LENGTH_BYTES, 7):
        byte = (await reader.readexactly(1))[0]
        length_bytes.append(byte)
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise MalformedConnect("remaining length longer than 4 bytes")
    if length > max_bytes:
        raise ConnectTooLarge(f"CONNECT of {length} bytes exceeds the {max_bytes} byte limit")
    body = await reader.readexactly(length)
    return parse_connect_body(body), first + bytes(length_bytes) + body


def parse_connect_body(body: bytes) -> ConnectRequest:
    """Parse the variable header and payload of a CONNECT (everything after the fixed header)."""
    cursor = _Cursor(body)
    name = cursor.text()
    level = cursor.byte()
    if name != _PROTOCOL_NAME:
        raise MalformedConnect(f"protocol name {name!r} is not MQTT")
    if level != _PROTOCOL_LEVEL:
        raise UnsupportedProtocol(f"protocol level {level} (only 4, MQTT 3.1.1, is supported)")
    flags = cursor.byte()
    keep_alive = cursor.uint16()
    will_qos = (flags & _WILL_QOS_MASK) >> 3
    if flags & _RESERVED:
        raise MalformedConnect("reserved connect flag is set")
    if not flags & _WILL and (will_qos or flags & _WILL_RETAIN):
        raise MalformedConnect("will QoS/retain set without the will flag")
    if will_qos > 2:
        raise MalformedConnect("will QoS 3")
    if flags & _PASSWORD and not flags & _USERNAME:
        raise MalformedConnect("password flag without username flag")
    client_id = cursor.text()
    will = None
    if flags & _WILL:
        will = Will(cursor.text(), cursor.binary(), will_qos, bool(flags & _WILL_RETAIN))
        if not is_topic_name(will.topic):
            raise MalformedConnect("will topic is not a valid topic name")
    username = cursor.text() if flags & _USERNAME else None
    password = cursor.binary() if flags & _PASSWORD else None
    if not cursor.at_end():
        raise MalformedConnect("trailing bytes after the CONNECT payload")
    return ConnectRequest(client_id, bool(flags & _CLEAN), keep_alive, will, username, password)


def connack(return_code: int, *, session_present: bool = False) -> bytes:
    """The 4 bytes of a CONNACK."""
    return bytes((0x20, 0x02, 1 if session_present else 0, return_code))


class _Cursor:
    """Bounds-checked reads over a CONNECT body."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def _take(self, n: int) -> bytes:
        if self._at + n > len(self._data):
            raise MalformedConnect("CONNECT ends early")
        chunk = self._data[self._at:self._at + n]
        self._at += n
        return chunk

    def byte(self) -> int:
        return self._take(1)[0]

    def uint16(self) -> int:
        value: int = struct.unpack("!H", self._take(2))[0]
        return value

    def binary(self) -> bytes:
        return self._take(self.uint16())

    def text(self) -> str:
        try:
            value = self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedConnect("string is not valid UTF-8") from exc
        if "\x00" in value:
            raise MalformedConnect("string contains U+0000")
        return value

    def at_end(self) -> bool:
        return self._at == len(self._data)
