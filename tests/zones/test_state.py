"""The zone's live state: typed inputs in, detections out, invariants under any sequence of inputs."""

from __future__ import annotations

import copy
import math
from typing import Any

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hydrovisor.zones.roles import ACTUATORS, LEVELS, PUMPS, Role
from hydrovisor.zones.safety import LOCK_CODES, Detection, can_run_pump
from hydrovisor.zones.settings import ResolvedDevice, Safety, ZoneSettings
from hydrovisor.zones.state import SNAPSHOT_KEYS, ZoneState, ZoneStateView

NOW = 1_700_000_000.0
IRR = "nd-irr-1"


def devices(*roles: Role) -> dict[Role, ResolvedDevice]:
    return {role: ResolvedDevice(role=role, node_uid=IRR, channel=role.value, source="auto")
            for role in (roles or tuple(Role))}


def running_pump(state: ZoneState, at: float, cmd_id: str = "start") -> None:
    """The main pump started (DONE) at ``at`` drawing from the solution tank."""
    state.apply_command_sent(Role.VALVE_SOLUTION_SUPPLY, True, f"{cmd_id}-valve", at)
    state.apply_command_terminal(Role.VALVE_SOLUTION_SUPPLY, f"{cmd_id}-valve", "DONE", None, at)
    state.apply_command_sent(Role.PUMP_MAIN, True, cmd_id, at)
    state.apply_command_terminal(Role.PUMP_MAIN, cmd_id, "DONE", None, at)


def codes(detections: list[Detection]) -> list[str]:
    return [detection.code for detection in detections]


# --- readings and levels ---------------------------------------------------------------------------------

def test_the_latest_reading_per_role_with_its_flags_and_age() -> None:
    state = ZoneState()
    state.apply_telemetry(Role.PH_SENSOR, 5.9, NOW - 20, {"stable": True, "flow_active": True}, NOW - 19)
    state.apply_telemetry(Role.PH_SENSOR, 6.1, NOW - 30, None, NOW - 18)  # older sample arriving late: kept out
    reading = state.readings[Role.PH_SENSOR]
    assert (reading.value, reading.ts, reading.received_at) == (5.9, NOW - 20, NOW - 19)
    assert reading.flags == {"stable": True, "flow_active": True}
    view = state.to_view(NOW)
    assert view.readings["ph_sensor"].age_s == 20.0
    assert view.readings["ph_sensor"].flags == {"stable": True, "flow_active": True}


def test_non_finite_values_and_times_are_ignored() -> None:
    state = ZoneState()
    for value, ts in ((math.nan, NOW), (math.inf, NOW), (1.0, math.nan), (True, NOW)):
        assert state.apply_telemetry(Role.EC_SENSOR, value, ts, None, NOW) == []
    assert state.readings == {}


def test_level_switches_from_telemetry_events_and_snapshots() -> None:
    state = ZoneState()
    state.apply_telemetry(Role.LEVEL_CLEAN_MIN, 1.0, NOW - 50, None, NOW - 50)
    assert state.levels[Role.LEVEL_CLEAN_MIN].state is True
    assert state.levels[Role.LEVEL_CLEAN_MIN].changed_at is None  # the first report is not a change
    state.apply_event(None, "level_switch_changed", {"channel": "level_clean_min", "state": False, "ts": NOW - 40},
                      NOW - 39)
    assert state.levels[Role.LEVEL_CLEAN_MIN].state is False
    assert state.levels[Role.LEVEL_CLEAN_MIN].changed_at == NOW - 40
    state.apply_event(Role.LEVEL_CLEAN_MAX, "level_switch_changed", {"state": True}, NOW - 30)  # no ts: now
    assert state.levels[Role.LEVEL_CLEAN_MAX].ts == NOW - 30
    state.apply_snapshot({"clean_level_min": 1, "solution_level_min": True, "solution_level_max": 0}, NOW - 20)
    assert {role: level.state for role, level in state.levels.items()} == {
        Role.LEVEL_CLEAN_MIN: True, Role.LEVEL_CLEAN_MAX: True, Role.LEVEL_SOLUTION_MIN: True,
        Role.LEVEL_SOLUTION_MAX: False}
    assert state.levels[Role.LEVEL_CLEAN_MIN].changed_at == NOW - 20
    # an older report never undoes a newer one
    state.apply_telemetry(Role.LEVEL_CLEAN_MIN, 0.0, NOW - 100, None, NOW)
    assert state.levels[Role.LEVEL_CLEAN_MIN].state is True
    view = state.to_view(NOW)
    assert view.levels["level_clean_min"].age_s == 20.0


