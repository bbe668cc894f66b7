"""The whole node lifecycle with a simulated ESP32 over real MQTT: hello -> registered -> bind ->
config push -> new namespace -> telemetry stored and queryable -> unbind."""

from __future__ import annotations

from typing import Any

from hydrovisor.sim import FieldConfig, NodeOptions, SimNode
from tests.app.conftest import Running
from tests.app.test_fleet_and_ingest import make_zone
from tests.helpers import http, wait_until

FAST = NodeOptions(telemetry_interval_s=0.2, heartbeat_interval_s=1.0, status_interval_s=5.0,
                   time_request_retry_s=0.5, reconnect_delay_s=0.1)
UID = "nd-ph-a1b2c3d4e5f6"


def _get(instance: Running, path: str) -> Any:
    return http("GET", instance.base_url + path).json().get("data")


def test_hello_bind_config_push_namespace_switch_and_stored_telemetry(instance: Running) -> None:
    make_zone(instance)
    node = SimNode(f"mqtt://127.0.0.1:{instance.mqtt_port}", "esp32-a1b2c3d4e5f6", "ph", options=FAST)

    async def start() -> None:
        await node.start()
        await node.wait_synced(10)  # the server answered its time request

    instance.loop.run(start())
    try:
        registered = wait_until(lambda: _get(instance, f"/api/v1/nodes/{UID}"), what="registration")
        assert (registered["state"], registered["validated"]) == ("REGISTERED", False)
        # unbound telemetry (temp namespace) is dropped and counted, never stored
        wait_until(lambda: 'reason="temp_namespace"' in http("GET", instance.base_url + "/metrics").raw.decode())
        assert _get(instance, "/api/v1/telemetry/last?zone_uid=zn-1") == []

        reply = http("POST", instance.base_url + f"/api/v1/nodes/{UID}/bind", body={"zone_uid": "zn-1"})
        assert reply.status == 202, reply.raw
        assert reply.json()["data"]["pending_zone_uid"] == "zn-1"

        bound = wait_until(lambda: (n := _get(instance, f"/api/v1/nodes/{UID}")) and n["validated"] and n,
                           timeout=20, what="bind completed by config_report")
        assert (bound["zone_uid"], bound["state"]) == ("zn-1", "ACTIVE")
        assert node.namespace == ("gh-1", "zn-1", UID)
        assert {c["name"] for c in bound["channels"]} >= {"ph_sensor"}

        last = wait_until(lambda: _get(instance, "/api/v1/telemetry/last?zone_uid=zn-1"), timeout=15,
                          what="telemetry from the bound namespace")
        assert {v["node_uid"] for v in last} == {UID}
        assert "PH" in {v["metric"] for v in last}
        series = _get(instance, f"/api/v1/telemetry?zone_uid=zn-1&node_uid={UID}&metric=PH")
        assert series

        timeline = [e["type"] for e in _get(instance, "/api/v1/zones/zn-1/events")]
        assert "NODE_BIND_REQUESTED" in timeline
        assert "NODE_BOUND" in timeline

        assert http("POST", instance.base_url + f"/api/v1/nodes/{UID}/unbind").status == 200
        wait_until(lambda: node.namespace[0] == "gh-temp", timeout=15, what="node back in the temp namespace")
        unbound = _get(instance, f"/api/v1/nodes/{UID}")
        assert (unbound["zone_uid"], unbound["validated"]) == (None, False)
    finally:
        instance.loop.run(node.stop())


def test_preregistered_field_node_streams_at_once(instance: Running) -> None:
    """A node configured in the field never says hello: pre-registration alone makes its data count."""
    make_zone(instance)
    reply = http("POST", instance.base_url + "/api/v1/nodes", body={
        "uid": "nd-ec-field", "hardware_id": "esp32-0000000000ec", "type": "ec", "zone_uid": "zn-1",
        "node_secret": "field-secret-0123456789"})
    assert reply.status == 201, reply.raw
    node = SimNode(f"mqtt://127.0.0.1:{instance.mqtt_port}", "esp32-0000000000ec", "ec", options=FAST,
                   field_config=FieldConfig(gh_uid="gh-1", zone_uid="zn-1", node_uid="nd-ec-field",
                                            node_secret="field-secret-0123456789"))
    instance.loop.run(node.start())
    try:
        last = wait_until(lambda: _get(instance, "/api/v1/telemetry/last?zone_uid=zn-1"), timeout=15,
                          what="telemetry of the field node")
        assert {v["node_uid"] for v in last} == {"nd-ec-field"}
        assert "EC" in {v["metric"] for v in last}
        online = wait_until(lambda: (n := _get(instance, "/api/v1/nodes/nd-ec-field")) and n["online"] and n,
                            timeout=15, what="node online")
        assert online["validated"] is True
    finally:
        instance.loop.run(node.stop())
