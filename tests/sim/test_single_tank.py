"""The single-tank plant of the water cycle (DOMAIN §4 "Water cycle", "NC recirculation pump") and its
``recirculation`` node: NC recirculation pump, drain pump, fill valve, solution level switches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hydrovisor.sim import ALL_SIM_NODE_TYPES, SIM_NODE_TYPES, Faults, NodeOptions, PlantOptions, SimNode, WaterPhysics
from hydrovisor.sim.profiles import profile_for
from hydrovisor.zones.clock import ManualClock
from tests.sim.support import FAST, bound, broker, command, run, started, url

HW_RECIRC = "esp32-0badc0ffee02"
RECIRC = "hydro/gh-1/zn-1/nd-recirc-0badc0ffee02"
SNAPSHOT_KEYS = {"solution_level_min", "solution_level_max", "pump_main", "pump_drain", "valve_fill"}


def _tank(**options: Any) -> WaterPhysics:
    return WaterPhysics(3, clock=ManualClock(), plant=PlantOptions(topology="single_tank", **options))


def _codes(model: WaterPhysics) -> list[tuple[str, str]]:
    return [(event.channel, event.code) for event in model.take_events()]


def _fast(**plant: Any) -> NodeOptions:
    return NodeOptions(**{**{f: getattr(FAST, f) for f in FAST.__struct_fields__},
                          "plant": PlantOptions(topology="single_tank", **plant)})


# -- options and profile ---------------------------------------------------------------------------------

def test_the_defaults_stay_two_tank_and_the_single_tank_options_validate() -> None:
    default = PlantOptions()
    assert (default.topology, default.drain_lpm) == ("two_tank", 30.0)
    assert NodeOptions().plant == default
    assert "recirculation" not in SIM_NODE_TYPES  # the default fleet mix is unchanged
    assert (*SIM_NODE_TYPES, "recirculation") == ALL_SIM_NODE_TYPES
    with pytest.raises(ValueError, match="topology"):
        PlantOptions(topology="three_tank")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="drain_lpm"):
        PlantOptions(topology="single_tank", drain_lpm=0)
    with pytest.raises(ValueError, match="open_path"):
        PlantOptions(topology="single_tank", open_path="recirculation")


def test_the_recirculation_profile() -> None:
    profile = profile_for("recirculation")
    channels = {channel.name: channel for channel in profile.channels}
    assert set(channels) == {"pump_main", "pump_drain", "valve_fill", "storage_state", "system", "flow",
                             "pump_current", "level_solution_min", "level_solution_max", "solution_temp"}
    assert {s.channel: s.metric for s in profile.sensors} == {
        "flow": "FLOW_RATE", "pump_current": "PUMP_CURRENT", "level_solution_min": "WATER_LEVEL_SWITCH",
        "level_solution_max": "WATER_LEVEL_SWITCH", "solution_temp": "TEMPERATURE"}
    main, drain, fill = channels["pump_main"], channels["pump_drain"], channels["valve_fill"]
    assert (main.actuator_type, main.relay_type, drain.actuator_type, drain.relay_type) == ("PUMP", "NC", "PUMP", "NO")
    assert (fill.actuator_type, fill.relay_type, channels["storage_state"].actuator_type) == ("VALVE", "NO", "SYSTEM")
    assert main.safe_limits is not None and drain.safe_limits is not None
    assert main.safe_limits.fail_safe_mode == "ON" and drain.safe_limits.fail_safe_mode == "OFF"
    assert main.safe_limits.max_duration_ms == drain.safe_limits.max_duration_ms == 300_000
    assert profile.topology == "single_tank" and profile.unpowered_on == ("pump_main",)
    model = _tank()
    for sensor in profile.sensors:
        model.read(sensor.source)


# -- physics ---------------------------------------------------------------------------------------------

def test_a_fresh_single_tank_recirculates_on_its_nc_pump() -> None:
    model = _tank()
    assert PlantOptions().topology == "two_tank" and WaterPhysics(3, clock=ManualClock()).pumps == {}
    assert "pump_main" in model.pumps and "pump_main" in model.commanded  # runs from power-on
    assert model.recirculating() and model.flow_lpm_true() == 12.0
    assert model.clean_l == 0 and model.pump_path() is None
    assert model.switches() == {"level_clean_min": False, "level_clean_max": False,
                                "level_solution_min": True, "level_solution_max": True}
    snapshot = model.snapshot()
    assert set(snapshot) == SNAPSHOT_KEYS
    assert snapshot == {"solution_level_min": True, "solution_level_max": True, "pump_main": True,
                        "pump_drain": False, "valve_fill": False}
    model.advance(600)
    assert model.solution_l == pytest.approx(200.0) and _codes(model) == []  # recirculation keeps the level
    assert not model.moving()
    model.stop_pump("pump_main")
    assert model.flow_lpm_true() == 0 and model.snapshot()["pump_main"] is False


def test_drain_empties_the_tank_trips_the_switches_and_then_runs_dry() -> None:
    model = _tank(solution_capacity_l=100)
    model.stop_pump("pump_main")  # DRAIN: recirculation off first
    model.start_pump("pump_drain", main=True)
    assert model.draining() and model.moving()
    assert model.flow_lpm_true() == 30.0
    model.advance(60)
    assert model.solution_l == pytest.approx(70.0)
    assert _codes(model) == [("level_solution_max", "level_switch_changed")]
    model.advance(600)
    events = model.take_events()
    assert [(e.channel, e.code) for e in events] == [("level_solution_min", "level_switch_changed")]
    assert (events[0].fields["state"], events[0].fields["initial"]) == (False, False)
    assert events[0].fields["snapshot"]["solution_level_min"] is False
    assert events[0].fields["snapshot"]["pump_drain"] is True
    assert model.solution_l == 0 and model.solution_level_pct == 0
    assert not model.draining() and not model.moving()
    assert model.flow_lpm_true() == 0  # an empty tank: no flow ...
    assert model.pump_current_ma_true() > 1000  # ... while the drain pump still draws current (a dry run)
    assert model.read("flow_lpm") == 0.0


def test_the_no_flow_fault_drains_nothing() -> None:
    model = _tank()
    model.stop_pump("pump_main")
    model.start_pump("pump_drain", main=True, flowing=False)
    model.advance(60)
    assert model.solution_l == pytest.approx(200.0)
    assert model.flow_lpm_true() == 0 and model.pump_current_ma_true() > 1000


def test_fill_raises_the_level_trips_min_then_max_and_dilutes() -> None:
    model = _tank(solution_capacity_l=100, solution_start_pct=50)
    model.stop_pump("pump_main")
    model.ec, model.ph = 2.0, 6.0
    model.set_valve("valve_fill", True)
    assert model.moving() and model.flow_lpm_true() == 0  # mains water, no pump
    model.advance(150)  # 20 l/min: 50 l more, the tank is full
    assert model.solution_l == pytest.approx(100.0)
    assert model.ec == pytest.approx(1.0, abs=0.01)  # half of the solution is fresh water
    assert model.ph == pytest.approx(6.5, abs=0.03)  # (plus its slow drift towards 6.8)
    assert _codes(model) == [("level_solution_max", "level_switch_changed")]
    model.advance(600)
    assert model.solution_l == pytest.approx(100.0)  # capped at the tank's capacity
    assert model.ec == pytest.approx(1.0, abs=0.01)
    assert model.snapshot()["valve_fill"] is True  # the controller closes it

    empty = _tank(solution_capacity_l=100, solution_start_pct=0)
    empty.set_valve("valve_fill", True)
    empty.advance(30)  # 10 l = 10 %
    assert _codes(empty) == [("level_solution_min", "level_switch_changed")]
    assert empty.ec == pytest.approx(0.0, abs=0.01) and empty.ph == pytest.approx(7.0, abs=0.01)
    empty.advance(600)
    assert _codes(empty) == [("level_solution_max", "level_switch_changed")]


def test_recirculation_mixes_a_dose_fast() -> None:
    still, moving = _tank(), _tank()
    still.stop_pump("pump_main")
    assert moving.recirculating() and not still.recirculating()
    for model in (still, moving):
        model.ph = 6.5
        model.dose("acid", 20)
        model.advance(5)
    assert 6.5 - moving.ph > 2 * (6.5 - still.ph) > 0


def test_faults_on_a_single_tank() -> None:
    model = _tank()
    model.stuck = frozenset({"pump_main"})
    model.stop_pump("pump_main")
    assert model.snapshot()["pump_main"] is False and model.flow_lpm_true() == 12.0  # welded: still runs
    model.inconsistent = frozenset({"solution", "clean"})
    model.refresh()
    switches = model.switches()
    assert (switches["level_solution_max"], switches["level_solution_min"]) == (True, False)
    assert (switches["level_clean_max"], switches["level_clean_min"]) == (False, False)  # no clean tank
    assert _codes(model) == [("level_solution_min", "level_switch_changed")]
    stopped = model.emergency_stop({"pump_main", "pump_drain", "valve_fill"}, "button")
    assert stopped == []  # the welded pump was no longer commanded on


# -- the node --------------------------------------------------------------------------------------------

def test_the_node_needs_its_topology_and_shares_a_plant_with_ph_and_ec() -> None:
    node = SimNode("mqtt://127.0.0.1:1", HW_RECIRC, "recirculation")  # default options: its own single tank
    assert node.physics.plant.topology == "single_tank" and "pump_main" in node.physics.pumps
    with pytest.raises(ValueError, match="single_tank plant"):
        SimNode("mqtt://127.0.0.1:1", HW_RECIRC, "recirculation",
                options=NodeOptions(plant=PlantOptions(solution_start_pct=0)))
    with pytest.raises(ValueError, match="two_tank plant"):
        SimNode("mqtt://127.0.0.1:1", HW_RECIRC, "irrig", options=_fast())
    clock = ManualClock()
    shared = WaterPhysics(1, clock=clock, plant=PlantOptions(topology="single_tank"))
    with pytest.raises(ValueError, match="two_tank plant"):
        SimNode("mqtt://127.0.0.1:1", HW_RECIRC, "irrig", clock=clock, physics=shared)
    nodes = [SimNode("mqtt://127.0.0.1:1", f"esp32-00000000000{i}", kind, clock=clock, physics=shared)
             for i, kind in enumerate(("recirculation", "ph", "ec"))]
    assert all(node.physics is shared for node in nodes)
    # an irrig node keeps the default two-tank plant, and a two-tank plant is still shared as before
    assert SimNode("mqtt://127.0.0.1:1", HW_RECIRC, "irrig").physics.plant == PlantOptions()


def test_a_reboot_runs_the_nc_pump_again_unless_the_emergency_stop_is_latched() -> None:
    node = SimNode("mqtt://127.0.0.1:1", HW_RECIRC, "recirculation", options=_fast())
    physics = node.physics
    physics.stop_pump("pump_main")
    physics.start_pump("pump_drain", main=True)
    physics.set_valve("valve_fill", True)
    node.actions.reset()  # a reboot (or the node stopping): the NC pump runs, the NO loads are off
    assert physics.commanded == {"pump_main"} and set(physics.pumps) == {"pump_main"} and not physics.valves
    assert node.actions.is_on("pump_main")
    assert node.emergency_stop() == ["pump_main"]
    assert physics.pumps == {}
    node.actions.reset()
    assert physics.pumps == {}  # the latch cuts it
    node.release_emergency_stop()
    node.actions.reset()
    assert "pump_main" in physics.pumps


# -- over a real broker ---------------------------------------------------------------------------------

def _bodies(inbox: Any, topic: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in inbox.on(topic)]


def test_the_recirculation_node_over_mqtt() -> None:
    # 4 l drained at 30 l/min: the min switch trips after ~8 simulated s (0.08 s here)
    options = _fast(solution_capacity_l=4.0)

    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            node = SimNode(url(embedded), HW_RECIRC, "recirculation", options=options,
                           field_config=bound("nd-recirc-0badc0ffee02"))
            async with started(node, synced_by=embedded):
                flow = json.loads((await inbox.wait_topic(f"{RECIRC}/flow/telemetry"))[0].payload)
                assert flow["metric_type"] == "FLOW_RATE" and flow["value"] > 10  # recirculating at boot
                for switch in ("level_solution_min", "level_solution_max"):
                    sample = json.loads((await inbox.wait_topic(f"{RECIRC}/{switch}/telemetry"))[0].payload)
                    assert (sample["metric_type"], sample["value"]) == ("WATER_LEVEL_SWITCH", 1)
                await inbox.wait_topic(f"{RECIRC}/solution_temp/telemetry")
                assert not [m for m in inbox.messages if "/level_clean_" in m.topic]

                await embedded.publish(f"{RECIRC}/pump_main/command", command("set_relay", "on", {"state": 1}))
                await inbox.wait_statuses("on", ["NO_EFFECT"])  # it already runs: no interlock, no valves
                await embedded.publish(f"{RECIRC}/pump_main/command", command("set_relay", "off", {"state": 0}))
                await inbox.wait_statuses("off", ["ACK", "DONE"])
                assert "pump_main" not in node.physics.pumps and node.physics.flow_lpm_true() == 0

                await embedded.publish(f"{RECIRC}/pump_drain/command", command("set_relay", "drain", {"state": 1}))
                await inbox.wait_statuses("drain", ["ACK", "DONE"])
                await inbox.wait(lambda: _bodies(inbox, f"{RECIRC}/level_solution_min/event"))
                event = _bodies(inbox, f"{RECIRC}/level_solution_min/event")[0]
                assert (event["event_code"], event["state"], event["initial"]) == ("level_switch_changed", False, False)
                assert set(event["snapshot"]) == SNAPSHOT_KEYS

                await embedded.publish(f"{RECIRC}/storage_state/command", command("state", "snap"))
                await inbox.wait_statuses("snap", ["ACK", "DONE"])
                snapshot = inbox.responses("snap")[1]["details"]["snapshot"]
                assert snapshot == {"solution_level_min": False, "solution_level_max": False, "pump_main": False,
                                    "pump_drain": True, "valve_fill": False}

                await embedded.publish(f"{RECIRC}/system/command", command("restart", "reboot"))
                await inbox.wait_statuses("reboot", ["ACK", "DONE"])
                await inbox.wait(lambda: "pump_main" in node.physics.pumps)  # the NC pump runs after a reboot
                assert node.physics.commanded == {"pump_main"}  # the drain pump is off

    run(scenario)


def test_the_recirculation_node_honours_faults() -> None:
    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            node = SimNode(url(embedded), HW_RECIRC, "recirculation", options=_fast(),
                           field_config=bound("nd-recirc-0badc0ffee02"))
            async with started(node, synced_by=embedded):
                node.set_faults(Faults(inconsistent_levels=("solution",), stuck_relays=("pump_main",)))
                event = json.loads((await inbox.wait_topic(f"{RECIRC}/level_solution_min/event"))[0].payload)
                assert (event["event_code"], event["state"]) == ("level_switch_changed", False)
                await embedded.publish(f"{RECIRC}/pump_main/command", command("set_relay", "off", {"state": 0}))
                await inbox.wait_statuses("off", ["ACK", "DONE"])
                assert node.physics.flow_lpm_true() > 0  # welded relay: still pumping

    run(scenario)
