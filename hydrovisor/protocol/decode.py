"""Lenient decoding of everything a device publishes (PROTOCOL.md §3, §4).

``decode_device_message`` turns a parsed topic and raw payload into a typed message or a
``DecodeError`` value. It never raises: the ingest path must survive any payload a node, a simulator
or an attacker can publish. Leniency follows the fleet — extra fields are tolerated, fields of the
wrong type read as absent — while the few things a consumer relies on (a finite telemetry ``value``,
a known command status, a usable hardware id) are checked.

Timestamps: whatever the message, a device ``ts`` ≥ 1e10 is milliseconds, anything smaller seconds;
that covers telemetry/status/event (seconds) and command_response/error (ms) and simulators that
mix them up. A result below 1e9 is device uptime, not wall-clock time: telemetry replaces it (and a
ts more than 300 s ahead) with ``now`` and sets ``ts_replaced``; the other messages report ``ts=None``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import msgspec

from hydrovisor.protocol.messages import (
    ChannelConfig,
    CommandResponse,
    ConfigReport,
    DeviceMessage,
    Diagnostics,
    ErrorReport,
    Event,
    Heartbeat,
    Lwt,
    NodeHello,
    ProvisioningMeta,
    SafeLimits,
    Status,
    Telemetry,
    TimeRequest,
)
from hydrovisor.protocol.statuses import DEVICE_REPORTABLE, parse_status
from hydrovisor.protocol.topics import ParsedTopic, TopicKind, TopicType
from hydrovisor.protocol.vocabulary import normalize_node_type

__all__ = [
    "FUTURE_TOLERANCE_S",
    "MAX_DEVICE_PAYLOAD",
    "MAX_HARDWARE_ID_LEN",
    "DecodeError",
    "DecodeOk",
    "Decoded",
    "decode_device_message",
    "normalize_event_code",
    "normalize_ts",
    "redact_secrets",
]

MAX_DEVICE_PAYLOAD = 65_536
"""Larger payloads are refused before parsing (real messages stay under 4 KiB)."""
MAX_HARDWARE_ID_LEN = 64
"""A hardware id becomes a topic segment of the temp namespace; the real ones are 18 chars."""
FUTURE_TOLERANCE_S = 300.0
"""How far ahead of server time a telemetry ts may be before it is replaced."""

_MS_THRESHOLD = 1e10
_WALL_CLOCK_MIN = 1e9
# 9999-12-31T23:59:59Z: later times fit neither a Python datetime nor a PostgreSQL timestamptz
_WALL_CLOCK_MAX = 253402300799.0
_MAX_REDACT_DEPTH = 16


class DecodeOk(msgspec.Struct, frozen=True):
    """A successfully decoded message."""

    message: DeviceMessage


class DecodeError(msgspec.Struct, frozen=True):
    """Why a payload was refused: machine ``reason`` (count it, log it) and a human ``detail``.

    A value, not an exception (unrelated to ``msgspec.DecodeError``). Reasons: ``empty_payload``,
    ``payload_too_large``, ``invalid_json``, ``not_object``, ``unsupported_topic``, ``invalid_lwt``,
    ``missing_metric_type``, ``invalid_value``, ``invalid_status``, ``missing_cmd_id``,
    ``invalid_cmd_id``, ``missing_event_code``, ``not_node_hello``, ``invalid_hardware_id``, ``unstorable_text``,
    ``internal_error``.
    """

    reason: str
    detail: str


Decoded = DecodeOk | DecodeError
"""Result of ``decode_device_message``."""


# --- small lenient readers ------------------------------------------------------------------------


def _num(value: object) -> float | None:
    """A finite number (bools excluded), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        result = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return result if math.isfinite(result) else None


def _int(value: object) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: object) -> str | None:
    """A non-blank string, stripped."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # C firmware sometimes prints flags as 0/1
        return bool(value)
    return None


def _dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _brief(value: object) -> str:
    """A short description for error details; repr() of a deeply nested value could itself fail."""
    if value is None or isinstance(value, bool | int | float | str):
        return repr(value)[:40]
    return f"<{type(value).__name__}>"


def _upper(value: object) -> str | None:
    text = _text(value)
    return text.upper() if text is not None else None


def normalize_ts(value: object) -> float | None:
    """A device timestamp as float Unix seconds (``≥ 1e10`` means milliseconds); None when it is not a
    finite number or not a plausible wall-clock time (< 1e9 s: device uptime; after the year 9999:
    PostgreSQL could not store it)."""
    number = _num(value)
    if number is None:
        return None
    seconds = number / 1000.0 if number >= _MS_THRESHOLD else number
    return seconds if _WALL_CLOCK_MIN <= seconds <= _WALL_CLOCK_MAX else None


_SECRET_KEYS = frozenset({"node_secret", "secret", "pass", "passwd", "password", "psk", "token", "api_key"})
_SECRET_SUFFIXES = ("_secret", "_pass", "_password", "_token", "_psk")


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or lowered.endswith(_SECRET_SUFFIXES)


def _redact(value: Any, depth: int) -> Any:
    if depth > _MAX_REDACT_DEPTH:
        return None  # deeper than any real config: drop rather than risk keeping a nested secret
    if isinstance(value, dict):
        return {k: _redact(v, depth + 1) for k, v in value.items() if not _is_secret_key(k)}
    if isinstance(value, list):
        return [_redact(item, depth + 1) for item in value]
    return value


def redact_secrets(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` without secret-looking keys (``node_secret``, ``pass``, ``password``, ``token``,
    ``*_secret`` ...) at any depth; subtrees nested deeper than 16 levels are replaced by None."""
    result: dict[str, Any] = _redact(data, 0)
    return result


