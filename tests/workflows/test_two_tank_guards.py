"""End to end on the simulator: every DOMAIN §4 guard of ``two_tank_startup``, one test each.

Each test asserts the workflow's final record (status, reason code, stages, commands with their statuses), the
physical plant afterwards (``zone.physics``: what really runs, not what the node believes) and the decision
events on the zone timeline. The simulated nodes and their plant live on the instance's loop thread: the
tests touch them only through :func:`on_loop`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from hydrovisor.protocol.messages import Event
from hydrovisor.sim import Faults, PlantOptions
from tests.helpers import http, wait_until
from tests.zone_plant import FAST_SETTINGS, PlantZone

ZoneFactory = Callable[..., PlantZone]

SLOW_CLEAN_FILL = PlantOptions(clean_capacity_l=40.0, solution_capacity_l=20.0, clean_start_pct=0.0,
                               solution_start_pct=0.0, mains_fill_lpm=6.0, pump_flow_lpm=60.0)
"""Empty tanks and a slow mains: the clean fill lasts 360 zone s (18 real s at scale 20)."""
LONG_SOLUTION_FILL = PlantOptions(clean_capacity_l=400.0, solution_capacity_l=200.0, clean_start_pct=100.0,
                                  solution_start_pct=0.0, mains_fill_lpm=60.0, pump_flow_lpm=60.0)
"""A full clean tank and an empty solution tank: the solution fill lasts 180 zone s (9 real s)."""
STARVED_SOLUTION_FILL = PlantOptions(clean_capacity_l=40.0, solution_capacity_l=100.0, clean_start_pct=0.0,
                                     solution_start_pct=0.0, mains_fill_lpm=60.0, pump_flow_lpm=60.0)
"""One full clean tank (36 l) cannot fill the solution tank to its max switch (90 l): it runs dry mid-fill."""
FULL_TANKS = PlantOptions(clean_capacity_l=40.0, solution_capacity_l=20.0, clean_start_pct=100.0,
                          solution_start_pct=100.0, mains_fill_lpm=60.0, pump_flow_lpm=60.0)

PLANT_ROLES = ("pump_main", "valve_clean_fill", "valve_clean_supply", "valve_solution_fill",
               "valve_solution_supply", "valve_irrigation")


# helpers --------------------------------------------------------------------------------------------------


def on_loop(zone: PlantZone, fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` on the instance's loop thread, where the nodes and their plant run."""
    async def call() -> Any:
        return fn(*args)

    return zone.instance.loop.run(call())


def set_faults(zone: PlantZone, node: str, faults: Faults) -> None:
    """Change a node's failure modes now."""
    on_loop(zone, zone.nodes[node].set_faults, faults)


def plant(zone: PlantZone) -> dict[str, Any]:
    """What physically runs (and what the node was told), read on the loop."""
    def read() -> dict[str, Any]:
        physics = zone.physics
        physics.update()
        return {"pumps": sorted(physics.pumps), "valves": sorted(physics.valves),
                "commanded": sorted(physics.commanded), "switches": physics.switches(),
                "clean_l": physics.clean_l, "solution_l": physics.solution_l}

    result: dict[str, Any] = on_loop(zone, read)
    return result


def stopped(zone: PlantZone) -> bool:
    """No pump runs and no valve is open, physically."""
    now = plant(zone)
    return not now["pumps"] and not now["valves"]


def started(reply: Any) -> str:
    """The id of a workflow a 202 started."""
    assert reply.status == 202, reply.raw
    wf_id: str = reply.json()["data"]["id"]
    return wf_id


def dump(record: dict[str, Any]) -> str:
    """The record, short: what a failed assertion needs to show."""
    return json.dumps({"status": record["status"], "reason_code": record["reason_code"],
                       "message": record["message"], "stages": stages(record),
                       "commands": [(*c, e["error_code"]) for c, e in zip(commands(record), record["commands"],
                                                                          strict=True)]})


def commands(record: dict[str, Any]) -> list[tuple[str, str, Any, str | None]]:
    """``(role, cmd, state, status)`` of every command the workflow sent, in order."""
    return [(c["role"], c["cmd"], c["params"].get("state"), c["status"]) for c in record["commands"]]


def stages(record: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(s["name"], s["outcome"], s["reason_code"]) for s in record["stages"]]


def timeline(zone: PlantZone, wf_id: str | None = None) -> list[dict[str, Any]]:
    """The zone's timeline (only the workflow's entries when ``wf_id`` is given)."""
    items = zone.events()
    if wf_id is None:
        return items
    return [e for e in items if e["correlation_id"] == wf_id or (e["details"] or {}).get("workflow_id") == wf_id]


def decisions(zone: PlantZone, wf_id: str) -> list[tuple[str, str | None, str | None]]:
    """``(type, decision, reason_code)`` of the workflow's timeline entries."""
    return [(e["type"], e["decision"], e["reason_code"]) for e in timeline(zone, wf_id)]


def wait_for(read: Callable[[], Any], accept: Callable[[Any], bool], what: str, timeout: float = 10.0) -> Any:
    """Poll ``read()`` until ``accept`` takes its value; returns that value."""
    def check() -> Any:
        value = read()
        return value if accept(value) else None

    return wait_until(check, timeout=timeout, interval=0.02, what=what)


def wait_plant(zone: PlantZone, predicate: Callable[[dict[str, Any]], bool], what: str,
               timeout: float = 30.0) -> dict[str, Any]:
    state: dict[str, Any] = wait_for(lambda: plant(zone), predicate, what, timeout)
    return state


