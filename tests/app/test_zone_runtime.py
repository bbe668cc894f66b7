"""Zones come alive: a subtree per zone, its live state, and the one pump-safety gate, end to end.

Real PostgreSQL, real broker, real HTTP, real actors. The zone's node is pre-registered with the
channels of a two-tank irrigation node; its readings arrive through the HTTP ingest (the same path as
MQTT telemetry after validation), its error reports over MQTT.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from amqtt.client import MQTTClient

from tests.app.conftest import Running
from tests.helpers import http, wait_until

NODE = "nd-irr-1"
CHANNELS = [
    {"name": "pump_main", "type": "ACTUATOR", "actuator_type": "PUMP", "relay_type": "NC"},
    {"name": "valve_irrigation", "type": "ACTUATOR", "actuator_type": "VALVE", "relay_type": "NO"},
    *({"name": name, "type": "SENSOR", "metric": "WATER_LEVEL_SWITCH"}
      for name in ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max")),
    {"name": "flow_rate", "type": "SENSOR", "metric": "FLOW_RATE"},
]


def _post(instance: Running, path: str, body: dict[str, Any]) -> Any:
    return http("POST", instance.base_url + path, body=body)


def _zone(instance: Running, uid: str = "zn-1", node: str | None = NODE) -> None:
    if http("GET", instance.base_url + "/api/v1/greenhouses").json()["data"] == []:
        assert _post(instance, "/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}).status == 201
    assert _post(instance, "/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": uid, "name": uid}).status == 201
    if node is not None:
        reply = _post(instance, "/api/v1/nodes", {
            "uid": node, "hardware_id": "esp32-" + node[-4:].rjust(12, "0"), "type": "irrig", "zone_uid": uid,
            "node_secret": "s" * 32, "channels": CHANNELS})
        assert reply.status == 201, reply.raw


def _levels(instance: Running, **switches: int) -> None:
    now = time.time()
    samples = [{"node_uid": NODE, "channel": name, "metric_type": "FLOW_RATE" if name == "flow_rate" else
                "WATER_LEVEL_SWITCH", "value": value, "ts": now} for name, value in switches.items()]
    reply = _post(instance, "/api/v1/ingest/telemetry", {"samples": samples})
    assert reply.status == 202, reply.raw


def _state(instance: Running, zone: str = "zn-1") -> dict[str, Any]:
    reply = http("GET", instance.base_url + f"/api/v1/zones/{zone}/state")
    assert reply.status == 200, reply.raw
    data: dict[str, Any] = reply.json()["data"]
    return data


def _actor(instance: Running, path: str) -> Any:
    return http("GET", instance.base_url + f"/api/v1/actors/{path}")


def _start_pump(instance: Running) -> Any:
    return _post(instance, "/api/v1/commands", {"node_uid": NODE, "channel": "pump_main", "cmd": "run_pump",
                                                 "params": {"duration_ms": 2000}})


def _events(instance: Running, kind: str) -> list[dict[str, Any]]:
    data = http("GET", instance.base_url + "/api/v1/zones/zn-1/events?after_id=0").json()["data"]
    return [e for e in data if e["type"] == kind]


def _alerts(instance: Running, code: str) -> list[dict[str, Any]]:
    data = http("GET", instance.base_url + "/api/v1/alerts?zone_uid=zn-1&status=ACTIVE").json()["data"]
    return [a for a in data if a["code"] == code]


def test_a_zone_subtree_lives_from_create_to_delete_and_comes_back_at_boot(
    start_app: Callable[..., Running],
) -> None:
    first = start_app()
    _zone(first, "zn-1", node=None)
    _zone(first, "zn-2", node=None)
    for zone in ("zn-1", "zn-2"):
        assert _actor(first, f"zones/{zone}/zone").json()["data"]["state"] == "running"
    assert http("DELETE", first.base_url + "/api/v1/zones/zn-2").status == 200
    wait_until(lambda: _actor(first, "zones/zn-2").status == 404, what="zn-2's subtree stopped")
    first.loop.run(first.app.stop())
    second = start_app()  # the same database: zones are restored at boot
    assert _actor(second, "zones/zn-1/zone").json()["data"]["state"] == "running"
    assert _actor(second, "zones/zn-2").status == 404
    assert _state(second)["settings_version"] == 1


def test_a_crashing_zone_never_disturbs_another(instance: Running) -> None:
    _zone(instance, "zn-1", node=None)
    _zone(instance, "zn-2", node=None)
    before = _actor(instance, "zones/zn-2/zone").json()["data"]
    for _ in range(3):
        assert http("POST", instance.base_url + "/api/v1/actors/zones/zn-1/zone/restart").status == 202
        wait_until(lambda: _actor(instance, "zones/zn-1/zone").json()["data"]["state"] == "running")
    assert _actor(instance, "zones/zn-1/zone").json()["data"]["restarts_total"] >= 3
    after = _actor(instance, "zones/zn-2/zone").json()["data"]
    assert (after["restarts_total"], after["uptime_s"] >= before["uptime_s"]) == (0, True)
    assert _state(instance, "zn-2")["zone_uid"] == "zn-2"


def test_the_state_shows_readings_levels_and_nodes(instance: Running) -> None:
    _zone(instance)
    _levels(instance, level_clean_min=1, level_solution_min=0)
    wait_until(lambda: "level_solution_min" in _state(instance)["state"]["levels"], what="levels in the state")
    state = _state(instance)["state"]
    assert state["levels"]["level_clean_min"]["state"] is True
    assert state["levels"]["level_solution_min"]["state"] is False
    assert state["readings"]["level_clean_min"]["age_s"] < 60
    assert state["nodes_online"] == {NODE: True}  # it was heard from
    assert state["actuators"]["pump_main"] == {"desired": None, "confirmed": None, "since": None, "cmd_id": None}


def test_the_gate_refuses_an_operators_pump_start_with_its_reason_and_records_it(instance: Running) -> None:
    _zone(instance)
    refused = _start_pump(instance)  # never heard from: offline until it is (fail closed)
    assert (refused.status, refused.json()["code"], refused.json()["reason_code"]) == (
        409, "pump_safety_blocked", "node_offline")
    _levels(instance, flow_rate=0)  # heard from, but no level reading yet
    wait_until(lambda: _state(instance)["state"]["nodes_online"] == {NODE: True})
    assert _start_pump(instance).json()["reason_code"] == "TANK_LEVEL_STALE"
    _levels(instance, level_clean_min=1, level_solution_min=0, level_clean_max=0, level_solution_max=0)
    wait_until(lambda: "level_solution_min" in _state(instance)["state"]["levels"])
    dry = _start_pump(instance)
    assert (dry.status, dry.json()["reason_code"]) == (409, "level_below_minimum")
    wait_until(lambda: len(_alerts(instance, "biz_dry_run")) == 1, what="the dry-run alert")
    # the dry run locks the zone's pumps, whatever the levels say now, until an operator resets it
    _levels(instance, level_clean_min=1, level_solution_min=1)
    wait_until(lambda: _state(instance)["state"]["levels"]["level_solution_min"]["state"] is True)
    locked = _start_pump(instance)
    assert (locked.status, locked.json()["reason_code"]) == (409, "safety_lock_biz_dry_run")
    assert "safety_lock_biz_dry_run" in {lock["reason_code"] for lock in _state(instance)["state"]["safety_locks"]}
    expected = ["node_offline", "TANK_LEVEL_STALE", "level_below_minimum", "safety_lock_biz_dry_run"]
    wait_until(lambda: len(_events(instance, "PUMP_START_REFUSED")) == 4, what="the refusals on the timeline")
    refusals = _events(instance, "PUMP_START_REFUSED")  # written by the zone beside the 409, not before it
    assert [e["reason_code"] for e in refusals] == expected
    assert refusals[0]["decision"] == "refused"
    # nothing was stored or sent for a refused start
    assert http("GET", instance.base_url + f"/api/v1/commands?node_uid={NODE}").json()["data"] == []
    reset = _post(instance, "/api/v1/zones/zn-1/safety/reset", {"reason": "inspected the pump, tank refilled"})
    assert reset.status == 200, reset.raw
    assert _alerts(instance, "biz_dry_run") == []
    assert _state(instance)["state"]["safety_locks"] == []
    passed = _start_pump(instance)  # past the gate: the node is not connected, so the send fails
    assert (passed.status, passed.json()["code"]) == (502, "command_send_failed"), passed.raw


def test_stops_are_never_gated(instance: Running) -> None:
    _zone(instance)
    reply = _post(instance, "/api/v1/commands", {"node_uid": NODE, "channel": "pump_main", "cmd": "set_relay",
                                                  "params": {"state": 0}})
    assert reply.json().get("code") != "pump_safety_blocked", reply.raw


def test_an_overcurrent_report_raises_one_alert_that_counts_repeats_and_locks_the_pumps(instance: Running) -> None:
    _zone(instance)
    _levels(instance, level_clean_min=1, level_solution_min=1)

    async def report(times: int) -> None:
        client = MQTTClient(client_id="esp32-0000000irr-1", config={"auto_reconnect": False})
        await client.connect(f"mqtt://127.0.0.1:{instance.mqtt_port}")
        for _ in range(times):
            await client.publish(f"hydro/gh-1/zn-1/{NODE}/error", json.dumps({
                "level": "ERROR", "component": "pump_main", "error_code": "overcurrent",
                "message": "current 2100 mA over 1800 mA", "ts": int(time.time() * 1000)}).encode(), qos=1)
        await client.disconnect()

    instance.loop.run(report(1))
    wait_until(lambda: len(_alerts(instance, "biz_overcurrent")) == 1, what="the overcurrent alert")
    instance.loop.run(report(2))
    wait_until(lambda: _alerts(instance, "biz_overcurrent")[0]["count"] == 3, what="repeats counted")
    assert len(_events(instance, "SAFETY_ALERT")) == 1  # opened once
    assert _start_pump(instance).json()["reason_code"] == "safety_lock_biz_overcurrent"
    assert _post(instance, "/api/v1/zones/zn-1/safety/reset", {"reason": "motor replaced"}).status == 200
    assert _alerts(instance, "biz_overcurrent") == []


def test_inconsistent_switches_and_a_pump_with_no_role_are_refused(instance: Running) -> None:
    _zone(instance)
    _levels(instance, level_clean_min=0, level_clean_max=1, level_solution_min=1, level_solution_max=0)
    wait_until(lambda: len(_state(instance)["state"]["levels"]) == 4)
    assert _start_pump(instance).json()["reason_code"] == "sensor_state_inconsistent"
    reply = _post(instance, "/api/v1/nodes", {
        "uid": "nd-dose-1", "hardware_id": "esp32-00000000dd01", "type": "ec", "zone_uid": "zn-1",
        "node_secret": "s" * 32, "channels": [{"name": "pump_nutrient_x", "type": "ACTUATOR",
                                               "actuator_type": "PERISTALTIC_PUMP"}]})
    assert reply.status == 201, reply.raw
    dose = _post(instance, "/api/v1/commands", {"node_uid": "nd-dose-1", "channel": "pump_nutrient_x",
                                                "cmd": "dose", "params": {"ml": 1.0}})
    assert (dose.status, dose.json()["reason_code"]) == (409, "role_not_configured")
    wait_until(lambda: {e["reason_code"] for e in _events(instance, "PUMP_START_REFUSED")} == {
        "sensor_state_inconsistent", "role_not_configured"}, what="both refusals on the timeline")


def test_three_failed_starts_lock_the_pump_and_its_desired_state_follows_the_commands(instance: Running) -> None:
    """A node (a raw MQTT client here) answers every start with ERROR: after three failures within the
    window the fourth start is refused without reaching it."""
    _zone(instance)
    answered: list[str] = []

    async def node(starts: int) -> None:
        client = MQTTClient(client_id="esp32-0000000irr-1", config={"auto_reconnect": False})
        await client.connect(f"mqtt://127.0.0.1:{instance.mqtt_port}")
        await client.subscribe([(f"hydro/gh-1/zn-1/{NODE}/+/command", 1)])
        base = f"hydro/gh-1/zn-1/{NODE}"
        now = time.time()
        for name in ("level_clean_min", "level_solution_min"):  # wet, fresh: the gate lets starts through
            await client.publish(f"{base}/{name}/telemetry", json.dumps(
                {"metric_type": "WATER_LEVEL_SWITCH", "value": 1, "ts": now}).encode(), qos=1)
        for _ in range(starts):
            message = await client.deliver_message(timeout_duration=20)
            command = json.loads(bytes(message.publish_packet.payload.data))
            answered.append(command["cmd_id"])
            await client.publish(f"{base}/pump_main/command_response", json.dumps(
                {"cmd_id": command["cmd_id"], "status": "ERROR", "error_code": "current_unavailable",
                 "ts": int(time.time() * 1000)}).encode(), qos=1)
        await client.disconnect()

    task = asyncio.run_coroutine_threadsafe(node(3), instance.loop.loop)
    wait_until(lambda: len(_state(instance)["state"]["levels"]) == 2, what="the node's levels")
    for n in range(3):
        reply = _start_pump(instance)
        assert reply.status == 202, reply.raw
        cmd_id = reply.json()["data"]["cmd_id"]
        assert _state(instance)["state"]["actuators"]["pump_main"]["desired"] is True
        done = http("GET", instance.base_url + f"/api/v1/commands/{cmd_id}?wait=10").json()["data"]
        assert done["status"] == "ERROR", (n, done)
    task.result(timeout=20)
    wait_until(lambda: {lock["reason_code"] for lock in _state(instance)["state"]["safety_locks"]} == {
        "pump_failure_limit"}, what="the failure limit in the state")
    refused = _start_pump(instance)
    assert (refused.status, refused.json()["reason_code"]) == (409, "pump_failure_limit")
    assert len(answered) == 3
