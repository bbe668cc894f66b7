"""Fuzzing every device decoder (issue 9 item 6: no poison pill).

Whatever a node, a simulator or an attacker publishes, ``decode_device_message`` returns a value and
never raises, never fails internally (``internal_error`` would be a decoder bug), and what it returns
as a message can be stored by PostgreSQL: no string anywhere in it (keys included) holds U+0000, it
encodes as JSON, and every timestamp lies within what a ``timestamptz`` holds.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import (
    DecodeError,
    DecodeOk,
    ParsedTopic,
    TopicKind,
    TopicType,
    decode_device_message,
    parse_topic,
)
from hydrovisor.protocol.decode import MAX_DEVICE_PAYLOAD

NOW = 1_710_001_300.0
PG_MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z: the last second both datetime and timestamptz hold
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- topics -----------------------------------------------------------------------------------------

_NODE_TYPES = [t.value for t in TopicType if t not in (TopicType.TIME_REQUEST, TopicType.TIME_RESPONSE)]


def _topics() -> list[ParsedTopic]:
    found: list[ParsedTopic] = []
    for type_ in _NODE_TYPES:
        for raw in (f"hydro/gh-1/zn-3/nd-ph-1/{type_}", f"hydro/gh-1/zn-3/nd-ph-1/ph_sensor/{type_}",
                    f"hydro/gh-temp/zn-temp/esp32-a1b2c3d4e5f6/{type_}",
                    f"hydro/gh-temp/zn-temp/esp32-a1b2c3d4e5f6/system/{type_}"):
            parsed = parse_topic(raw)
            assert isinstance(parsed, ParsedTopic), raw
            found.append(parsed)
    for raw in ("hydro/node_hello", "hydro/time/request", "hydro/time/response", "hydro/gh-1/zn-3/nd-1/unknown"):
        parsed = parse_topic(raw)
        assert isinstance(parsed, ParsedTopic), raw
        found.append(parsed)
    return found


TOPICS = _topics()
assert {t.type for t in TOPICS} >= set(_NODE_TYPES) | {TopicType.TIME_REQUEST, TopicType.TIME_RESPONSE}
topics = st.sampled_from(TOPICS)

# --- values -----------------------------------------------------------------------------------------

_NASTY = ["\x00", "a\x00", "\x00\x00", "PH\x00", "\x00ph_sensor", "\x01", "\x1f", "\x7f", "\u200b", "\ufeff",
          "😀", "🌱\x00🌱", "é", "\\u0000", "\\x00", "x" * 10_000, "\x00" * 300, " ", "", "ACK", "DONE",
          "node_hello", "offline", "PH", "cmd-1"]
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(["\x00", "\x01", "a", "Z", "_", "-", " ", "😀", "é", "\n"]), max_size=20),
    st.sampled_from(_NASTY),
)
numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=10**300, max_value=10**320),  # beyond float range
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, -1, 1e9, 1e10, 1e12, 1.7e12, 1e15, 1e20, 1e300, -1e300, 5e-324, 2**63, -(2**63), 2**64]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20,
)

# Fields each decoder reads, with values that let it get past its checks as often as not, so that
# the success paths are fuzzed and not only the refusals.
_KNOWN: dict[str, st.SearchStrategy[Any]] = {
    "metric_type": st.one_of(st.sampled_from(["PH", "ec", " temperature ", "TDS", "WEIRD\x00"]), texts),
    "value": st.one_of(numbers, numbers, st.booleans(), json_values),
    "ts": st.one_of(numbers, json_values),
    "status": st.one_of(st.sampled_from(["ONLINE", "ACK", "DONE", "error", " busy ", "TIMEOUT", "QUEUED"]), texts),
    "state": json_values,
    "reason": texts,
    "cmd_id": st.one_of(st.sampled_from(["cmd-1", "unknown", "a" * 63, "a" * 64, "cmd\x00"]), texts, numbers),
    "message_type": st.one_of(st.just("node_hello"), st.just(" NODE_HELLO "), texts),
    "hardware_id": st.one_of(st.sampled_from(["esp32-a1b2c3d4e5f6", "esp32-\x00", "h" * 64, "h" * 65]), texts),
    "provisioning_meta": st.one_of(st.fixed_dictionaries({"node_uid": texts, "node_name": texts}), json_values),
    "capabilities": st.one_of(st.lists(texts, max_size=4), json_values),
    "event_code": st.one_of(st.just("level_switch_changed"), texts),
    "event": texts,
    "type": texts,
    "details": st.one_of(st.dictionaries(texts, json_values, max_size=4), json_values),
    "snapshot": json_values,
    "error_code": texts,
    "error_message": texts,
    "message": texts,
    "level": texts,
    "component": texts,
    "channels": st.lists(st.one_of(
        st.fixed_dictionaries({"name": texts, "type": texts, "relay_type": texts, "safe_limits": json_values}),
        json_values), max_size=3),
    "node_secret": texts,
    "wifi": json_values,
    "mqtt": json_values,
    "fw_version": texts,
    "node_type": texts,
    "uptime": numbers,
    "free_heap": numbers,
    "rssi": numbers,
    "unit": texts,
    "raw": numbers,
    "stable": json_values,
}
objects = st.builds(
    lambda known, extra: {**extra, **known},
    st.fixed_dictionaries({}, optional=_KNOWN),
    st.dictionaries(texts, json_values, max_size=3),
)


def _encode(obj: Any, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")


def _deep(depth: int, pair: tuple[bytes, bytes], leaf: bytes) -> bytes:
    opener, closer = pair
    nested = opener * depth + leaf + closer * depth
    return (b'{"metric_type":"PH","value":1,"message_type":"node_hello","hardware_id":"esp32-1",'
            b'"cmd_id":"c-1","status":"DONE","event_code":"x","level":"ERROR","deep":' + nested + b"}")


payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(_encode, objects, st.booleans()),
    st.builds(_encode, json_values, st.booleans()),
    st.builds(_deep, st.integers(1, 3000),
              st.sampled_from([(b"[", b"]"), (b'{"k":', b"}"), (b'{"details":', b"}"), (b'{"node_secret":', b"}")]),
              st.sampled_from([b'"\\u0000"', b"1", b'"x"', b"null", b"1e400"])),
    st.builds(lambda n: b'{"metric_type":"PH","value":1,"pad":"' + b"x" * n + b'"}',
              st.sampled_from([MAX_DEVICE_PAYLOAD - 40, MAX_DEVICE_PAYLOAD - 33, MAX_DEVICE_PAYLOAD, 10**6])),
)


# --- the property -----------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    """Every string in ``value`` (keys included), iteratively."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def _timestamps(message: Any) -> list[float]:
    return [getattr(message, name) for name in ("ts", "device_ts") if getattr(message, name, None) is not None]