def test_unintelligible_level_events_and_snapshot_values_change_nothing() -> None:
    state = ZoneState()
    state.apply_event(None, "level_switch_changed", {"channel": "pump_main", "state": True}, NOW)
    state.apply_event(None, "level_switch_changed", {"channel": "level_clean_min", "state": "yes"}, NOW)
    state.apply_event(Role.LEVEL_CLEAN_MIN, "level_switch_changed", {"state": 2, "ts": "x"}, NOW)
    junk: dict[Any, Any] = {"pump_main": "on", "valve_x": True, "clean_level_min": None, 3: True}
    state.apply_snapshot(junk, NOW)
    assert state.levels == {}
    assert state.actuators[Role.PUMP_MAIN].confirmed is None


# --- commands ----------------------------------------------------------------------------------------------

def test_desired_on_send_and_confirmed_on_done() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.VALVE_CLEAN_FILL, True, "c1", NOW)
    valve = state.actuators[Role.VALVE_CLEAN_FILL]
    assert (valve.desired, valve.confirmed, valve.cmd_id, valve.since) == (True, None, "c1", None)
    state.apply_command_terminal(Role.VALVE_CLEAN_FILL, "c1", "DONE", None, NOW + 1)
    valve = state.actuators[Role.VALVE_CLEAN_FILL]
    assert (valve.desired, valve.confirmed, valve.since) == (True, True, NOW + 1)
    view = state.to_view(NOW + 5).actuators["valve_clean_fill"]
    assert (view.desired, view.confirmed, view.since, view.cmd_id) == (True, True, NOW + 1, "c1")


def test_the_first_terminal_is_final_and_unknown_commands_change_nothing() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.VALVE_IRRIGATION, True, "c1", NOW)
    state.apply_command_terminal(Role.VALVE_IRRIGATION, "c1", "BUSY", None, NOW + 1)
    state.apply_command_terminal(Role.VALVE_IRRIGATION, "c1", "DONE", None, NOW + 2)  # a simulator's second reply
    assert state.actuators[Role.VALVE_IRRIGATION].confirmed is None
    state.apply_command_terminal(Role.VALVE_IRRIGATION, "never-sent", "DONE", None, NOW + 3)
    assert state.actuators[Role.VALVE_IRRIGATION].confirmed is None


def test_a_late_done_of_an_older_command_does_not_undo_a_newer_one() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.PUMP_MAIN, True, "on", NOW)
    state.apply_command_sent(Role.PUMP_MAIN, False, "off", NOW + 1)
    state.apply_command_terminal(Role.PUMP_MAIN, "off", "DONE", None, NOW + 2)
    state.apply_command_terminal(Role.PUMP_MAIN, "on", "DONE", None, NOW + 3)
    pump = state.actuators[Role.PUMP_MAIN]
    assert (pump.desired, pump.confirmed, pump.since) == (False, False, NOW + 2)


def test_in_order_dones_track_the_relay() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.PUMP_MAIN, True, "on", NOW)
    state.apply_command_sent(Role.PUMP_MAIN, False, "off", NOW + 1)
    state.apply_command_terminal(Role.PUMP_MAIN, "on", "DONE", None, NOW + 2)
    assert state.actuators[Role.PUMP_MAIN].confirmed is True
    state.apply_command_terminal(Role.PUMP_MAIN, "off", "DONE", None, NOW + 3)
    assert state.actuators[Role.PUMP_MAIN].confirmed is False


def test_commands_to_roles_that_are_not_actuators_are_not_tracked() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.STORAGE_STATE, True, "probe", NOW)
    assert Role.STORAGE_STATE not in state.actuators
    assert state.apply_command_terminal(Role.STORAGE_STATE, "probe", "DONE", None, NOW) == []


def test_failed_pump_starts_count_as_failures_and_nothing_else_does() -> None:
    state = ZoneState()
    for index, (on, status) in enumerate([(True, "ERROR"), (True, "TIMEOUT"), (True, "INVALID"), (True, "BUSY"),
                                          (True, "SEND_FAILED"), (True, "NO_EFFECT"), (False, "ERROR"),
                                          (True, "DONE")]):
        state.apply_command_sent(Role.PUMP_ACID, on, f"c{index}", NOW + index)
        state.apply_command_terminal(Role.PUMP_ACID, f"c{index}", status, None, NOW + index)
    assert state.failures == {Role.PUMP_ACID: [NOW, NOW + 1]}
    state.apply_command_sent(Role.VALVE_IRRIGATION, True, "v", NOW)
    state.apply_command_terminal(Role.VALVE_IRRIGATION, "v", "ERROR", None, NOW)
    assert Role.VALVE_IRRIGATION not in state.failures
    # failures leave with the window
    window = state.settings.safety.failure_window_s
    state.tick(NOW + window)
    assert state.failures == {Role.PUMP_ACID: [NOW + 1]}
    state.tick(NOW + window + 1)
    assert state.failures == {}


