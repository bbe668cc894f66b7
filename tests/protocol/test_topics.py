"""Topic grammar, builders, subscriptions and the device ACL (PROTOCOL.md §1, §2, §9)."""

from __future__ import annotations

from typing import TypedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import (
    NODE_HELLO,
    SERVER_SUBSCRIPTIONS,
    TEMP_GH,
    TEMP_ZONE,
    TIME_REQUEST,
    TIME_RESPONSE,
    ParsedTopic,
    TopicError,
    TopicInvalid,
    TopicKind,
    channel_topic,
    device_publish_allowed,
    device_subscribe_allowed,
    node_topic,
    parse_topic,
    temp_topic,
)


def ok(topic: str, *, strict: bool = False) -> ParsedTopic:
    parsed = parse_topic(topic, strict=strict)
    assert isinstance(parsed, ParsedTopic), parsed
    return parsed


def test_parse_channel_topic() -> None:
    parsed = ok("hydro/gh-1/zn-3/nd-ph-a1b2c3d4e5f6/ph_sensor/telemetry", strict=True)
    assert parsed == ParsedTopic(kind=TopicKind.CHANNEL, type="telemetry", gh="gh-1", zone="zn-3",
                                 node="nd-ph-a1b2c3d4e5f6", channel="ph_sensor")
    assert not parsed.is_temp
    assert parsed.namespace == ("gh-1", "zn-3", "nd-ph-a1b2c3d4e5f6")


def test_parse_node_topic_in_temp_namespace() -> None:
    parsed = ok("hydro/gh-temp/zn-temp/esp32-78e36ddde468/config_report")
    assert parsed.kind is TopicKind.NODE
    assert (parsed.gh, parsed.zone, parsed.node) == (TEMP_GH, TEMP_ZONE, "esp32-78e36ddde468")
    assert parsed.channel is None
    assert parsed.type == "config_report"
    assert parsed.is_temp


@pytest.mark.parametrize(
    ("topic", "type_"),
    [(NODE_HELLO, "node_hello"), (TIME_REQUEST, "time_request"), (TIME_RESPONSE, "time_response")],
)
def test_parse_globals(topic: str, type_: str) -> None:
    parsed = ok(topic, strict=True)
    assert parsed.kind is TopicKind.GLOBAL
    assert parsed.type == type_
    assert parsed.namespace is None
    assert not parsed.is_temp


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "empty"),
        ("hydro/gh-1/zn-1/" + "n" * 200 + "/status", "too_long"),
        ("hydro/+/zn-1/nd/status", "wildcard"),
        ("hydro/gh/zn/nd/#", "wildcard"),
        ("other/gh-1/zn-1/nd-1/status", "not_hydro"),
        ("hydro/gh-1/zn-1/status", "bad_segment_count"),
        ("hydro/gh-1/zn-1/nd/ch/x/telemetry", "bad_segment_count"),
        ("hydro/time/other", "bad_segment_count"),
        ("hydro", "bad_segment_count"),
        ("hydro/gh-1//nd-1/status", "empty_segment"),
        ("hydro/gh-1/zn-1/nd-1/status/", "empty_segment"),
        ("/hydro/gh-1/zn-1/nd-1", "not_hydro"),
        ("hydro/gh 1/zn-1/nd-1/status", "invalid_char"),
        ("hydro/gh-1/zn-1/nd\x00/status", "invalid_char"),
        ("hydro/gh-1/zn-1/nd\ud800/status", "invalid_char"),
        ("hydro/gh-1/zn-1/nd-1/" + "c" * 64 + "/telemetry", "channel_too_long"),
    ],
)
def test_parse_refuses(topic: str, reason: str) -> None:
    parsed = parse_topic(topic)
    assert isinstance(parsed, TopicError)
    assert parsed.reason == reason


def test_lenient_vs_strict_charset() -> None:
    topic = "hydro/GH-1/zn.1/Node/status"
    assert ok(topic).gh == "GH-1"
    strict = parse_topic(topic, strict=True)
    assert isinstance(strict, TopicError)
    assert strict.reason == "invalid_segment"


def test_limits_are_inclusive() -> None:
    assert ok("hydro/g/z/n/" + "c" * 63 + "/telemetry").channel == "c" * 63
    prefix = "hydro/g/z/"
    topic = prefix + "n" * (191 - len(prefix) - len("/status")) + "/status"
    assert len(topic) == 191
    ok(topic)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=250))
def test_parse_never_raises(topic: str) -> None:
    assert isinstance(parse_topic(topic), ParsedTopic | TopicError)
    assert isinstance(parse_topic(topic, strict=True), ParsedTopic | TopicError)


segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(gh=segment, zone=segment, node=segment, channel=segment, type_=segment)
def test_builders_round_trip(gh: str, zone: str, node: str, channel: str, type_: str) -> None:
    topic = channel_topic(gh, zone, node, channel, type_)
    assert ok(topic, strict=True) == ParsedTopic(
        kind=TopicKind.CHANNEL, type=type_, gh=gh, zone=zone, node=node, channel=channel
    )
    topic = node_topic(gh, zone, node, type_)
    assert ok(topic) == ParsedTopic(kind=TopicKind.NODE, type=type_, gh=gh, zone=zone, node=node)
    parsed = ok(temp_topic(node, type_, channel))
    assert parsed.is_temp
    assert parsed.node == node
    assert parsed.channel == channel


