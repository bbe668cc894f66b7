"""A CONNECT reusing a live client id: refused ones change nothing, accepted ones take over.

amqtt 0.12 deletes the live session's subscriptions and registers refused sessions *before*
authenticating; the broker authenticates first so amqtt never sees a refused CONNECT.
"""

from __future__ import annotations

from amqtt.mqtt.constants import QOS_1

from tests.broker.support import (
    FRESH,
    NODE_A,
    SECRET_A,
    SECRET_B,
    SECRET_NEW,
    Inbox,
    RawClient,
    connect,
    connect_packet,
    eventually,
    fleet,
    no_message,
    refused_code,
    run,
    running,
)

CLIENT_A = NODE_A.hardware_id
COMMAND_A = "hydro/gh-1/zn-1/nd-a/pump_acid/command"
IDENTIFIER_REJECTED, BAD_CREDENTIALS = 2, 4


def test_a_refused_connect_reusing_a_live_client_id_does_not_disturb_the_device() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=CLIENT_A)
            await device.subscribe([("hydro/gh-1/zn-1/nd-a/+/command", QOS_1)])
            for credentials in ("nd-a:wrong@", "", f"nd-b:{SECRET_A}@"):
                code = await refused_code(broker.port, credentials, client_id=CLIENT_A)
                assert code in (BAD_CREDENTIALS, 5)
            assert broker.connected_clients() == [CLIENT_A]
            assert broker.subscriber_count(COMMAND_A) == 1
            await broker.publish(COMMAND_A, b'{"cmd":"dose"}')
            message = await device.deliver_message(timeout_duration=3)
            assert message is not None
            assert bytes(message.data) == b'{"cmd":"dose"}'
            await device.disconnect()

    run(scenario)


def test_refused_sessions_are_not_retained() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=CLIENT_A)
            amqtt = broker._broker
            assert amqtt is not None
            before = (len(amqtt.sessions), len(amqtt.subscriptions))
            for n in range(50):
                raw = await RawClient.open(broker.port)
                client_id = CLIENT_A if n % 2 else f"x-{n}"
                await raw.send(connect_packet(client_id, username="nd-a", password="no"))
                assert await raw.connack() == BAD_CREDENTIALS
                assert await raw.closed()
            assert (len(amqtt.sessions), len(amqtt.subscriptions)) == before
            assert broker.session_count == 1
            await device.disconnect()

    run(scenario)


def test_another_device_cannot_take_a_live_client_id_over() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=CLIENT_A)
            await device.subscribe([("hydro/gh-1/zn-1/nd-a/+/command", QOS_1)])
            code = await refused_code(broker.port, f"nd-b:{SECRET_B}@", client_id=CLIENT_A)
            assert code == IDENTIFIER_REJECTED
            assert broker.subscriber_count(COMMAND_A) == 1
            await device.disconnect()

    run(scenario)


def test_a_device_cannot_take_an_offline_devices_client_id_and_lock_it_out() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            for client_id in (CLIENT_A, "nd-a"):  # the hardware id and the node uid are both A's
                assert await refused_code(broker.port, f"nd-b:{SECRET_B}@", client_id=client_id) == IDENTIFIER_REJECTED
            assert broker.session_count == 0
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=CLIENT_A)  # A is not locked out
            assert broker.connected_clients() == [CLIENT_A]
            await device.disconnect()

    run(scenario)


def test_outside_dev_mode_a_device_uses_a_client_id_of_its_own() -> None:
    async def scenario() -> None:
        async with running(directory=fleet()) as broker:
            for client_id in ("someone-else", ""):  # "": amqtt would assign an id that is nobody's
                assert await refused_code(broker.port, f"nd-a:{SECRET_A}@", client_id=client_id) == IDENTIFIER_REJECTED
            by_uid = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id="nd-a")
            await by_uid.disconnect()

    run(scenario)


def test_in_dev_mode_free_client_ids_are_anyones_but_a_devices_stay_its_own() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True, directory=fleet()) as broker:
            assert await refused_code(broker.port, client_id=CLIENT_A) == IDENTIFIER_REJECTED  # anonymous
            assert await refused_code(broker.port, "simulator:x@", client_id=CLIENT_A) == IDENTIFIER_REJECTED
            assert await refused_code(broker.port, f"nd-b:{SECRET_B}@", client_id=CLIENT_A) == IDENTIFIER_REJECTED
            free = await connect(broker.port, client_id="esp32-0123456789ab")
            verified = await connect(broker.port, f"nd-b:{SECRET_B}@", client_id="bench-7")
            device = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=CLIENT_A)
            assert sorted(broker.connected_clients()) == sorted([CLIENT_A, "bench-7", "esp32-0123456789ab"])
            for client in (free, verified, device):
                await client.disconnect()

    run(scenario)


def test_the_same_device_reconnecting_replaces_its_stale_connection() -> None:
    inbox = Inbox()
    will = ("hydro/gh-1/zn-1/nd-a/lwt", b"offline")

    async def scenario() -> None:
        async with running(directory=fleet(), on_message=inbox) as broker:
            stale = await RawClient.open(broker.port)
            await stale.send(connect_packet(CLIENT_A, username="nd-a", password=SECRET_A, will=will))
            assert await stale.connack() == 0
            fresh = await connect(broker.port, f"nd-a:{SECRET_A}@", client_id=CLIENT_A)
            assert await stale.closed()  # MQTT 3.1.4-2: the old connection is dropped...
            lwt = await inbox.wait_for(will[0])  # ...abnormally, so its will goes out
            assert (lwt.client_id, lwt.username, lwt.payload) == (CLIENT_A, "nd-a", b"offline")
            assert broker.connected_clients() == [CLIENT_A]
            await fresh.subscribe([("hydro/gh-1/zn-1/nd-a/+/command", QOS_1)])
            await broker.publish(COMMAND_A, b"{}")
            assert await fresh.deliver_message(timeout_duration=3) is not None
            await fresh.disconnect()

    run(scenario)


def test_a_device_may_take_over_under_its_other_username() -> None:
    """After binding, a device reconnects with its node uid where it used its hardware id."""

    async def scenario() -> None:
        bound = fleet()
        async with running(directory=bound) as broker:
            credentials = f"{FRESH.username}:{SECRET_NEW}@"
            before = await connect(broker.port, credentials, client_id=FRESH.hardware_id)
            bound.put(type(FRESH)(username="nd-c", node_uid="nd-c", hardware_id=FRESH.hardware_id,
                                  gh_uid="gh-1", zone_uid="zn-2", password_hash=FRESH.password_hash))
            after = await connect(broker.port, f"nd-c:{SECRET_NEW}@", client_id=FRESH.hardware_id)
            await eventually(lambda: not before.session.transitions.is_connected())
            assert broker.connected_clients() == [FRESH.hardware_id]
            await no_message(after, within=0.1)
            await after.disconnect()

    run(scenario)
