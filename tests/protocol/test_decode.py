"""Lenient device-message decoding (PROTOCOL.md §3, §4), including fuzzing for "never raises"."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import (
    CommandResponse,
    CommandStatus,
    ConfigReport,
    DecodeError,
    DecodeOk,
    Diagnostics,
    ErrorReport,
    Event,
    Heartbeat,
    Lwt,
    NodeHello,
    ParsedTopic,
    Status,
    Telemetry,
    TimeRequest,
    TopicKind,
    TopicType,
    decode_device_message,
    normalize_event_code,
    parse_topic,
)

NOW = 1_710_001_300.0
NS = "hydro/gh-1/zn-3/nd-ph-a1b2c3d4e5f6"


def topic(suffix: str) -> ParsedTopic:
    parsed = parse_topic(suffix if suffix.startswith("hydro/") else f"{NS}/{suffix}")
    assert isinstance(parsed, ParsedTopic)
    return parsed


def decode(suffix: str, payload: bytes | dict[str, Any] | str, now: float = NOW) -> Any:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else (
        payload.encode() if isinstance(payload, str) else payload
    )
    result = decode_device_message(topic(suffix), raw, now=now)
    assert isinstance(result, DecodeOk), result
    return result.message


def refused(suffix: str, payload: bytes | dict[str, Any], reason: str) -> None:
    raw = json.dumps(payload).encode() if isinstance(payload, dict) else payload
    result = decode_device_message(topic(suffix), raw, now=NOW)
    assert isinstance(result, DecodeError), result
    assert result.reason == reason, result


# --- telemetry ------------------------------------------------------------------------------------


def test_protocol_telemetry_example() -> None:
    payload = (b'{"metric_type":"PH","value":5.862,"ts":1710001234,"unit":"pH","raw":5862,"stable":false,'
               b'"flow_active":false,"corrections_allowed":false}')
    message = decode("ph_sensor/telemetry", payload)
    assert message == Telemetry(
        metric_type="PH", value=5.862, ts=1710001234.0, device_ts=1710001234.0, unit="pH", raw=5862.0,
        stable=False, flow_active=False, corrections_allowed=False,
    )
    assert not message.ts_replaced


def test_telemetry_lenient_fields() -> None:
    message = decode("ec_sensor/telemetry", {"metric_type": "  ec ", "value": 1, "ts": 1710001234567,
                                             "stub": True, "stale_age_sec": 12, "channel": "ec_sensor",
                                             "stable": "yes"})
    assert message.metric_type == "EC"
    assert message.value == 1.0
    assert message.ts == pytest.approx(1710001234.567)
    assert message.stub is True
    assert message.stable is None  # wrong type reads as absent
    assert message.stale_age_sec == 12.0
    assert message.extra == {"channel": "ec_sensor"}


@pytest.mark.parametrize(("raw", "expected"), [(True, 1.0), (False, 0.0), (0, 0.0), (1, 1.0)])
def test_level_switch_values(raw: object, expected: float) -> None:
    message = decode("level_clean_min/telemetry", {"metric_type": "WATER_LEVEL_SWITCH", "value": raw,
                                                   "ts": 1710001234})
    assert message.value == expected


@pytest.mark.parametrize("value", [None, "5.8", [1], {"v": 1}, 10**400])
def test_telemetry_invalid_value(value: object) -> None:
    refused("ph_sensor/telemetry", {"metric_type": "PH", "value": value, "ts": 1710001234}, "invalid_value")


@pytest.mark.parametrize(
    "payload", [b'{"metric_type":"PH","value":NaN}', b'{"metric_type":"PH","value":1e999}']
)
def test_telemetry_non_finite_value(payload: bytes) -> None:
    result = decode_device_message(topic("ph_sensor/telemetry"), payload, now=NOW)
    assert isinstance(result, DecodeError)
    assert result.reason in ("invalid_json", "invalid_value")


def test_telemetry_missing_value() -> None:
    refused("ph_sensor/telemetry", {"metric_type": "PH", "ts": 1710001234}, "invalid_value")


@pytest.mark.parametrize("metric", [None, "", "   ", 5])
def test_telemetry_missing_metric(metric: object) -> None:
    refused("ph_sensor/telemetry", {"metric_type": metric, "value": 1}, "missing_metric_type")


@pytest.mark.parametrize(
    ("ts", "replaced"),
    [
        (None, True),  # missing
        ("1710001234", True),  # not a number
        (123456, True),  # device uptime
        (NOW + 300, False),
        (NOW + 301, True),  # too far ahead
        ((NOW + 301) * 1000, True),
        (NOW * 1000, False),
        (1e9, False),
        (1e9 - 1, True),
    ],
)
def test_telemetry_ts_replacement(ts: object, replaced: bool) -> None:
    payload: dict[str, Any] = {"metric_type": "PH", "value": 6.0}
    if ts is not None:
        payload["ts"] = ts
    message = decode("ph_sensor/telemetry", payload)
    assert message.ts_replaced is replaced
    if replaced:
        assert message.ts == NOW
    else:
        assert message.ts != NOW or ts == NOW * 1000


# --- status / lwt / heartbeat ---------------------------------------------------------------------


def test_status_online_firmware_form() -> None:
    message = decode("status", {"status": "ONLINE", "ts": 1710001234, "online": True, "ip": "10.0.0.7",
                                "rssi": -61, "fw": "2.0.1"})
    assert message == Status(
        status="ONLINE", ts=1710001234.0, online=True, ip="10.0.0.7", rssi=-61, fw="2.0.1"
    )
    assert not message.is_safe_mode


def test_status_safe_mode_form() -> None:
    message = decode("status", {"state": "safe_mode", "reason": "link_loss", "ts": 1710001234})
    assert message.status is None
    assert message.is_safe_mode
    assert message.reason == "link_loss"


def test_status_restarting_and_ts_in_ms() -> None:
    message = decode("status", {"status": "restarting", "ts": 1710001234000})
    assert message.status == "RESTARTING"
    assert message.ts == 1710001234.0


def test_status_without_status_or_state() -> None:
    refused("status", {"ts": 1}, "invalid_status")


@pytest.mark.parametrize("payload", [b"offline", b"OFFLINE\n", b'"offline"'])
def test_lwt(payload: bytes) -> None:
    assert decode("lwt", payload) == Lwt()


@pytest.mark.parametrize(("payload", "reason"), [(b"online", "invalid_lwt"), (b"", "empty_payload")])
def test_lwt_refused(payload: bytes, reason: str) -> None:
    refused("lwt", payload, reason)


@pytest.mark.parametrize("key", ["free_heap", "free_heap_bytes"])
def test_heartbeat(key: str) -> None:
    message = decode("heartbeat", {"uptime": 3600, key: 123456, "rssi": -70, "fw_version": "2.0.1"})
    assert message == Heartbeat(uptime=3600.0, free_heap=123456, rssi=-70, fw_version="2.0.1")


def test_heartbeat_minimal() -> None:
    assert decode("heartbeat", {}) == Heartbeat()


# --- config_report --------------------------------------------------------------------------------

CONFIG_REPORT: dict[str, Any] = {
    "node_id": "nd-ph-a1b2c3d4e5f6", "version": 3, "type": "ph", "gh_uid": "gh-1", "zone_uid": "zn-3",
    "fw_version": "2.0.1",
    "channels": [
        {"name": "ph_sensor", "type": "sensor", "metric": "PH", "unit": "pH", "poll_interval_ms": 5000},
        {"name": "pump_acid", "type": "ACTUATOR", "actuator_type": "peristaltic_pump", "relay_type": "NO",
         "safe_limits": {"max_duration_ms": 30000, "min_off_ms": 5000, "fail_safe_mode": "OFF"},
         "ml_per_second": 1.25, "gpio": 26},
        {"type": "SENSOR"},
        "garbage",
    ],
    "wifi": {"ssid": "greenhouse", "pass": "wifi-SECRET-1", "configured": True},
    "mqtt": {"host": "10.0.0.1", "port": 1883, "username": "nd", "password": "mqtt-SECRET-2"},
    "node_secret": "node-SECRET-3",
    "limits": {"nested": {"api_token": "tok-SECRET-4", "ok": 1}},
}


def test_config_report_decodes_and_drops_secrets() -> None:
    message = decode("config_report", CONFIG_REPORT)
    assert isinstance(message, ConfigReport)
    assert (message.node_id, message.gh_uid, message.zone_uid, message.version) == (
        "nd-ph-a1b2c3d4e5f6", "gh-1", "zn-3", 3)
    assert message.node_type == "ph"
    assert [c.name for c in message.channels] == ["ph_sensor", "pump_acid"]
    assert message.invalid_channels == 2
    sensor, pump = message.channels
    assert sensor.type == "SENSOR"
    assert sensor.poll_interval_ms == 5000
    assert pump.actuator_type == "PERISTALTIC_PUMP"
    assert pump.relay_type == "NO"
    assert pump.safe_limits is not None
    assert pump.safe_limits.max_duration_ms == 30000
    assert pump.ml_per_second == 1.25
    assert pump.extra == {"gpio": 26}
    assert message.has_node_secret
    assert message.wifi == {"ssid": "greenhouse", "configured": True}
    assert message.mqtt == {"host": "10.0.0.1", "port": 1883, "username": "nd"}
    assert message.limits == {"nested": {"ok": 1}}
    exposed = repr(message) + str(message) + msgspec.json.encode(message).decode() + str(
        msgspec.to_builtins(message))
    assert "SECRET" not in exposed


def test_config_report_minimal_and_simulator_type() -> None:
    message = decode("config_report", {"type": "storage_irrigation_node", "channels": "nope"})
    assert message.node_type == "irrig"
    assert message.type_raw == "storage_irrigation_node"
    assert message.channels == ()
    assert message.invalid_channels == 0
    assert message.gh_uid is None
    assert not message.has_node_secret


def test_diagnostics_are_redacted() -> None:
    message = decode("diagnostics", {"heap": 1, "cfg": {"mqtt": {"password": "p-SECRET"}}})
    assert message == Diagnostics(data={"heap": 1, "cfg": {"mqtt": {}}})


# --- node_hello / time ----------------------------------------------------------------------------


def test_node_hello() -> None:
    message = decode(
        "hydro/node_hello",
        {"message_type": "node_hello", "hardware_id": "esp32-78e36ddde468", "node_type": "ph_node",
         "fw_version": "2.0.1", "hardware_revision": "b", "capabilities": ["ph", 3, "temp"],
         "provisioning_meta": {"node_uid": "nd-ph-x", "node_name": "Acid", "wifi_pass": "x"}},
    )
    assert isinstance(message, NodeHello)
    assert message.hardware_id == "esp32-78e36ddde468"
    assert (message.node_type, message.node_type_raw) == ("ph", "ph_node")
    assert message.capabilities == ("ph", "temp")
    assert message.provisioning_meta is not None
    assert message.provisioning_meta.node_uid == "nd-ph-x"


def test_node_hello_on_node_level_topic() -> None:
    message = decode("hydro/gh-temp/zn-temp/esp32-78e36ddde468/node_hello",
                     {"message_type": "node_hello", "hardware_id": "esp32-78e36ddde468"})
    assert message.node_type == "unknown"


@pytest.mark.parametrize(
    "payload", [{"hardware_id": "esp32-1"}, {"message_type": "hello", "hardware_id": "x"}]
)
def test_not_node_hello(payload: dict[str, Any]) -> None:
    refused("hydro/node_hello", payload, "not_node_hello")


@pytest.mark.parametrize("hardware_id", [None, "", "esp32/x", "a+b", "x#", "a b", "h" * 65, 5])
def test_node_hello_unusable_hardware_id(hardware_id: object) -> None:
    refused("hydro/node_hello", {"message_type": "node_hello", "hardware_id": hardware_id},
            "invalid_hardware_id")


def test_time_request() -> None:
    message = decode("hydro/time/request", {"message_type": "time_request", "uptime": 12})
    assert message == TimeRequest(uptime=12.0)


def test_time_response_is_not_a_device_message() -> None:
    refused("hydro/time/response", {"message_type": "time_response", "unix_ts": 1}, "unsupported_topic")


@pytest.mark.parametrize("suffix", ["pump_acid/command", "config", "whatever", "ch/strange"])
def test_unsupported_types(suffix: str) -> None:
    refused(suffix, {"a": 1}, "unsupported_topic")


# --- command_response ----------------------------------------------------------------------------


def test_command_response_firmware_form() -> None:
    message = decode("pump_acid/command_response",
                     {"cmd_id": "cmd-591", "status": "ERROR", "ts": 1737355112345,
                      "error_code": "pump_interlock_blocked", "error_message": "interlock"})
    assert message == CommandResponse(cmd_id="cmd-591", status=CommandStatus.ERROR, ts=1737355112.345,
                                      error_code="pump_interlock_blocked", error_message="interlock")


def test_command_response_simulator_details_form() -> None:
    message = decode("system/command_response",
                     {"cmd_id": "c-2", "status": "error", "ts": 1737355112,
                      "details": {"error_code": "node_not_activated", "error_message": "activate first"}})
    assert message.status is CommandStatus.ERROR
    assert message.ts == 1737355112.0  # seconds from a simulator are taken as seconds
    assert (message.error_code, message.error_message) == ("node_not_activated", "activate first")


def test_command_response_top_level_wins_over_details() -> None:
    message = decode("system/command_response",
                     {"cmd_id": "c-2", "status": "BUSY", "error_code": "cooldown_active",
                      "details": {"error_code": "other"}, "message": "later"})
    assert message.error_code == "cooldown_active"
    assert message.error_message is None
    assert message.message == "later"


def test_command_response_unknown_cmd_id_and_snapshot() -> None:
    message = decode("storage_state/command_response",
                     {"cmd_id": "unknown", "status": "INVALID", "ts": 5000,
                      "details": {"snapshot": {"pump_main": False}}})
    assert message.is_unattributed
    assert message.ts is None  # uptime milliseconds: not a wall-clock time
    assert message.details == {"snapshot": {"pump_main": False}}


@pytest.mark.parametrize(
    "status", ["ACK", "DONE", "NO_EFFECT", "ERROR", "INVALID", "BUSY", "TIMEOUT", " done "]
)
def test_command_response_statuses(status: str) -> None:
    message = decode("c/command_response", {"cmd_id": "x", "status": status})
    assert message.status == status.strip().upper()


@pytest.mark.parametrize("status", ["QUEUED", "SENT", "SEND_FAILED", "OK", None, 1])
def test_command_response_invalid_status(status: object) -> None:
    refused("c/command_response", {"cmd_id": "x", "status": status}, "invalid_status")


@pytest.mark.parametrize("cmd_id", [None, "", "  ", [1]])
def test_command_response_missing_cmd_id(cmd_id: object) -> None:
    refused("c/command_response", {"cmd_id": cmd_id, "status": "DONE"}, "missing_cmd_id")


# --- event / error --------------------------------------------------------------------------------


def test_level_switch_event() -> None:
    payload = {"event_code": "level_switch_changed", "channel": "level_clean_min", "state": True,
               "initial": False, "ts": 1710001234, "snapshot": {"clean_level_min": True}}
    message = decode("level_clean_min/event", payload)
    assert isinstance(message, Event)
    assert message.event_code == "LEVEL_SWITCH_CHANGED"
    assert message.event_code_raw == "level_switch_changed"
    assert message.state is True
    assert message.snapshot == {"clean_level_min": True}
    assert message.payload["initial"] is False
    assert message.ts == 1710001234.0


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"event": "clean_fill_completed"}, "CLEAN_FILL_COMPLETED"),
        ({"type": "link-loss failsafe!!", "timeout_sec": 120}, "LINK_LOSS_FAILSAFE_"),
        ({"event_code": "!!", "event": "solution.fill..timeout"}, "SOLUTION_FILL_TIMEOUT"),
        ({"event_code": 5, "type": "emergency_stop_activated"}, "EMERGENCY_STOP_ACTIVATED"),
    ],
)
def test_event_code_fallbacks(payload: dict[str, Any], code: str) -> None:
    assert decode("storage_state/event", payload).event_code == code


def test_event_without_code() -> None:
    refused("system/event", {"ts": 1}, "missing_event_code")


@pytest.mark.parametrize(
    ("raw", "code"),
    [("level_switch_changed", "LEVEL_SWITCH_CHANGED"), (" a--b  c ", "A_B_C"), ("ß", "SS"), ("é!", "_"),
     ("___", None), ("", None)],
)
def test_normalize_event_code(raw: str, code: str | None) -> None:
    if code == "_":
        assert normalize_event_code(raw) is None
    else:
        assert normalize_event_code(raw) == code


def test_error_report_top_level() -> None:
    message = decode("error", {"level": "warning", "component": "ph", "error_code": "probe_dry",
                               "message": "dry", "ts": 1710001234000})
    assert message == ErrorReport(level="WARNING", component="ph", error_code="probe_dry", message="dry",
                                  ts=1710001234.0)


def test_error_report_details_fallback() -> None:
    message = decode("error", {"level": "ERROR", "details": {"error_code": "x", "message": "y"}})
    assert (message.error_code, message.message) == ("x", "y")


# --- structural refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty_payload"),
        (b"{", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1,2]", "not_object"),
        (b'"x"', "not_object"),
        (b"null", "not_object"),
        (b"[" * 5000 + b"]" * 5000, "invalid_json"),
        (b"{" + b" " * 70_000 + b"}", "payload_too_large"),
    ],
)
def test_structural_refusals(payload: bytes, reason: str) -> None:
    refused("heartbeat", payload, reason)


def test_deeply_nested_but_valid_object() -> None:
    payload = b'{"a":' * 200 + b"1" + b"}" * 200
    message = decode("diagnostics", payload)
    assert isinstance(message, Diagnostics)


# --- fuzzing --------------------------------------------------------------------------------------

DECODABLE = [
    f"{NS}/ph_sensor/telemetry", f"{NS}/status", f"{NS}/lwt", f"{NS}/heartbeat", f"{NS}/config_report",
    f"{NS}/diagnostics", f"{NS}/error", "hydro/node_hello", f"{NS}/node_hello", f"{NS}/c/command_response",
    f"{NS}/c/event", "hydro/time/request", "hydro/time/response", f"{NS}/c/command", f"{NS}/config",
]
TOPICS = [topic(t) for t in DECODABLE]
FIELD_NAMES = sorted({
    "metric_type", "value", "ts", "unit", "raw", "stub", "stable", "flow_active", "corrections_allowed",
    "stale_age_sec", "status", "state", "reason", "online", "ip", "rssi", "fw", "uptime", "free_heap",
    "free_heap_bytes", "fw_version", "node_id", "version", "type", "gh_uid", "zone_uid", "channels", "wifi",
    "mqtt", "limits", "calibration", "fail_safe_guards", "node_secret", "message_type", "hardware_id",
    "node_type", "hardware_revision", "capabilities", "provisioning_meta", "node_uid", "node_name", "cmd_id",
    "details", "error_code", "error_message", "message", "event_code", "event", "snapshot", "level",
    "component", "name", "metric", "poll_interval_ms", "actuator_type", "relay_type", "safe_limits",
    "max_duration_ms", "min_off_ms", "fail_safe_mode", "ml_per_second", "password", "pass",
})
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["node_hello", "DONE", "ACK", "esp32-78e36ddde468", "PH", "level_switch", "",
                       "safe_mode"])
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, JSON, max_size=8)
CLOCKS = st.floats(min_value=0, max_value=4e9)


def check(result: object) -> None:
    assert isinstance(result, DecodeOk | DecodeError)
    if isinstance(result, DecodeError):
        assert result.reason != "internal_error", result
        return
    message = result.message
    if isinstance(message, Telemetry):
        assert math.isfinite(message.value)
        assert math.isfinite(message.ts)
    msgspec.json.encode(message)  # every decoded message can be serialised (logs, API)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), st.binary(max_size=300), CLOCKS)
def test_fuzz_arbitrary_bytes(parsed: ParsedTopic, payload: bytes, now: float) -> None:
    check(decode_device_message(parsed, payload, now=now))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), OBJECTS, CLOCKS)
def test_fuzz_arbitrary_json_objects(parsed: ParsedTopic, data: dict[str, Any], now: float) -> None:
    check(decode_device_message(parsed, json.dumps(data).encode(), now=now))


# Valid-looking payloads per type with random fields overridden: reaches the deep paths (channels,
# provisioning_meta, details fallbacks) that fully random objects rarely get past the first check.
BASES: list[tuple[str, dict[str, Any]]] = [
    ("ph_sensor/telemetry", {"metric_type": "PH", "value": 5.8, "ts": 1710001234}),
    ("status", {"status": "ONLINE", "ts": 1710001234}),
    ("heartbeat", {"uptime": 1, "free_heap": 2}),
    ("config_report", CONFIG_REPORT),
    ("hydro/node_hello", {"message_type": "node_hello", "hardware_id": "esp32-78e36ddde468",
                          "provisioning_meta": {"node_uid": "nd-x"}, "capabilities": ["a"]}),
    ("c/command_response", {"cmd_id": "c-1", "status": "ERROR", "details": {"error_code": "x"}}),
    ("c/event", {"event_code": "level_switch_changed", "state": True, "snapshot": {}}),
    ("error", {"level": "ERROR", "details": {"message": "m"}}),
    ("hydro/time/request", {"message_type": "time_request", "uptime": 1}),
]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(BASES), OBJECTS, CLOCKS)
def test_fuzz_mutated_valid_payloads(base: tuple[str, dict[str, Any]], overrides: dict[str, Any],
                                     now: float) -> None:
    suffix, payload = base
    check(decode_device_message(topic(suffix), json.dumps({**payload, **overrides}).encode(), now=now))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(TOPICS), JSON)
def test_fuzz_arbitrary_json_values(parsed: ParsedTopic, data: object) -> None:
    check(decode_device_message(parsed, json.dumps(data).encode(), now=NOW))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(TopicType)), st.binary(max_size=100))
def test_fuzz_every_type_on_both_levels(type_: TopicType, payload: bytes) -> None:
    for parsed in (
        ParsedTopic(kind=TopicKind.NODE, type=type_.value, gh="g", zone="z", node="n"),
        ParsedTopic(kind=TopicKind.CHANNEL, type=type_.value, gh="g", zone="z", node="n", channel="c"),
        ParsedTopic(kind=TopicKind.GLOBAL, type=type_.value),
    ):
        check(decode_device_message(parsed, payload, now=NOW))
