"""The observer's own reading of Protocol 2.0 traffic (PROTOCOL §2-§5): topics and the few payload fields
the safety rules need.

Deliberately written again here instead of reusing ``hydrovisor.protocol``: the observer must not share a
parser (and so a parser bug) with the code it judges. Decoding is lenient where real nodes deviate from the
schema (extra fields, flags of any JSON type) and fail-closed where a rule depends on a value: a sensor flag
counts as true only when it is the JSON literal ``true``.

Every ``decode_*`` returns None for a payload that is not what its topic promises; the observer counts
those and moves on (a malformed publish must never stop the observer).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "TERMINAL_STATUSES",
    "UNSET",
    "Action",
    "Command",
    "Event",
    "Response",
    "Telemetry",
    "Topic",
    "action_of",
    "decode_command",
    "decode_event",
    "decode_response",
    "decode_telemetry",
    "duration_s",
    "parse_topic",
    "snapshot_of",
    "switch_state",
]

UNSET = msgspec.UNSET
"""A telemetry flag that was absent from the payload (distinct from ``null``)."""

TERMINAL_STATUSES = frozenset({"DONE", "NO_EFFECT", "ERROR", "INVALID", "BUSY", "TIMEOUT", "SEND_FAILED"})
"""Every terminal status of PROTOCOL §6 (devices send the first five)."""


class Topic(msgspec.Struct, frozen=True, kw_only=True):
    """A node-level (``channel`` None) or channel-level topic under ``hydro/{gh}/{zone}/{node}``."""

    gh: str
    zone: str
    node: str
    channel: str | None
    kind: str


def parse_topic(topic: str) -> Topic | None:
    """``hydro/{gh}/{zone}/{node}/{kind}`` or ``hydro/{gh}/{zone}/{node}/{channel}/{kind}``; None for the
    global topics (``hydro/node_hello``, ``hydro/time/...``) and anything else."""
    parts = topic.split("/")
    if parts[0] != "hydro" or len(parts) not in (5, 6) or not all(parts):
        return None
    if len(parts) == 5:
        return Topic(gh=parts[1], zone=parts[2], node=parts[3], channel=None, kind=parts[4])
    return Topic(gh=parts[1], zone=parts[2], node=parts[3], channel=parts[4], kind=parts[5])


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """``{cmd, cmd_id, params, ts, sig}`` as the server publishes it (PROTOCOL §5)."""

    cmd: str
    cmd_id: str
    params: dict[str, Any] = {}


class Response(msgspec.Struct, frozen=True, kw_only=True):
    """``{cmd_id, status, ts(ms), details?, error_code?, ...}`` (PROTOCOL §4)."""

    cmd_id: str
    status: str
    details: Any = None
    error_code: Any = None

    @property
    def terminal(self) -> bool:
        """True for a terminal status (anything but ``ACK``)."""
        return self.status in TERMINAL_STATUSES


class Telemetry(msgspec.Struct, frozen=True, kw_only=True):
    """One reading; the three dosing flags stay ``UNSET`` when the payload omits them."""

    metric_type: str
    value: Any = None
    stable: Any = UNSET
    flow_active: Any = UNSET
    corrections_allowed: Any = UNSET

    @property
    def metric(self) -> str:
        """``metric_type`` normalised as PROTOCOL §8 says (strip, upper case)."""
        return self.metric_type.strip().upper()


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """``{event_code (fallbacks event, type), channel?, state?, snapshot?, details?, ...}``."""

    event_code: Any = None
    event: Any = None
    type: Any = None
    channel: Any = None
    state: Any = None
    snapshot: Any = None
    details: Any = None

    @property
    def code(self) -> str | None:
        """The event code (lower case), from ``event_code`` or its fallbacks."""
        for value in (self.event_code, self.event, self.type):
            if isinstance(value, str) and value:
                return value.strip().lower()
        return None


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    cls: msgspec.json.Decoder(cls) for cls in (Command, Response, Telemetry, Event)
}


def _decode(payload: bytes, cls: type[Any]) -> Any:
    try:
        return _decoders[cls].decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def decode_command(payload: bytes) -> Command | None:
    """The command, or None when ``cmd``/``cmd_id`` are missing or not strings or ``params`` is not an object."""
    command: Command | None = _decode(payload, Command)
    return command if command is not None and command.cmd and command.cmd_id else None


def decode_response(payload: bytes) -> Response | None:
    """The reply, or None without a string ``cmd_id`` and ``status``."""
    response: Response | None = _decode(payload, Response)
    if response is None or not response.cmd_id or not response.status:
        return None
    return msgspec.structs.replace(response, status=response.status.strip().upper())


def decode_telemetry(payload: bytes) -> Telemetry | None:
    """The reading, or None without a string ``metric_type``."""
    telemetry: Telemetry | None = _decode(payload, Telemetry)
    return telemetry if telemetry is not None and telemetry.metric_type.strip() else None


def decode_event(payload: bytes) -> Event | None:
    """The event, or None when it names no code."""
    event: Event | None = _decode(payload, Event)
    return event if event is not None and event.code is not None else None


def switch_state(value: Any) -> bool | None:
    """A relay state as the firmware reads it (``true/false``, ``1/0``, ``"on"/"off"``), None when unreadable.

    Wider than the simulator on purpose: any non-zero number is "on", so a command the observer cannot
    classify is never mistaken for a stop.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("on", "true", "1"):
            return True
        if text in ("off", "false", "0"):
            return False
    return None


def snapshot_of(value: Any) -> dict[str, bool] | None:
    """The two-tank snapshot (PROTOCOL §4 keys) ``value`` holds, with its boolean (or 0/1) entries; None when
    ``value`` is not an object."""
    if not isinstance(value, dict):
        return None
    return {key: bool(flag) for key, flag in value.items()
            if isinstance(key, str) and (isinstance(flag, bool) or (isinstance(flag, int) and flag in (0, 1)))}


Action = Literal["start", "stop", "other"]


def action_of(command: Command) -> Action:
    """Whether ``command`` starts something (``set_relay`` on, ``run_pump``, ``dose``), stops something
    (``set_relay`` off) or neither (reads, configuration, an unreadable ``set_relay``)."""
    if command.cmd in ("run_pump", "dose"):
        return "start"
    if command.cmd == "set_relay":
        state = switch_state(command.params.get("state"))
        if state is None:
            return "other"
        return "start" if state else "stop"
    return "other"


def duration_s(command: Command) -> float | None:
    """How long a timed ``set_relay`` holds its state before the node reverts it (``duration_ms`` or
    ``timeout_ms``), in seconds; None when untimed."""
    for key in ("duration_ms", "timeout_ms"):
        value = command.params.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value) / 1000.0
    return None
