"""The task executor against a running instance and simulated two-tank zones (``tests.zone_plant``): each task
type through the zone's own paths, the outcome an operator reads, and the deadline of the wait."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

from hydrovisor.sim import Faults
from hydrovisor.store.repos.tasks import Outcome
from hydrovisor.tasks.executor import TaskExecutor, TaskOrder
from tests.helpers import http, wait_until
from tests.zone_plant import NODE_TYPES, SINGLE_TANK_PLANT, SINGLE_TANK_SETTINGS, SINGLE_TANK_TYPES, PlantZone

ZoneFactory = Callable[..., PlantZone]


def order(zone: PlantZone, task_type: str, payload: dict[str, Any] | None = None, *, expires_in: float = 60.0,
          correlation_id: str | None = None) -> TaskOrder:
    return TaskOrder(task_id=f"tk-{uuid.uuid4().hex[:12]}", zone_uid=zone.zone_uid, task_type=task_type,
                     payload=payload or {}, correlation_id=correlation_id or f"corr-{uuid.uuid4().hex}",
                     expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in))


def execute(zone: PlantZone, task: TaskOrder) -> Outcome:
    """Run the executor on the instance's loop, as the dispatcher will."""
    services = zone.instance.app.services
    assert services is not None
    outcome: Outcome = zone.instance.loop.run(TaskExecutor.from_services(services).execute(task), timeout=90)
    return outcome


def ready(zone: PlantZone) -> None:
    record = zone.run("two_tank_startup", timeout=90)
    assert record["status"] == "completed", json.dumps(record, indent=1)