def alerts(zone: PlantZone, status: str = "ACTIVE") -> list[dict[str, Any]]:
    reply = http("GET", f"{zone.base_url}/api/v1/alerts?zone_uid={zone.zone_uid}&status={status}")
    assert reply.status == 200, reply.raw
    items: list[dict[str, Any]] = reply.json()["data"]
    return items


def manual(zone: PlantZone, channel: str, state: int) -> Any:
    """``POST /api/v1/commands`` ``set_relay`` on the irrigation node (an operator's manual actuation)."""
    return http("POST", f"{zone.base_url}/api/v1/commands", body={
        "cmd": "set_relay", "node_uid": zone.uids["irrig"], "channel": channel, "params": {"state": state},
        "zone_uid": zone.zone_uid})


def stored_command(zone: PlantZone, cmd_id: str) -> dict[str, Any] | None:
    """The command's row; None while it does not exist (a workflow records a cmd_id before it is stored)."""
    reply = http("GET", f"{zone.base_url}/api/v1/commands/{cmd_id}")
    if reply.status == 404:
        return None
    assert reply.status == 200, reply.raw
    row: dict[str, Any] = reply.json()["data"]
    return row


def command_row(zone: PlantZone, cmd_id: str) -> dict[str, Any]:
    row = stored_command(zone, cmd_id)
    assert row is not None, f"command {cmd_id} not stored"
    return row


def terminal(zone: PlantZone, cmd_id: str) -> dict[str, Any]:
    """The command's row once it is terminal."""
    found: dict[str, Any] = wait_for(lambda: stored_command(zone, cmd_id),
                                     lambda r: r is not None and r["status"] not in ("QUEUED", "SENT", "ACK"),
                                     f"{cmd_id} to end")
    return found


def command_done(zone: PlantZone, wf_id: str, role: str, state: int) -> dict[str, Any]:
    """Wait until the workflow's ``set_relay{state}`` on ``role`` is DONE in the command store (the workflow's
    own record shows a status only from its next write)."""
    def cmd_id() -> str | None:
        return next((c["cmd_id"] for c in zone.workflow(wf_id)["commands"]
                     if c["role"] == role and c["params"] == {"state": state}), None)

    found: str = wait_until(cmd_id, timeout=20, interval=0.02, what=f"{role} set_relay {state} sent")
    row = terminal(zone, found)
    assert row["status"] == "DONE", row
    return row


def error(reply: Any) -> dict[str, Any]:
    body: dict[str, Any] = reply.json()
    assert body["status"] == "error", body
    return body


def settings(**timeouts: float) -> dict[str, Any]:
    return {**FAST_SETTINGS, "timeouts": {**FAST_SETTINGS["timeouts"], **timeouts}}


# 1. sensor_state_inconsistent -------------------------------------------------------------------------------


