"""SAFE_MODE refuses new actuation over the commands API and lets through only the commands that drive an
actuator to its fail-safe state: OFF for a normally-open relay or valve, ON for the normally-closed
recirculation pump (DOMAIN §4: if the controller dies, that pump runs)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from hydrovisor.runtime.loop_thread import LoopThread
from tests.faults.conftest import (
    FAST_SYSTEM,
    Device,
    Running,
    command_status,
    inject,
    state,
    system,
    wait_chaos_over,
    wait_state,
)
from tests.helpers import http, wait_until

pytestmark = pytest.mark.fault_injection

# SAFE_MODE holds for 10 good cycles of 0.2 s after the stall: time for the requests below
HOLDING = msgspec.structs.replace(FAST_SYSTEM, recovery_cycles=10)


def test_safe_mode_blocks_a_pump_and_lets_only_fail_safe_states_through(
        chaos_app: Callable[..., Running], device_loop: LoopThread, devices: list[Device]) -> None:
    app = chaos_app(system=HOLDING)
    base = app.base_url
    http("POST", base + "/api/v1/greenhouses", body={"uid": "gh-1", "name": "Main"})
    http("POST", base + "/api/v1/zones", body={"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"})
    device = Device(app, device_loop)
    devices.append(device)
    device.start()
    device.wait_levels()  # the zone's pump-safety gate needs fresh tank levels before pump_main starts
    # RUNNING: actuation is accepted. The recirculation path is opened (the node refuses pump_main without
    # an open path) and the irrigation valve switched on, so that OFF has an effect later.
    before = ["valve_solution_supply", "valve_solution_fill", "valve_irrigation"]
    for valve in before:
        # a loop stall of this shared machine's own (0.5 s is the test's threshold) may hold SAFE_MODE for a
        # moment here too: the same cmd_id is sent again until it is accepted (200 once it is stored)
        wait_until(lambda valve=valve: device.command(
            valve, "set_relay", {"state": 1}, cmd_id=f"before-{valve}".replace("_", "-")).status in (200, 202),
            timeout=20, what=f"{valve} accepted while RUNNING")
    before_ids = {f"before-{valve}".replace("_", "-") for valve in before}
    wait_until(lambda: all(command_status(base, i) == "DONE" for i in before_ids), timeout=10, what="valves open")

    chaos_id = inject(base, "cpu_bound_loop", 1.0)
    wait_state(base, "SAFE_MODE", timeout=10)
    wait_chaos_over(base, chaos_id)  # the loop runs again: HTTP answers, the state machine holds SAFE_MODE
    assert system(base)["actuation_blocked"] is True

    pump = device.command("pump_main", "run_pump", {"duration_ms": 2500}, cmd_id="blocked-pump")
    relay_on = device.command("valve_clean_fill", "set_relay", {"state": 1}, cmd_id="blocked-on")
    pump_off = device.command("pump_main", "set_relay", {"state": 0}, cmd_id="blocked-nc-off")
    off = device.command("valve_irrigation", "set_relay", {"state": 0}, cmd_id="failsafe-off")
    pump_on = device.command("pump_main", "set_relay", {"state": 1}, cmd_id="failsafe-nc-on")
    assert state(base) == "SAFE_MODE"  # all five were decided in SAFE_MODE

    assert (pump.status, pump.json()["code"]) == (503, "safe_mode_active"), pump.raw
    assert pump.headers.get("Retry-After") == "30"
    assert (relay_on.status, relay_on.json()["code"]) == (503, "safe_mode_active"), relay_on.raw
    # the NC pump's fail-safe state is running: switching it off is new actuation
    assert (pump_off.status, pump_off.json()["code"]) == (503, "safe_mode_active"), pump_off.raw
    for refused in ("blocked-pump", "blocked-on", "blocked-nc-off"):  # nothing stored, nothing sent
        assert http("GET", base + f"/api/v1/commands/{refused}").status == 404
    assert off.status == 202, off.raw
    assert pump_on.status == 202, pump_on.raw
    wait_until(lambda: command_status(base, "failsafe-off") == "DONE", timeout=10, what="fail-safe OFF done")
    wait_until(lambda: command_status(base, "failsafe-nc-on") == "DONE", timeout=10, what="NC pump fail-safe ON")
    assert device.sim.physics.recirculating()
    listed = {c["cmd_id"] for c in http("GET", base + "/api/v1/commands?limit=100").json()["data"]}
    assert listed == before_ids | {"failsafe-off", "failsafe-nc-on"}
    assert device.sim.stats.commands_received == 5
    ready = http("GET", base + "/health/ready")
    assert ready.status == 503
    assert ready.json()["checks"]["system"] == {"ok": False, "reason": "SAFE_MODE"}

    # recovered: actuation is accepted again
    wait_state(base, "RUNNING", timeout=15)
    stop = device.command("pump_main", "set_relay", {"state": 0}, cmd_id="after-stop")  # a run needs it stopped
    assert stop.status == 202, stop.raw
    wait_until(lambda: command_status(base, "after-stop") == "DONE", timeout=10, what="pump stopped")
    after = device.command("pump_main", "run_pump", {"duration_ms": 2500}, cmd_id="after-pump")
    assert after.status == 202, after.raw
    wait_until(lambda: command_status(base, "after-pump") == "DONE", timeout=10, what="pump after recovery")
