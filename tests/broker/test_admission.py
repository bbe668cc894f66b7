"""Who gets in: credentials, development mode, wills, and what a peer may cost before CONNECT."""

from __future__ import annotations

import asyncio

from amqtt.mqtt.constants import QOS_1

from hydrovisor.broker.directory import DeviceDirectory
from hydrovisor.broker.limits import BrokerLimits
from tests.broker.support import (
    FRESH,
    NODE_A,
    SECRET_A,
    SECRET_B,
    SECRET_NEW,
    RawClient,
    connect,
    connect_packet,
    eventually,
    fleet,
    refused_code,
    run,
    running,
    subscribe_packet,
)

UNACCEPTABLE_PROTOCOL, IDENTIFIER_REJECTED, BAD_CREDENTIALS, NOT_AUTHORIZED = 1, 2, 4, 5


def test_the_right_secret_is_accepted_and_anything_else_refused() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            client = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=NODE_A.hardware_id)
            assert await refused_code(broker.port, "nd-a:wrong@") == BAD_CREDENTIALS
            assert await refused_code(broker.port, f"nd-a:{SECRET_B}@") == BAD_CREDENTIALS  # B's secret
            assert await refused_code(broker.port, f"nd-zz:{SECRET_A}@") == BAD_CREDENTIALS  # unknown
            assert await refused_code(broker.port) == NOT_AUTHORIZED  # anonymous, not in dev mode
            fresh = await connect(broker.port, f"{FRESH.username}:{SECRET_NEW}@", client_id=FRESH.hardware_id)
            assert broker.session_count == 2  # refused attempts are not sessions
            await client.disconnect()
            await fresh.disconnect()

    run(scenario)


def test_without_a_directory_nobody_gets_in_outside_dev_mode() -> None:
    async def scenario() -> None:
        async with running() as broker:
            assert await refused_code(broker.port) == NOT_AUTHORIZED
            assert await refused_code(broker.port, f"nd-a:{SECRET_A}@") == BAD_CREDENTIALS

    run(scenario)


def test_credentials_follow_directory_updates() -> None:
    directory = DeviceDirectory()

    async def scenario() -> None:
        async with running(directory=directory) as broker:
            assert await refused_code(broker.port, f"nd-a:{SECRET_A}@") == BAD_CREDENTIALS
            broker.directory.put(NODE_A)  # credential issued
            client = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=NODE_A.hardware_id)
            await client.disconnect()
            assert broker.directory.remove("nd-a")  # revoked
            assert await refused_code(broker.port, f"nd-a:{SECRET_A}@") == BAD_CREDENTIALS

    run(scenario)


def test_dev_mode_admits_strangers_unrestricted_but_still_checks_known_devices() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True, directory=fleet()) as broker:
            anonymous = await connect(broker.port)
            stranger = await connect(broker.port, "simulator:whatever@")
            assert await refused_code(broker.port, "nd-a:wrong@") == BAD_CREDENTIALS
            known = await connect(broker.port, f"nd-a:{SECRET_A}@")
            # unrestricted: any filter, even B's command topic
            assert await anonymous.subscribe([("hydro/#", QOS_1)]) == [QOS_1]
            assert await stranger.subscribe([("hydro/gh-1/zn-1/nd-b/+/command", QOS_1)]) == [QOS_1]
            # a known device gets the ACL even in dev mode
            assert await known.subscribe([("hydro/gh-1/zn-1/nd-b/+/command", QOS_1)]) == [0x80]
            for client in (anonymous, stranger, known):
                await client.disconnect()

    run(scenario)


def test_a_will_outside_the_devices_namespace_is_refused() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("esp32-aaaaaaaaaaaa", username="nd-a", password=SECRET_A,
                                          will=("hydro/gh-1/zn-1/nd-b/lwt", b"offline")))
            assert await raw.connack() == NOT_AUTHORIZED
            assert await raw.closed()
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("esp32-aaaaaaaaaaaa", username="nd-a", password=SECRET_A,
                                          will=("hydro/gh-1/zn-1/nd-a/lwt", b"offline")))
            assert await raw.connack() == 0
            raw.close()

    run(scenario)


def test_protocol_violations_are_closed_before_amqtt_sees_them() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("c1", level=3))  # MQTT 3.1 level with the 3.1.1 name
            assert await raw.connack() == UNACCEPTABLE_PROTOCOL
            assert await raw.closed()
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("", clean=False))
            assert await raw.connack() == IDENTIFIER_REJECTED
            for broken in (
                connect_packet("c1", flags_extra=0x01),  # reserved flag
                connect_packet("c1", will=("hydro/#", b"x")),  # wildcard will topic
                b"\x82\x05\x00\x01\x00\x00\x01",  # SUBSCRIBE first
            ):
                raw = await RawClient.open(broker.port)
                await raw.send(broken)
                assert await raw.closed()
            assert broker.session_count == 0

    run(scenario)


def test_packets_pipelined_behind_the_connect_reach_amqtt() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("c1") + subscribe_packet(7, "hydro/time/response"))
            assert await raw.connack() == 0
            suback = await asyncio.wait_for(raw.reader.readexactly(5), 3)
            assert suback == b"\x90\x03\x00\x07\x01"
            assert broker.subscriber_count("hydro/time/response") == 1
            raw.close()

    run(scenario)


def test_a_silent_or_oversized_connect_is_dropped() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True, limits=BrokerLimits(connect_timeout=0.3, max_connect_bytes=64)) as broker:
            silent = await RawClient.open(broker.port)
            half = await RawClient.open(broker.port)
            await half.send(connect_packet("c1")[:5])  # starts a CONNECT, never finishes it
            assert await silent.closed(within=2)
            assert await half.closed(within=2)
            big = await RawClient.open(broker.port)
            await big.send(connect_packet("c" * 100))
            assert await big.closed(within=2)
            ok = await RawClient.open(broker.port)
            await ok.send(connect_packet("c1"))
            assert await ok.connack() == 0
            await eventually(lambda: broker.session_count == 1)
            ok.close()

    run(scenario)