def test_inconsistent_switches_at_startup_fail_before_anything_starts(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(faults={"irrig": Faults(inconsistent_levels=("clean",))})
    record = zone.run("two_tank_startup", timeout=30)
    assert (record["status"], record["reason_code"]) == ("failed", "sensor_state_inconsistent"), dump(record)
    assert stages(record) == [("startup", "failed", "sensor_state_inconsistent")], dump(record)
    # only the probe went out: nothing was started, so there was nothing to stop
    assert commands(record) == [("storage_state", "state", None, "DONE")], dump(record)
    assert stopped(zone)
    assert ("WORKFLOW_ENDED", "fail", "sensor_state_inconsistent") in decisions(zone, record["id"])


def test_inconsistent_switches_mid_fill_stop_the_fill_confirmed(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=SLOW_CLEAN_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "valve_clean_fill" in p["valves"], "the clean fill to run")
    set_faults(zone, "irrig", Faults(inconsistent_levels=("clean",)))
    record = zone.wait_end(wf_id, 30)
    assert (record["status"], record["reason_code"]) == ("failed", "sensor_state_inconsistent"), dump(record)
    assert stages(record)[-1] == ("clean_fill", "failed", "sensor_state_inconsistent"), dump(record)
    assert commands(record)[-2:] == [("valve_clean_fill", "set_relay", 1, "DONE"),
                                     ("valve_clean_fill", "set_relay", 0, "DONE")], dump(record)
    assert stopped(zone)
    assert ("WORKFLOW_ENDED", "fail", "sensor_state_inconsistent") in decisions(zone, wf_id)


# 2. source empty during the solution fill -----------------------------------------------------------------


def test_clean_tank_running_dry_mid_solution_fill_fails_pump_first(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=STARVED_SOLUTION_FILL)
    record = zone.run("two_tank_startup", timeout=40)
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_source_empty"), dump(record)
    assert stages(record) == [("startup", "ok", None), ("clean_fill", "ok", None),
                              ("solution_fill", "failed", "solution_fill_source_empty")], dump(record)
    fill = [c for c in commands(record) if c[0] != "storage_state"][2:]  # after the clean fill's open and close
    assert fill == [
        ("valve_clean_supply", "set_relay", 1, "DONE"), ("valve_solution_fill", "set_relay", 1, "DONE"),
        ("pump_main", "set_relay", 1, "DONE"),
        # the pump stops before the valves close, each confirmed
        ("pump_main", "set_relay", 0, "DONE"), ("valve_clean_supply", "set_relay", 0, "DONE"),
        ("valve_solution_fill", "set_relay", 0, "DONE")], dump(record)
    # the pump's stop was DONE before the first valve's close was even stored
    ids = [c["cmd_id"] for c in record["commands"] if c["role"] != "storage_state"][5:7]
    pump_stop, valve_close = (command_row(zone, cmd_id) for cmd_id in ids)
    assert (pump_stop["channel"], valve_close["channel"]) == ("pump_main", "valve_clean_supply")
    assert pump_stop["terminal_at"] <= valve_close["created_at"], (pump_stop, valve_close)
    now = plant(zone)
    assert not now["pumps"] and not now["valves"], now
    assert not now["switches"]["level_clean_min"] and not now["switches"]["level_solution_max"], now
    kinds = [e["type"] for e in timeline(zone)]
    assert "SOLUTION_FILL_SOURCE_EMPTY" in kinds, kinds
    assert ("WORKFLOW_ENDED", "fail", "solution_fill_source_empty") in decisions(zone, record["id"])


# 3. events and timeouts end stages ------------------------------------------------------------------------


def test_clean_fill_ends_on_the_nodes_completion_well_before_its_timeout(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    record = zone.run("two_tank_startup", timeout=60)
    assert record["status"] == "completed", dump(record)
    fill = record["stages"][1]
    assert fill["name"] == "clean_fill" and fill["outcome"] == "ok", dump(record)
    # 36 l at 60 l/min: ~36 zone s, far below the 600 s timeout; ended by the max switch / the node's event
    assert fill["ended_at"] - fill["started_at"] < 120, fill
    assert [c for c in commands(record) if c[0] == "valve_clean_fill"] == [
        ("valve_clean_fill", "set_relay", 1, "DONE"), ("valve_clean_fill", "set_relay", 0, "DONE")], dump(record)
    assert "CLEAN_FILL_COMPLETED" in [e["type"] for e in timeline(zone)]
    assert not [d for d in decisions(zone, record["id"]) if d[2] == "clean_fill_timeout"]
    assert stopped(zone)


def test_clean_fill_timeout_with_a_confirmed_stop_is_a_completion(plant_zone: ZoneFactory) -> None:
    # 30 zone s of mains fill the 100 l clean tank to ~30 %: enough for the 20 l solution tank, far from full
    big_clean = PlantOptions(clean_capacity_l=100.0, solution_capacity_l=20.0, clean_start_pct=0.0,
                             solution_start_pct=0.0, mains_fill_lpm=60.0, pump_flow_lpm=60.0)
    zone = plant_zone(plant=big_clean, settings=settings(clean_fill_s=30))
    record = zone.run("two_tank_startup", timeout=60)
    assert record["status"] == "completed", dump(record)
    assert [s[0] for s in stages(record)] == ["startup", "clean_fill", "solution_fill", "prepare_recirculation",
                                             "ready"], dump(record)
    clean = [c for c in commands(record) if c[0] == "valve_clean_fill"]
    assert clean == [("valve_clean_fill", "set_relay", 1, "DONE"), ("valve_clean_fill", "set_relay", 0, "DONE")]
    assert ("WORKFLOW_DECISION", "run", "clean_fill_timeout") in decisions(zone, record["id"])
    assert "CLEAN_FILL_COMPLETED" not in [e["type"] for e in timeline(zone)]
    assert stopped(zone)


def test_clean_fill_timeout_too_short_fails_later_for_the_empty_source(plant_zone: ZoneFactory) -> None:
    # 5 zone s of a slow mains leave the clean tank below its min switch: the solution fill must not start
    zone = plant_zone(plant=SLOW_CLEAN_FILL, settings=settings(clean_fill_s=5))
    record = zone.run("two_tank_startup", timeout=30)
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_source_empty"), dump(record)
    assert stages(record)[1:] == [("clean_fill", "ok", None),
                                  ("solution_fill", "failed", "solution_fill_source_empty")], dump(record)
    assert [c for c in commands(record) if c[0] != "storage_state"] == [
        ("valve_clean_fill", "set_relay", 1, "DONE"), ("valve_clean_fill", "set_relay", 0, "DONE")], dump(record)
    assert ("WORKFLOW_DECISION", "run", "clean_fill_timeout") in decisions(zone, record["id"])
    assert stopped(zone)


def _leak(zone: PlantZone) -> dict[str, Any]:
    """The node reports a leak; returns the zone's timeline entry of it."""
    assert zone.instance.loop.run(zone.nodes["irrig"].publish_event("storage_state", "solution_fill_leak_detected"))
    entry: dict[str, Any] = wait_until(
        lambda: next((e for e in timeline(zone) if e["type"] == "SOLUTION_FILL_LEAK_DETECTED"), None),
        timeout=10, interval=0.02, what="the leak on the zone timeline")
    return entry


def _ended_on_leak(zone: PlantZone, wf_id: str) -> None:
    record = zone.wait_stage(wf_id, "prepare_recirculation", 30)  # or its end, whichever comes first
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_leak_detected"), dump(record)
    assert stages(record)[-1] == ("solution_fill", "failed", "solution_fill_leak_detected"), dump(record)
    assert [c for c in commands(record) if c[0] != "storage_state"][-3:] == [
        ("pump_main", "set_relay", 0, "DONE"), ("valve_clean_supply", "set_relay", 0, "DONE"),
        ("valve_solution_fill", "set_relay", 0, "DONE")], dump(record)
    now = plant(zone)
    assert not now["pumps"] and not now["valves"], now
    assert not now["switches"]["level_solution_max"], now  # it ended on the event, not on the level
    assert ("WORKFLOW_ENDED", "fail", "solution_fill_leak_detected") in decisions(zone, wf_id)


def test_a_leak_event_from_the_node_ends_the_solution_fill_early(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=LONG_SOLUTION_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    # well into the fill: the workflow waits on it by now
    wait_plant(zone, lambda p: "pump_main" in p["pumps"] and p["solution_l"] > 20, "the solution fill under way")
    _leak(zone)
    _ended_on_leak(zone, wf_id)


def test_a_leak_event_before_the_pump_start_is_answered_is_not_lost(plant_zone: ZoneFactory) -> None:
    # the node answers 0.5 s late: the pump runs, and the node reports a leak, before the workflow hears DONE
    shorter = PlantOptions(clean_capacity_l=100.0, solution_capacity_l=60.0, clean_start_pct=100.0,
                           solution_start_pct=0.0, mains_fill_lpm=60.0, pump_flow_lpm=60.0)
    zone = plant_zone(plant=shorter, faults={"irrig": Faults(delay_reply_s=0.5)})
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "pump_main" in p["pumps"], "the pump started", timeout=30)
    leak = _leak(zone)
    pump_start = command_done(zone, wf_id, "pump_main", 1)
    assert leak["created_at"] < pump_start["terminal_at"], (leak, pump_start)  # the case under test
    _ended_on_leak(zone, wf_id)


# 4. a stop that is never confirmed ------------------------------------------------------------------------


@pytest.fixture
def short_command_timeout(monkeypatch: pytest.MonkeyPatch) -> float:
    """Commands without a duration time out after 1.5 s instead of DOMAIN §1's 30 s: the stop's three attempts
    and the compensating stop's fit in seconds (at 30 s they take 3-4 minutes). Nothing else changes."""
    seconds = 1.5
    monkeypatch.setattr("hydrovisor.commands.plane.DEFAULT_TIMEOUT_S", seconds)
    return seconds


def _unconfirmed_clean_fill(record: dict[str, Any]) -> None:
    assert (record["status"], record["reason_code"]) == ("failed", "clean_fill_stop_not_confirmed"), dump(record)
    assert stages(record)[-1] == ("clean_fill", "failed", "clean_fill_stop_not_confirmed"), dump(record)
    sent = commands(record)
    start = sent.index(("valve_clean_fill", "set_relay", 1, "DONE"))
    after = sent[start + 1:]
    stops = [c for c in after if c[:3] == ("valve_clean_fill", "set_relay", 0)]
    # the timeout's stop, retried, then the compensating stop's: none DONE, so none taken as confirmed
    assert len(stops) >= 6 and not [c for c in after if c[3] == "DONE"], dump(record)
    assert not [c for c in after if c[0] not in ("valve_clean_fill", "storage_state")], dump(record)


def test_unanswered_stops_fail_the_stage_stop_not_confirmed(plant_zone: ZoneFactory,
                                                            short_command_timeout: float) -> None:
    zone = plant_zone(plant=SLOW_CLEAN_FILL, settings=settings(clean_fill_s=40))
    wf_id = started(zone.start_workflow("two_tank_startup"))
    command_done(zone, wf_id, "valve_clean_fill", 1)
    set_faults(zone, "irrig", Faults(drop_reply=1.0))  # the node acts but never answers again
    record = zone.wait_end(wf_id, 90)
    _unconfirmed_clean_fill(record)
    assert all(c[3] == "TIMEOUT" for c in commands(record)[3:]), dump(record)
    ids = decisions(zone, wf_id)
    assert ("WORKFLOW_DECISION", "run", "clean_fill_timeout") not in ids, ids  # not a completion
    assert ("WORKFLOW_ENDED", "fail", "clean_fill_stop_not_confirmed") in ids, ids
    assert [a for a in alerts(zone) if a["code"] == "biz_stop_not_confirmed"], alerts(zone)
    assert stopped(zone)  # the node did close the valve: only its answers were lost


def test_node_offline_mid_stage_leaves_the_stop_unconfirmed_and_says_so(plant_zone: ZoneFactory,
                                                                        short_command_timeout: float) -> None:
    zone = plant_zone(plant=SLOW_CLEAN_FILL, settings=settings(clean_fill_s=40))
    wf_id = started(zone.start_workflow("two_tank_startup"))
    command_done(zone, wf_id, "valve_clean_fill", 1)
    assert zone.instance.loop.run(zone.nodes["irrig"].go_offline(120.0))
    record = zone.wait_end(wf_id, 90)
    _unconfirmed_clean_fill(record)
    assert ("WORKFLOW_ENDED", "fail", "clean_fill_stop_not_confirmed") in decisions(zone, wf_id)
    assert [a for a in alerts(zone) if a["code"] == "biz_stop_not_confirmed"], alerts(zone)
    # the valve is still open (the node is away), and the workflow does not claim otherwise
    assert plant(zone)["valves"] == ["valve_clean_fill"]


def test_a_pump_whose_node_falls_silent_is_stopped_at_once_and_the_workflow_fails_closed(
        plant_zone: ZoneFactory, short_command_timeout: float) -> None:
    # the server discards everything the irrigation node sends (its level switches and replies) while it
    # still receives commands: the server is blind to the clean tank the pump is emptying
    zone = plant_zone(plant=LONG_SOLUTION_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    command_done(zone, wf_id, "pump_main", 1)
    silenced_at = time.monotonic()
    reply = http("POST", zone.base_url + "/admin/chaos/inject",
                 body={"type": "node_silence", "duration": 60, "node_uid": zone.uids["irrig"]})
    assert reply.status == 202, reply.raw
    wait_plant(zone, lambda p: "pump_main" not in p["pumps"], "the pump stopped", timeout=20)
    print(f"pump stopped {time.monotonic() - silenced_at:.2f} s after its node fell silent "
          f"(limit 45 zone s = {45 / 20:.2f} s at scale 20)")
    ids = decisions(zone, wf_id)
    assert ("WORKFLOW_DECISION", "fail", "pump_node_silent") in ids, ids
    sent = commands(zone.workflow(wf_id))
    start = sent.index(("pump_main", "set_relay", 1, "DONE"))
    assert sent[start + 1][:3] == ("pump_main", "set_relay", 0), sent  # the pump first, before any probe
    record = zone.wait_end(wf_id, 60)
    # its replies never arrive: nothing is confirmed, and the workflow does not claim otherwise
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_stop_not_confirmed"), dump(record)
    assert [a for a in alerts(zone) if a["code"] == "biz_stop_not_confirmed"], alerts(zone)
    assert "pump_main" not in plant(zone)["pumps"]


def test_a_tank_running_dry_while_the_pump_start_is_unanswered_is_stopped_beside_the_workflow(
        plant_zone: ZoneFactory) -> None:
    # the node acts at once and answers 2 s late; the clean tank empties in half a real second: it runs dry
    # while the workflow still waits for the start's DONE, when no stage condition watches it yet
    fast = PlantOptions(clean_capacity_l=40.0, solution_capacity_l=200.0, clean_start_pct=100.0,
                        solution_start_pct=0.0, mains_fill_lpm=60.0, pump_flow_lpm=240.0)
    zone = plant_zone(plant=fast, faults={"irrig": Faults(delay_reply_s=1.0)})
    wf_id = started(zone.start_workflow("two_tank_startup"))
    record = zone.wait_end(wf_id, 90)
    assert ("WORKFLOW_DECISION", "stop", "pump_source_empty") in decisions(zone, wf_id), decisions(zone, wf_id)
    sent = commands(record)
    start = next(i for i, c in enumerate(sent) if c[:3] == ("pump_main", "set_relay", 1))
    assert sent[start + 1][:3] == ("pump_main", "set_relay", 0), dump(record)  # before the start was answered
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_source_empty"), dump(record)
    assert stopped(zone)


def test_a_cancel_while_the_pump_start_is_unanswered_stops_the_pump_without_waiting_for_that_reply(
        plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=LONG_SOLUTION_FILL, faults={"irrig": Faults(delay_reply_s=1.0)})
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "pump_main" in p["pumps"], "the pump started", timeout=60)
    reply = http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/workflows/{wf_id}/cancel")
    assert reply.status == 202, reply.raw
    record = zone.wait_end(wf_id, 60)
    assert ("WORKFLOW_DECISION", "stop", "cancelled") in decisions(zone, wf_id), decisions(zone, wf_id)
    refs = record["commands"]
    start = next(i for i, c in enumerate(refs) if c["role"] == "pump_main" and c["params"] == {"state": 1})
    stop = refs[start + 1]
    assert (stop["role"], stop["params"]) == ("pump_main", {"state": 0}), dump(record)
    # the stop went out while the start's reply was still on its way
    assert command_row(zone, stop["cmd_id"])["created_at"] < command_row(zone, refs[start]["cmd_id"])["terminal_at"]
    assert (record["status"], record["reason_code"]) == ("cancelled", "cancelled"), dump(record)
    assert stopped(zone)


def test_a_stop_whose_write_ahead_row_is_held_up_goes_out_before_its_row(
        plant_zone: ZoneFactory, short_command_timeout: float) -> None:
    zone = plant_zone(plant=LONG_SOLUTION_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    command_done(zone, wf_id, "pump_main", 1)
    services = zone.instance.app.services
    silence = {"type": "node_silence", "duration": 60, "node_uid": zone.uids["irrig"]}

    async def silence_while_workflow_rows_cannot_be_written() -> tuple[Any, float | None]:
        # a database going down can take seconds to fail a write: here the write waits on a lock instead
        async with services.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE zone_workflows IN EXCLUSIVE MODE")
            reply = await asyncio.to_thread(http, "POST", zone.base_url + "/admin/chaos/inject", body=silence)
            silenced_at = time.monotonic()
            while time.monotonic() - silenced_at < 8.0:
                zone.physics.update()
                if "pump_main" not in zone.physics.pumps:
                    return reply, time.monotonic() - silenced_at
                await asyncio.sleep(0.05)
            return reply, None

    reply, off_after = zone.instance.loop.run(silence_while_workflow_rows_cannot_be_written())
    assert reply.status == 202, reply.raw
    assert off_after is not None, "the pump ran on while its stop waited for the workflow's row"
    print(f"pump stopped {off_after:.2f} s after its node fell silent, its stop's row still locked")
    record = zone.wait_end(wf_id, 60)
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_stop_not_confirmed"), dump(record)
    assert "pump_main" not in plant(zone)["pumps"]


def test_a_stop_refused_for_the_nodes_clock_is_sent_again_and_accepted(plant_zone: ZoneFactory) -> None:
    # the pump start is acted on and answered late; meanwhile the node's clock falls two minutes behind (it
    # took a late time answer): the cancel's stop beside that start is refused timestamp_expired; the server
    # tells the node the time and sends that stop again at once, and the node accepts it
    zone = plant_zone(plant=LONG_SOLUTION_FILL, faults={"irrig": Faults(delay_reply_s=0.5)})
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "pump_main" in p["pumps"], "the pump started", timeout=60)
    on_loop(zone, zone.nodes["irrig"].skew_clock, -120)
    reply = http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/workflows/{wf_id}/cancel")
    assert reply.status == 202, reply.raw
    record = zone.wait_end(wf_id, 60)
    assert ("WORKFLOW_DECISION", "retry", "stop_refused_for_clock") in decisions(zone, wf_id), decisions(zone, wf_id)
    stops = [(c["status"], c["error_code"]) for c in record["commands"]
             if c["role"] == "pump_main" and c["params"] == {"state": 0}]
    assert stops[:2] == [("ERROR", "timestamp_expired"), ("DONE", None)], dump(record)
    assert (record["status"], record["reason_code"]) == ("cancelled", "cancelled"), dump(record)
    assert stopped(zone)


# 5. a start that fails after an earlier start succeeded -------------------------------------------------


def test_pump_start_failing_after_the_valves_opened_closes_them_before_the_outcome(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(faults={"irrig": Faults(overcurrent=1.0)})  # valves open fine; the pump trips
    record = zone.run("two_tank_startup", timeout=40)
    assert (record["status"], record["reason_code"]) == ("failed", "solution_fill_start_failed"), dump(record)
    assert stages(record)[-1] == ("solution_fill", "failed", "solution_fill_start_failed"), dump(record)
    fill = [c for c in record["commands"] if c["stage"] == "solution_fill"]
    sent = [(c["role"], c["params"].get("state"), c["status"]) for c in fill]
    trip = sent.index(("pump_main", 1, "ERROR"))
    assert [c for c in sent[:trip] if c[0] != "storage_state"] == [
        ("valve_clean_supply", 1, "DONE"), ("valve_solution_fill", 1, "DONE")], dump(record)
    assert fill[trip]["error_code"] == "overcurrent", dump(record)
    # the compensating stop: the pump first (stopped DONE, or shown off by a DONE probe), then the opened valves
    compensation = sent[trip + 1:]
    valves = [c for c in compensation if c[0].startswith("valve_")]
    assert valves == [("valve_clean_supply", 0, "DONE"), ("valve_solution_fill", 0, "DONE")], dump(record)
    before_valves = compensation[:compensation.index(valves[0])]
    assert ("pump_main", 0, "DONE") in before_valves or ("storage_state", None, "DONE") in before_valves, dump(record)
    assert stopped(zone)
    # the outcome was stored after the compensation: WORKFLOW_ENDED is the workflow's last entry, later than
    # the last DONE of the compensating stop
    entries = timeline(zone, record["id"])
    assert (entries[-1]["type"], entries[-1]["reason_code"]) == ("WORKFLOW_ENDED", "solution_fill_start_failed")
    last = command_row(zone, fill[-1]["cmd_id"])
    assert last["status"] == "DONE" and last["terminal_at"] <= min(entries[-1]["created_at"], record["ended_at"])


# 6. a welded relay ---------------------------------------------------------------------------------------


def _snapshot(zone: PlantZone) -> dict[str, Any]:
    """What the node reports (``state{}`` on ``storage_state``, sent by hand)."""
    reply = http("POST", f"{zone.base_url}/api/v1/commands", body={
        "cmd": "state", "node_uid": zone.uids["irrig"], "channel": "storage_state", "zone_uid": zone.zone_uid})
    assert reply.status == 202, reply.raw
    cmd_id = reply.json()["data"]["cmd_id"]
    row = terminal(zone, cmd_id)
    assert row["status"] == "DONE", row
    snapshot: dict[str, Any] = row["details"]["snapshot"]
    return snapshot


def test_a_welded_clean_fill_valve_is_not_caught(plant_zone: ZoneFactory) -> None:
    """The probe reports what the node *commanded*; a valve has no current, and the mains no flow sensor: the
    welded fill valve goes unnoticed and the startup ends ``ready`` with mains water still running in."""
    zone = plant_zone(faults={"irrig": Faults(stuck_relays=("valve_clean_fill",))})
    record = zone.run("two_tank_startup", timeout=60)
    assert record["status"] == "completed", dump(record)
    assert all(c[3] == "DONE" for c in commands(record)), dump(record)  # the close was DONE, and believed
    now = plant(zone)
    assert now["valves"] == ["valve_clean_fill"] and now["commanded"] == [], now  # physically open
    assert _snapshot(zone)["valve_clean_fill"] is False  # what every probe saw
    assert not alerts(zone)


def test_a_welded_main_pump_is_caught_by_its_current(plant_zone: ZoneFactory) -> None:
    """The probes believe the node (pump off), but the pump's current gives it away: once ``no_flow_window_s``
    has passed since the stop the zone raises ``biz_pump_stuck_on`` (critical) and locks pump starts. Whether
    the startup sees a lock before its next start (it fails, refused) or ends ``ready`` first depends on how
    fast its stages follow each other: both are honest."""
    zone = plant_zone(faults={"irrig": Faults(stuck_relays=("pump_main",))},
                      settings={**settings(), "safety": {"no_flow_window_s": 10}})
    record = zone.run("two_tank_startup", timeout=60)
    if record["status"] == "failed":  # a lock (stuck-on, or no flow from the dead-headed pump) refused a start
        assert record["reason_code"] == "prepare_recirculation_start_failed", dump(record)
        refusal = next(e for c, e in zip(commands(record), record["commands"], strict=True)
                       if c[3] == "REFUSED:pump_safety_blocked")
        assert refusal["error_code"] in ("safety_lock_biz_pump_stuck_on", "safety_lock_biz_no_flow"), dump(record)
    else:
        assert record["status"] == "completed", dump(record)
        assert all(c[3] == "DONE" for c in commands(record)), dump(record)
    now = plant(zone)
    assert now["pumps"] == ["pump_main"] and now["commanded"] == [], now  # running dead-headed, valves closed
    assert _snapshot(zone)["pump_main"] is False  # what every probe saw
    stuck = wait_until(lambda: [a for a in alerts(zone) if a["code"] == "biz_pump_stuck_on"], timeout=10,
                       interval=0.05, what="biz_pump_stuck_on")
    assert stuck[0]["severity"] == "critical" and stuck[0]["details"]["current"] > 1000, stuck
    refused = manual(zone, "pump_main", 1)
    assert refused.status == 409, refused.raw
    assert error(refused)["code"] == "pump_safety_blocked", refused.raw
    assert error(refused)["reason_code"] in ("safety_lock_biz_pump_stuck_on", "safety_lock_biz_no_flow"), refused.raw


# 7. the node's emergency stop ----------------------------------------------------------------------------


def test_node_emergency_stop_fails_the_workflow_and_latches_the_zone(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "valve_clean_fill" in p["valves"], "the clean fill to run")
    on_loop(zone, zone.nodes["irrig"].emergency_stop)
    record = zone.wait_end(wf_id, 30)
    assert (record["status"], record["reason_code"]) == ("failed", "emergency_stop"), dump(record)
    assert stages(record)[-1] == ("clean_fill", "failed", "emergency_stop"), dump(record)
    # the compensating stop: the node shows everything off (a DONE probe), or a stop is DONE
    assert all(c[3] == "DONE" for c in commands(record)), dump(record)
    assert stopped(zone)
    kinds = [(e["type"], e["reason_code"]) for e in timeline(zone)]
    assert ("EMERGENCY_STOP_ACTIVATED", None) in kinds and ("EMERGENCY_STOP", "emergency_stop_active") in kinds
    assert ("WORKFLOW_ENDED", "fail", "emergency_stop") in decisions(zone, wf_id)
    # latched: no workflow, no manual pump start
    refused = zone.start_workflow("two_tank_startup")
    assert refused.status == 409 and error(refused)["code"] == "emergency_stop_active", refused.raw
    manual_start = manual(zone, "pump_main", 1)
    assert manual_start.status == 409, manual_start.raw
    assert (error(manual_start)["code"], error(manual_start)["reason_code"]) == (
        "pump_safety_blocked", "emergency_stop_active")
    # an operator clears it (audited), the button is released: a new startup runs to the end
    cleared = http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/emergency-stop/clear",
                   body={"reason": "checked the plant"})
    assert cleared.status == 200 and cleared.json()["data"]["estop_active"] is False, cleared.raw
    on_loop(zone, zone.nodes["irrig"].release_emergency_stop)
    assert ("EMERGENCY_STOP_CLEARED", "estop_cleared") in [(e["type"], e["reason_code"]) for e in timeline(zone)]
    again = zone.run("two_tank_startup", timeout=30)
    assert again["status"] == "completed", dump(again)
    assert stopped(zone)


def test_a_node_in_emergency_stop_whose_event_was_lost_latches_the_zone_on_its_first_refusal(
        plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    on_loop(zone, setattr, zone.nodes["irrig"].actions, "estop", True)  # pressed; its event never reached us
    wf_id = started(zone.start_workflow("two_tank_startup"))
    record = zone.wait_end(wf_id, 30)
    assert record["status"] == "failed", dump(record)
    starts = [c for c in record["commands"] if c["cmd"] == "set_relay" and c["params"].get("state") in (1, True)]
    refused = [c for c in starts if c["status"] == "ERROR" and c["error_code"] == "estop_active"]
    assert len(starts) == len(refused) == 1, dump(record)  # the refusal latched the zone: no second start
    assert stopped(zone)
    automation = http("GET", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/automation").json()["data"]
    assert automation["estop_active"] is True and "estop_active" in automation["estop_reason"], automation
    assert ("EMERGENCY_STOP", "emergency_stop_active") in [(e["type"], e["reason_code"]) for e in timeline(zone)]
    again = zone.start_workflow("two_tank_startup")
    assert again.status == 409 and error(again)["code"] == "emergency_stop_active", again.raw


def test_a_latch_that_arrives_while_the_zone_reloads_survives_the_older_snapshot(plant_zone: ZoneFactory) -> None:
    zone = plant_zone()
    services = zone.instance.app.services
    event = Event(event_code="EMERGENCY_STOP_ACTIVATED", event_code_raw="emergency_stop_activated")

    async def latch_during_reload() -> None:
        # the latch's write waits on a lock while the reload's snapshot (reads only) is taken without it
        async with services.db.pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE zone_automation IN SHARE ROW EXCLUSIVE MODE")
            services.zones.reload(zone.zone_uid)
            services.zones.device_report(zone.zone_uid, zone.uids["irrig"], None, event, time.time())
            await asyncio.sleep(1.0)

    zone.instance.loop.run(latch_during_reload())
    wait_until(lambda: http("GET", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/automation").json()["data"][
        "estop_active"], timeout=10, what="the latch stored")
    refused = manual(zone, "pump_main", 1)
    assert refused.status == 409, refused.raw
    assert error(refused)["reason_code"] == "emergency_stop_active", refused.raw
    assert stopped(zone)


# 8. the operator's emergency stop ------------------------------------------------------------------------


def test_operator_emergency_stop_mid_solution_fill(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=LONG_SOLUTION_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "pump_main" in p["pumps"], "the solution fill to pump")
    reply = http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/emergency-stop",
                 body={"reason": "test"}, timeout=60)
    assert reply.status == 202, reply.raw
    report = reply.json()["data"]
    assert report["latched"] is True and report["workflow_id"] == wf_id, report
    assert [s["role"] for s in report["stops"]] == list(PLANT_ROLES), report
    record = zone.wait_end(wf_id, 30)
    assert (record["status"], record["reason_code"]) == ("failed", "emergency_stop"), dump(record)
    assert stages(record)[-1] == ("solution_fill", "failed", "emergency_stop"), dump(record)
    assert stopped(zone)
    assert ("WORKFLOW_ENDED", "fail", "emergency_stop") in decisions(zone, wf_id)
    assert ("EMERGENCY_STOP", "stop", "emergency_stop_active") in [
        (e["type"], e["decision"], e["reason_code"]) for e in timeline(zone)]
    refused = zone.start_workflow("two_tank_startup")
    assert refused.status == 409 and error(refused)["code"] == "emergency_stop_active", refused.raw
    # every stop confirmed: the pump and the open valves DONE, the closed ones "already off" (which the
    # node's snapshot confirms)
    unconfirmed = [(s["role"], s["status"]) for s in report["stops"] if not s["confirmed"]]
    assert report["all_confirmed"] is True and not unconfirmed, unconfirmed


def test_an_emergency_stop_that_cannot_reach_the_node_is_sent_again_until_it_is_confirmed(
        plant_zone: ZoneFactory, short_command_timeout: float) -> None:
    zone = plant_zone(plant=LONG_SOLUTION_FILL)
    started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "pump_main" in p["pumps"], "the solution fill to pump")
    assert zone.instance.loop.run(zone.nodes["irrig"].go_offline(4.0))  # away while the operator presses stop
    reply = http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/emergency-stop",
                 body={"reason": "test"}, timeout=60)
    assert reply.status == 202, reply.raw
    report = reply.json()["data"]
    assert report["all_confirmed"] is False and "pump_main" in report["resending"], report
    wait_until(lambda: ("EMERGENCY_STOP_CONFIRMED", "estop_confirmed") in [
        (e["type"], e["reason_code"]) for e in timeline(zone)], timeout=30, what="the stop confirmed by a resend")
    assert stopped(zone)


# 9. cancel -----------------------------------------------------------------------------------------------


def test_cancel_mid_stage_stops_confirmed_then_ends_cancelled(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=SLOW_CLEAN_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    wait_plant(zone, lambda p: "valve_clean_fill" in p["valves"], "the clean fill to run")
    url = f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/workflows/{wf_id}/cancel"
    reply = http("POST", url)
    assert reply.status == 202 and reply.json()["data"]["cancel_requested"] is True, reply.raw
    record = zone.wait_end(wf_id, 30)
    assert (record["status"], record["reason_code"]) == ("cancelled", "cancelled"), dump(record)
    assert stages(record)[-1] == ("clean_fill", "cancelled", "cancelled"), dump(record)
    assert [c for c in commands(record) if c[0] != "storage_state"] == [
        ("valve_clean_fill", "set_relay", 1, "DONE"), ("valve_clean_fill", "set_relay", 0, "DONE")], dump(record)
    assert stopped(zone)
    assert ("WORKFLOW_ENDED", "cancelled", "cancelled") in decisions(zone, wf_id)
    again = http("POST", url)
    assert again.status == 409 and error(again)["code"] == "workflow_not_running", again.raw


# 10. refusals ---------------------------------------------------------------------------------------------


def test_api_refuses_what_must_not_start(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=SLOW_CLEAN_FILL)
    wf_id = started(zone.start_workflow("two_tank_startup"))
    second = zone.start_workflow("two_tank_startup")
    assert second.status == 409, second.raw
    assert (error(second)["code"], error(second)["workflow_id"]) == ("workflow_already_running", wf_id)
    not_ready = zone.start_workflow("irrigation", duration_s=10)
    assert not_ready.status == 409 and error(not_ready)["code"] == "zone_not_ready", not_ready.raw
    unknown = zone.start_workflow("flood_everything")
    assert unknown.status == 400 and error(unknown)["code"] == "unknown_workflow_type", unknown.raw
    for params in ({"duration_s": 0}, {"duration_s": "x"}, {"duration_s": 10, "extra": 1}, {}):
        bad = zone.start_workflow("irrigation", **params)
        assert bad.status == 422 and error(bad)["code"] == "invalid_params", (params, bad.raw)
    nowhere = http("POST", f"{zone.base_url}/api/v1/zones/zn-nowhere/workflows",
                   body={"type": "two_tank_startup", "params": {}})
    assert nowhere.status == 404, nowhere.raw
    # none of the refusals disturbed the running one
    assert zone.workflow(wf_id)["status"] == "running"
    cancel = http("POST", f"{zone.base_url}/api/v1/zones/{zone.zone_uid}/workflows/{wf_id}/cancel")
    assert cancel.status == 202, cancel.raw
    record = zone.wait_end(wf_id, 30)
    assert record["status"] == "cancelled", json.dumps(record, indent=1)
    assert stopped(zone)


def test_an_active_safety_lock_refuses_workflows_and_manual_starts(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(plant=FULL_TANKS, faults={"irrig": Faults(overcurrent=1.0)})
    for valve in ("valve_clean_supply", "valve_solution_fill"):
        opened = manual(zone, valve, 1)
        assert opened.status == 202, opened.raw
        assert terminal(zone, opened.json()["data"]["cmd_id"])["status"] == "DONE"
    tripped = manual(zone, "pump_main", 1)
    assert tripped.status == 202, tripped.raw
    row = terminal(zone, tripped.json()["data"]["cmd_id"])
    assert (row["status"], row["error_code"]) == ("ERROR", "overcurrent"), row
    wait_until(lambda: [a for a in alerts(zone) if a["code"] == "biz_overcurrent"], timeout=10, interval=0.05,
               what="biz_overcurrent")
    lock = "safety_lock_biz_overcurrent"
    refused = zone.start_workflow("two_tank_startup")
    assert refused.status == 409, refused.raw
    assert (error(refused)["code"], error(refused)["reason_code"]) == ("pump_safety_blocked", lock)
    again = manual(zone, "pump_main", 1)
    assert again.status == 409, again.raw
    assert (error(again)["code"], error(again)["reason_code"]) == ("pump_safety_blocked", lock)
    for valve in ("valve_clean_supply", "valve_solution_fill"):  # stops are never gated
        assert manual(zone, valve, 0).status == 202
    wait_plant(zone, lambda p: not p["valves"] and not p["pumps"], "the plant stopped")
    refusals = [e for e in timeline(zone) if e["type"] == "PUMP_START_REFUSED"]
    assert refusals and {e["reason_code"] for e in refusals} == {lock}, refusals
