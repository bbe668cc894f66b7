"""The observer's own reading of the wire: lenient where nodes deviate, fail-closed where a rule depends on it."""

from __future__ import annotations

import json

import pytest

from hydrovisor.observer import SafetyObserver
from hydrovisor.observer.wire import (
    UNSET,
    Topic,
    action_of,
    decode_command,
    decode_event,
    decode_response,
    decode_telemetry,
    duration_s,
    parse_topic,
    snapshot_of,
    switch_state,
)


def test_topics_node_and_channel_level_and_globals() -> None:
    assert parse_topic("hydro/gh-1/zn-1/nd-1/pump_main/command") == Topic(
        gh="gh-1", zone="zn-1", node="nd-1", channel="pump_main", kind="command")
    assert parse_topic("hydro/gh-1/zn-1/nd-1/status") == Topic(gh="gh-1", zone="zn-1", node="nd-1", channel=None,
                                                              kind="status")
    for other in ("hydro/node_hello", "hydro/time/response", "other/gh/zn/nd/status", "hydro/gh//nd/status",
                  "hydro/a/b/c/d/e/f"):
        assert parse_topic(other) is None, other


def test_commands_and_their_actions() -> None:
    command = decode_command(
        b'{"cmd":"set_relay","cmd_id":"c1","params":{"state":1,"timeout_ms":1500},"ts":1,"sig":"x"}')
    assert command is not None
    assert (action_of(command), duration_s(command)) == ("start", 1.5)
    for state, action in ((True, "start"), ("on", "start"), (0, "stop"), ("OFF", "stop"), (False, "stop"),
                          (None, "other"), ("maybe", "other")):
        body = json.dumps({"cmd": "set_relay", "cmd_id": "c", "params": {"state": state}}).encode()
        decoded = decode_command(body)
        assert decoded is not None and action_of(decoded) == action, state
    for cmd, action in (("run_pump", "start"), ("dose", "start"), ("state", "other"), ("restart", "other")):
        decoded = decode_command(f'{{"cmd":"{cmd}","cmd_id":"c","params":{{}}}}'.encode())
        assert decoded is not None and action_of(decoded) == action
    for bad in (b"", b"not json", b"[]", b'{"cmd":"dose"}', b'{"cmd":1,"cmd_id":"c"}',
                b'{"cmd":"dose","cmd_id":"c","params":[]}', b'{"cmd":"","cmd_id":"c"}', b"\xff\xfe"):
        assert decode_command(bad) is None, bad


def test_responses_telemetry_events() -> None:
    response = decode_response(b'{"cmd_id":"c1","status":"done","ts":1,"details":{"snapshot":{"pump_main":true}}}')
    assert response is not None and response.status == "DONE" and response.terminal
    assert decode_response(b'{"cmd_id":"c1","status":"ACK"}').terminal is False  # type: ignore[union-attr]
    assert decode_response(b'{"status":"DONE"}') is None
    telemetry = decode_telemetry(b'{"metric_type":" ph ","value":5.9,"flow_active":true,"stable":"yes"}')
    assert telemetry is not None and telemetry.metric == "PH"
    assert (telemetry.flow_active, telemetry.stable, telemetry.corrections_allowed) == (True, "yes", UNSET)
    assert decode_telemetry(b'{"value":1}') is None
    event = decode_event(b'{"type":"Emergency_Stop_Activated","snapshot":{"valve_irrigation":1}}')
    assert event is not None and event.code == "emergency_stop_activated"
    assert decode_event(b'{"ts":1}') is None


@pytest.mark.parametrize(("value", "expected"), [
    (True, True), (1, True), (2.5, True), ("on", True), ("TRUE", True), (False, False), (0, False),
    ("off", False), ("0", False), (None, None), ("half", None), ([1], None)])
def test_switch_state(value: object, expected: bool | None) -> None:
    assert switch_state(value) is expected


def test_snapshot_keeps_only_boolean_entries() -> None:
    assert snapshot_of({"valve_irrigation": True, "pump_main": 0, "junk": "x", "level": 3}) == {
        "valve_irrigation": True, "pump_main": False}
    assert snapshot_of(["valve_irrigation"]) is None


def test_malformed_publishes_are_counted_never_raised() -> None:
    observer = SafetyObserver()
    for topic, payload in (("hydro/gh-1/zn-1/nd-1/pump_main/command", b"{"),
                           ("hydro/gh-1/zn-1/nd-1/pump_main/command_response", b"null"),
                           ("hydro/gh-1/zn-1/nd-1/ph_sensor/telemetry", b'{"metric_type":5}'),
                           ("hydro/gh-1/zn-1/nd-1/storage_state/event", b"\x00\x01"),
                           ("hydro/gh-1/zn-1/nd-1/lwt", b"offline"),
                           ("hydro/time/request", b"{}"), ("", b"")):
        observer.observe(topic, payload, 1.0)
    stats = observer.stats()
    assert (stats["publishes"], stats["malformed"], stats["ignored"]) == (7, 4, 3)
    assert observer.violations == []
