"""The in-process server side: on_message, publish, subscriber_count, kicking devices."""

from __future__ import annotations

import time

import pytest
from amqtt.mqtt.constants import QOS_1

from hydrovisor.broker.messages import DeviceMessage
from hydrovisor.broker.receipts import Receipt
from tests.broker.support import (
    NODE_A,
    SECRET_A,
    SECRET_B,
    Inbox,
    RawClient,
    connect,
    connect_packet,
    eventually,
    fleet,
    no_message,
    publish_packet,
    run,
    running,
)

COMMAND_A = "hydro/gh-1/zn-1/nd-a/pump_acid/command"
LWT_A = "hydro/gh-1/zn-1/nd-a/lwt"


def test_publish_reaches_a_subscribed_device_and_subscriber_count_follows() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            assert broker.subscriber_count(COMMAND_A) == 0
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=NODE_A.hardware_id)
            other = await connect(broker.port, f"nd-b:{SECRET_B}@", client_id="esp32-bbbbbbbbbbbb")
            await device.subscribe([("hydro/gh-1/zn-1/nd-a/+/command", QOS_1),
                                    ("hydro/time/response", QOS_1)])
            await other.subscribe([("hydro/time/response", QOS_1)])
            assert broker.subscriber_count(COMMAND_A) == 1
            assert broker.subscriber_count("hydro/time/response") == 2
            assert broker.subscriber_count("hydro/gh-1/zn-1/nd-b/pump_acid/command") == 0

            await broker.publish(COMMAND_A, b'{"cmd":"dose","cmd_id":"c1"}')
            message = await device.deliver_message(timeout_duration=3)
            assert message is not None
            assert (message.topic, bytes(message.data), message.qos) == (
                COMMAND_A, b'{"cmd":"dose","cmd_id":"c1"}', QOS_1)
            await no_message(device, within=0.1)
            await no_message(other, within=0.1)
            # overlapping filters count the session once (amqtt would deliver once per filter)
            await device.subscribe([("hydro/gh-1/zn-1/nd-a/pump_acid/command", QOS_1)])
            assert broker.subscriber_count(COMMAND_A) == 1

            await device.disconnect()
            await eventually(lambda: broker.subscriber_count(COMMAND_A) == 0)
            await other.disconnect()

    run(scenario)


def test_publish_with_retain_reaches_later_subscribers() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            await broker.publish("hydro/time/response", b'{"t":1}', retain=True)
            late = await connect(broker.port)
            await late.subscribe([("hydro/time/response", QOS_1)])
            message = await late.deliver_message(timeout_duration=3)
            assert message is not None
            assert bytes(message.data) == b'{"t":1}'
            await late.disconnect()

    run(scenario)


def test_publish_rejects_topics_devices_could_not_receive_on() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            for topic in ("", "hydro/+/x", "hydro/#", "$SYS/x"):
                with pytest.raises(ValueError, match="topic"):
                    await broker.publish(topic, b"{}")
            with pytest.raises(ValueError, match="qos"):
                await broker.publish("hydro/time/response", b"{}", qos=3)

    run(scenario)


def test_on_message_gets_allowed_publishes_with_metadata_and_never_its_own() -> None:
    inbox = Inbox()

    async def scenario() -> None:
        async with running(directory=fleet(), on_message=inbox) as broker:
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id="esp32-aaaaaaaaaaaa")
            await broker.publish("hydro/time/response", b"{}")  # the server's own: not echoed
            before = time.time()
            await device.publish("hydro/gh-1/zn-1/nd-a/status", b"ONLINE", qos=QOS_1, retain=True)
            message = await inbox.wait_for("hydro/gh-1/zn-1/nd-a/status")
            assert message == DeviceMessage(
                client_id="esp32-aaaaaaaaaaaa", username="nd-a", topic="hydro/gh-1/zn-1/nd-a/status",
                payload=b"ONLINE", qos=1, retain=True, received_at=message.received_at)
            assert before <= message.received_at <= time.time()
            assert inbox.topics() == ["hydro/gh-1/zn-1/nd-a/status"]
            await device.disconnect()

    run(scenario)