_NON_CODE = re.compile(r"[^A-Z0-9]+")


def normalize_event_code(raw: str) -> str | None:
    """Zone event type of an event code: strip, UPPERCASE, runs of non-``[A-Z0-9]`` → ``_``. None when
    nothing alphanumeric is left (such a code cannot name an event)."""
    code = _NON_CODE.sub("_", raw.strip().upper())
    return code if code.strip("_") else None


# --- per message ----------------------------------------------------------------------------------


_TELEMETRY_FIELDS = frozenset({"metric_type", "value", "ts", "unit", "raw", "stub", "stable", "flow_active",
                               "corrections_allowed", "stale_age_sec"})


def _telemetry(data: dict[str, Any], now: float) -> Telemetry | DecodeError:
    metric = _upper(data.get("metric_type"))
    if metric is None:
        return DecodeError("missing_metric_type", "metric_type missing or not a non-empty string")
    raw_value = data.get("value")
    # Level switches report true/false on some simulators: 1.0/0.0 is what they mean.
    value = float(raw_value) if isinstance(raw_value, bool) else _num(raw_value)
    if value is None:
        return DecodeError("invalid_value", f"value {_brief(raw_value)} is not a finite number")
    device_ts = None
    number = _num(data.get("ts"))
    if number is not None:
        device_ts = number / 1000.0 if number >= _MS_THRESHOLD else number
    replaced = device_ts is None or device_ts < _WALL_CLOCK_MIN or device_ts > now + FUTURE_TOLERANCE_S
    return Telemetry(
        metric_type=metric,
        value=value,
        ts=now if replaced or device_ts is None else device_ts,
        ts_replaced=replaced,
        device_ts=device_ts,
        unit=_str(data.get("unit")),
        raw=_num(data.get("raw")),
        stub=_bool(data.get("stub")) is True,
        stable=_bool(data.get("stable")),
        flow_active=_bool(data.get("flow_active")),
        corrections_allowed=_bool(data.get("corrections_allowed")),
        stale_age_sec=_num(data.get("stale_age_sec")),
        extra=redact_secrets({k: v for k, v in data.items() if k not in _TELEMETRY_FIELDS}),
    )


def _status(data: dict[str, Any], _now: float) -> Status | DecodeError:
    status = _upper(data.get("status"))
    state = _text(data.get("state"))
    if status is None and state is None:
        return DecodeError("invalid_status", "neither status nor state is a non-empty string")
    return Status(
        status=status,
        state=state,
        reason=_str(data.get("reason")),
        ts=normalize_ts(data.get("ts")),
        online=_bool(data.get("online")),
        ip=_str(data.get("ip")),
        rssi=_int(data.get("rssi")),
        fw=_str(data.get("fw")),
    )


def _heartbeat(data: dict[str, Any], _now: float) -> Heartbeat:
    free_heap = _int(data.get("free_heap"))
    if free_heap is None:
        free_heap = _int(data.get("free_heap_bytes"))
    return Heartbeat(
        uptime=_num(data.get("uptime")),
        free_heap=free_heap,
        rssi=_int(data.get("rssi")),
        fw_version=_str(data.get("fw_version")),
    )


_CHANNEL_FIELDS = frozenset(ChannelConfig.__struct_fields__)


def _channel(entry: object) -> ChannelConfig | None:
    if not isinstance(entry, dict):
        return None
    name = _text(entry.get("name"))
    if name is None:
        return None
    limits = _dict(entry.get("safe_limits"))
    safe_limits = None
    if limits is not None:
        safe_limits = SafeLimits(
            max_duration_ms=_int(limits.get("max_duration_ms")),
            min_off_ms=_int(limits.get("min_off_ms")),
            fail_safe_mode=_str(limits.get("fail_safe_mode")),
        )
    return ChannelConfig(
        name=name,
        type=_upper(entry.get("type")),
        metric=_upper(entry.get("metric")),
        unit=_str(entry.get("unit")),
        poll_interval_ms=_int(entry.get("poll_interval_ms")),
        actuator_type=_upper(entry.get("actuator_type")),
        relay_type=_upper(entry.get("relay_type")),
        safe_limits=safe_limits,
        ml_per_second=_num(entry.get("ml_per_second")),
        extra=redact_secrets({k: v for k, v in entry.items() if k not in _CHANNEL_FIELDS}),
    )


