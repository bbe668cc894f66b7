"""End to end on the simulator's single-tank plant: the water change and the recirculation duty."""

from __future__ import annotations

import json
from collections.abc import Callable

from hydrovisor.sim import Faults
from tests.helpers import http, wait_until
from tests.zone_plant import SINGLE_TANK_PLANT, SINGLE_TANK_SETTINGS, SINGLE_TANK_TYPES, PlantZone


def _zone(plant_zone: Callable[..., PlantZone], **options: object) -> PlantZone:
    return plant_zone(plant=SINGLE_TANK_PLANT, node_types=SINGLE_TANK_TYPES,
                      settings=options.pop("settings", SINGLE_TANK_SETTINGS), **options)


def test_water_change_drains_fills_and_stabilizes_with_the_nc_pump_back_on(
        plant_zone: Callable[..., PlantZone]) -> None:
    zone = _zone(plant_zone)
    assert "pump_main" in zone.physics.pumps  # an NC relay: the recirculation pump runs from power-on
    record = zone.run("water_change", timeout=60)
    assert record["status"] == "completed", json.dumps(record, indent=1)
    assert [s["name"] for s in record["stages"]] == ["normal_recirc", "drain", "fill", "stabilize"]
    sent = [(c["role"], c["cmd"], c["params"].get("state")) for c in record["commands"] if c["cmd"] == "set_relay"]
    assert sent == [("pump_main", "set_relay", 0), ("pump_drain", "set_relay", 1), ("pump_drain", "set_relay", 0),
                    ("valve_fill", "set_relay", 1), ("valve_fill", "set_relay", 0), ("pump_main", "set_relay", 1)]
    assert all(c["status"] == "DONE" for c in record["commands"])
    assert set(zone.physics.pumps) == {"pump_main"} and not zone.physics.valves
    assert zone.physics.switches()["level_solution_max"]
    automation = http("GET", f"{zone.base_url}/api/v1/zones/zn-1/automation").json()["data"]
    assert automation["solution_started_at"] is not None and automation["water_state"] == "normal_recirc"
    reasons = [e["reason_code"] for e in zone.events()]
    assert "water_change_completed" in reasons


def test_a_drain_that_moves_no_water_fails_with_an_alert_and_the_recirculation_pump_restored(
        plant_zone: Callable[..., PlantZone]) -> None:
    settings = {**SINGLE_TANK_SETTINGS, "timeouts": {"drain_s": 40, "fill_s": 300, "stabilize_s": 20}}
    zone = _zone(plant_zone, settings=settings)
    zone.nodes["recirculation"].set_faults(Faults(no_flow=1.0))  # pumps started from now on move nothing
    record = zone.run("water_change", timeout=60)
    assert record["status"] == "failed", json.dumps(record, indent=1)
    assert record["reason_code"] in ("water_change_drain_timeout", "water_change_drain_biz_no_flow"), record
    alerts = http("GET", f"{zone.base_url}/api/v1/alerts?zone_uid=zn-1&status=ACTIVE").json()["data"]
    assert "biz_water_change_failed" in {a["code"] for a in alerts}
    assert "pump_drain" not in zone.physics.pumps and not zone.physics.valves
    last = record["commands"][-1]
    assert (last["role"], last["params"].get("state")) == ("pump_main", 1)  # back to its fail-safe state


def test_the_duty_turns_the_nc_pump_off_in_a_window_and_never_touches_it_when_disabled(
        plant_zone: Callable[..., PlantZone]) -> None:
    window = {"from": "00:00", "to": "23:59", "duty_cycle": 0.0}
    settings = {**SINGLE_TANK_SETTINGS, "water_cycle": {"recirc": {"schedule": [window],
                                                                   "max_recirc_off_minutes": 59}}}
    zone = _zone(plant_zone, settings=settings)
    # every zone minute but the 59th of each hour is an off minute: the duty switches the pump off (a zone
    # minute is 3 real seconds here), its decision on the timeline
    wait_until(lambda: any(e["type"] == "RECIRC_DUTY" and e["reason_code"] == "recirc_off" for e in zone.events()),
               timeout=30, interval=0.2, what="the duty switching the NC pump off")
    wait_until(lambda: "pump_main" not in zone.physics.pumps or _minute(zone) == 59, timeout=10,
               what="the pump off")

    other = _zone(plant_zone, zone_uid="zn-2", settings={**SINGLE_TANK_SETTINGS, "water_cycle": {
        "recirc": {"enabled": False, "schedule": [window]}}})
    zone.settle(4.0)  # a few ticks of its water cycle
    assert "pump_main" in other.physics.pumps
    assert not [e for e in other.events() if e["type"] == "RECIRC_DUTY"]


def _minute(zone: PlantZone) -> int:
    return int(zone.clock.now() // 60) % 60