def test_overcurrent_from_a_reply_or_a_node_error_locks_the_zone() -> None:
    state = ZoneState(devices=devices())
    state.apply_command_sent(Role.PUMP_MAIN, True, "c1", NOW)
    detections = state.apply_command_terminal(Role.PUMP_MAIN, "c1", "ERROR", "overcurrent", NOW)
    assert codes(detections) == ["biz_overcurrent"]
    assert detections[0].severity == "critical"
    assert detections[0].dedupe_key == "pump_main"
    assert state.active_lock_codes() == {"biz_overcurrent"}
    detections = state.apply_error(Role.PUMP_MAIN, "overcurrent", {"current_ma": 3600, "threshold_ma": 3000}, NOW + 1)
    assert codes(detections) == ["biz_overcurrent"]
    assert detections[0].details == {"role": "pump_main", "current_ma": 3600, "threshold_ma": 3000}
    alert = state.alerts[("biz_overcurrent", "pump_main")]
    assert (alert.count, alert.first_seen, alert.last_seen) == (2, NOW, NOW + 1)
    assert state.failures[Role.PUMP_MAIN] == [NOW, NOW + 1]
    assert state.apply_error(Role.VALVE_IRRIGATION, "overcurrent", {}, NOW) == []
    assert state.apply_error(Role.PUMP_MAIN, "cooldown_active", {}, NOW) == []
    assert codes(state.apply_error(None, "overcurrent", {}, NOW)) == ["biz_overcurrent"]
    assert ("biz_overcurrent", "unknown") in state.alerts


def test_snapshots_confirm_actuators() -> None:
    state = ZoneState()
    snapshot = {key: key.startswith(("valve_solution", "pump")) for key in SNAPSHOT_KEYS}
    state.apply_event(Role.STORAGE_STATE, "state_snapshot", {"snapshot": snapshot}, NOW)
    assert state.actuators[Role.PUMP_MAIN].confirmed is True
    assert state.actuators[Role.VALVE_SOLUTION_SUPPLY].confirmed is True
    assert state.actuators[Role.VALVE_CLEAN_FILL].confirmed is False
    assert state.actuators[Role.PUMP_MAIN].since == NOW
    state.apply_snapshot(snapshot, NOW + 10)  # unchanged: since stays
    assert state.actuators[Role.PUMP_MAIN].since == NOW


def test_link_loss_failsafe_confirms_the_stopped_pumps_off() -> None:
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    state.apply_event(None, "link_loss_failsafe", {"timeout_sec": 120, "stopped_pumps": ["pump_main", "nope", 3]},
                      NOW + 5, node_uid=IRR)
    assert state.actuators[Role.PUMP_MAIN].confirmed is False
    assert state.role_of(IRR, "pump_main") is Role.PUMP_MAIN
    assert state.role_of("nd-other", "pump_main") is None


# --- detections --------------------------------------------------------------------------------------------

def test_no_flow_is_raised_once_per_episode() -> None:
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    window = state.settings.safety.no_flow_window_s
    assert state.tick(NOW + window - 1) == []
    detections = state.tick(NOW + window)
    assert codes(detections) == ["biz_no_flow"]
    assert state.tick(NOW + window + 30) == []  # same episode
    assert state.failures[Role.PUMP_MAIN] == [NOW + window]
    # flow comes back: the episode ends; it stops again: a new occurrence, the alert's count grows
    assert state.apply_telemetry(Role.FLOW, 12.0, NOW + 100, None, NOW + 100) == []
    assert state.tick(NOW + 100 + window) == []  # that reading still counts
    assert codes(state.tick(NOW + 101 + window)) == ["biz_no_flow"]
    assert state.alerts[("biz_no_flow", "pump_main")].count == 2


def test_flow_or_a_level_change_within_the_window_is_flow() -> None:
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    window = state.settings.safety.no_flow_window_s
    state.apply_telemetry(Role.FLOW, 0.3, NOW + 10, None, NOW + 10)  # below flow_present_min
    state.apply_telemetry(Role.LEVEL_SOLUTION_MAX, 0.0, NOW + 5, None, NOW + 5)
    state.apply_telemetry(Role.LEVEL_SOLUTION_MAX, 1.0, NOW + 20, None, NOW + 20)  # a change
    assert state.tick(NOW + window + 19) == []
    assert codes(state.tick(NOW + window + 21)) == ["biz_no_flow"]


