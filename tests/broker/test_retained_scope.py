"""A new session gets retained messages only for filters it subscribed to (amqtt 0.12 sent it every
session's matches on CONNECT, and scanned them all: O(N^3) for a fleet)."""

from __future__ import annotations

import asyncio

from amqtt.client import MQTTClient

from hydrovisor.broker import EmbeddedBroker
from hydrovisor.sim import NodeOptions, SimFleet


async def _scenario() -> tuple[bytes | None, bytes | None]:
    broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=True)
    await broker.start()
    url = f"mqtt://127.0.0.1:{broker.port}/"
    try:
        watcher = MQTTClient(client_id="watcher", config={"auto_reconnect": False})
        await watcher.connect(url)
        await watcher.subscribe([("hydro/gh-1/zn-1/+/status", 1)])
        publisher = MQTTClient(client_id="publisher", config={"auto_reconnect": False})
        await publisher.connect(url)
        await publisher.publish("hydro/gh-1/zn-1/nd-1/status", b'{"status":"ONLINE"}', qos=1, retain=True)
        first = await watcher.deliver_message(timeout_duration=2)
        newcomer = MQTTClient(client_id="newcomer", config={"auto_reconnect": False})
        await newcomer.connect(url)  # subscribes to nothing
        try:
            leaked = await newcomer.deliver_message(timeout_duration=0.5)
        except TimeoutError:
            leaked = None
        for client in (watcher, publisher, newcomer):
            await client.disconnect()
        return (bytes(first.data) if first else None), (bytes(leaked.data) if leaked else None)
    finally:
        await broker.stop()


def test_a_new_session_gets_no_retained_message_for_other_sessions_filters() -> None:
    seen_by_subscriber, leaked = asyncio.run(_scenario())
    assert seen_by_subscriber == b'{"status":"ONLINE"}'
    assert leaked is None


async def _connect_fleet(count: int) -> int:
    broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=True)
    await broker.start()
    fleet = SimFleet.create(f"mqtt://127.0.0.1:{broker.port}", count, seed=7,
                            options=NodeOptions(trust_local_clock=True, telemetry_interval_s=60.0))
    try:
        await fleet.start(within=120)  # raises if they do not all connect
        return len(broker.connected_clients())
    finally:
        await fleet.stop()
        await broker.stop()


def test_a_fleet_with_retained_status_connects() -> None:
    # every node leaves a retained status; before the fix 350 nodes took ~37 s and 1000 never made it
    assert asyncio.run(_connect_fleet(300)) == 300
