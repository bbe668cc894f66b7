"""SAFE_MODE refuses new actuation over the commands API and lets fail-safe OFF commands through."""

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


def test_safe_mode_blocks_a_pump_and_lets_a_fail_safe_off_through(
        chaos_app: Callable[..., Running], device_loop: LoopThread, devices: list[Device]) -> None:
    app = chaos_app(system=HOLDING)
    base = app.base_url
    http("POST", base + "/api/v1/greenhouses", body={"uid": "gh-1", "name": "Main"})
    http("POST", base + "/api/v1/zones", body={"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"})
    device = Device(app, device_loop)
    devices.append(device)
    device.start()
    # RUNNING: actuation is accepted (the relay is switched on, so that OFF has an effect later)
    before = device.command("valve_irrigation", "set_relay", {"state": 1}, cmd_id="before-on")
    assert before.status == 202, before.raw
    wait_until(lambda: command_status(base, "before-on") == "DONE", timeout=10, what="relay on")

    chaos_id = inject(base, "cpu_bound_loop", 1.0)
    wait_state(base, "SAFE_MODE", timeout=10)
    wait_chaos_over(base, chaos_id)  # the loop runs again: HTTP answers, the state machine holds SAFE_MODE
    assert system(base)["actuation_blocked"] is True

    pump = device.command("pump_main", "run_pump", {"duration_ms": 2500}, cmd_id="blocked-pump")
    relay_on = device.command("valve_clean_fill", "set_relay", {"state": 1}, cmd_id="blocked-on")
    off = device.command("valve_irrigation", "set_relay", {"state": 0}, cmd_id="failsafe-off")
    assert state(base) == "SAFE_MODE"  # all three were decided in SAFE_MODE

    assert (pump.status, pump.json()["code"]) == (503, "safe_mode_active"), pump.raw
    assert pump.headers.get("Retry-After") == "30"
    assert (relay_on.status, relay_on.json()["code"]) == (503, "safe_mode_active"), relay_on.raw
    for refused in ("blocked-pump", "blocked-on"):  # nothing stored, nothing sent
        assert http("GET", base + f"/api/v1/commands/{refused}").status == 404
    assert off.status == 202, off.raw
    wait_until(lambda: command_status(base, "failsafe-off") == "DONE", timeout=10, what="fail-safe OFF done")
    listed = {c["cmd_id"] for c in http("GET", base + "/api/v1/commands?limit=100").json()["data"]}
    assert listed == {"before-on", "failsafe-off"}
    assert device.sim.stats.commands_received == 2
    ready = http("GET", base + "/health/ready")
    assert ready.status == 503
    assert ready.json()["checks"]["system"] == {"ok": False, "reason": "SAFE_MODE"}

    # recovered: actuation is accepted again
    wait_state(base, "RUNNING", timeout=15)
    after = device.command("pump_main", "run_pump", {"duration_ms": 2500}, cmd_id="after-pump")
    assert after.status == 202, after.raw
    wait_until(lambda: command_status(base, "after-pump") == "DONE", timeout=10, what="pump after recovery")
