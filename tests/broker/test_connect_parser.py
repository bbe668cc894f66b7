"""The CONNECT parser the broker authenticates from, checked against amqtt's own encoder."""

from __future__ import annotations

import asyncio

import pytest
from amqtt.mqtt.connect import ConnectPacket, ConnectPayload, ConnectVariableHeader
from hypothesis import given
from hypothesis import strategies as st

from hydrovisor.broker.connect import (
    ConnectRequest,
    ConnectTooLarge,
    MalformedConnect,
    UnsupportedProtocol,
    Will,
    connack,
    parse_connect_body,
    read_connect,
)
from tests.broker.support import connect_packet

_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
_topic = _text.filter(lambda t: bool(t) and not any(c in t for c in "+#") and not t.startswith("$"))


def amqtt_connect(request: ConnectRequest) -> bytes:
    """``request`` encoded by amqtt's client-side CONNECT encoder."""
    header, payload = ConnectVariableHeader(), ConnectPayload()
    header.keep_alive, header.clean_session_flag = request.keep_alive, request.clean_session
    payload.client_id = request.client_id
    if (will := request.will) is not None:
        header.will_flag, header.will_qos, header.will_retain_flag = True, will.qos, will.retain
        payload.will_topic, payload.will_message = will.topic, will.message
    if request.username is not None:
        header.username_flag, payload.username = True, request.username
    if request.password is not None:
        header.password_flag, payload.password = True, request.password.decode()
    return bytes(ConnectPacket(variable_header=header, payload=payload).to_bytes())


async def read(data: bytes, max_bytes: int = 65536) -> tuple[ConnectRequest, bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(data + b"\xc0\x00")  # a PINGREQ behind it must stay unread
    reader.feed_eof()
    request, raw = await read_connect(reader, max_bytes)
    assert await reader.read() == b"\xc0\x00"
    return request, raw


_requests = st.builds(
    ConnectRequest,
    client_id=_text,
    clean_session=st.booleans(),
    keep_alive=st.integers(0, 65535),
    will=st.none() | st.builds(Will, _topic, st.binary(max_size=300), st.integers(0, 2), st.booleans()),
    username=st.none() | _text,
    password=st.none() | _text.map(str.encode),
).filter(lambda r: r.password is None or r.username is not None)


@given(_requests)
def test_parses_whatever_amqtt_encodes(sent: ConnectRequest) -> None:
    data = amqtt_connect(sent)
    received, raw = asyncio.run(read(data))
    assert raw == data
    assert received == sent


def test_password_is_not_in_the_repr() -> None:
    request, _ = asyncio.run(read(connect_packet("c", username="u", password="hunter2")))
    assert "hunter2" not in repr(request)


@pytest.mark.parametrize(("packet", "error"), [
    (connect_packet("c", flags_extra=0x01), MalformedConnect),  # reserved bit
    (connect_packet("c", flags_extra=0x08), MalformedConnect),  # will QoS without will
    (connect_packet("c", flags_extra=0x20), MalformedConnect),  # will retain without will
    (connect_packet("c", will=("t", b"m"), flags_extra=0x18), MalformedConnect),  # will QoS 3
    (connect_packet("c", flags_extra=0x40), MalformedConnect),  # password flag, no username flag
    (connect_packet("c", will=("a/+", b"m")), MalformedConnect),
    (connect_packet("c", level=3), UnsupportedProtocol),
    (connect_packet("c", level=5), UnsupportedProtocol),
    (connect_packet("c\x00"), MalformedConnect),
    (b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x00", MalformedConnect),  # MQTT 3.1
    (b"\x20\x02\x00\x00", MalformedConnect),  # not a CONNECT
    (b"\x10\xff\xff\xff\xff\x01", MalformedConnect),  # 5 length bytes
])
def test_rejects_what_is_not_a_3_1_1_connect(packet: bytes, error: type[Exception]) -> None:
    async def attempt() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(packet)
        reader.feed_eof()
        await read_connect(reader, 65536)

    with pytest.raises(error):
        asyncio.run(attempt())


def test_invalid_utf8_is_malformed() -> None:
    body = b"\x00\x04MQTT\x04\x02\x00\x00\x00\x02\xc3\x28"
    with pytest.raises(MalformedConnect, match="UTF-8"):
        parse_connect_body(body)


def test_trailing_or_missing_bytes_are_malformed() -> None:
    body = connect_packet("c", username="u")[2:]
    with pytest.raises(MalformedConnect, match="trailing"):
        parse_connect_body(body + b"x")
    with pytest.raises(MalformedConnect, match="ends early"):
        parse_connect_body(body[:-1])


def test_the_size_limit_is_checked_before_reading_the_body() -> None:
    async def attempt() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x10\xff\xff\x03")  # announces ~64 KiB, sends nothing more
        await read_connect(reader, 2048)

    with pytest.raises(ConnectTooLarge):
        asyncio.run(asyncio.wait_for(attempt(), 1))


def test_connack_bytes() -> None:
    assert connack(4) == b"\x20\x02\x00\x04"
    assert connack(0, session_present=True) == b"\x20\x02\x01\x00"
