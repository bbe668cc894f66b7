"""The one pump-safety gate: every refusal, its order, and SAFE_MODE's fail-safe rule."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.zones import safety
from hydrovisor.zones.roles import ACTUATORS, LEVELS, PUMPS, VALVES, Role
from hydrovisor.zones.safety import (
    LOCK_CODES,
    Refusal,
    can_run_pump,
    fail_safe_allowed,
    source_tanks,
    starts_actuator,
    switch_state,
)
from hydrovisor.zones.settings import ResolvedDevice, Safety, ZoneSettings
from hydrovisor.zones.state import ZoneState

NOW = 1_700_000_000.0
IRR = "nd-irr-1"
DOSER = "nd-ph-1"


def devices(*roles: Role) -> dict[Role, ResolvedDevice]:
    """Every given role bound: water roles on the irrigation node, the dosing pumps on another."""
    chosen = roles or tuple(Role)
    return {role: ResolvedDevice(role=role, node_uid=DOSER if role in PUMPS - {Role.PUMP_MAIN} else IRR,
                                 channel=role.value, source="auto") for role in chosen}


def healthy(settings_: ZoneSettings | None = None, *, supply: Role | None = Role.VALVE_SOLUTION_SUPPLY) -> ZoneState:
    """A zone where every start is allowed: nodes online, tanks wet and fresh, the supply valve opened."""
    state = ZoneState(settings_ or ZoneSettings(), devices())
    state.apply_node_online(IRR, True, NOW)
    state.apply_node_online(DOSER, True, NOW)
    for role in LEVELS:
        wet = role in (Role.LEVEL_CLEAN_MIN, Role.LEVEL_SOLUTION_MIN)
        state.apply_telemetry(role, 1.0 if wet else 0.0, NOW - 10, None, NOW - 10)
    if supply is not None:
        state.apply_command_sent(supply, True, f"open-{supply.value}", NOW - 5)
    return state


def gate(state: ZoneState, role: Role, now: float = NOW, devs: dict[Role, ResolvedDevice] | None = None) -> str | None:
    refusal = can_run_pump(state, devices() if devs is None else devs, state.settings, role, now)
    return None if refusal is None else refusal.reason_code


def test_a_healthy_zone_lets_every_pump_and_valve_start() -> None:
    state = healthy()
    for role in PUMPS | VALVES:
        assert gate(state, role) is None, role


def test_roles_that_are_neither_pumps_nor_valves_are_not_gated() -> None:
    state = ZoneState()  # nothing known at all: every pump would be refused
    for role in set(Role) - PUMPS - VALVES:
        assert gate(state, role, devs={}) is None
    assert gate(state, Role.PUMP_ACID, devs={}) == "role_not_configured"


def test_an_unbound_role_is_refused_first() -> None:
    state = healthy()
    state.record_detection(safety.overcurrent(Role.PUMP_MAIN, {}), NOW)
    assert gate(state, Role.PUMP_MAIN, devs=devices(Role.PUMP_ACID)) == "role_not_configured"


@pytest.mark.parametrize("code", LOCK_CODES)
def test_every_lock_alert_refuses_every_pump_and_valve_of_the_zone(code: str) -> None:
    state = healthy()
    state.restore_alert(code, "pump_main", "warning", first_seen=NOW - 100, last_seen=NOW - 100)
    for role in PUMPS | VALVES:
        refusal = can_run_pump(state, devices(), state.settings, role, NOW)
        assert refusal is not None
        assert refusal.reason_code == f"safety_lock_{code}"
        assert code in refusal.message
    state.reset_safety_locks()
    assert gate(state, Role.PUMP_MAIN) is None


def test_the_most_serious_lock_is_named_when_several_are_active() -> None:
    state = healthy()
    for code in reversed(LOCK_CODES):
        state.restore_alert(code, "pump_main", "warning", first_seen=NOW, last_seen=NOW)
    assert gate(state, Role.PUMP_MAIN) == "safety_lock_biz_pump_stuck_on"
    state.resolve_alert("biz_pump_stuck_on")
    assert gate(state, Role.PUMP_MAIN) == "safety_lock_biz_overcurrent"


def test_other_alerts_do_not_lock() -> None:
    state = healthy()
    state.restore_alert("biz_high_ph", "ph", "warning", first_seen=NOW, last_seen=NOW)
    state.restore_alert("infra_node_offline", IRR, "warning", first_seen=NOW, last_seen=NOW)
    assert gate(state, Role.PUMP_MAIN) is None


def test_a_node_offline_or_never_seen_refuses_its_roles_only() -> None:
    state = healthy()
    state.apply_node_online(DOSER, False, NOW)
    assert gate(state, Role.PUMP_ACID) == "node_offline"
    assert gate(state, Role.PUMP_MAIN) is None
    state.nodes_online.pop(DOSER)  # unknown: fail closed
    assert gate(state, Role.PUMP_BASE) == "node_offline"


def test_three_failures_within_the_window_refuse_that_pump_until_they_age_out() -> None:
    state = healthy()
    window = state.settings.safety.failure_window_s
    for index, at in enumerate((NOW - window + 10, NOW - 100, NOW - 50)):
        state.apply_command_sent(Role.PUMP_ACID, True, f"c{index}", at)
        state.apply_command_terminal(Role.PUMP_ACID, f"c{index}", "ERROR", "cooldown_active", at)
        assert gate(state, Role.PUMP_ACID, at) == (None if index < 2 else "pump_failure_limit")
    assert gate(state, Role.PUMP_BASE) is None  # another pump
    assert gate(state, Role.PUMP_ACID, NOW + 9) == "pump_failure_limit"
    assert gate(state, Role.PUMP_ACID, NOW + 10) is None  # the oldest left the window


def test_valves_have_no_failure_limit_and_a_stricter_setting_applies() -> None:
    state = healthy(ZoneSettings(safety=Safety(max_failures=1)))
    state.apply_command_sent(Role.VALVE_IRRIGATION, True, "v", NOW)
    state.apply_command_terminal(Role.VALVE_IRRIGATION, "v", "ERROR", None, NOW)
    assert gate(state, Role.VALVE_IRRIGATION) is None
    state.apply_command_sent(Role.PUMP_A, True, "p", NOW)
    state.apply_command_terminal(Role.PUMP_A, "p", "TIMEOUT", None, NOW)
    assert gate(state, Role.PUMP_A) == "pump_failure_limit"


def test_the_main_pump_draws_from_the_tank_whose_supply_valve_opens() -> None:
    assert source_tanks(healthy(supply=Role.VALVE_CLEAN_SUPPLY), ZoneSettings(), Role.PUMP_MAIN) == (
        safety.CLEAN_TANK,)
    assert source_tanks(healthy(), ZoneSettings(), Role.PUMP_MAIN) == (safety.SOLUTION_TANK,)
    # neither: check both (the node would refuse anyway; not knowing must not skip the check)
    assert source_tanks(healthy(supply=None), ZoneSettings(), Role.PUMP_MAIN) == (safety.CLEAN_TANK,
                                                                                 safety.SOLUTION_TANK)
    single = ZoneSettings(topology="single_tank")
    assert source_tanks(healthy(supply=Role.VALVE_CLEAN_SUPPLY), single, Role.PUMP_MAIN) == (safety.SOLUTION_TANK,)
    assert source_tanks(healthy(), ZoneSettings(), Role.PUMP_DRAIN) == (safety.SOLUTION_TANK,)
    for role in (PUMPS | VALVES) - {Role.PUMP_MAIN, Role.PUMP_DRAIN}:
        assert source_tanks(healthy(), ZoneSettings(), role) == ()


def test_a_stale_or_missing_minimum_switch_is_tank_level_stale() -> None:
    state = healthy()
    limit = state.settings.safety.level_stale_s
    assert gate(state, Role.PUMP_MAIN, NOW - 10 + limit) is None
    assert gate(state, Role.PUMP_MAIN, NOW - 10 + limit + 1) == "TANK_LEVEL_STALE"
    del state.levels[Role.LEVEL_SOLUTION_MIN]
    refusal = can_run_pump(state, devices(), state.settings, Role.PUMP_MAIN, NOW)
    assert refusal is not None
    assert refusal.reason_code == "TANK_LEVEL_STALE"
    assert "no reading" in refusal.message
    stricter = healthy(ZoneSettings(safety=Safety(level_stale_s=5)))
    assert gate(stricter, Role.PUMP_MAIN) == "TANK_LEVEL_STALE"


def test_a_dry_source_tank_refuses_and_raises_dry_run() -> None:
    state = healthy()
    state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 0.0, NOW - 1, None, NOW - 1)
    refusal = can_run_pump(state, devices(), state.settings, Role.PUMP_MAIN, NOW)
    assert refusal is not None
    assert refusal.reason_code == "level_below_minimum"
    assert refusal.detection is not None
    assert (refusal.detection.code, refusal.detection.dedupe_key) == ("biz_dry_run", "pump_main")
    assert refusal.detection.details["tank"] == "solution"
    assert gate(state, Role.VALVE_IRRIGATION) is None  # valves move no water themselves
    assert gate(state, Role.PUMP_ACID) is None
    state.record_detection(refusal.detection, NOW)  # what the actor does: now it is a lock
    assert gate(state, Role.PUMP_ACID) == "safety_lock_biz_dry_run"
    assert state.failures == {}  # a refused start is not a failure of the pump


def test_max_wet_and_min_dry_is_inconsistent_but_only_with_a_fresh_max() -> None:
    state = healthy()
    state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 0.0, NOW - 1, None, NOW - 1)
    state.apply_telemetry(Role.LEVEL_SOLUTION_MAX, 1.0, NOW - 1, None, NOW - 1)
    assert gate(state, Role.PUMP_MAIN) == "sensor_state_inconsistent"
    assert gate(state, Role.PUMP_MAIN, NOW - 1 + 301) == "TANK_LEVEL_STALE"
    # a stale max says nothing: the fresh dry min is what counts
    state.levels[Role.LEVEL_SOLUTION_MAX] = msgspec.structs.replace(state.levels[Role.LEVEL_SOLUTION_MAX],
                                                                    ts=NOW - 301)
    assert gate(state, Role.PUMP_MAIN) == "level_below_minimum"


def test_an_inconsistent_clean_tank_blocks_a_solution_fill() -> None:
    state = healthy(supply=Role.VALVE_CLEAN_SUPPLY)
    state.apply_event(Role.LEVEL_CLEAN_MAX, "level_switch_changed", {"state": True, "ts": NOW - 2}, NOW - 2)
    state.apply_event(None, "level_switch_changed", {"channel": "level_clean_min", "state": False, "ts": NOW - 1},
                      NOW - 1)
    assert gate(state, Role.PUMP_MAIN) == "sensor_state_inconsistent"


# --- the whole refusal table, against an oracle written from DOMAIN §4 --------------------------------

level_reading = st.none() | st.tuples(st.booleans(), st.floats(min_value=0, max_value=600))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "role": draw(st.sampled_from(sorted(PUMPS | VALVES | {Role.LIGHT, Role.PH_SENSOR}))),
        "configured": draw(st.booleans()),
        "locks": draw(st.sets(st.sampled_from(LOCK_CODES), max_size=2)),
        "online": draw(st.sampled_from([True, False, None])),
        "failures": draw(st.integers(min_value=0, max_value=4)),
        "old_failures": draw(st.integers(min_value=0, max_value=3)),
        "topology": draw(st.sampled_from(["two_tank", "single_tank"])),
        "clean_supply": draw(st.booleans()),
        "solution_supply": draw(st.booleans()),
        "levels": {role: draw(level_reading) for role in sorted(LEVELS)},
    }


def oracle(s: dict[str, Any]) -> str | None:
    role: Role = s["role"]
    if role not in PUMPS | VALVES:
        return None
    if not s["configured"]:
        return "role_not_configured"
    for code in ("biz_pump_stuck_on", "biz_overcurrent", "biz_dry_run", "biz_no_flow"):
        if code in s["locks"]:
            return f"safety_lock_{code}"
    if s["online"] is not True:
        return "node_offline"
    if role in PUMPS and s["failures"] >= 3:
        return "pump_failure_limit"
    if role not in (Role.PUMP_MAIN, Role.PUMP_DRAIN):
        return None
    single = s["topology"] == "single_tank" or role is Role.PUMP_DRAIN  # the drain pump empties the solution tank
    tanks = [("level_solution_min", "level_solution_max")] if single else [
        pair for pair, open_ in ((("level_clean_min", "level_clean_max"), s["clean_supply"]),
                                 (("level_solution_min", "level_solution_max"), s["solution_supply"])) if open_]
    if not tanks:
        tanks = [("level_clean_min", "level_clean_max"), ("level_solution_min", "level_solution_max")]
    for low_name, high_name in tanks:
        low, high = s["levels"][Role(low_name)], s["levels"][Role(high_name)]
        if low is None or low[1] > 300:
            return "TANK_LEVEL_STALE"
        if high is not None and high[1] <= 300 and high[0] and not low[0]:
            return "sensor_state_inconsistent"
        if not low[0]:
            return "level_below_minimum"
    return None


@settings(max_examples=1000, deadline=None)
@given(scenarios())
def test_the_refusal_table(s: dict[str, Any]) -> None:
    role: Role = s["role"]
    zone_settings = ZoneSettings(topology=s["topology"])
    state = ZoneState(zone_settings)
    if s["online"] is not None:
        state.nodes_online[IRR] = s["online"]
        state.nodes_online[DOSER] = s["online"]
    for code in s["locks"]:
        state.restore_alert(code, "pump_main", "warning", first_seen=NOW, last_seen=NOW)
    window = zone_settings.safety.failure_window_s
    state.failures[role] = [NOW - window - 1 - i for i in range(s["old_failures"])] + [
        NOW - i for i in range(s["failures"])]
    for valve, open_ in ((Role.VALVE_CLEAN_SUPPLY, s["clean_supply"]), (Role.VALVE_SOLUTION_SUPPLY,
                                                                        s["solution_supply"])):
        if open_:
            state.apply_command_sent(valve, True, f"open-{valve.value}", NOW)
    for level_role, reading in s["levels"].items():
        if reading is not None:
            wet, age = reading
            state.apply_telemetry(level_role, float(wet), NOW - age, None, NOW)
    devs = devices() if s["configured"] else devices(*(set(Role) - {role}))
    refusal = can_run_pump(state, devs, zone_settings, role, NOW)
    assert (None if refusal is None else refusal.reason_code) == oracle(s)
    if refusal is not None:
        assert refusal.message
        assert (refusal.detection is not None) == (refusal.reason_code == "level_below_minimum")
    # the gate only reads
    assert can_run_pump(state, devs, zone_settings, role, NOW) == refusal


# --- SAFE_MODE -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("cmd", "params", "relay_type", "allowed"),
    [
        # read-only: always
        ("state", {}, None, True),
        ("report_config", {}, "NC", True),
        # NO relays (and unreported ones) are safe off
        ("set_relay", {"state": 0}, "NO", True),
        ("set_relay", {"state": False}, None, True),
        ("set_relay", {"state": "off"}, "no", True),
        ("set_relay", {"state": "OFF"}, "NO", True),
        ("set_relay", {"state": 1}, "NO", False),
        ("set_relay", {"state": True}, None, False),
        ("set_relay", {"state": 0, "duration_ms": 1000}, "NO", False),  # reverts to on by itself
        ("set_relay", {"state": 0, "timeout_ms": 1000}, None, False),
        ("set_relay", {"state": 0.0}, "NO", False),
        ("set_relay", {}, "NO", False),
        ("set_pwm", {"value": 0}, None, True),
        ("set_pwm", {"value": 0.0}, "NO", True),
        ("set_pwm", {"value": 10}, None, False),
        ("set_pwm", {"value": False}, None, False),
        ("light_off", {}, None, True),
        ("light_on", {}, None, False),
        # the NC recirculation pump is safe running
        ("set_relay", {"state": 1}, "NC", True),
        ("set_relay", {"state": True}, "NC", True),
        ("set_relay", {"state": "on"}, " nc ", True),
        ("set_relay", {"state": 0}, "NC", False),
        ("set_relay", {"state": "off"}, "NC", False),
        ("set_relay", {"state": 1, "duration_ms": 5000}, "NC", False),  # would stop it after 5 s
        ("set_pwm", {"value": 0}, "NC", False),
        ("light_off", {}, "NC", False),
        ("light_on", {}, "NC", True),
        # new actuation: never
        ("run_pump", {"duration_ms": 1000}, "NC", False),
        ("run_pump", {"duration_ms": 1000}, "NO", False),
        ("dose", {"ml": 1}, None, False),
        ("calibrate", {}, None, False),
        ("restart", {}, None, False),
        ("activate_sensor_mode", {}, None, False),
    ],
)
def test_safe_mode_lets_through_only_the_fail_safe_state(cmd: str, params: dict[str, Any], relay_type: str | None,
                                                         allowed: bool) -> None:
    assert fail_safe_allowed(cmd, params, relay_type) is allowed


@settings(max_examples=500, deadline=None)
@given(cmd=st.sampled_from(["set_relay", "set_pwm", "light_on", "light_off", "run_pump", "dose", "state", "x"]),
       params=st.dictionaries(st.sampled_from(["state", "value", "duration_ms", "timeout_ms", "ml"]),
                              st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=True)
                              | st.sampled_from(["on", "off", "1", "0", "true", "ON", ""]), max_size=3),
       relay_type=st.sampled_from([None, "NO", "NC", "nc", "??"]))
def test_safe_mode_never_allows_a_start_away_from_the_fail_safe_state(cmd: str, params: dict[str, Any],
                                                                      relay_type: str | None) -> None:
    allowed = fail_safe_allowed(cmd, params, relay_type)
    if not allowed:
        return
    if cmd == "state":
        return
    normally_closed = relay_type is not None and relay_type.upper() == "NC"
    assert cmd in {"set_relay", "set_pwm", "light_on", "light_off"}
    assert "duration_ms" not in params or cmd != "set_relay"
    if cmd == "set_relay":
        assert switch_state(params.get("state")) is normally_closed
    if normally_closed:
        assert cmd in {"set_relay", "light_on"}
    else:
        assert cmd != "light_on"
        # everything SAFE_MODE lets through on an ordinary channel is a stop, never a start
        assert not starts_actuator(cmd, params)


@pytest.mark.parametrize(
    ("cmd", "params", "starts"),
    [
        ("set_relay", {"state": 1}, True),
        ("set_relay", {"state": "on"}, True),
        ("set_relay", {"state": 0}, False),
        ("set_relay", {"state": 0, "duration_ms": 100}, True),  # off now, on again later
        ("set_relay", {"state": 2}, True),  # not understood: gated
        ("set_pwm", {"value": 0}, False),
        ("set_pwm", {"value": 50}, True),
        ("run_pump", {"duration_ms": 1000}, True),
        ("dose", {"ml": 1}, True),
        ("light_off", {}, False),
        ("state", {}, False),
        ("report_config", {}, False),
        ("deactivate_sensor_mode", {}, False),
        ("something_new", {}, True),
    ],
)
def test_which_commands_are_starts(cmd: str, params: dict[str, Any], starts: bool) -> None:
    assert starts_actuator(cmd, params) is starts


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (1, True), ("on", True), (" On ", True), ("1", True), ("true", True),
     (False, False), (0, False), ("off", False), ("0", False), ("FALSE", False),
     (2, None), (1.0, None), (None, None), ("", None), ([], None)],
)
def test_switch_state(value: object, expected: bool | None) -> None:
    assert switch_state(value) is expected


def test_refusal_and_detection_are_plain_structs() -> None:
    refusal = Refusal(reason_code="node_offline", message="m")
    assert refusal.detection is None
    detection = safety.overcurrent(None, {"current_ma": 3600, "bad": object(), "nan": float("nan")})
    assert detection.dedupe_key == "unknown"
    assert detection.details == {"role": "unknown", "current_ma": 3600}
    assert all(role in ACTUATORS for role in PUMPS | VALVES)