def test_no_flow_needs_a_flow_sensor_and_a_confirmed_run() -> None:
    state = ZoneState(devices=devices(Role.PUMP_MAIN))
    running_pump(state, NOW)
    assert state.tick(NOW + 3600) == []  # level switches alone cannot tell
    state = ZoneState(devices=devices())
    state.apply_command_sent(Role.PUMP_MAIN, True, "c", NOW)  # never confirmed
    assert state.tick(NOW + 3600) == []


def test_pump_stuck_on_after_a_stop_is_critical() -> None:
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    state.apply_telemetry(Role.FLOW, 12.0, NOW + 1, None, NOW + 1)
    state.apply_command_sent(Role.PUMP_MAIN, False, "stop", NOW + 10)
    grace = state.settings.safety.no_flow_window_s
    # spin-down: flow and current right after the stop are not evidence
    assert state.apply_telemetry(Role.PUMP_CURRENT, 1800.0, NOW + 15, None, NOW + 15) == []
    assert state.apply_telemetry(Role.PUMP_CURRENT, 40.0, NOW + 10 + grace, None, NOW + 10 + grace) == []  # noise
    detections = state.apply_telemetry(Role.PUMP_CURRENT, 1800.0, NOW + 11 + grace, None, NOW + 11 + grace)
    assert codes(detections) == ["biz_pump_stuck_on"]
    assert detections[0].severity == "critical"
    assert detections[0].details["current"] == 1800.0
    assert state.apply_telemetry(Role.PUMP_CURRENT, 1700.0, NOW + 12 + grace, None, NOW + 12 + grace) == []
    assert state.alerts[("biz_pump_stuck_on", "pump_main")].severity == "critical"
    refusal = can_run_pump(state, devices(), state.settings, Role.VALVE_IRRIGATION, NOW + 100)
    assert refusal is not None
    assert refusal.reason_code == "safety_lock_biz_pump_stuck_on"


def test_flow_while_the_clean_fill_valve_is_open_is_not_a_stuck_pump() -> None:
    state = ZoneState(devices=devices())
    state.apply_command_sent(Role.PUMP_MAIN, False, "stop", NOW)
    state.apply_command_sent(Role.VALVE_CLEAN_FILL, True, "fill", NOW)
    assert state.apply_telemetry(Role.FLOW, 8.0, NOW + 100, None, NOW + 100) == []
    state.apply_command_sent(Role.VALVE_CLEAN_FILL, False, "fill-stop", NOW + 101)
    assert state.apply_command_terminal(Role.VALVE_CLEAN_FILL, "fill-stop", "DONE", None, NOW + 101) == []
    grace = state.settings.safety.no_flow_window_s
    assert state.apply_telemetry(Role.FLOW, 8.0, NOW + 100 + grace, None, NOW + 100 + grace) == []
    detections = state.apply_telemetry(Role.FLOW, 8.0, NOW + 101 + grace, None, NOW + 101 + grace)
    assert codes(detections) == ["biz_pump_stuck_on"]
    assert detections[0].details["flow"] == 8.0


def test_a_pump_never_commanded_off_is_not_stuck() -> None:
    # the NC recirculation pump runs by itself when nobody drives its relay
    state = ZoneState(devices=devices())
    assert state.apply_telemetry(Role.PUMP_CURRENT, 1800.0, NOW, None, NOW) == []


def test_a_tank_running_dry_under_the_pump_is_a_dry_run() -> None:
    state = ZoneState(devices=devices())
    state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 1.0, NOW, None, NOW)
    running_pump(state, NOW)
    state.apply_telemetry(Role.FLOW, 12.0, NOW + 1, None, NOW + 1)
    detections = state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 0.0, NOW + 2, None, NOW + 2)
    assert codes(detections) == ["biz_dry_run"]
    assert detections[0].details == {"role": "pump_main", "tank": "solution", "switch": "level_solution_min",
                                     "reason": "running"}
    assert state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 0.0, NOW + 3, None, NOW + 3) == []


def test_reset_resolves_the_locks_and_forgets_failures() -> None:
    state = ZoneState(ZoneSettings(safety=Safety(max_failures=1)), devices())
    state.restore_alert("biz_no_flow", "pump_main", "warning", first_seen=NOW - 10, last_seen=NOW - 5, count=3)
    state.restore_alert("biz_high_ph", "ph", "warning", first_seen=NOW, last_seen=NOW)
    state.apply_command_sent(Role.PUMP_A, True, "c", NOW)
    state.apply_command_terminal(Role.PUMP_A, "c", "TIMEOUT", None, NOW)
    locks = state.to_view(NOW).safety_locks
    assert [(lock.reason_code, lock.role) for lock in locks] == [("safety_lock_biz_no_flow", "pump_main"),
                                                                 ("pump_failure_limit", "pump_a")]
    resolved = state.reset_safety_locks()
    assert [(alert.code, alert.count) for alert in resolved] == [("biz_no_flow", 3)]
    assert set(state.alerts) == {("biz_high_ph", "ph")}  # not a lock: untouched
    assert state.failures == {}
    assert state.to_view(NOW).safety_locks == []
    assert state.resolve_alert("biz_high_ph", "other") == []
    assert len(state.resolve_alert("biz_high_ph", "ph")) == 1


