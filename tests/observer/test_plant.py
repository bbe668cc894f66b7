"""Reading the simulator's plant: ``plant_reading`` of a real ``WaterPhysics`` and the ``PlantSampler`` task."""

from __future__ import annotations

import asyncio

from hydrovisor.observer import LEFT_RUNNING_AFTER_STOP, PlantSampler, SafetyObserver, plant_reading
from hydrovisor.sim import PlantOptions, WaterPhysics
from hydrovisor.zones.clock import ManualClock


def test_a_reading_is_the_physical_truth_and_does_not_step_the_plant() -> None:
    clock = ManualClock()
    physics = WaterPhysics(7, clock=clock, plant=PlantOptions(open_path="recirculation", clean_start_pct=3.0))
    physics.start_pump("pump_main", main=True)
    physics.stuck = frozenset({"valve_irrigation"})
    physics.set_valve("valve_irrigation", True)
    physics.set_valve("valve_irrigation", False)  # stuck: the node believes it closed, it did not
    clock.advance(60.0)  # the plant has not been stepped for this minute: the reading must not step it
    reading = plant_reading(physics)
    assert reading.pumps == frozenset({"pump_main"})
    assert reading.valves == frozenset({"valve_solution_supply", "valve_solution_fill", "valve_irrigation"})
    assert "valve_irrigation" not in reading.commanded
    assert (reading.clean_level_pct, reading.solution_level_pct, reading.min_switch_pct) == (3.0, 100.0, 5.0)
    assert reading.below_min("clean") and not reading.below_min("solution")
    assert reading.switches["level_clean_min"] is False and reading.switches["level_solution_max"] is True
    assert physics.clean_level_pct == 3.0 and plant_reading(physics) == reading


def test_the_sampler_feeds_every_zone_until_stopped() -> None:
    clock = ManualClock()
    observer = SafetyObserver()
    running = WaterPhysics(1, clock=clock, plant=PlantOptions(open_path="irrigation"))
    running.start_pump("pump_main", main=True)
    idle = WaterPhysics(2, clock=clock)

    async def scenario() -> int:
        sampler = PlantSampler(observer, {"zn-1": running}, clock.monotonic, interval_s=0.01)
        sampler.add("zn-2", idle)
        observer.mark("zn-1", "workflow_failed", 0.0)
        observer.mark("zn-2", "workflow_failed", 0.0)
        sampler.start()
        sampler.start()  # idempotent
        await asyncio.sleep(0.05)
        clock.advance(31.0)  # past the default 30 s grace
        await asyncio.sleep(0.05)
        clock.advance(3.0)  # and past the wire's lag after that reading (no start came)
        await asyncio.sleep(0.05)
        await sampler.stop()
        await sampler.stop()
        return sampler.samples

    samples = asyncio.run(scenario())
    assert samples >= 3
    assert observer.stats()["plant_readings"] == 2 * samples
    assert [(v.rule, v.zone_uid) for v in observer.violations] == [(LEFT_RUNNING_AFTER_STOP, "zn-1")]
