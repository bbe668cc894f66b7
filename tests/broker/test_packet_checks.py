"""Packets MQTT 3.1.1 forbids close the connection (§4.8), counted, and are never delivered.

amqtt 0.12 on its own acknowledges a 64 MB PUBLISH, logs and goes on after a QoS 3 PUBLISH, reads
a topic whose length overruns its packet into the next packet, and keeps a connection open after a
malformed UNSUBSCRIBE or PUBREL. The broker's framing reader checks every packet first
(``hydrovisor.broker.packets.problem_with``); these tests drive it byte by byte over a real socket.
"""

from __future__ import annotations

import asyncio
import struct

import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.broker import packets
from hydrovisor.broker.limits import BrokerLimits
from hydrovisor.sim.pipeline_client import remaining_length
from tests.broker.support import (
    Inbox,
    RawClient,
    connect,
    connect_packet,
    eventually,
    no_message,
    publish_packet,
    run,
    running,
)

MAX_PACKET = 4096
TOPIC = "hydro/gh-1/zn-1/nd-a/ph_sensor/telemetry"


def refused(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("hydrovisor_mqtt_packets_refused_total", {"reason": reason}) or 0.0


def _text(value: bytes) -> bytes:
    return struct.pack("!H", len(value)) + value


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


async def _device(port: int, client_id: str = "esp32-0123456789ab",
                  will: tuple[str, bytes] | None = None) -> RawClient:
    raw = await RawClient.open(port)
    await raw.send(connect_packet(client_id, will=will))
    assert await raw.connack() == 0
    return raw


# -- the packet size limit -------------------------------------------------------------------------


def test_publish_over_the_size_limit_closes_the_connection_is_counted_and_never_delivered() -> None:
    inbox, registry = Inbox(), CollectorRegistry()

    async def scenario() -> None:
        limits = BrokerLimits(max_packet_bytes=MAX_PACKET)
        async with running(dev_mode=True, on_message=inbox, limits=limits, registry=registry) as broker:
            watcher = await connect(broker.port, client_id="watcher")
            await watcher.subscribe([("hydro/#", 1)])
            raw = await _device(broker.port)
            header = 1 + 2 + len(TOPIC) + 2  # whole packet = header bytes + payload: exactly at the limit
            at_limit = publish_packet(TOPIC, b"x" * (MAX_PACKET - header - 2), packet_id=7)
            assert len(at_limit) == MAX_PACKET
            await raw.send(at_limit)
            assert await asyncio.wait_for(raw.reader.readexactly(4), 3) == b"\x40\x02\x00\x07"  # PUBACK
            assert (await watcher.deliver_message(timeout_duration=3)).topic == TOPIC

            too_large = publish_packet(TOPIC, b"y" * (MAX_PACKET - header - 1), packet_id=8)
            assert len(too_large) == MAX_PACKET + 1
            await raw.send(too_large)
            assert await raw.closed()
            assert refused(registry, "packet_too_large") == 1
            await no_message(watcher)
            assert [m.payload[:1] for m in inbox.messages] == [b"x"]

            # refused on its fixed header: a 64 MB PUBLISH is not read (nor held) before the answer
            huge = await _device(broker.port, "esp32-0123456789ac")
            body_start = _text(TOPIC.encode()) + b"\x00\x09" + b"z" * 1000
            await huge.send(bytes([0x32]) + remaining_length(64 * 1024 * 1024) + body_start)
            assert await huge.closed(within=1.0)
            assert refused(registry, "packet_too_large") == 2
            await no_message(watcher)
            assert len(inbox.messages) == 1
            await watcher.disconnect()

    run(scenario)


# -- malformed packets (MQTT 3.1.1 §4.8: "the Server MUST close the Network Connection") ------------

PUBLISH_QOS3 = publish_packet(TOPIC, b"{}", qos=1, packet_id=1, flags=0b0110)
WILDCARD_PLUS = publish_packet("hydro/gh-1/+/nd-a/ph_sensor/telemetry", b"{}", packet_id=1)
WILDCARD_HASH = publish_packet("hydro/#", b"{}", qos=0)
# topic length 0xFFFF in a 9-byte packet: amqtt would read the next packets as the topic
TOPIC_OVERRUN = _packet(0x32, b"\xff\xff" + b"hydro" + b"\x00\x01")
INVALID_UTF8 = publish_packet(b"hydro/\xff\xfe/telemetry", b"{}", packet_id=1)
UNSUBSCRIBE_WITHOUT_FILTERS = _packet(0xA2, b"\x00\x05")
PUBREL_WRONG_FLAGS = _packet(0x60, b"\x00\x01")  # §3.6.1: PUBREL carries the flags 0b0010


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (PUBLISH_QOS3, "publish_qos3"),
        (WILDCARD_PLUS, "wildcard_in_topic"),
        (WILDCARD_HASH, "wildcard_in_topic"),
        (TOPIC_OVERRUN, "topic_overruns_packet"),
        (INVALID_UTF8, "topic_not_utf8"),
        (UNSUBSCRIBE_WITHOUT_FILTERS, "no_topic_filter"),
        (PUBREL_WRONG_FLAGS, "bad_fixed_header_flags"),
    ],
    ids=["qos3", "wildcard+", "wildcard#", "topic_overrun", "invalid_utf8", "unsubscribe_empty", "pubrel_flags"],
)
def test_a_malformed_packet_closes_the_connection_and_what_follows_is_not_read(packet: bytes, reason: str) -> None:
    inbox, registry = Inbox(), CollectorRegistry()

    async def scenario() -> None:
        async with running(dev_mode=True, on_message=inbox, registry=registry) as broker:
            raw = await _device(broker.port, will=("hydro/gh-1/zn-1/nd-a/lwt", b"offline"))
            # a valid PUBLISH right behind the bad packet, in the same write: never taken
            await raw.send(packet + publish_packet(TOPIC, b'{"after":1}', packet_id=2))
            assert await raw.closed()
            assert refused(registry, reason) == 1
            # closed as an abnormal disconnect: the will goes out (§3.1.2.5), nothing else does
            await inbox.wait_for("hydro/gh-1/zn-1/nd-a/lwt")
            assert inbox.topics() == ["hydro/gh-1/zn-1/nd-a/lwt"]
            await eventually(lambda: broker.connected_clients() == [])

    run(scenario)