def test_a_reset_with_the_condition_still_present_raises_it_again() -> None:
    """The operator's reset lifts the lock; a pump that still has no flow is flagged again at once."""
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    assert codes(state.tick(NOW + 120)) == ["biz_no_flow"]
    assert state.tick(NOW + 121) == []  # one alert per episode
    assert [alert.code for alert in state.reset_safety_locks()] == ["biz_no_flow"]
    assert codes(state.tick(NOW + 122)) == ["biz_no_flow"]


def test_the_view_is_json() -> None:
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    state.apply_node_online(IRR, True, NOW)
    state.apply_telemetry(Role.PH_SENSOR, 5.8, NOW, {"stable": True}, NOW)
    state.water_state = "NORMAL_RECIRC"
    state.workflow = "two_tank"
    assert state.to_view(NOW + 120).alerts == []  # the view only reads: time passing is a tick
    state.tick(NOW + 120)
    view = state.to_view(NOW + 120)
    document = msgspec.json.decode(msgspec.json.encode(view))
    assert document["nodes_online"] == {IRR: True}
    assert document["water_state"] == "NORMAL_RECIRC"
    assert document["workflow"] == "two_tank"
    assert document["actuators"]["pump_main"]["confirmed"] is True
    assert [alert["code"] for alert in document["alerts"]] == ["biz_no_flow"]
    assert msgspec.convert(document, ZoneStateView) == view


def test_settings_change_applies_to_the_next_input() -> None:
    state = ZoneState(devices=devices())
    running_pump(state, NOW)
    state.update_settings(ZoneSettings(safety=Safety(no_flow_window_s=5)))
    assert codes(state.tick(NOW + 5)) == ["biz_no_flow"]
    assert state.devices == devices()  # devices kept when not given


# --- invariants under any sequence of inputs --------------------------------------------------------------

# biased towards the main pump, its valves and its sensors, so the detections happen, not only the rest
_water = [Role.PUMP_MAIN, Role.FLOW, Role.PUMP_CURRENT, Role.LEVEL_SOLUTION_MIN, Role.LEVEL_CLEAN_MIN,
          Role.VALVE_CLEAN_FILL, Role.VALVE_SOLUTION_SUPPLY, Role.VALVE_CLEAN_SUPPLY]
_roles = st.sampled_from(_water) | st.sampled_from(sorted(Role))
_commanded = st.sampled_from([Role.PUMP_MAIN, Role.PUMP_MAIN, Role.VALVE_CLEAN_FILL, Role.VALVE_SOLUTION_SUPPLY,
                              Role.VALVE_CLEAN_SUPPLY]) | st.sampled_from(sorted(ACTUATORS | {Role.STORAGE_STATE}))
_cmd_ids = st.sampled_from([f"c{i}" for i in range(4)])
_statuses = st.sampled_from(["DONE", "DONE", "DONE", "ERROR", "TIMEOUT", "BUSY", "INVALID", "NO_EFFECT",
                             "SEND_FAILED"])
_values = st.sampled_from([0.0, 1.0, 12.0, 1800.0]) | st.floats(allow_nan=True, allow_infinity=True)
_steps = st.sampled_from([0.0, 5.0, 30.0, 61.0]) | st.floats(min_value=0, max_value=900)

_inputs = st.one_of(
    st.tuples(st.just("telemetry"), _roles, _values, st.sampled_from([0.0, -1.0]) | st.floats(-600, 60), _steps),
    st.tuples(st.just("level_event"), st.sampled_from(sorted(LEVELS)), st.booleans(), _steps),
    st.tuples(st.just("sent"), _commanded, st.booleans(), _cmd_ids, _steps),
    st.tuples(st.just("terminal"), _cmd_ids, _statuses, st.sampled_from([None, "overcurrent", "x"]), _steps),
    st.tuples(st.just("snapshot"), st.dictionaries(st.sampled_from(sorted(SNAPSHOT_KEYS)),
                                                   st.booleans() | st.sampled_from([0, 1, 2, None]), max_size=5),
              _steps),
    st.tuples(st.just("online"), st.sampled_from([IRR, "nd-other"]), st.booleans(), _steps),
    st.tuples(st.just("error"), st.none() | _roles, st.sampled_from(["overcurrent", "other"]), _steps),
    st.tuples(st.just("tick"), _steps),
    st.tuples(st.just("reset"), _steps),
)


