"""The MQTT side of the device plane with real amqtt clients: registration, telemetry, liveness, time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from amqtt.client import MQTTClient

from tests.app.conftest import Running
from tests.app.test_fleet_and_ingest import make_node, make_zone
from tests.helpers import http, wait_until

Session = Callable[[MQTTClient], Awaitable[Any]]


def with_client(instance: Running, client_id: str, body: Session, *, will: tuple[str, str] | None = None,
                graceful: bool = True) -> Any:
    """Run ``body`` with a connected client on the instance's loop."""

    async def main() -> Any:
        config: dict[str, Any] = {"auto_reconnect": False}
        if will:
            config["will"] = {"topic": will[0], "message": will[1], "qos": 1, "retain": True}
        client = MQTTClient(client_id=client_id, config=config)
        await client.connect(f"mqtt://127.0.0.1:{instance.mqtt_port}/")
        try:
            return await body(client)
        finally:
            if graceful:
                await client.disconnect()
            else:  # drop the TCP connection without DISCONNECT: the broker publishes the will
                client._handler.writer._writer.transport.abort()

    return instance.loop.run(main())


def test_time_request_is_answered_by_broadcast(instance: Running) -> None:
    async def body(client: MQTTClient) -> dict[str, Any]:
        await client.subscribe([("hydro/time/response", 1)])
        await client.publish("hydro/time/request", b'{"message_type":"time_request","uptime":12}', qos=1)
        message = await client.deliver_message(timeout_duration=5)
        return dict(json.loads(bytes(message.data)))

    answer = with_client(instance, "esp32-00000000bb01", body)
    assert answer["message_type"] == "time_response"
    assert abs(answer["unix_ts"] - time.time()) < 5
    assert answer["server_time"] == answer["unix_ts"]


def test_hello_registers_an_unbound_node_with_an_actor(instance: Running) -> None:
    hello = {"message_type": "node_hello", "hardware_id": "esp32-a1b2c3d4e5f6", "node_type": "ph_node",
             "fw_version": "2.1.0"}

    async def body(client: MQTTClient) -> None:
        await client.publish("hydro/node_hello", json.dumps(hello).encode(), qos=1)

    with_client(instance, "esp32-a1b2c3d4e5f6", body)
    node = wait_until(lambda: http("GET", instance.base_url + "/api/v1/nodes/nd-ph-a1b2c3d4e5f6").json().get("data"))
    assert node["hardware_id"] == "esp32-a1b2c3d4e5f6"
    assert node["type"] == "ph"
    assert node["state"] == "REGISTERED"
    assert node["validated"] is False
    wait_until(lambda: http("GET", instance.base_url + "/api/v1/actors/nodes/nd-ph-a1b2c3d4e5f6").status == 200)


def test_mqtt_telemetry_is_stored_only_from_bound_validated_namespaces(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    now = int(time.time())

    async def body(client: MQTTClient) -> None:
        good = {"metric_type": "PH", "value": 5.86, "ts": now, "stable": False, "flow_active": True,
                "corrections_allowed": False}
        await client.publish("hydro/gh-1/zn-1/nd-ph-1/ph_sensor/telemetry", json.dumps(good).encode(), qos=1)
        temp = {"metric_type": "PH", "value": 9.9, "ts": now}
        await client.publish("hydro/gh-temp/zn-temp/esp32-00000000aa01/ph_sensor/telemetry",
                             json.dumps(temp).encode(), qos=1)
        await client.publish("hydro/gh-1/zn-1/nd-unknown/ph_sensor/telemetry", json.dumps(temp).encode(), qos=1)
        await client.publish("hydro/gh-1/zn-1/nd-ph-1/ph_sensor/telemetry", b"{not json", qos=1)
        await asyncio.sleep(0.2)

    with_client(instance, "esp32-00000000aa01", body)

    def stored() -> Any:
        data = http("GET", instance.base_url + "/api/v1/telemetry/last?zone_uid=zn-1").json()["data"]
        return data or None

    [last] = wait_until(stored)
    assert last["value"] == 5.86
    assert last["flags"] == {"stable": False, "flow_active": True, "corrections_allowed": False}
    metrics = http("GET", instance.base_url + "/metrics").raw.decode()
    for reason in ("temp_namespace", "unknown_node", "malformed"):
        assert f'hydrovisor_telemetry_dropped_total{{reason="{reason}",source="mqtt"}} 1.0' in metrics, reason


def test_lwt_takes_a_node_offline_and_traffic_brings_it_back(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    lwt = "hydro/gh-1/zn-1/nd-ph-1/lwt"

    async def online(client: MQTTClient) -> None:
        await client.publish("hydro/gh-1/zn-1/nd-ph-1/heartbeat", b'{"uptime":5,"free_heap_bytes":123456}', qos=1)
        await asyncio.sleep(0.3)

    with_client(instance, "esp32-00000000aa01", online, will=(lwt, "offline"), graceful=False)

    def events() -> list[str]:
        data = http("GET", instance.base_url + "/api/v1/nodes/nd-ph-1/events").json()["data"]
        return [e["type"] for e in data]

    wait_until(lambda: events()[-2:] == ["NODE_ONLINE", "NODE_OFFLINE"], timeout=15, what="online then offline")
    def active() -> list[str]:
        return [a["code"] for a in http("GET", instance.base_url + "/api/v1/alerts?status=ACTIVE").json()["data"]]

    wait_until(lambda: active() == ["infra_node_offline"], what="offline alert")
    with_client(instance, "esp32-00000000aa01", online)
    wait_until(lambda: events()[-1] == "NODE_ONLINE", timeout=15, what="online again")
    wait_until(lambda: not http("GET", instance.base_url + "/api/v1/alerts?status=ACTIVE").json()["data"])
    node = http("GET", instance.base_url + "/api/v1/nodes/nd-ph-1").json()["data"]
    assert node["heartbeat"]["free_heap"] == 123456
