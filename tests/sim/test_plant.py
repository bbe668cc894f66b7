"""The two-tank plant of the simulated irrigation node (DOMAIN §4 "Hydraulics"), its events and its faults."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hydrovisor.sim import Faults, NodeOptions, PlantOptions, SimNode, WaterPhysics
from hydrovisor.zones.clock import ManualClock
from tests.sim.support import FAST, HW_IRRIG, bound, broker, command, run, started, url

IRRIG = "hydro/gh-1/zn-1/nd-irr-0badc0ffee01"
RECIRCULATION = ("valve_solution_supply", "valve_solution_fill")


def _plant(**options: Any) -> WaterPhysics:
    return WaterPhysics(3, clock=ManualClock(), plant=PlantOptions(**options))


def _codes(model: WaterPhysics) -> list[tuple[str, str]]:
    return [(event.channel, event.code) for event in model.take_events()]


def test_a_fresh_plant_is_full_and_can_start_empty() -> None:
    full = _plant()
    assert full.switches() == dict.fromkeys(
        ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max"), True)
    empty = _plant(clean_start_pct=0, solution_start_pct=0)
    assert not any(empty.switches().values())
    assert empty.pump_path() is None
    with pytest.raises(ValueError, match="open_path"):
        PlantOptions(open_path="nowhere")


def test_clean_fill_ends_with_its_event_and_the_valve_stays_open() -> None:
    model = _plant(clean_start_pct=0, solution_start_pct=0)
    model.set_valve("valve_clean_fill", True)
    model.advance(30)  # 20 l/min of mains: 10 l = 5 % of 200 l
    assert _codes(model) == [("level_clean_min", "level_switch_changed")]
    model.advance(600)
    events = model.take_events()
    assert [(e.channel, e.code) for e in events] == [("level_clean_max", "level_switch_changed"),
                                                     ("storage_state", "clean_fill_completed")]
    assert events[0].fields["state"] is True and events[0].fields["initial"] is False
    assert events[1].fields["snapshot"]["clean_level_max"] is True
    assert events[1].fields["snapshot"]["valve_clean_fill"] is True  # the controller closes it
    model.advance(600)
    assert _codes(model) == []  # completed once per stage


def test_solution_fill_moves_clean_water_and_reports_a_dry_source() -> None:
    model = _plant(clean_capacity_l=100, solution_start_pct=0)
    model.set_valve("valve_clean_supply", True)
    model.set_valve("valve_solution_fill", True)
    assert model.pump_path() == "solution_fill"
    model.start_pump("pump_main", main=True)
    assert model.flow_lpm_true() == 12.0
    model.advance(60)
    assert model.solution_l == pytest.approx(12.0) and model.clean_l == pytest.approx(88.0)
    model.advance(600)  # the clean tank runs dry long before the solution tank is full
    codes = _codes(model)
    assert ("storage_state", "solution_fill_source_empty") in codes
    assert ("storage_state", "solution_fill_completed") not in codes
    assert model.flow_lpm_true() == 0  # nothing left to move
    assert model.pump_current_ma_true() > 1000  # ... but the pump still runs: a dry run


def test_recirculation_keeps_the_level_irrigation_drains_and_reports_low_solution() -> None:
    model = _plant(solution_capacity_l=50)
    for valve in RECIRCULATION:
        model.set_valve(valve, True)
    model.start_pump("pump_main", main=True)
    model.advance(600)
    assert model.recirculating() and model.solution_l == pytest.approx(50.0)
    model.set_valve("valve_solution_fill", False)
    assert model.flow_lpm_true() == 0  # no path: the pump dead-heads
    model.set_valve("valve_irrigation", True)
    model.advance(600)
    codes = _codes(model)
    assert ("storage_state", "irrigation_solution_low") in codes
    assert ("level_solution_min", "level_switch_changed") in codes


def test_dose_mixes_in_fastest_while_recirculating() -> None:
    still, moving = _plant(), _plant(open_path="recirculation")
    moving.start_pump("pump_main", main=True)
    for model in (still, moving):
        model.ph = 6.5
        model.dose("acid", 20)
        model.advance(5)
    assert 6.5 - moving.ph > 2 * (6.5 - still.ph) > 0


def test_faults_stuck_relay_and_inconsistent_switches() -> None:
    model = _plant(open_path="recirculation")
    model.stuck = frozenset({"pump_main"})
    model.start_pump("pump_main", main=True)
    model.stop_pump("pump_main")
    assert model.snapshot()["pump_main"] is False  # what the node was told ...
    assert model.flow_lpm_true() > 0 and model.pump_current_ma_true() > 1000  # ... and what happens
    model.inconsistent = frozenset({"clean"})
    model.refresh()
    assert (model.switches()["level_clean_max"], model.switches()["level_clean_min"]) == (True, False)
    assert ("level_clean_min", "level_switch_changed") in _codes(model)


def test_emergency_stop_stops_closes_and_reports() -> None:
    model = _plant(open_path="irrigation")
    model.start_pump("pump_main", main=True)
    stopped = model.emergency_stop({"pump_main", "valve_solution_supply", "valve_irrigation"}, "button")
    assert stopped == ["pump_main"] and model.pumps == {} and model.valves == set()
    event = model.take_events()[-1]
    assert (event.code, event.fields["stopped_pumps"]) == ("emergency_stop_activated", ["pump_main"])


# -- over a real broker -----------------------------------------------------------------------------------

def _bodies(inbox: Any, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in inbox.on(topic)]


def test_the_node_reports_switches_enforces_the_interlock_and_publishes_its_events() -> None:
    options = NodeOptions(**{**{f: getattr(FAST, f) for f in FAST.__struct_fields__},
                             "plant": PlantOptions(solution_capacity_l=4.0, solution_start_pct=100)})

    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            node = SimNode(url(embedded), HW_IRRIG, "irrig", options=options, field_config=bound("nd-irr-0badc0ffee01"))
            async with started(node, synced_by=embedded):
                # the first telemetry goes out at once: all four switches, as 0/1 values
                for switch in ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max"):
                    body = (await inbox.wait_topic(f"{IRRIG}/{switch}/telemetry"))[0]
                    sample = json.loads(body.payload)
                    assert (sample["metric_type"], sample["value"]) == ("WATER_LEVEL_SWITCH", 1)
                await embedded.publish(f"{IRRIG}/pump_main/command", command("set_relay", "on", {"state": 1}))
                await inbox.wait_statuses("on", ["ERROR"])
                assert inbox.responses("on")[0]["error_code"] == "pump_interlock_blocked"
                for valve in ("valve_solution_supply", "valve_irrigation"):
                    await embedded.publish(f"{IRRIG}/{valve}/command", command("set_relay", valve, {"state": 1}))
                    await inbox.wait_statuses(valve, ["ACK", "DONE"])
                # 4 l at 12 l/min: the tank is low after ~20 simulated s (0.2 s here)
                await embedded.publish(f"{IRRIG}/pump_main/command",
                                       command("run_pump", "irrigate", {"duration_ms": 60_000}))
                await inbox.wait_statuses("irrigate", ["ACK", "DONE"])
                await inbox.wait(lambda: any(b["event_code"] == "irrigation_solution_low"
                                             for b in _bodies(inbox, f"{IRRIG}/storage_state/event")))
                changed = _bodies(inbox, f"{IRRIG}/level_solution_min/event")
                assert changed[0]["event_code"] == "level_switch_changed"
                assert (changed[0]["channel"], changed[0]["state"], changed[0]["initial"]) == (
                    "level_solution_min", False, False)
                assert changed[0]["snapshot"]["solution_level_min"] is False
                await embedded.publish(f"{IRRIG}/storage_state/command", command("state", "snap"))
                await inbox.wait_statuses("snap", ["ACK", "DONE"])
                snapshot = inbox.responses("snap")[1]["details"]["snapshot"]
                assert snapshot["valve_irrigation"] is True and snapshot["solution_level_min"] is False

                node.emergency_stop()
                await inbox.wait(lambda: any(b["event_code"] == "emergency_stop_activated"
                                             for b in _bodies(inbox, f"{IRRIG}/storage_state/event")))
                await embedded.publish(f"{IRRIG}/valve_irrigation/command", command("set_relay", "e", {"state": 1}))
                await inbox.wait_statuses("e", ["ERROR"])
                assert inbox.responses("e")[0]["error_code"] == "estop_active"

    run(scenario)


def test_overcurrent_is_an_error_reply_and_an_error_report() -> None:
    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            node = SimNode(url(embedded), HW_IRRIG, "irrig", options=FAST, field_config=bound("nd-irr-0badc0ffee01"),
                           faults=Faults(overcurrent=1.0))
            async with started(node, synced_by=embedded):
                for valve in RECIRCULATION:
                    await embedded.publish(f"{IRRIG}/{valve}/command", command("set_relay", valve, {"state": 1}))
                    await inbox.wait_statuses(valve, ["ACK", "DONE"])
                await embedded.publish(f"{IRRIG}/pump_main/command", command("set_relay", "trip", {"state": 1}))
                await inbox.wait_statuses("trip", ["ACK", "ERROR"])
                assert inbox.responses("trip")[1]["error_code"] == "overcurrent"
                report = json.loads((await inbox.wait_topic(f"{IRRIG}/error"))[0].payload)
                assert (report["level"], report["component"], report["error_code"]) == (
                    "ERROR", "pump_main", "overcurrent")
                assert report["details"]["current_ma"] > report["details"]["threshold_ma"]

    run(scenario)


def test_frozen_sensor_and_inconsistent_switches_injected_at_run_time() -> None:
    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            node = SimNode(url(embedded), HW_IRRIG, "irrig", options=FAST, field_config=bound("nd-irr-0badc0ffee01"))
            async with started(node, synced_by=embedded):
                await inbox.wait_topic(f"{IRRIG}/pump_current/telemetry")
                node.set_faults(Faults(frozen_sensors=("pump_current",), inconsistent_levels=("solution",)))
                frozen = len(inbox.on(f"{IRRIG}/pump_current/telemetry"))
                event = json.loads((await inbox.wait_topic(f"{IRRIG}/level_solution_min/event"))[0].payload)
                assert (event["event_code"], event["state"]) == ("level_switch_changed", False)
                await inbox.wait_topic(f"{IRRIG}/pump_current/telemetry", count=frozen + 3)
                values = {b["value"] for b in _bodies(inbox, f"{IRRIG}/pump_current/telemetry")[frozen:]}
                assert len(values) == 1
                latest = {s: _bodies(inbox, f"{IRRIG}/{s}/telemetry")[-1]["value"]
                          for s in ("level_solution_min", "level_solution_max")}
                assert latest == {"level_solution_min": 0, "level_solution_max": 1}

    run(scenario)


def test_ec_node_has_the_role_pumps_and_one_clock_drives_a_shared_plant() -> None:
    clock = ManualClock()
    shared = WaterPhysics(1, clock=clock)
    with pytest.raises(ValueError, match="shared clock"):
        SimNode("mqtt://127.0.0.1:1", HW_IRRIG, "ec", clock=clock, options=NodeOptions(time_scale=0.5))
    ec = SimNode("mqtt://127.0.0.1:1", HW_IRRIG, "ec", clock=clock, physics=shared)
    assert {"pump_a", "pump_b", "pump_c", "pump_d"} <= {c.name for c in ec.profile.channels}
    assert ec.physics is shared and ec.clock is clock
    shared.update()
    before = shared.ph
    clock.advance(3600)
    shared.update()  # an hour on the shared clock: the plant drifted
    assert shared.ph != before