def _apply(state: ZoneState, step: tuple[Any, ...], now: float) -> list[Detection]:
    kind = step[0]
    if kind == "telemetry":
        _, role, value, offset, _ = step
        return state.apply_telemetry(role, value, now + offset, None, now)
    if kind == "level_event":
        return state.apply_event(step[1], "level_switch_changed", {"state": step[2]}, now)
    if kind == "sent":
        return state.apply_command_sent(step[1], step[2], step[3], now)
    if kind == "terminal":
        return state.apply_command_terminal(None, step[1], step[2], step[3], now)
    if kind == "snapshot":
        return state.apply_snapshot(step[1], now)
    if kind == "online":
        return state.apply_node_online(step[1], step[2], now)
    if kind == "error":
        return state.apply_error(step[1], step[2], {}, now)
    if kind == "reset":
        state.reset_safety_locks()
        return []
    return state.tick(now)


@settings(max_examples=500, deadline=None)
@given(st.lists(_inputs, max_size=40), st.sampled_from(["two_tank", "single_tank"]))
def test_any_sequence_of_inputs_keeps_the_invariants(steps: list[tuple[Any, ...]], topology: str) -> None:
    zone_settings = ZoneSettings(topology=topology)  # type: ignore[arg-type]
    state = ZoneState(zone_settings, devices())
    now = NOW
    terminated: set[str] = set()
    touched: set[Role] = set()  # actuators a DONE, a snapshot could have confirmed
    sent: dict[str, tuple[Role, bool]] = {}
    for step in steps:
        now += step[-1]
        before = msgspec.structs.asdict(state.actuators[sent[step[1]][0]]) \
            if step[0] == "terminal" and step[1] in terminated and step[1] in sent else None
        detections = _apply(state, step, now)
        if step[0] == "sent" and step[1] in ACTUATORS:
            sent[step[3]] = (step[1], step[2])
            terminated.discard(step[3])
        elif step[0] == "terminal":
            if before is not None:  # a second terminal for a command changes nothing
                assert msgspec.structs.asdict(state.actuators[sent[step[1]][0]]) == before
                assert detections == [] or all(d.code != "biz_overcurrent" or d.details.get("cmd_id") != step[1]
                                               for d in detections)
            if step[1] in sent and step[2] == "DONE":
                touched.add(sent[step[1]][0])
            terminated.add(step[1])
        elif step[0] == "snapshot":
            touched.update(SNAPSHOT_KEYS[key] for key, value in step[1].items()
                           if SNAPSHOT_KEYS[key] in ACTUATORS and value in (0, 1))

        assert set(state.actuators) == set(ACTUATORS)
        assert set(state.levels) <= set(LEVELS)
        assert all(math.isfinite(r.value) and math.isfinite(r.ts) for r in state.readings.values())
        assert set(state.failures) <= set(PUMPS)
        window = state.settings.safety.failure_window_s
        assert all(now - window < at <= now for ats in state.failures.values() for at in ats)
        for detection in detections:  # every detection is an active alert at once
            event(f"detected {detection.code}")
            assert (detection.code, detection.dedupe_key) in state.alerts
            assert detection.code in LOCK_CODES
        for alert in state.alerts.values():
            assert alert.count >= 1
            assert alert.first_seen <= alert.last_seen
        for role, actuator in state.actuators.items():
            if role not in touched:
                assert actuator.confirmed is None, role
            if actuator.confirmed is not None:
                assert actuator.since is not None
        view = state.to_view(now)
        assert msgspec.convert(msgspec.json.decode(msgspec.json.encode(view)), ZoneStateView) == view
        # the gate never raises, whatever the state
        for role in (Role.PUMP_MAIN, Role.PUMP_ACID, Role.VALVE_IRRIGATION):
            can_run_pump(state, state.devices, state.settings, role, now)


def test_a_timed_run_is_running_from_its_ack_and_stopped_when_done() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.PUMP_MAIN, True, "run-1", 100.0, timed=True)
    assert (state.actuators[Role.PUMP_MAIN].desired, state.actuators[Role.PUMP_MAIN].confirmed) == (True, None)
    state.apply_command_ack("run-1", 101.0)
    assert state.actuators[Role.PUMP_MAIN].confirmed is True
    state.apply_command_terminal(Role.PUMP_MAIN, "run-1", "DONE", None, 130.0)
    pump = state.actuators[Role.PUMP_MAIN]
    assert (pump.desired, pump.confirmed, pump.since) == (False, False, 130.0)