def test_well_formed_packets_keep_the_connection_open() -> None:
    inbox, registry = Inbox(), CollectorRegistry()

    async def scenario() -> None:
        async with running(dev_mode=True, on_message=inbox, registry=registry) as broker:
            raw = await _device(broker.port)
            await raw.send(publish_packet(TOPIC, b"{}", packet_id=1)
                           + _packet(0xA2, b"\x00\x02" + _text(b"hydro/x/#"))  # UNSUBSCRIBE
                           + _packet(0x62, b"\x00\x03")  # PUBREL for an unknown id: harmless
                           + b"\xc0\x00")  # PINGREQ
            answers = []
            for _ in range(3):  # amqtt answers in tasks: in any order
                first, length = await asyncio.wait_for(raw.reader.readexactly(2), 3)
                answers.append(bytes([first, length]) + await raw.reader.readexactly(length))
            # PUBACK, UNSUBACK, PINGRESP
            assert sorted(answers) == [b"\x40\x02\x00\x01", b"\xb0\x02\x00\x02", b"\xd0\x00"]
            assert not await raw.closed(within=0.5)
            assert inbox.topics() == [TOPIC]
            assert not any(v for m in registry.collect() if m.name == "hydrovisor_mqtt_packets_refused"
                           for v in (s.value for s in m.samples))
            raw.close()

    run(scenario)


# -- problem_with, as a table ------------------------------------------------------------------------

PID = b"\x00\x01"
T = _text(b"hydro/a/b")


