"""EmbeddedBroker against real amqtt MQTT clients on an ephemeral port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from amqtt.client import MQTTClient
from amqtt.errors import ConnectError
from amqtt.mqtt.constants import QOS_1

from hydrovisor.broker.auth import DeviceAuthenticator
from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.errors import BrokerUnavailable

NOT_AUTHORIZED = 5  # CONNACK return code amqtt sends for a refused CONNECT


class OneDevice:
    """Accepts exactly nd-1/pw and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str | None]] = []

    def verify(self, username: str | None, password: str | None) -> bool:
        self.calls.append((username, password))
        return (username, password) == ("nd-1", "pw")


@asynccontextmanager
async def running(
    dev_mode: bool, authenticator: DeviceAuthenticator | None = None
) -> AsyncIterator[EmbeddedBroker]:
    broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=dev_mode, authenticator=authenticator)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def connect(port: int, credentials: str = "") -> MQTTClient:
    # No client plugins: amqtt's default client packet logger would log the CONNECT password.
    client = MQTTClient(config={"auto_reconnect": False, "plugins": {}})
    await client.connect(f"mqtt://{credentials}127.0.0.1:{port}")
    return client


async def refused_code(port: int, credentials: str = "") -> int | None:
    with pytest.raises(ConnectError) as info:
        await connect(port, credentials)
    code: int | None = info.value.return_code
    return code


async def eventually(condition: Callable[[], bool]) -> None:
    """Poll amqtt-side state (it offers nothing to wait on) for up to 3 s."""
    for _ in range(300):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 3 s")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_dev_mode_publish_subscribe_round_trip_on_an_ephemeral_port() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            assert broker.is_running
            assert broker.port > 0
            node, server = await connect(broker.port), await connect(broker.port)
            assert broker.session_count == 2
            await node.subscribe([("hydro/gh-1/zone-7/nd-1/config", QOS_1)])
            await server.publish("hydro/gh-1/zone-7/nd-1/config", b'{"v":1}', qos=QOS_1)
            message = await node.deliver_message(timeout_duration=5)
            assert message is not None
            assert (message.topic, bytes(message.data)) == ("hydro/gh-1/zone-7/nd-1/config", b'{"v":1}')
            await node.disconnect()
            await server.disconnect()
            await eventually(lambda: broker.session_count == 0)

    run(scenario)


def test_without_dev_mode_and_without_authenticator_connect_is_refused() -> None:
    async def scenario() -> None:
        async with running(dev_mode=False) as broker:
            assert await refused_code(broker.port) == NOT_AUTHORIZED
            assert await refused_code(broker.port, "nd-1:pw@") == NOT_AUTHORIZED
            assert broker.session_count == 0

    run(scenario)


def test_authenticator_admits_the_right_password_only() -> None:
    device = OneDevice()

    async def scenario() -> None:
        async with running(dev_mode=False, authenticator=device) as broker:
            client = await connect(broker.port, "nd-1:pw@")
            assert await refused_code(broker.port, "nd-1:wrong@") == NOT_AUTHORIZED
            assert await refused_code(broker.port) == NOT_AUTHORIZED
            assert broker.session_count == 1  # refused sessions are not counted
            await client.disconnect()

    run(scenario)
    assert device.calls == [("nd-1", "pw"), ("nd-1", "wrong"), (None, None)]


class Exploding:
    def verify(self, username: str | None, password: str | None) -> bool:
        raise RuntimeError("credential store unavailable")


def test_an_authenticator_that_raises_refuses_and_the_broker_keeps_serving() -> None:
    async def scenario() -> None:
        async with running(dev_mode=False, authenticator=Exploding()) as broker:
            assert await refused_code(broker.port, "nd-1:pw@") == NOT_AUTHORIZED
            assert await refused_code(broker.port, "nd-1:pw@") == NOT_AUTHORIZED
            assert broker.is_running

    run(scenario)


def test_amqtt_default_plugins_are_not_loaded() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            client = await connect(broker.port)
            # amqtt's $SYS plugin retains broker/version etc. at start; a subscriber would get them.
            await client.subscribe([("$SYS/#", QOS_1)])
            with pytest.raises(TimeoutError):
                await client.deliver_message(timeout_duration=0.3)
            await client.disconnect()

    run(scenario)


def test_a_refused_password_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with running(dev_mode=False, authenticator=OneDevice()) as broker:
            assert await refused_code(broker.port, "nd-1:Sup3r-Secret@") == NOT_AUTHORIZED

    run(scenario)
    assert any(getattr(r, "event", None) == "device_auth_rejected" for r in caplog.records)
    # amqtt's MQTTClient logs its URI, password included: that is the test client's side, not ours.
    broker_side = [r for r in caplog.records if not r.name.startswith("amqtt.client")]
    assert "Sup3r-Secret" not in "\n".join(f"{r.getMessage()} {r.__dict__}" for r in broker_side)


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
        await broker.stop()  # idempotent

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