def test_an_untimed_start_is_confirmed_on_by_its_done_and_an_ack_changes_nothing() -> None:
    state = ZoneState()
    state.apply_command_sent(Role.VALVE_IRRIGATION, True, "open-1", 100.0)
    state.apply_command_ack("open-1", 100.5)
    assert state.actuators[Role.VALVE_IRRIGATION].confirmed is None
    state.apply_command_terminal(Role.VALVE_IRRIGATION, "open-1", "DONE", None, 101.0)
    assert state.actuators[Role.VALVE_IRRIGATION].confirmed is True


# --- time: what a tick can find, and when ---------------------------------------------------------------

def _observable(state: ZoneState) -> tuple[Any, ...]:
    """Everything a tick may change."""
    return (dict(state.alerts), set(state._episodes), {role: list(ats) for role, ats in state.failures.items()},
            dict(state.actuators), dict(state.levels), dict(state.readings))


_whole_steps = st.sampled_from([0, 1, 5, 30, 61]) | st.integers(min_value=0, max_value=90)
_pumped = [Role.FLOW, Role.PUMP_CURRENT, Role.LEVEL_SOLUTION_MIN, Role.LEVEL_CLEAN_MIN, Role.LEVEL_SOLUTION_MAX]
# biased towards a main pump that starts, runs, stops, with the readings its detections look at
_timed_inputs = st.one_of(
    st.tuples(st.sampled_from(["start", "stop", "timed_run", "supply"]), _cmd_ids, _whole_steps),
    st.tuples(st.just("telemetry"), st.sampled_from(_pumped), st.sampled_from([0.0, 1.0, 12.0, 1800.0]),
              st.integers(-120, 60), _whole_steps),  # a device clock ahead: evidence that time makes count
    st.tuples(st.just("telemetry"), _roles, _values, st.integers(-120, 5), _whole_steps),
    st.tuples(st.just("level_event"), st.sampled_from(sorted(LEVELS)), st.booleans(), _whole_steps),
    st.tuples(st.just("sent"), _commanded, st.booleans(), _cmd_ids, _whole_steps),
    st.tuples(st.just("terminal"), _cmd_ids, _statuses, st.sampled_from([None, "overcurrent"]), _whole_steps),
    st.tuples(st.just("snapshot"), st.dictionaries(st.sampled_from(sorted(SNAPSHOT_KEYS)), st.booleans(),
                                                   max_size=4), _whole_steps),
    st.tuples(st.just("error"), st.none() | _roles, st.sampled_from(["overcurrent", "other"]), _whole_steps),
    st.tuples(st.just("reset"), _whole_steps),
)


def _apply_timed(state: ZoneState, step: tuple[Any, ...], now: float) -> list[Detection]:
    kind = step[0]
    if kind in ("start", "stop", "supply"):
        role, on = (Role.VALVE_SOLUTION_SUPPLY, True) if kind == "supply" else (Role.PUMP_MAIN, kind == "start")
        found = state.apply_command_sent(role, on, step[1], now)
        return [*found, *state.apply_command_terminal(role, step[1], "DONE", None, now)]
    if kind == "timed_run":
        found = state.apply_command_sent(Role.PUMP_MAIN, True, step[1], now, timed=True)
        return [*found, *state.apply_command_ack(step[1], now)]
    if kind == "reset":  # as the zone actor does: a condition still present is evaluated at once
        state.reset_safety_locks()
        return state.tick(now)
    return _apply(state, step, now)


@settings(max_examples=200, deadline=None)
@given(st.lists(_inputs | _timed_inputs, max_size=40), st.sampled_from(["two_tank", "single_tank"]),
       st.floats(min_value=0.0, max_value=1.0))
def test_before_the_next_deadline_a_tick_changes_nothing(steps: list[tuple[Any, ...]], topology: str,
                                                          fraction: float) -> None:
    """``next_deadline`` is complete: a tick at any moment before it (each time-based condition is monotone
    between inputs, so its last moment and one drawn in between stand for all) finds nothing, changes
    nothing; and after the last deadline nothing is pending, even a week later."""
    state = ZoneState(ZoneSettings(topology=topology), devices())  # type: ignore[arg-type]
    now = NOW
    for step in steps:
        now += step[-1]
        for detection in _apply_timed(state, step, now):
            event(f"detected {detection.code}")
        deadline = state.next_deadline(now)
        assert deadline is None or deadline > now
        last = (now + 7 * 86400) if deadline is None else deadline - 2e-3
        for at in (last, now + (last - now) * fraction):
            if at <= now:
                continue
            probe = copy.deepcopy(state)
            before = _observable(probe)
            assert probe.tick(at) == []
            assert _observable(probe) == before, (deadline, at)