@pytest.mark.parametrize(
    ("first", "body", "problem"),
    [
        # PUBLISH
        (0x30, T + b"payload", None),
        (0x31, T, None),  # retain
        (0x32, T + PID + b"payload", None),
        (0x34, T + PID, None),  # QoS 2
        (0x3A, T + PID, None),  # DUP on QoS 1
        (0x36, T + PID, "publish_qos3"),
        (0x38, T, "publish_dup_qos0"),
        (0x32, b"", "topic_length_missing"),
        (0x32, b"\x00", "topic_length_missing"),
        (0x32, b"\x00\x10hydro", "topic_overruns_packet"),  # length overruns the packet
        (0x30, _text(b"hydro/\xc3\x28"), "topic_not_utf8"),  # invalid UTF-8
        (0x30, _text(b"hydro/\xed\xa0\x80"), "topic_not_utf8"),  # UTF-16 surrogate (§1.5.3-1)
        (0x30, _text(b"hydro/a\x00b"), "topic_contains_nul"),  # U+0000 (§1.5.3-2)
        (0x30, _text(b""), "empty_topic"),
        (0x30, _text(b"hydro/+/b"), "wildcard_in_topic"),
        (0x30, _text(b"hydro/#"), "wildcard_in_topic"),
        (0x30, _text(b"$SYS/broker"), "reserved_topic"),
        (0x32, T, "bad_packet_id"),  # QoS 1 without a packet id
        (0x32, T + b"\x00", "bad_packet_id"),
        (0x32, T + b"\x00\x00", "bad_packet_id"),  # packet id 0 (§2.3.1-1)
        # packet types a client never sends, or sends once
        (0x00, b"", "reserved_packet_type"),
        (0xF0, b"", "reserved_packet_type"),
        (0x10, b"\x00\x04MQTT", "second_connect"),
        (0x20, b"\x00\x00", "unexpected_packet"),
        (0x90, PID + b"\x01", "unexpected_packet"),
        (0xB0, PID, "unexpected_packet"),
        (0xD0, b"", "unexpected_packet"),
        # acknowledgements
        (0x40, PID, None),
        (0x50, PID, None),
        (0x62, PID, None),
        (0x70, PID, None),
        (0x60, PID, "bad_fixed_header_flags"),
        (0x42, PID, "bad_fixed_header_flags"),
        (0x40, b"\x00\x00", "bad_packet_id"),
        (0x40, PID + b"\x00", "bad_packet_id"),
        (0x70, b"", "bad_packet_id"),
        # PINGREQ, DISCONNECT
        (0xC0, b"", None),
        (0xE0, b"", None),
        (0xC0, b"\x00", "bad_remaining_length"),
        (0xE1, b"", "bad_fixed_header_flags"),
        # SUBSCRIBE
        (0x82, PID + T + b"\x01", None),
        (0x82, PID + T + b"\x00" + _text(b"hydro/+/x") + b"\x02", None),
        (0x80, PID + T + b"\x01", "bad_fixed_header_flags"),
        (0x82, PID, "no_topic_filter"),
        (0x82, PID + T + b"\x03", "bad_requested_qos"),
        (0x82, PID + T, "bad_requested_qos"),
        (0x82, PID + _text(b"") + b"\x00", "empty_topic_filter"),
        (0x82, b"\x00\x00" + T + b"\x01", "bad_packet_id"),
        (0x82, b"\x00", "bad_packet_id"),
        # UNSUBSCRIBE
        (0xA2, PID + T, None),
        (0xA2, PID + T + _text(b"hydro/#"), None),
        (0xA0, PID + T, "bad_fixed_header_flags"),
        (0xA2, PID, "no_topic_filter"),
        (0xA2, PID + T + b"\x00", "topic_filter_length_missing"),  # a trailing byte that is no string
        (0xA2, PID + _text(b""), "empty_topic_filter"),
        (0xA2, b"\x00\x00" + T, "bad_packet_id"),
    ],
)
def test_problem_with(first: int, body: bytes, problem: str | None) -> None:
    assert packets.problem_with(first, body) == problem


@pytest.mark.parametrize("length", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455])
def test_remaining_length_round_trip(length: int) -> None:
    encoded = remaining_length(length)
    decoded, shift = 0, 0
    for byte in encoded:
        decoded |= (byte & 0x7F) << shift
        shift += 7
    assert decoded == length
    assert len(encoded) == 1 + (length >= 128) + (length >= 16_384) + (length >= 2_097_152)
    assert encoded[-1] < 0x80
