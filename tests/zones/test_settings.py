"""Zone settings: defaults, the path of every bad value, never raising on any input, device resolution."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.zones.roles import Role
from hydrovisor.zones.settings import (
    MAX_ERRORS,
    DeviceRef,
    FieldError,
    ResolvedDevice,
    ZoneSettings,
    parse_hhmm,
    parse_settings,
    resolve_devices,
)


def _errors(raw: Any) -> list[tuple[str, str]]:
    result = parse_settings(raw)
    assert isinstance(result, list), result
    return [(error.path, error.message) for error in result]


def _paths(raw: Any) -> list[str]:
    return [path for path, _ in _errors(raw)]


def test_the_empty_document_is_valid_and_holds_the_domain_defaults() -> None:
    parsed = parse_settings(b"{}")
    assert parsed == ZoneSettings()
    assert isinstance(parsed, ZoneSettings)
    assert parsed.topology == "two_tank"
    assert (parsed.targets.ph.target, parsed.targets.ph.min, parsed.targets.ph.max) == (5.8, 5.5, 6.2)
    assert (parsed.targets.ec.target, parsed.targets.ec.min, parsed.targets.ec.max) == (1.6, 1.2, 2.0)
    assert parsed.timeouts.clean_fill_s == 1200
    assert parsed.timeouts.solution_fill_s == 1800
    assert parsed.timeouts.prepare_recirculation_s == 1200
    assert parsed.safety.level_stale_s == 300
    assert parsed.safety.failure_window_s == 1800
    assert parsed.safety.max_failures == 3
    assert parsed.water_cycle.recirc.enabled is True
    assert parsed.water_cycle.recirc.max_recirc_off_minutes == 30
    assert parsed.water_cycle.water_change.time_of_day == "03:00"


def test_the_defaults_round_trip_through_json_with_from_and_to() -> None:
    document = {"water_cycle": {"recirc": {"schedule": [{"from": "22:00", "to": "02:00", "duty_cycle": 0.5}]}},
                "devices": {"pump_main": {"node_uid": "nd-irr-1", "channel": "pump_main"}}}
    parsed = parse_settings(json.dumps(document).encode())
    assert isinstance(parsed, ZoneSettings)
    window = parsed.water_cycle.recirc.schedule[0]
    assert (window.start, window.end, window.duty_cycle) == ("22:00", "02:00", 0.5)
    assert parsed.devices == {Role.PUMP_MAIN: DeviceRef(node_uid="nd-irr-1", channel="pump_main")}
    encoded = msgspec.json.decode(msgspec.json.encode(parsed))
    assert encoded["water_cycle"]["recirc"]["schedule"] == [{"from": "22:00", "to": "02:00", "duty_cycle": 0.5}]
    assert parse_settings(msgspec.json.encode(parsed)) == parsed
    assert parse_settings(encoded) == parsed  # a decoded object is accepted as well as bytes


def test_the_same_document_from_bytes_text_and_object() -> None:
    document = {"irrigation": {"enabled": True, "duration_s": 30}}
    as_bytes = parse_settings(json.dumps(document).encode())
    assert as_bytes == parse_settings(json.dumps(document)) == parse_settings(document)
    assert parse_settings(bytearray(json.dumps(document).encode())) == as_bytes


@pytest.mark.parametrize(
    ("document", "path", "fragment"),
    [
        ({"topology": "three_tank"}, "$.topology", "Invalid enum value"),
        ({"zz": 1}, "$.zz", "unknown field"),
        ({"targets": {"ph": {"target": 5.8, "min": 5.5, "max": 6.2, "mid": 1}}}, "$.targets.ph.mid", "unknown field"),
        ({"targets": {"ph": {"target": 5.8, "min": 5.5}}}, "$.targets.ph.max", "missing required field"),
        ({"targets": {"ec": {"target": "high", "min": 1, "max": 2}}}, "$.targets.ec.target", "Expected `float`"),
        ({"targets": {"ph": {"target": 5.0, "min": 5.5, "max": 6.2}}}, "$.targets.ph.min", "must not exceed target"),
        ({"targets": {"ph": {"target": 6.5, "min": 5.5, "max": 6.2}}}, "$.targets.ph.max", "must not be below"),
        ({"targets": {"ph": {"target": 5.8, "min": 5.5, "max": 15}}}, "$.targets.ph.max", "must be 0..14"),
        ({"targets": {"ec": {"target": 1, "min": -1, "max": 2}}}, "$.targets.ec.min", "must be >= 0"),
        ({"water_cycle": {"mode": "sometimes"}}, "$.water_cycle.mode", "Invalid enum value"),
        ({"water_cycle": {"recirc": {"enabled": "yes"}}}, "$.water_cycle.recirc.enabled", "Expected `bool`"),
        ({"water_cycle": {"recirc": {"max_recirc_off_minutes": 0}}},
         "$.water_cycle.recirc.max_recirc_off_minutes", ">= 1"),
        ({"water_cycle": {"recirc": {"schedule": [{"from": "08:00", "to": "09:00", "duty_cycle": 1.5}]}}},
         "$.water_cycle.recirc.schedule[0].duty_cycle", "<= 1.0"),
        ({"water_cycle": {"recirc": {"schedule": [{"from": "8:00", "to": "09:00"}]}}},
         "$.water_cycle.recirc.schedule[0].from", "HH:MM"),
        ({"water_cycle": {"recirc": {"schedule": [{"from": "08:00", "to": "24:00"}]}}},
         "$.water_cycle.recirc.schedule[0].to", "HH:MM"),
        ({"water_cycle": {"recirc": {"schedule": [{"from": "08:00", "to": "08:00"}]}}},
         "$.water_cycle.recirc.schedule[0].to", "must differ"),
        ({"water_cycle": {"recirc": {"schedule": [{"start": "08:00", "to": "09:00"}]}}},
         "$.water_cycle.recirc.schedule[0].start", "unknown field"),
        ({"water_cycle": {"recirc": {"schedule": [{"from": "22:00", "to": "02:00"},
                                                  {"from": "01:00", "to": "03:00"}]}}},
         "$.water_cycle.recirc.schedule[1]", "overlaps schedule[0]"),
        ({"water_cycle": {"water_change": {"time_of_day": "3am"}}}, "$.water_cycle.water_change.time_of_day", "HH:MM"),
        ({"water_cycle": {"water_change": {"interval_days": 0}}}, "$.water_cycle.water_change.interval_days", ">= 1"),
        ({"water_cycle": {"water_change": {"ec_drift_threshold": 0}}},
         "$.water_cycle.water_change.ec_drift_threshold", "> 0.0"),
        ({"irrigation": {"duration_s": -5}}, "$.irrigation.duration_s", ">= 1"),
        ({"irrigation": {"duration_s": 700}}, "$.irrigation.duration_s", "must not exceed timeouts.irrigation_s"),
        ({"irrigation": {"duration_s": 1.5}}, "$.irrigation.duration_s", "Expected `int`"),
        ({"timeouts": {"clean_fill_s": 0}}, "$.timeouts.clean_fill_s", ">= 1"),
        ({"timeouts": {"clean_fill_s": True}}, "$.timeouts.clean_fill_s", "Expected `int`, got `bool`"),
        # the safety parameters may be made stricter than DOMAIN §4, never looser
        ({"safety": {"level_stale_s": 301}}, "$.safety.level_stale_s", "<= 300"),
        ({"safety": {"max_failures": 4}}, "$.safety.max_failures", "<= 3"),
        ({"safety": {"failure_window_s": 600}}, "$.safety.failure_window_s", ">= 1800"),
        ({"devices": {"pump_mian": {"node_uid": "nd-a", "channel": "pump_main"}}}, "$.devices.pump_mian",
         "unknown role"),
        ({"devices": {"pump_main": {"node_uid": "nd-a"}}}, "$.devices.pump_main.channel", "missing required field"),
        ({"devices": {"pump_main": "nd-a/pump_main"}}, "$.devices.pump_main", "Expected `object`"),
        ({"devices": {"pump_main": {"node_uid": "ND A", "channel": "x"}}}, "$.devices.pump_main.node_uid",
         "not a node uid"),
        ({"devices": {"pump_main": {"node_uid": "nd-a", "channel": "a/b"}}}, "$.devices.pump_main.channel",
         "wildcard"),
        ({"devices": {"pump_main": {"node_uid": "nd-a", "channel": ""}}}, "$.devices.pump_main.channel", "empty"),
        ({"devices": []}, "$.devices", "expected an object, got array"),
        ({"weird key": 1}, '$["weird key"]', "unknown field"),
    ],
)
def test_each_bad_value_is_reported_at_its_path(document: dict[str, Any], path: str, fragment: str) -> None:
    errors = _errors(json.dumps(document).encode())
    assert any(error_path == path and fragment in message for error_path, message in errors), errors


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[1, 2]", "expected an object, got array"),
        (b"null", "expected an object, got null"),
        (b'"text"', "expected an object, got string"),
        (b"[" * 100_000, ""),
        ("{\"a\": " * 5000 + "1" + "}" * 5000, ""),
    ],
)
def test_malformed_input_is_one_error_at_the_root(raw: bytes | str, fragment: str) -> None:
    errors = _errors(raw)
    assert len(errors) == 1
    assert errors[0][0] == "$"
    assert fragment in errors[0][1]


def test_problems_of_every_section_are_reported_together() -> None:
    document = {"zz": 1, "targets": {"ph": "x"}, "timeouts": {"clean_fill_s": 0},
                "devices": {"nope": {}, "pump_main": {}}}
    assert _paths(json.dumps(document)) == ["$.zz", "$.targets.ph", "$.timeouts.clean_fill_s", "$.devices.nope",
                                            "$.devices.pump_main.node_uid"]


def test_cross_field_errors_are_all_reported() -> None:
    document = {"targets": {"ph": {"target": 5, "min": 6, "max": 4}},
                "water_cycle": {"water_change": {"time_of_day": "25:00"}}}
    assert _paths(json.dumps(document)) == ["$.targets.ph.min", "$.targets.ph.max",
                                            "$.water_cycle.water_change.time_of_day"]


def test_errors_are_capped() -> None:
    document = {f"k{i}": i for i in range(10 * MAX_ERRORS)}
    assert len(_errors(document)) == MAX_ERRORS
    devices: dict[str, Any] = {"devices": {f"r{i}": {} for i in range(10 * MAX_ERRORS)}}
    assert len(_errors(devices)) == MAX_ERRORS


def test_python_objects_that_json_cannot_carry_are_errors_not_crashes() -> None:
    assert _errors({"targets": {"ph": {"target": float("nan"), "min": 1, "max": 2}}}) == [
        ("$.targets.ph.target", "must be a finite number")]
    assert _paths({"targets": {"ec": {"target": float("inf"), "min": 0, "max": float("inf")}}}) == [
        "$.targets.ec.target", "$.targets.ec.max"]
    assert _paths({1: 2}) == ["$[1]"]
    assert _paths({"devices": {1: {}}}) == ["$.devices[1]"]
    assert _paths({"irrigation": object()}) == ["$.irrigation"]
    assert _paths(42) == ["$"]


def test_overlaps_wrap_past_midnight_and_touching_windows_do_not_overlap() -> None:
    touching = {"water_cycle": {"recirc": {"schedule": [{"from": "22:00", "to": "02:00"},
                                                        {"from": "02:00", "to": "22:00"}]}}}
    assert isinstance(parse_settings(touching), ZoneSettings)
    wrapped = {"water_cycle": {"recirc": {"schedule": [{"from": "22:00", "to": "02:00"},
                                                       {"from": "23:59", "to": "00:01"}]}}}
    assert _paths(wrapped) == ["$.water_cycle.recirc.schedule[1]"]


def test_parse_hhmm() -> None:
    assert parse_hhmm("00:00") == 0
    assert parse_hhmm("23:59") == 1439
    assert parse_hhmm("03:00") == 180
    for bad in ("24:00", "3:00", "03:60", "0300", " 03:00", "03:00 ", "", "\u0660\u0663:\u0660\u0660"):
        assert parse_hhmm(bad) is None, bad


# Any JSON at all: parse_settings answers a ZoneSettings or errors, never an exception.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_section_keys = st.sampled_from(["topology", "devices", "targets", "water_cycle", "irrigation", "timeouts", "safety",
                                 "ph", "ec", "recirc", "water_change", "schedule", "from", "to", "duty_cycle",
                                 "node_uid", "channel", "pump_main", "level_clean_min", "target", "min", "max",
                                 "enabled", "duration_s", "mode", "time_of_day"])
# documents shaped like settings (known keys, arbitrary values) reach deeper than random dictionaries
settings_like = st.recursive(
    json_values,
    lambda children: st.dictionaries(_section_keys, children, max_size=6),
    max_leaves=30,
)


def _check_result(result: ZoneSettings | list[FieldError]) -> None:
    if isinstance(result, ZoneSettings):
        assert parse_settings(msgspec.json.encode(result)) == result  # a valid result round-trips
        return
    assert 1 <= len(result) <= MAX_ERRORS
    for error in result:
        assert isinstance(error, FieldError)
        assert error.path.startswith("$")
        assert error.message


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_parse_settings_never_raises_on_arbitrary_json(value: Any) -> None:
    _check_result(parse_settings(json.dumps(value).encode()))
    _check_result(parse_settings(value))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_section_keys, settings_like, max_size=7))
def test_parse_settings_never_raises_on_settings_shaped_documents(document: dict[str, Any]) -> None:
    _check_result(parse_settings(json.dumps(document).encode()))
    _check_result(parse_settings(document))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_settings_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    _check_result(parse_settings(raw))


# --- device resolution -----------------------------------------------------------------------------------

def test_roles_are_filled_from_channel_names() -> None:
    channels = [("nd-irr-1", "pump_main"), ("nd-irr-1", "valve_irrigation"), ("nd-irr-1", "flow_rate"),
                ("nd-ph-1", "pump_acid"), ("nd-ph-1", "ph_sensor")]
    resolved = resolve_devices(ZoneSettings(), channels)
    assert resolved == {
        Role.PUMP_MAIN: ResolvedDevice(role=Role.PUMP_MAIN, node_uid="nd-irr-1", channel="pump_main", source="auto"),
        Role.VALVE_IRRIGATION: ResolvedDevice(role=Role.VALVE_IRRIGATION, node_uid="nd-irr-1",
                                              channel="valve_irrigation", source="auto"),
        Role.PUMP_ACID: ResolvedDevice(role=Role.PUMP_ACID, node_uid="nd-ph-1", channel="pump_acid", source="auto"),
        Role.PH_SENSOR: ResolvedDevice(role=Role.PH_SENSOR, node_uid="nd-ph-1", channel="ph_sensor", source="auto"),
    }


def test_explicit_devices_win_and_their_channel_is_taken() -> None:
    explicit = ZoneSettings(devices={Role.FLOW: DeviceRef(node_uid="nd-irr-1", channel="flow_rate"),
                                     Role.PUMP_MAIN: DeviceRef(node_uid="nd-b", channel="pump_main")})
    channels = [("nd-a", "pump_main"), ("nd-b", "pump_main"), ("nd-irr-1", "flow_rate"), ("nd-c", "flow")]
    resolved = resolve_devices(explicit, channels)
    assert isinstance(resolved, dict)
    assert resolved[Role.PUMP_MAIN].node_uid == "nd-b"
    assert resolved[Role.PUMP_MAIN].source == "settings"
    assert resolved[Role.FLOW] == ResolvedDevice(role=Role.FLOW, node_uid="nd-irr-1", channel="flow_rate",
                                                 source="settings")
    assert len(resolved) == 2  # nd-a/pump_main is not used for anything else; nd-c/flow lost to the explicit one


def test_an_explicit_device_need_not_be_among_the_channels() -> None:
    # settings may be written before the node is bound; the gate refuses while its node is unknown
    explicit = ZoneSettings(devices={Role.PUMP_MAIN: DeviceRef(node_uid="nd-later", channel="pump_main")})
    resolved = resolve_devices(explicit, [])
    assert isinstance(resolved, dict)
    assert resolved[Role.PUMP_MAIN].source == "settings"


def test_an_ambiguous_role_names_every_candidate() -> None:
    channels = [("nd-b", "pump_main"), ("nd-a", "pump_main"), ("nd-a", "pump_main"), ("nd-c", "flow"),
                ("nd-d", "flow"), ("nd-e", "flow")]
    assert resolve_devices(ZoneSettings(), channels) == [
        FieldError(path="$.devices.pump_main",
                   message="ambiguous: nd-a/pump_main and nd-b/pump_main; name one in devices"),
        FieldError(path="$.devices.flow", message="ambiguous: nd-c/flow, nd-d/flow and nd-e/flow; name one in devices"),
    ]


def test_two_roles_on_one_channel_are_refused() -> None:
    explicit = ZoneSettings(devices={Role.PUMP_A: DeviceRef(node_uid="nd-ec", channel="pump_x"),
                                     Role.PUMP_B: DeviceRef(node_uid="nd-ec", channel="pump_x")})
    assert resolve_devices(explicit, []) == [
        FieldError(path="$.devices.pump_b", message="nd-ec/pump_x is already pump_a")]


@settings(max_examples=300, deadline=None)
@given(
    channels=st.lists(st.tuples(st.sampled_from(["nd-a", "nd-b", "nd-c"]),
                                st.sampled_from([*(role.value for role in Role), "other", "flow_rate"])),
                      max_size=12),
    explicit=st.dictionaries(st.sampled_from(list(Role)),
                             st.builds(DeviceRef, node_uid=st.sampled_from(["nd-a", "nd-b", "nd-x"]),
                                       channel=st.sampled_from(["pump_main", "flow", "ch1", "ch2"])),
                             max_size=4),
)
def test_resolution_invariants(channels: list[tuple[str, str]], explicit: dict[Role, DeviceRef]) -> None:
    result = resolve_devices(ZoneSettings(devices=explicit), channels)
    if isinstance(result, list):
        assert result
        assert all(error.path.startswith("$.devices.") for error in result)
        return
    for role, device in result.items():
        assert device.role is role
        if role in explicit:
            assert device.source == "settings"
            assert (device.node_uid, device.channel) == (explicit[role].node_uid, explicit[role].channel)
        else:
            assert device.source == "auto"
            assert device.channel == role.value
            assert (device.node_uid, device.channel) in channels
    bound = [(device.node_uid, device.channel) for device in result.values()]
    assert len(bound) == len(set(bound))  # no channel serves two roles
    for role in Role:  # every role with exactly one free candidate is filled
        free = {pair for pair in channels if pair[1] == role.value and pair not in bound}
        if role not in result:
            assert not free or len(free) > 1
