"""End to end on the simulator: two_tank_startup, irrigation and correction against the two-tank node."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.zone_plant import PlantZone


def test_startup_from_empty_tanks_reaches_ready_with_every_stage_confirmed(plant_zone: Callable[..., PlantZone]) -> None:
    zone = plant_zone()
    record = zone.run("two_tank_startup", timeout=90)
    assert record["status"] == "completed", json.dumps(record, indent=1)
    assert [s["name"] for s in record["stages"]] == [
        "startup", "clean_fill", "solution_fill", "prepare_recirculation", "ready"]
    assert all(s["outcome"] == "ok" for s in record["stages"]), record["stages"]
    # every command the workflow sent ended DONE: starts, confirmed stops, probes, sensor mode
    assert record["commands"] and all(c["status"] == "DONE" for c in record["commands"]), record["commands"]
    assert zone.all_stopped()
    assert zone.physics.switches()["level_solution_max"] and zone.physics.switches()["level_clean_min"]
    state = zone.state()
    assert state is not None and state["water_state"] == "ready"
    kinds = [e["type"] for e in zone.events()]
    assert "WORKFLOW_STARTED" in kinds and "WORKFLOW_ENDED" in kinds and kinds.count("WORKFLOW_STAGE") == 5