def test_a_failing_on_message_is_not_acknowledged_and_does_not_hurt_the_broker() -> None:
    """A sink that raises did not keep the message: no PUBACK, the connection closes (the device sends
    it again), and the broker goes on serving."""
    calls: list[str] = []

    def explode(message: DeviceMessage, receipt: Receipt) -> None:
        calls.append(message.topic)
        raise RuntimeError("consumer bug")

    async def scenario() -> None:
        async with running(dev_mode=True, on_message=explode) as broker:
            for n in range(2):
                device = await RawClient.open(broker.port)
                await device.send(connect_packet(f"dev-{n}"))
                assert await device.connack() == 0
                await device.send(publish_packet("hydro/x/y", b"1", qos=1, packet_id=7))
                assert await device.closed()  # and no PUBACK before it
            assert calls == ["hydro/x/y", "hydro/x/y"]

    run(scenario)


def test_the_will_of_a_dropped_device_arrives_through_on_message() -> None:
    inbox = Inbox()

    async def scenario() -> None:
        async with running(directory=fleet(), on_message=inbox) as broker:
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("esp32-aaaaaaaaaaaa", username="nd-a", password=SECRET_A,
                                          will=(LWT_A, b"offline")))
            assert await raw.connack() == 0
            raw.abort()  # power loss: no DISCONNECT
            will = await inbox.wait_for(LWT_A)
            assert (will.client_id, will.username, will.payload) == ("esp32-aaaaaaaaaaaa", "nd-a", b"offline")
            # a clean DISCONNECT discards the will (amqtt client sends one)
            graceful = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id="esp32-aaaaaaaaaaaa",
                                     will={"topic": LWT_A, "message": "offline", "qos": 1, "retain": True})
            await graceful.disconnect()
            await eventually(lambda: broker.session_count == 0)
            assert inbox.topics() == [LWT_A]

    run(scenario)


def test_disconnect_kicks_one_device_and_its_will_goes_out() -> None:
    inbox = Inbox()

    async def scenario() -> None:
        async with running(directory=fleet(), on_message=inbox) as broker:
            will = {"topic": LWT_A, "message": "offline", "qos": 1, "retain": True}
            credentials = f"nd-a:{SECRET_A}@"
            device = await connect(broker.port, credentials, client_id="esp32-aaaaaaaaaaaa", will=will)
            other = await connect(broker.port, f"nd-b:{SECRET_B}@", client_id="esp32-bbbbbbbbbbbb")
            assert broker.connected_clients() == ["esp32-aaaaaaaaaaaa", "esp32-bbbbbbbbbbbb"]

            assert await broker.disconnect("esp32-aaaaaaaaaaaa") is True
            assert broker.connected_clients() == ["esp32-bbbbbbbbbbbb"]
            lwt = await inbox.wait_for(LWT_A)
            assert (lwt.payload, lwt.retain) == (b"offline", True)
            await eventually(lambda: not device.session.transitions.is_connected())
            assert await broker.disconnect("esp32-aaaaaaaaaaaa") is False
            assert await broker.disconnect("nobody") is False
            await other.disconnect()

    run(scenario)


def test_disconnect_all_kicks_every_device() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            clients = [await connect(broker.port) for _ in range(5)]
            anonymous_id = clients[0].session.client_id
            assert anonymous_id in broker.connected_clients()
            assert await broker.disconnect_all() == 5
            assert broker.connected_clients() == []
            for client in clients:
                await eventually(lambda c=client: not c.session.transitions.is_connected())  # type: ignore[misc]
            assert await broker.disconnect_all() == 0
            again = await connect(broker.port)  # the broker still serves
            await again.disconnect()

    run(scenario)


def test_disconnect_finds_a_client_whose_id_amqtt_assigned() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet(""))  # empty client id, clean session: amqtt assigns one
            assert await raw.connack() == 0
            await eventually(lambda: len(broker.connected_clients()) == 1)
            (assigned,) = broker.connected_clients()
            assert assigned
            assert await broker.disconnect(assigned) is True
            assert await raw.closed()

    run(scenario)