def check(topic: ParsedTopic, payload: bytes) -> None:
    result = decode_device_message(topic, payload, now=NOW)
    assert isinstance(result, DecodeOk | DecodeError)
    event(f"{topic.type}: {'ok' if isinstance(result, DecodeOk) else result.reason}")
    if isinstance(result, DecodeError):
        assert result.reason != "internal_error", result
        assert isinstance(result.detail, str)
        return
    message = result.message
    builtins = msgspec.to_builtins(message)  # what is stored: jsonb details, payloads, reports
    for text in _strings(builtins):
        assert "\x00" not in text, (topic.type, text[:80])
    # strict JSON (no NaN/Infinity, which jsonb refuses), and still no NUL once it went through JSON
    assert not any("\x00" in text for text in _strings(json.loads(msgspec.json.encode(message))))
    for ts in _timestamps(message):
        assert math.isfinite(ts), (topic.type, ts)
    if message.__class__.__name__ != "Telemetry":  # telemetry's device_ts is informational, never stored
        for ts in _timestamps(message):
            assert ts <= PG_MAX_TS, (topic.type, ts)


@FUZZ
@given(topics, payloads)
@example(TOPICS[0], b'{"metric_type":"PH\\u0000","value":1}')
def test_every_decoder_survives_any_payload(topic: ParsedTopic, payload: bytes) -> None:
    check(topic, payload)


def _scrub(value: Any) -> Any:
    """``value`` without any U+0000 (recursion is fine: generated objects are shallow)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


@FUZZ
@given(topics, objects, st.booleans(), st.booleans())
def test_decoded_messages_hold_no_nul(topic: ParsedTopic, obj: dict[str, Any], ascii_only: bool,
                                      scrub: bool) -> None:
    # scrubbed objects reach the decoders' success paths; the others mostly end as unstorable_text
    check(topic, _encode(_scrub(obj) if scrub else obj, ascii_only))


@settings(max_examples=100, deadline=None)
@given(topics, st.sampled_from(["ts", "value", "uptime", "rssi", "free_heap", "raw", "stale_age_sec"]),
       st.one_of(st.integers(min_value=10**300, max_value=10**320), st.sampled_from([1e300, -1e300, 1.7e308])))
def test_huge_numbers(topic: ParsedTopic, key: str, number: int | float) -> None:
    payload = {"metric_type": "PH", "value": 1, "status": "DONE", "cmd_id": "c-1", "event_code": "x",
               "message_type": "node_hello", "hardware_id": "esp32-1", key: number}
    check(topic, json.dumps(payload).encode())


def test_nul_anywhere_is_unstorable_text_for_every_json_type() -> None:
    bodies = {
        TopicType.TELEMETRY: {"metric_type": "PH", "value": 1, "ts": NOW},
        TopicType.STATUS: {"status": "ONLINE"},
        TopicType.HEARTBEAT: {"uptime": 1},
        TopicType.CONFIG_REPORT: {"node_id": "nd-1", "channels": []},
        TopicType.DIAGNOSTICS: {"x": 1},
        TopicType.ERROR: {"level": "ERROR", "error_code": "e", "message": "m", "ts": NOW * 1000},
        TopicType.NODE_HELLO: {"message_type": "node_hello", "hardware_id": "esp32-a1b2c3d4e5f6"},
        TopicType.COMMAND_RESPONSE: {"cmd_id": "c-1", "status": "DONE", "ts": NOW * 1000},
        TopicType.EVENT: {"event_code": "level_switch_changed", "ts": NOW},
        TopicType.TIME_REQUEST: {"message_type": "time_request", "uptime": 1},
    }
    for topic in TOPICS:
        body = bodies.get(topic.type)  # type: ignore[call-overload]
        if body is None or (topic.kind is TopicKind.GLOBAL) != (topic.type in ("node_hello", "time_request")):
            continue
        assert isinstance(decode_device_message(topic, json.dumps(body).encode(), now=NOW), DecodeOk), topic
        for poisoned in ({**body, "extra": "a\x00b"}, {**body, "a\x00": 1}, {**body, "d": {"x": ["\x00"]}}):
            result = decode_device_message(topic, json.dumps(poisoned).encode(), now=NOW)
            assert isinstance(result, DecodeError), (topic, poisoned)
            assert result.reason == "unstorable_text", (topic, result)
