"""The topic ACL as devices experience it: denied publishes go nowhere, denied filters get 0x80."""

from __future__ import annotations

import asyncio

from amqtt.mqtt.constants import QOS_1

from hydrovisor.broker.directory import DeviceIdentity
from tests.broker.support import (
    FRESH,
    NODE_A,
    SECRET_A,
    SECRET_B,
    SECRET_NEW,
    Inbox,
    connect,
    fleet,
    no_message,
    run,
    running,
)

REFUSED = 0x80


def test_node_a_cannot_publish_into_node_bs_namespace() -> None:
    inbox = Inbox()

    async def scenario() -> None:
        # dev mode so that an unrestricted monitor can watch everything that is delivered
        async with running(dev_mode=True, directory=fleet(), on_message=inbox) as broker:
            node_a = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=NODE_A.hardware_id)
            node_b = await connect(broker.port, f"nd-b:{SECRET_B}@")
            monitor = await connect(broker.port)
            assert await node_b.subscribe([("hydro/gh-1/zn-1/nd-b/+/command", QOS_1)]) == [QOS_1]
            assert await monitor.subscribe([("hydro/#", QOS_1)]) == [QOS_1]

            await node_a.publish("hydro/gh-1/zn-1/nd-b/ph_sensor/telemetry", b'{"v":1}', qos=QOS_1)
            await node_a.publish("hydro/gh-1/zn-1/nd-b/pump_acid/command", b'{"cmd":"x"}', qos=QOS_1)
            await node_a.publish("hydro/gh-1/zn-1/nd-a/pump_acid/command", b"{}", qos=QOS_1)  # srv->node
            await node_a.publish("hydro/gh-temp/zn-temp/esp32-bbbbbbbbbbbb/hello", b"{}", qos=QOS_1)
            await node_a.publish("hydro/gh-1/zn-1/nd-a/ph_sensor/telemetry", b'{"v":2}', qos=QOS_1)

            allowed = await inbox.wait_for("hydro/gh-1/zn-1/nd-a/ph_sensor/telemetry")
            assert (allowed.client_id, allowed.username, allowed.payload) == (
                NODE_A.hardware_id, "nd-a", b'{"v":2}')
            assert inbox.topics() == ["hydro/gh-1/zn-1/nd-a/ph_sensor/telemetry"]
            seen = await monitor.deliver_message(timeout_duration=3)
            assert seen is not None
            assert seen.topic == "hydro/gh-1/zn-1/nd-a/ph_sensor/telemetry"
            await no_message(monitor, within=0.2)
            await no_message(node_b, within=0.1)
            for client in (node_a, node_b, monitor):
                await client.disconnect()

    run(scenario)


def test_node_a_cannot_subscribe_to_node_bs_topics() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            node_a = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=NODE_A.hardware_id)
            granted = await node_a.subscribe([
                ("hydro/gh-1/zn-1/nd-b/+/command", QOS_1),
                ("hydro/gh-1/zn-1/nd-b/config", QOS_1),
                ("hydro/gh-1/zn-1/+/+/command", QOS_1),
                ("hydro/#", QOS_1),
                ("hydro/gh-1/zn-1/nd-a/+/telemetry", QOS_1),
                ("hydro/gh-1/zn-1/nd-a/+/command", QOS_1),
                ("hydro/gh-1/zn-1/nd-a/config", QOS_1),
                ("hydro/gh-1/zn-1/nd-a/pump_acid/command", QOS_1),
                ("hydro/gh-temp/zn-temp/esp32-aaaaaaaaaaaa/+/command", QOS_1),
                ("hydro/time/response", QOS_1),
            ])
            assert granted == [REFUSED] * 5 + [QOS_1] * 5
            assert broker.subscriber_count("hydro/gh-1/zn-1/nd-b/pump_acid/command") == 0
            await node_a.disconnect()

    run(scenario)


def test_an_unbound_device_publishes_in_the_temp_namespace_by_hardware_id() -> None:
    inbox = Inbox()
    temp = f"hydro/gh-temp/zn-temp/{FRESH.hardware_id}"

    async def scenario() -> None:
        async with running(directory=fleet(), on_message=inbox) as broker:
            credentials = f"{FRESH.username}:{SECRET_NEW}@"
            device = await connect(broker.port, credentials, client_id=FRESH.hardware_id)
            assert await device.subscribe([(f"{temp}/config", QOS_1)]) == [QOS_1]
            assert await device.subscribe([("hydro/gh-1/zn-1/nd-c/config", QOS_1)]) == [REFUSED]
            await device.publish("hydro/time/request", b"{}", qos=QOS_1)
            await device.publish("hydro/node_hello", b'{"hw":1}', qos=QOS_1)
            await device.publish("hydro/gh-1/zn-1/nd-c/config_report", b"{}", qos=QOS_1)  # not bound yet
            await device.publish(f"{temp}/config_report", b"{}", qos=QOS_1)
            await inbox.wait_for(f"{temp}/config_report")
            assert inbox.topics() == ["hydro/time/request", "hydro/node_hello", f"{temp}/config_report"]
            assert {m.username for m in inbox.messages} == {FRESH.username}
            await device.disconnect()

    run(scenario)


def test_binding_in_the_directory_takes_effect_without_a_reconnect() -> None:
    inbox = Inbox()
    directory = fleet()

    async def scenario() -> None:
        async with running(directory=directory, on_message=inbox) as broker:
            device = await connect(broker.port, f"{FRESH.username}:{SECRET_NEW}@", client_id=FRESH.hardware_id)
            directory.put(DeviceIdentity(
                username=FRESH.username, hardware_id=FRESH.hardware_id, node_uid="nd-c",
                gh_uid="gh-1", zone_uid="zn-2", password_hash=FRESH.password_hash))
            await device.publish("hydro/gh-1/zn-2/nd-c/config_report", b"{}", qos=QOS_1)
            await inbox.wait_for("hydro/gh-1/zn-2/nd-c/config_report")
            directory.remove(FRESH.username)  # credential revoked: nothing passes any more
            await device.publish("hydro/gh-1/zn-2/nd-c/config_report", b"{}", qos=QOS_1)
            await device.publish("hydro/node_hello", b"{}", qos=QOS_1)
            await no_message_in(inbox, 0.2)
            assert inbox.topics() == ["hydro/gh-1/zn-2/nd-c/config_report"]
            await device.disconnect()

    run(scenario)


async def no_message_in(inbox: Inbox, within: float) -> None:
    before = len(inbox.messages)
    await asyncio.sleep(within)
    assert len(inbox.messages) == before