def _redacted_dict(value: object) -> dict[str, Any] | None:
    data = _dict(value)
    return None if data is None else redact_secrets(data)


def _config_report(data: dict[str, Any], _now: float) -> ConfigReport:
    raw_channels = data.get("channels")
    entries: list[object] = raw_channels if isinstance(raw_channels, list) else []
    channels = [c for c in (_channel(entry) for entry in entries) if c is not None]
    secret = data.get("node_secret")
    # Only the redacted copies below are kept; the raw dict (with node_secret, wifi.pass,
    # mqtt.password) goes out of scope with this call.
    return ConfigReport(
        node_id=_str(data.get("node_id")),
        version=_int(data.get("version")),
        node_type=normalize_node_type(data.get("type")),
        type_raw=_str(data.get("type")),
        gh_uid=_str(data.get("gh_uid")),
        zone_uid=_str(data.get("zone_uid")),
        channels=tuple(channels),
        invalid_channels=len(entries) - len(channels),
        fw_version=_str(data.get("fw_version")),
        wifi=_redacted_dict(data.get("wifi")),
        mqtt=_redacted_dict(data.get("mqtt")),
        limits=_redacted_dict(data.get("limits")),
        calibration=_redacted_dict(data.get("calibration")),
        fail_safe_guards=_redacted_dict(data.get("fail_safe_guards")),
        has_node_secret=isinstance(secret, str) and bool(secret),
    )


_HARDWARE_ID_FORBIDDEN = re.compile(r"[+#/\s\x00-\x1f\x7f]")


def _node_hello(data: dict[str, Any], _now: float) -> NodeHello | DecodeError:
    message_type = data.get("message_type")
    if not isinstance(message_type, str) or message_type.strip().lower() != "node_hello":
        return DecodeError("not_node_hello", 'message_type is not "node_hello"')
    hardware_id = _text(data.get("hardware_id"))
    if (
        hardware_id is None
        or len(hardware_id) > MAX_HARDWARE_ID_LEN
        or _HARDWARE_ID_FORBIDDEN.search(hardware_id)
    ):
        return DecodeError("invalid_hardware_id", "hardware_id missing or not usable as a topic segment")
    meta = _dict(data.get("provisioning_meta"))
    capabilities = data.get("capabilities")
    return NodeHello(
        hardware_id=hardware_id,
        node_type=normalize_node_type(data.get("node_type")),
        node_type_raw=_str(data.get("node_type")),
        fw_version=_str(data.get("fw_version")),
        hardware_revision=_str(data.get("hardware_revision")),
        capabilities=tuple(c for c in capabilities if isinstance(c, str))
        if isinstance(capabilities, list) else (),
        provisioning_meta=None if meta is None else ProvisioningMeta(
            node_uid=_str(meta.get("node_uid")), node_name=_str(meta.get("node_name"))
        ),
    )


_CMD_ID = re.compile(r"[A-Za-z0-9_-]{1,63}")  # the commands table's CHECK


