"""EmbeddedBroker lifecycle against real amqtt MQTT clients on an ephemeral port."""

from __future__ import annotations

import asyncio
import logging

import pytest
from amqtt.mqtt.constants import QOS_1

from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.errors import BrokerUnavailable
from hydrovisor.runtime.affinity import LoopAffinityError
from tests.broker.support import SECRET_A, connect, eventually, fleet, no_message, refused_code, run, running

BAD_CREDENTIALS, NOT_AUTHORIZED = 4, 5


def test_dev_mode_publish_subscribe_round_trip_on_an_ephemeral_port() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            assert broker.is_running
            assert broker.port > 0
            node, other = await connect(broker.port), await connect(broker.port)
            assert broker.session_count == 2
            await node.subscribe([("hydro/gh-1/zone-7/nd-1/config", QOS_1)])
            await other.publish("hydro/gh-1/zone-7/nd-1/config", b'{"v":1}', qos=QOS_1)
            message = await node.deliver_message(timeout_duration=5)
            assert message is not None
            assert (message.topic, bytes(message.data)) == ("hydro/gh-1/zone-7/nd-1/config", b'{"v":1}')
            await node.disconnect()
            await other.disconnect()
            await eventually(lambda: broker.session_count == 0)

    run(scenario)


def test_amqtt_default_plugins_are_not_loaded() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            client = await connect(broker.port)
            # amqtt's $SYS plugin retains broker/version etc. at start; a subscriber would get them.
            await client.subscribe([("$SYS/#", QOS_1)])
            await no_message(client)
            await client.disconnect()

    run(scenario)


def test_a_refused_password_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            assert await refused_code(broker.port, "nd-a:Sup3r-Secret@") == BAD_CREDENTIALS
            client = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id="esp32-aaaaaaaaaaaa")
            await client.disconnect()

    run(scenario)
    assert any(getattr(r, "event", None) == "device_auth_rejected" for r in caplog.records)
    broker_side = [r for r in caplog.records if not r.name.startswith("amqtt.client")]
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in broker_side)
    assert "Sup3r-Secret" not in text
    assert SECRET_A not in text


def test_stop_closes_every_connection_and_the_listener() -> None:
    async def scenario() -> None:
        broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=True)
        await broker.start()
        port = broker.port
        client = await connect(port)
        # A peer that never sends CONNECT: amqtt does not know it, stop() must still close it.
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
        await eventually(lambda: broker.session_count == 1)

        await broker.stop()

        assert not broker.is_running
        assert broker.session_count == 0
        assert await asyncio.wait_for(silent_reader.read(), timeout=5) == b""
        silent_writer.close()
        await eventually(lambda: not client.session.transitions.is_connected())
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(BrokerUnavailable) as info:
            _ = broker.port
        assert info.value.code == "broker_not_running"
        with pytest.raises(BrokerUnavailable):
            await broker.publish("hydro/time/response", b"{}")
        await broker.stop()  # idempotent

    run(scenario)


def test_a_stopped_broker_starts_again() -> None:
    async def scenario() -> None:
        broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=True)
        for _ in range(2):
            await broker.start()
            client = await connect(broker.port)
            await eventually(lambda: broker.session_count == 1)
            await client.disconnect()
            await broker.stop()

    run(scenario)


def test_start_on_a_taken_port_fails_with_a_code() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as first:
            second = EmbeddedBroker("127.0.0.1", first.port, dev_mode=True)
            with pytest.raises(BrokerUnavailable) as info:
                await second.start()
            assert info.value.code == "broker_start_failed"
            assert not second.is_running

    run(scenario)


def test_the_broker_is_bound_to_its_loop() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            with pytest.raises(LoopAffinityError):
                await asyncio.to_thread(broker.subscriber_count, "hydro/time/response")

    run(scenario)
