"""Typed messages of Protocol 2.0 (PROTOCOL.md §4, §5, §7).

Node → server structs are the *normalised* result of ``decode.decode_device_message``, not a mirror
of the wire: timestamps are float Unix seconds, codes are upper-cased, optional wire fields are
``None`` when absent or of the wrong type, and secrets a node echoes (``node_secret``, ``wifi.pass``,
``mqtt.password`` and similar keys) are dropped during decoding, so no decoded struct can leak them
through a log line or an API response.

Server → node structs (``Command``, ``ConfigPush``, ``TimeResponse``) are encoded by ``signing`` and
``encode``. ``ConfigPush`` must carry the node secret; its ``repr`` masks it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from hydrovisor.protocol.statuses import CommandStatus

__all__ = [
    "UNKNOWN_CMD_ID",
    "ChannelConfig",
    "Command",
    "CommandResponse",
    "ConfigPush",
    "ConfigReport",
    "DeviceMessage",
    "Diagnostics",
    "ErrorReport",
    "Event",
    "Heartbeat",
    "Lwt",
    "NodeHello",
    "ProvisioningMeta",
    "SafeLimits",
    "Status",
    "Telemetry",
    "TimeRequest",
    "TimeResponse",
]

UNKNOWN_CMD_ID = "unknown"
"""The ``cmd_id`` a node answers with when it could not parse the command."""


# --- node → server --------------------------------------------------------------------------------


class Telemetry(msgspec.Struct, frozen=True, kw_only=True):
    """One sample from ``{channel}/telemetry``.

    ``metric_type`` is the wire value stripped and upper-cased (see ``vocabulary.normalize_metric``
    for the known/unknown decision). ``ts`` is always usable: a missing, pre-2001 (device uptime) or
    more-than-300-s-future device time is replaced by server time and ``ts_replaced`` is set;
    ``device_ts`` keeps the device's value (in seconds) when it was a number.
    ``stable`` is ``None`` when omitted — firmware omits it when the reading *is* stable.
    ``extra`` holds the fields this struct does not name.
    """

    metric_type: str
    value: float
    ts: float
    ts_replaced: bool = False
    device_ts: float | None = None
    unit: str | None = None
    raw: float | None = None
    stub: bool = False
    stable: bool | None = None
    flow_active: bool | None = None
    corrections_allowed: bool | None = None
    stale_age_sec: float | None = None
    extra: dict[str, Any] = {}


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """Retained ``status``: ``{"status":"ONLINE",...}`` or the safe-mode form ``{"state","reason"}``.

    ``status`` is upper-cased (``ONLINE``, ``RESTARTING`` from simulators); ``None`` in the safe-mode form.
    """

    status: str | None = None
    state: str | None = None
    reason: str | None = None
    ts: float | None = None
    online: bool | None = None
    ip: str | None = None
    rssi: int | None = None
    fw: str | None = None

    @property
    def is_safe_mode(self) -> bool:
        """True for the ``{"state":"safe_mode",...}`` form."""
        return (self.state or "").lower() == "safe_mode"


class Lwt(msgspec.Struct, frozen=True):
    """The broker-published last will (plain text ``offline``). Not proof of being offline by itself:
    a reconnect's ``ONLINE`` may precede the old session's LWT (PROTOCOL.md §4)."""


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """``heartbeat``; every field is optional because the message itself is the liveness signal."""

    uptime: float | None = None
    free_heap: int | None = None  # from free_heap or free_heap_bytes
    rssi: int | None = None
    fw_version: str | None = None


class SafeLimits(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-channel actuator safety limits stored on the node."""

    max_duration_ms: int | None = None
    min_off_ms: int | None = None
    fail_safe_mode: str | None = None


class ChannelConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A channel entry of ``config_report`` / ``config`` push.

    ``type`` is ``SENSOR`` or ``ACTUATOR``; ``actuator_type`` one of PUMP, PERISTALTIC_PUMP, RELAY, VALVE,
    DRIVE, FAN, HEATER, LED, PWM, SYSTEM; ``relay_type`` NO or NC (all upper-cased on decode, other
    values kept). ``extra`` keeps unnamed keys (e.g. pin assignments) so a reported channel can be
    pushed back without losing them.
    """

    name: str
    type: str | None = None
    metric: str | None = None
    unit: str | None = None
    poll_interval_ms: int | None = None
    actuator_type: str | None = None
    relay_type: str | None = None
    safe_limits: SafeLimits | None = None
    ml_per_second: float | None = None
    extra: dict[str, Any] = {}


class ConfigReport(msgspec.Struct, frozen=True, kw_only=True):
    """``config_report``: the node's stored config, secrets removed.

    ``node_secret`` is never kept; ``has_node_secret`` says whether the node reported one. ``wifi``,
    ``mqtt``, ``limits``, ``calibration`` and ``fail_safe_guards`` are copies with secret-looking keys
    (``pass``, ``password``, ``*_secret``, ``token`` ...) removed at any depth. ``node_type`` is the
    normalised type (``vocabulary.normalize_node_type``), ``type_raw`` the wire value.
    ``invalid_channels`` counts channel entries dropped for lacking a string ``name``.
    """

    node_id: str | None = None
    version: int | None = None
    node_type: str = "unknown"
    type_raw: str | None = None
    gh_uid: str | None = None
    zone_uid: str | None = None
    channels: tuple[ChannelConfig, ...] = ()
    invalid_channels: int = 0
    fw_version: str | None = None
    wifi: dict[str, Any] | None = None
    mqtt: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    fail_safe_guards: dict[str, Any] | None = None
    has_node_secret: bool = False


class ProvisioningMeta(msgspec.Struct, frozen=True, kw_only=True):
    """``node_hello.provisioning_meta``; other keys are not kept."""

    node_uid: str | None = None
    node_name: str | None = None


class NodeHello(msgspec.Struct, frozen=True, kw_only=True):
    """``node_hello`` of an unbound node. ``hardware_id`` is guaranteed usable as a topic segment.

    ``node_type`` is normalised (``vocabulary.normalize_node_type``), ``node_type_raw`` the wire value.
    """

    hardware_id: str
    node_type: str = "unknown"
    node_type_raw: str | None = None
    fw_version: str | None = None
    hardware_revision: str | None = None
    capabilities: tuple[str, ...] = ()
    provisioning_meta: ProvisioningMeta | None = None


CLOCK_ERRORS = frozenset({"timestamp_expired", "time_not_synced"})
"""Error codes of a command the node refused for its own clock: the same command is accepted once it has
been told the time again."""


class CommandResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``{channel}/command_response``. Match by ``cmd_id``, never by topic (PROTOCOL.md §4).

    ``error_code``/``error_message`` come from the top level (firmware) or ``details`` (simulators).
    ``ts`` is in seconds (the wire sends ms) or ``None`` when absent or not a wall-clock time.
    """

    cmd_id: str
    status: CommandStatus
    ts: float | None = None
    details: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    message: str | None = None

    @property
    def is_unattributed(self) -> bool:
        """True when the node could not parse the command and answered ``cmd_id: "unknown"``."""
        return self.cmd_id == UNKNOWN_CMD_ID


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """``{channel}/event``. ``event_code`` is the zone event type (UPPER_SNAKE), ``event_code_raw`` the
    wire value it came from (``event_code``, else ``event``, else ``type``). ``payload`` is the whole
    decoded object (level-switch ``initial``, ``timeout_sec``, ``stopped_pumps`` ... live there)."""

    event_code: str
    event_code_raw: str
    ts: float | None = None
    cmd_id: str | None = None
    details: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    state: Any = None
    payload: dict[str, Any] = {}


class ErrorReport(msgspec.Struct, frozen=True, kw_only=True):
    """``error``: ``level`` (upper-cased; ERROR|WARNING|INFO expected), ``component``, ``error_code``,
    ``message``; code and message fall back to ``details``. ``ts`` in seconds (wire: ms)."""

    level: str | None = None
    component: str | None = None
    error_code: str | None = None
    message: str | None = None
    ts: float | None = None
    details: dict[str, Any] | None = None


class Diagnostics(msgspec.Struct, frozen=True):
    """``diagnostics``: a free-form engineering snapshot, secret-looking keys removed."""

    data: dict[str, Any]


class TimeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """``hydro/time/request``: answer with a ``TimeResponse`` broadcast."""

    uptime: float | None = None


DeviceMessage = (
    Telemetry
    | Status
    | Lwt
    | Heartbeat
    | ConfigReport
    | NodeHello
    | CommandResponse
    | Event
    | ErrorReport
    | Diagnostics
    | TimeRequest
)
"""Every message ``decode_device_message`` can return."""


# --- server → node --------------------------------------------------------------------------------


class Command(msgspec.Struct, frozen=True):
    """A signed command payload: exactly these five keys go on the wire (nodes reject extras)."""

    cmd: str
    cmd_id: str
    params: dict[str, Any]
    ts: int
    sig: str


class ConfigPush(msgspec.Struct, frozen=True, kw_only=True):
    """A config push to ``.../{node}/config`` (bind, update, unbind = target ``gh-temp``/``zn-temp``).

    Encode with ``encode.encode_config_push``. ``node_secret`` must reach the node, so it is a field;
    ``repr``/``str``/rich repr mask it. ``wifi``/``mqtt`` default to ``{"configured": true}``: the node
    keeps its own credentials.
    """

    node_id: str
    gh_uid: str
    zone_uid: str
    type: str
    channels: tuple[ChannelConfig, ...]
    node_secret: str
    version: int = 3
    wifi: dict[str, Any] = msgspec.field(default_factory=lambda: {"configured": True})
    mqtt: dict[str, Any] = msgspec.field(default_factory=lambda: {"configured": True})
    limits: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    fail_safe_guards: dict[str, Any] | None = None

    def _safe_fields(self) -> Iterator[tuple[str, Any]]:
        for name in self.__struct_fields__:
            value = getattr(self, name)
            yield name, ("<redacted>" if name == "node_secret" else value)

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" if name != "node_secret" else f"{name}={value}"
                          for name, value in self._safe_fields())
        return f"ConfigPush({inner})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        """rich's pretty printer would otherwise list the secret (msgspec provides this hook)."""
        return list(self._safe_fields())


class TimeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """Broadcast on ``hydro/time/response``: ``unix_ts`` and ``server_time`` are the same integer seconds."""

    message_type: str = "time_response"
    unix_ts: int
    server_time: int