def _cmd_id(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a node echoing a numeric id still refers to our command
    return _text(value)


def _command_response(data: dict[str, Any], _now: float) -> CommandResponse | DecodeError:
    cmd_id = _cmd_id(data.get("cmd_id"))
    if cmd_id is None:
        return DecodeError("missing_cmd_id", "cmd_id missing or not a string")
    if not _CMD_ID.fullmatch(cmd_id):
        return DecodeError("invalid_cmd_id", f"cmd_id {cmd_id[:40]!r} is not [A-Za-z0-9_-]{{1,63}}: not one of ours")
    status = parse_status(data.get("status"))
    if status is None or status not in DEVICE_REPORTABLE:
        return DecodeError("invalid_status", f"status {_brief(data.get('status'))} is not a device status")
    details = _redacted_dict(data.get("details"))
    inner = details or {}
    return CommandResponse(
        cmd_id=cmd_id,
        status=status,
        ts=normalize_ts(data.get("ts")),
        details=details,
        error_code=_text(data.get("error_code")) or _text(inner.get("error_code")),
        error_message=_text(data.get("error_message")) or _text(inner.get("error_message")),
        message=_str(data.get("message")),
    )


def _event(data: dict[str, Any], _now: float) -> Event | DecodeError:
    for key in ("event_code", "event", "type"):
        raw = data.get(key)
        if isinstance(raw, str):
            code = normalize_event_code(raw)
            if code is not None:
                break
    else:
        return DecodeError("missing_event_code", "no usable event_code, event or type")
    data = redact_secrets(data)
    return Event(
        event_code=code,
        event_code_raw=raw,
        ts=normalize_ts(data.get("ts")),
        cmd_id=_cmd_id(data.get("cmd_id")),
        details=_dict(data.get("details")),
        snapshot=_dict(data.get("snapshot")),
        state=data.get("state"),
        payload=data,
    )


def _error(data: dict[str, Any], _now: float) -> ErrorReport:
    details = _redacted_dict(data.get("details"))
    inner = details or {}
    return ErrorReport(
        level=_upper(data.get("level")),
        component=_str(data.get("component")),
        error_code=_text(data.get("error_code")) or _text(inner.get("error_code")),
        message=(_text(data.get("message")) or _text(data.get("error_message"))
                 or _text(inner.get("message")) or _text(inner.get("error_message"))),
        ts=normalize_ts(data.get("ts")),
        details=details,
    )


def _diagnostics(data: dict[str, Any], _now: float) -> Diagnostics:
    return Diagnostics(data=redact_secrets(data))


def _time_request(data: dict[str, Any], _now: float) -> TimeRequest:
    return TimeRequest(uptime=_num(data.get("uptime")))


_Decoder = Callable[[dict[str, Any], float], DeviceMessage | DecodeError]
_DECODERS: dict[str, _Decoder] = {
    TopicType.TELEMETRY: _telemetry,
    TopicType.STATUS: _status,
    TopicType.HEARTBEAT: _heartbeat,
    TopicType.CONFIG_REPORT: _config_report,
    TopicType.DIAGNOSTICS: _diagnostics,
    TopicType.ERROR: _error,
    TopicType.NODE_HELLO: _node_hello,
    TopicType.COMMAND_RESPONSE: _command_response,
    TopicType.EVENT: _event,
    TopicType.TIME_REQUEST: _time_request,
}
# Server → node types arriving here would be our own traffic (or spoofing): not device messages.
_GLOBAL_DECODABLE = frozenset({TopicType.NODE_HELLO, TopicType.TIME_REQUEST})


def _lwt(payload: bytes) -> Lwt | DecodeError:
    text = payload.strip().lower()
    if text in (b"offline", b'"offline"'):
        return Lwt()
    return DecodeError("invalid_lwt", f"lwt payload {payload[:40]!r} is not 'offline'")


def _decode(topic: ParsedTopic, payload: bytes, now: float) -> DeviceMessage | DecodeError:
    if not payload:
        # An empty retained publish clears the retained message; it carries no information.
        return DecodeError("empty_payload", "empty payload")
    if len(payload) > MAX_DEVICE_PAYLOAD:
        return DecodeError("payload_too_large", f"{len(payload)} bytes, limit {MAX_DEVICE_PAYLOAD}")
    if topic.kind is TopicKind.GLOBAL and topic.type not in _GLOBAL_DECODABLE:
        return DecodeError("unsupported_topic", f"global topic type {topic.type!r} is not sent by devices")
    if topic.type == TopicType.LWT:
        return _lwt(payload)
    decoder = _DECODERS.get(topic.type)
    if decoder is None:
        return DecodeError("unsupported_topic", f"topic type {topic.type!r:.40} is not sent by devices")
    try:
        data = msgspec.json.decode(payload)
    except (msgspec.MsgspecError, RecursionError, ValueError) as exc:
        return DecodeError("invalid_json", str(exc)[:200])
    if not isinstance(data, dict):
        return DecodeError("not_object", f"payload is a JSON {type(data).__name__}, expected an object")
    if b"\\u0000" in payload and _holds_nul(data):
        # PostgreSQL stores no U+0000 in text or jsonb: refused here, counted, instead of failing a write
        return DecodeError("unstorable_text", "a string of the payload contains U+0000")
    return decoder(data, now)


def _holds_nul(data: Any) -> bool:
    """Whether any key or string value anywhere in ``data`` contains U+0000 (iterative: no depth limit)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_device_message(topic: ParsedTopic, payload: bytes, *, now: float) -> Decoded:
    """Decode one device publish. ``now`` is server time (Unix seconds) for telemetry ts replacement.

    Returns ``DecodeOk(message)`` or ``DecodeError(reason, detail)``; never raises. The LWT is the plain
    text ``offline``; every other payload must be a JSON object.
    """
    try:
        result = _decode(topic, bytes(payload), now)
    except Exception as exc:  # a decoder bug must cost one message, not the ingest actor
        return DecodeError("internal_error", f"{type(exc).__name__}: {exc}"[:200])
    if isinstance(result, DecodeError):
        return result
    return DecodeOk(result)