@settings(max_examples=300, deadline=None)
@given(st.lists(_timed_inputs, max_size=25), st.integers(min_value=1, max_value=40),
       st.integers(min_value=1, max_value=60))
def test_ticking_at_the_deadlines_finds_what_ticking_every_second_found(
    steps: list[tuple[Any, ...]], window: int, stale: int,
) -> None:
    """The old design (a tick every second) against the new one (a tick at each deadline only), inputs on
    whole seconds: the same detections, in the same order, each at most one tick sooner, never later."""
    zone_settings = ZoneSettings(safety=Safety(no_flow_window_s=window, level_stale_s=stale))
    every_second, at_deadlines = ZoneState(zone_settings, devices()), ZoneState(zone_settings, devices())
    seen: tuple[list[tuple[str, str, float]], list[tuple[str, str, float]]] = ([], [])

    def note(which: int, detections: list[Detection], at: float) -> None:
        seen[which].extend((d.code, d.dedupe_key, at) for d in detections)

    now = NOW
    for step in steps:
        until = now + step[-1]
        for second in range(1, step[-1] + 1):  # the old ticks, before an input due at the same second
            note(0, every_second.tick(now + second), now + second)
        # the new ticks; one due with the input comes first, as above
        while (deadline := at_deadlines.next_deadline(now)) is not None and deadline <= until:
            now = deadline
            note(1, at_deadlines.tick(now), now)
        now = until
        note(0, _apply_timed(every_second, step, now), now)
        note(1, _apply_timed(at_deadlines, step, now), now)
    for code, _, _ in seen[0]:
        event(f"detected {code}")
    assert [d[:2] for d in seen[1]] == [d[:2] for d in seen[0]]
    for (_, _, new), (_, _, old) in zip(seen[1], seen[0], strict=True):
        assert old - 1 < new <= old
    assert set(at_deadlines.alerts) == set(every_second.alerts)


def test_the_next_deadline_is_the_moment_each_pending_condition_may_flip() -> None:
    state = ZoneState(ZoneSettings(safety=Safety(no_flow_window_s=60, level_stale_s=120)), devices())
    assert state.next_deadline(NOW) is None  # idle: nothing to wait for
    running_pump(state, NOW)
    assert state.next_deadline(NOW) == NOW + 60  # no_flow: a whole window of running
    state.apply_telemetry(Role.FLOW, 12.0, NOW + 30, None, NOW + 30)  # flow: the window starts again
    assert state.next_deadline(NOW + 30) == pytest.approx(NOW + 90, abs=0.01)
    assert state.tick(NOW + 89) == []
    assert codes(state.tick(state.next_deadline(NOW + 89) or 0)) == ["biz_no_flow"]
    # raised, and counted as a failure of the pump: what is left is that failure leaving its window
    assert state.next_deadline(NOW + 91) == pytest.approx(NOW + 90 + state.settings.safety.failure_window_s, abs=0.01)

    # a stop settles for a window; a reading stamped after that (a device clock ahead) is evidence then
    state = ZoneState(ZoneSettings(safety=Safety(no_flow_window_s=60)), devices())
    state.apply_command_sent(Role.PUMP_MAIN, False, "stop", NOW)
    state.apply_telemetry(Role.PUMP_CURRENT, 1800.0, NOW + 65, None, NOW + 1)
    assert state.next_deadline(NOW + 1) == NOW + 60
    assert state.tick(NOW + 59) == []
    assert codes(state.tick(NOW + 60)) == ["biz_pump_stuck_on"]

    # running dry ends when the dry switch goes stale: the next dry report is a new alert
    state = ZoneState(ZoneSettings(safety=Safety(level_stale_s=120)), devices(*set(Role) - {Role.FLOW}))
    running_pump(state, NOW)
    assert codes(state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 0.0, NOW, None, NOW)) == ["biz_dry_run"]
    deadline = state.next_deadline(NOW)
    assert deadline == pytest.approx(NOW + 120, abs=0.01)
    state.tick(deadline or 0)
    assert codes(state.apply_telemetry(Role.LEVEL_SOLUTION_MIN, 0.0, NOW + 200, None, NOW + 200)) == ["biz_dry_run"]

    # a failure leaves its window
    state = ZoneState(devices=devices())
    state.apply_command_sent(Role.PUMP_A, True, "c", NOW)
    state.apply_command_terminal(Role.PUMP_A, "c", "TIMEOUT", None, NOW)
    deadline = state.next_deadline(NOW)
    assert deadline == pytest.approx(NOW + state.settings.safety.failure_window_s, abs=0.01)
    state.tick(deadline or 0)
    assert state.failures == {}
    assert state.next_deadline(deadline or 0) is None