def test_temp_topic() -> None:
    assert temp_topic("esp32-78e36ddde468", "config") == "hydro/gh-temp/zn-temp/esp32-78e36ddde468/config"
    assert temp_topic("esp32-78e36ddde468", "command", "system") == (
        "hydro/gh-temp/zn-temp/esp32-78e36ddde468/system/command"
    )


@pytest.mark.parametrize(
    "parts",
    [("", "z", "n", "status"), ("g", "z/x", "n", "status"), ("g", "+", "n", "status"),
     ("g", "z", "n", "a b"), ("g", "z", "n", "status/x")],
)
def test_builders_refuse(parts: tuple[str, str, str, str]) -> None:
    with pytest.raises(TopicInvalid):
        node_topic(*parts)


def test_channel_builder_refuses_long_channel() -> None:
    with pytest.raises(TopicInvalid) as info:
        channel_topic("g", "z", "n", "c" * 64, "command")
    assert info.value.reason == "channel_too_long"


def test_server_subscriptions_are_the_protocol_list() -> None:
    assert set(SERVER_SUBSCRIPTIONS) == {
        "hydro/+/+/+/+/telemetry", "hydro/+/+/+/heartbeat", "hydro/+/+/+/status", "hydro/+/+/+/lwt",
        "hydro/+/+/+/diagnostics", "hydro/+/+/+/error", "hydro/node_hello", "hydro/+/+/+/node_hello",
        "hydro/+/+/+/config_report", "hydro/+/+/+/+/command_response", "hydro/+/+/+/+/event",
        "hydro/time/request",
    }
    assert len(SERVER_SUBSCRIPTIONS) == 12


# --- ACL ------------------------------------------------------------------------------------------

HW = "esp32-78e36ddde468"
UID = "nd-ph-78e36ddde468"


class Identity(TypedDict):
    node_uid: str | None
    hardware_id: str
    gh: str | None
    zone: str | None


BOUND = Identity(node_uid=UID, hardware_id=HW, gh="gh-1", zone="zn-3")
UNBOUND = Identity(node_uid=None, hardware_id=HW, gh=None, zone=None)
REGISTERED_UNBOUND = Identity(node_uid=UID, hardware_id=HW, gh=None, zone=None)


@pytest.mark.parametrize(
    ("topic", "bound", "unbound"),
    [
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/ph_sensor/telemetry", True, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/status", True, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/lwt", True, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/system/command_response", True, False),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/config_report", True, True),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/status", True, True),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/ph_sensor/telemetry", True, True),
        (NODE_HELLO, True, True),
        (TIME_REQUEST, True, True),
        (TIME_RESPONSE, False, False),
        # someone else's namespaces
        ("hydro/gh-1/zn-3/nd-ph-000000000000/ph_sensor/telemetry", False, False),
        ("hydro/gh-1/zn-4/nd-ph-78e36ddde468/status", False, False),
        ("hydro/gh-2/zn-3/nd-ph-78e36ddde468/status", False, False),
        ("hydro/gh-temp/zn-temp/esp32-000000000000/status", False, False),
        ("hydro/gh-temp/zn-temp/nd-ph-78e36ddde468/status", False, False),
        ("hydro/gh-1/zn-3/esp32-78e36ddde468/status", False, False),
        # server-only types, even in the own namespace
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/pump_acid/command", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/config", False, False),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/config", False, False),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/system/command", False, False),
        # malformed
        ("hydro/gh-1/zn-3/+/status", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/#", False, False),
        ("hydro/#", False, False),
        ("", False, False),
    ],
)
def test_publish_acl(topic: str, bound: bool, unbound: bool) -> None:
    assert device_publish_allowed(topic, **BOUND) is bound
    assert device_publish_allowed(topic, **UNBOUND) is unbound
    # a registered but unbound node has no bound namespace yet
    assert device_publish_allowed(topic, **REGISTERED_UNBOUND) is unbound


@pytest.mark.parametrize(
    ("topic_filter", "bound", "unbound"),
    [
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/config", True, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/+/command", True, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/pump_acid/command", True, False),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/config", True, True),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/+/command", True, True),
        ("hydro/gh-temp/zn-temp/esp32-78e36ddde468/system/command", True, True),
        (TIME_RESPONSE, True, True),
        # not subscribable
        (TIME_REQUEST, False, False),
        (NODE_HELLO, False, False),
        ("hydro/#", False, False),
        ("#", False, False),
        ("hydro/+/+/+/config", False, False),
        ("hydro/gh-1/zn-3/+/config", False, False),
        ("hydro/gh-1/+/nd-ph-78e36ddde468/config", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/#", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/+", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/+/+", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/+/telemetry", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/status", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/ph+/command", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/" + "c" * 64 + "/command", False, False),
        ("hydro/gh-1/zn-3/nd-ph-000000000000/config", False, False),
        ("hydro/gh-1/zn-3/nd-ph-000000000000/+/command", False, False),
        ("hydro/gh-temp/zn-temp/esp32-000000000000/+/command", False, False),
        ("hydro/gh-1/zn-3/nd-ph-78e36ddde468/config/x", False, False),
        ("", False, False),
    ],
)
def test_subscribe_acl(topic_filter: str, bound: bool, unbound: bool) -> None:
    assert device_subscribe_allowed(topic_filter, **BOUND) is bound
    assert device_subscribe_allowed(topic_filter, **UNBOUND) is unbound


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_acl_never_raises(text: str) -> None:
    device_publish_allowed(text, **BOUND)
    device_subscribe_allowed(text, **BOUND)
    device_subscribe_allowed(text, node_uid=None, hardware_id="", gh=None, zone=None)