def workflows(zone: PlantZone) -> list[dict[str, Any]]:
    reply = http("GET", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/workflows")
    assert reply.status == 200, reply.raw
    items: list[dict[str, Any]] = reply.json()["data"]
    return items


def manual(zone: PlantZone, channel: str, state: int) -> dict[str, Any]:
    """An operator's ``set_relay`` on the irrigation node, waited until terminal."""
    reply = http("POST", f"{zone.base_url}/api/v1/commands", body={
        "cmd": "set_relay", "node_uid": zone.uids["irrig"], "channel": channel, "params": {"state": state},
        "zone_uid": zone.zone_uid})
    assert reply.status == 202, reply.raw
    cmd_id = reply.json()["data"]["cmd_id"]

    def ended() -> dict[str, Any] | None:
        row: dict[str, Any] = http("GET", f"{zone.base_url}/api/v1/commands/{cmd_id}?wait=5").json()["data"]
        return row if row["status"] not in ("QUEUED", "SENT", "ACK") else None

    found: dict[str, Any] = wait_until(ended, timeout=15, what=f"{cmd_id} terminal")
    return found


def test_irrigation_on_a_ready_zone_runs_once_even_when_executed_again(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    ready(zone)
    task = order(zone, "irrigation", {"duration_s": 5})
    outcome = execute(zone, task)
    assert (outcome.status, outcome.decision, outcome.reason_code) == ("completed", "run", "irrigation_completed"), \
        outcome
    assert outcome.command_submitted and outcome.command_effect_confirmed and not outcome.action_required
    assert outcome.workflow_id is not None and outcome.error_code is None
    record = zone.workflow(outcome.workflow_id)
    assert record["type"] == "irrigation" and record["created_by"] == f"task:{task.correlation_id}"
    # the dispatcher died after the start and runs the task again, or a retry of it runs: the same workflow
    # is reported, no second irrigation
    for again in (task, order(zone, "irrigation", {"duration_s": 5}, correlation_id=f"{task.correlation_id}:retry1")):
        replay = execute(zone, again)
        assert (replay.status, replay.workflow_id) == ("completed", outcome.workflow_id), replay
    assert [w["type"] for w in workflows(zone)] == ["irrigation", "two_tank_startup"]


def test_the_wait_ends_at_expires_at_and_leaves_the_workflow_running(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    ready(zone)
    zone.nodes["irrig"].set_faults(Faults(delay_reply_s=0.5))  # every step of the workflow now takes a while
    outcome = execute(zone, order(zone, "irrigation", {"duration_s": 5}, expires_in=1.0))
    assert (outcome.status, outcome.decision, outcome.reason_code) == ("failed", "fail", "task_deadline_exceeded"), \
        outcome
    assert not outcome.command_effect_confirmed and outcome.workflow_id is not None
    assert zone.workflow(outcome.workflow_id)["status"] == "running"  # left to end by itself
    zone.nodes["irrig"].set_faults(Faults())
    record = zone.wait_end(outcome.workflow_id, 30)
    assert record["status"] == "completed", json.dumps(record, indent=1)
    assert zone.all_stopped()


def test_a_safety_lock_fails_irrigation_for_an_operator_and_diagnostics_still_run(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    ready(zone)
    zone.nodes["irrig"].set_faults(Faults(overcurrent=1.0))
    for valve in ("valve_solution_supply", "valve_irrigation"):
        assert manual(zone, valve, 1)["status"] == "DONE"
    tripped = manual(zone, "pump_main", 1)
    assert (tripped["status"], tripped["error_code"]) == ("ERROR", "overcurrent"), tripped
    wait_until(lambda: "safety_lock_biz_overcurrent" in {lock["reason_code"] for lock in
                                                         (zone.state() or {}).get("safety_locks", [])},
               timeout=10, interval=0.05, what="the overcurrent lock")
    outcome = execute(zone, order(zone, "irrigation", {"duration_s": 5}))
    assert (outcome.status, outcome.decision, outcome.reason_code, outcome.error_code) == (
        "failed", "fail", "safety_lock_biz_overcurrent", "pump_safety_blocked"), outcome
    assert outcome.action_required and not outcome.command_submitted and outcome.workflow_id is None
    probe = execute(zone, order(zone, "diagnostics"))  # a read is never gated
    assert (probe.status, probe.decision, probe.command_effect_confirmed) == ("completed", "run", True), probe


def test_a_fresh_zone_refuses_irrigation_and_tasks_without_a_device(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    not_ready = execute(zone, order(zone, "irrigation", {"duration_s": 5}))
    assert (not_ready.status, not_ready.decision, not_ready.reason_code) == ("failed", "fail", "zone_not_ready"), \
        not_ready
    assert not_ready.action_required and not not_ready.command_submitted and not_ready.workflow_id is None
    for task_type, payload in (("ventilation", {"state": "on"}), ("mist", {"duration_s": 10}),
                               ("lighting", {"state": "on"})):
        none = execute(zone, order(zone, task_type, payload))
        assert (none.status, none.decision, none.reason_code) == ("failed", "fail", "no_device_for_task"), none
        assert not none.command_submitted
    probe = execute(zone, order(zone, "diagnostics"))
    assert (probe.status, probe.decision, probe.reason_code) == ("completed", "run", "diagnostics_done"), probe
    assert probe.command_submitted and probe.command_effect_confirmed and probe.cmd_id is not None
    wrong = execute(zone, order(zone, "solution_change"))  # a water change is a single-tank workflow
    assert (wrong.decision, wrong.reason_code, wrong.action_required) == ("fail", "topology_mismatch", True), wrong
    expired = execute(zone, order(zone, "diagnostics", expires_in=-1))
    assert (expired.status, expired.decision, expired.reason_code) == ("failed", "fail", "task_expired"), expired
    assert http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/emergency-stop").status == 202
    stopped = execute(zone, order(zone, "irrigation", {"duration_s": 5}))
    assert (stopped.decision, stopped.reason_code, stopped.action_required) == (
        "fail", "emergency_stop_active", True), stopped


def test_lighting_switches_the_light_role_and_skips_what_is_already_done(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(node_types=(*NODE_TYPES, "light"))
    light = zone.nodes["light"]
    on = execute(zone, order(zone, "lighting", {"state": "on"}))
    assert (on.status, on.decision, on.reason_code) == ("completed", "run", "lighting_done"), on
    assert on.command_submitted and on.command_effect_confirmed and light.actions.is_on("light")
    wait_until(lambda: (zone.state() or {})["actuators"]["light"]["confirmed"] is True, timeout=5,
               what="the zone seeing the light on")
    again = execute(zone, order(zone, "lighting", {"state": "on", "mode": "relay"}))
    assert (again.status, again.decision, again.reason_code) == ("completed", "skip", "already_in_state"), again
    assert not again.command_submitted
    dim = execute(zone, order(zone, "lighting", {"state": "on", "mode": "pwm", "pwm_level": 50}))
    assert (dim.status, dim.decision, dim.command_effect_confirmed) == ("completed", "run", True), dim
    assert light.actions.pwm["light"] == 128
    off = execute(zone, order(zone, "lighting", {"state": "off"}))
    assert (off.status, off.decision) == ("completed", "run"), off
    assert not light.actions.is_on("light")
    bad = execute(zone, order(zone, "lighting", {"state": "on", "mode": "pwm"}))
    assert (bad.decision, bad.reason_code, bad.action_required) == ("fail", "invalid_payload", True), bad


def test_solution_change_runs_the_water_change_of_a_single_tank_zone(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=SINGLE_TANK_PLANT, node_types=SINGLE_TANK_TYPES, settings=SINGLE_TANK_SETTINGS)
    outcome = execute(zone, order(zone, "solution_change"))
    assert (outcome.status, outcome.decision, outcome.reason_code) == (
        "completed", "run", "water_change_completed"), outcome
    assert outcome.command_submitted and outcome.command_effect_confirmed and outcome.workflow_id is not None
    assert zone.workflow(outcome.workflow_id)["type"] == "water_change"
    assert set(zone.physics.pumps) == {"pump_main"}  # the recirculation pump back on, nothing else running
