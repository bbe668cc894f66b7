"""Each loop stall, injected for real: detected by the loop guard (log line, incident with a task dump
naming the culprit, RUNNING -> SAFE_MODE), recovered (SAFE_MODE -> RECOVERING -> RUNNING) with every
accepted telemetry sample stored once."""

from __future__ import annotations

import logging

import pytest

from hydrovisor.runtime.loop_thread import LoopThread
from tests.faults.conftest import (
    PH_CHANNELS,
    STALL_FUNCTION,
    TERMINAL,
    Device,
    Ingest,
    Running,
    command_status,
    incident,
    incidents,
    inject,
    loop_frames,
    metric,
    seed_node,
    seed_zone,
    stop_devices_then_check_stored,
    task_frames,
    transitions,
    wait_all_stored,
    wait_chaos_over,
    wait_state,
)
from tests.helpers import http, wait_until
from tests.plant import VALVES

pytestmark = pytest.mark.fault_injection

STALL_S = 1.5


@pytest.mark.parametrize("kind", sorted(STALL_FUNCTION))
def test_stall_is_detected_dumped_and_recovered(kind: str, app: Running, caplog: pytest.LogCaptureFixture) -> None:
    base = app.base_url
    seed_zone(base)
    seed_node(base, "nd-ph-1", "esp32-00000000aa01", "s" * 32, PH_CHANNELS, node_type="ph")
    caplog.set_level(logging.INFO)
    with Ingest(base, "nd-ph-1", "ph_sensor", "PH") as ingest:
        wait_until_accepted(ingest, 40)
        chaos_id = inject(base, kind, STALL_S)
        wait_state(base, "SAFE_MODE", timeout=10)
        chaos = wait_chaos_over(base, chaos_id)
        wait_state(base, "RUNNING", timeout=15)
        wait_until_accepted(ingest, ingest.accepted + 40)
    assert chaos["attributes"]["outcome"] == "ended"
    assert ingest.refused == []

    # detected: one loop_stall incident, closed, lasting about the stall, tied to the chaos run
    stalls = incidents(base, kind="loop_stall")
    assert len(stalls) == 1, stalls
    stall = incident(base, stalls[0]["incident_id"])
    assert stall["closed_at"] is not None
    assert float(stall["attributes"]["blocked_s"]) >= STALL_S * 0.8
    assert chaos_id in stall["related"]
    # the dump was taken during the stall: the loop thread (or the running task) is in the culprit
    dump = stall["dump"]
    assert dump["incident_id"] == stall["incident_id"]
    assert dump["context"] == "LOOP_STALL_DETECTED"
    culprit = STALL_FUNCTION[kind]
    # the culprit itself, or code it defines (a generator expression inside it runs as its own frame);
    # a recursive_await stall may be caught between two descents, in the loop that drives them
    culprits = (culprit, "_recursive_await_stall") if kind == "recursive_await" else (culprit,)
    assert any(f in culprits or f.startswith(culprit + ".<locals>.") for f in loop_frames(dump)), (
        loop_frames(dump), task_frames(dump))
    if kind == "cross_lock_deadlock":  # the other side: an actor thread holding lock B, waiting for the loop
        others = [t for t in dump["threads"] if not t["is_loop_thread"]
                  and "_CrossLock._actor_side" in [f["function"] for f in t["stack"]]]
        assert len(others) == 1, [t["name"] for t in dump["threads"]]

    # state: RUNNING -> SAFE_MODE (caused by the stall) -> RECOVERING -> RUNNING
    assert transitions(base) == [("RUNNING", "SAFE_MODE"), ("SAFE_MODE", "RECOVERING"), ("RECOVERING", "RUNNING")]
    to_safe = next(i for i in incidents(base, kind="state_transition") if i["title"] == "RUNNING -> SAFE_MODE")
    to_safe = incident(base, to_safe["incident_id"])
    assert to_safe["related"] == [stall["incident_id"]]
    assert to_safe["reason"].startswith("loop_stall_detected")
    assert to_safe["dump"] is not None  # SAFE_MODE is entered with a dump of its own
    assert incidents(base, open_only=True) == []  # back to RUNNING: nothing left open

    # the log lines an operator greps for
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"LOOP_GUARD_TIMEOUT incident_id={stall['incident_id']}") for m in messages)
    assert any(m.startswith(f"TASK_DUMP incident_id={stall['incident_id']}") for m in messages)
    for src, dst in (("RUNNING", "SAFE_MODE"), ("SAFE_MODE", "RECOVERING"), ("RECOVERING", "RUNNING")):
        assert any(m.startswith("STATE_TRANSITION") and f"from={src} to={dst}" in m for m in messages), (src, dst)

    # data intact: every sample the API accepted is stored, exactly once
    wait_all_stored(app, ingest.accepted)


def wait_until_accepted(ingest: Ingest, count: int) -> None:
    wait_until(lambda: ingest.accepted >= count, timeout=15, interval=0.02, what=f"{count} samples accepted")


def test_commands_in_flight_and_mqtt_telemetry_survive_a_stall(app: Running, device_loop: LoopThread,
                                                                devices: list[Device]) -> None:
    """Commands sent before the stall (a pump still running when it begins) all end DONE, none lost;
    every MQTT sample the router accepted is stored."""
    base = app.base_url
    seed_zone(base)
    device = Device(app, device_loop, time_scale=0.4)  # run_pump 2500 ms -> the pump runs 1 s
    devices.append(device)
    device.start()
    wait_until(lambda: metric(base, "hydrovisor_telemetry_accepted_total", 'source="mqtt"') >= 20,
               timeout=15, what="mqtt telemetry flowing")
    device.wait_levels()  # the zone's pump-safety gate needs fresh tank levels before pump_main starts
    # valves first, then the pump: the node refuses pump_main until a path is open (its interlock)
    sent = [device.command(valve, "set_relay", {"state": 1}, cmd_id=f"stall-{valve.replace('_', '-')}")
            for valve in VALVES]
    wait_until(lambda: all(command_status(base, r.json()["data"]["command_id"]) == "DONE" for r in sent),
               timeout=10, what="the valves open")
    sent += [device.command("pump_main", "run_pump", {"duration_ms": 2500}, cmd_id="stall-pump")]
    assert [r.status for r in sent] == [202] * len(sent), [r.raw for r in sent]
    ids = [r.json()["data"]["command_id"] for r in sent]
    chaos_id = inject(base, "cpu_bound_loop", STALL_S)
    wait_state(base, "SAFE_MODE", timeout=10)
    wait_chaos_over(base, chaos_id)
    wait_state(base, "RUNNING", timeout=15)
    wait_until(lambda: all(command_status(base, i) in TERMINAL for i in ids), timeout=20, interval=0.1,
               what="every command terminal")
    assert {i: command_status(base, i) for i in ids} == dict.fromkeys(ids, "DONE")
    listed = http("GET", base + "/api/v1/commands?limit=100").json()["data"]
    assert sorted(c["cmd_id"] for c in listed) == sorted(ids)  # nothing lost, nothing extra
    # telemetry: stop the device, then everything the router accepted is in the database
    stop_devices_then_check_stored(app, devices)
