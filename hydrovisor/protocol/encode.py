"""Encoders for the unsigned server → node messages: config push and time response (PROTOCOL.md §4, §7).

Strict on output: a config the firmware would drop (over 4096 bytes) or could not address (a channel
name that is not a valid topic segment) is refused here rather than silently lost on the node.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from hydrovisor.protocol.messages import ChannelConfig, ConfigPush, TimeResponse
from hydrovisor.protocol.signing import canonical_json
from hydrovisor.protocol.topics import MAX_CHANNEL_LEN, MAX_TOPIC_BYTES, validate_segment

__all__ = [
    "MAX_CONFIG_BYTES",
    "ConfigPushInvalid",
    "encode_config_push",
    "encode_time_response",
    "time_response",
]

MAX_CONFIG_BYTES = 4096
"""The firmware drops larger incoming payloads."""


class ConfigPushInvalid(ValueError):
    """A config push that must not be sent. ``code``: ``invalid_channel``, ``invalid_namespace``,
    ``missing_node_secret``, ``invalid_value`` or ``payload_too_large``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _channel_wire(channel: ChannelConfig) -> dict[str, Any]:
    wire: dict[str, Any] = dict(channel.extra)  # unnamed keys first, so named fields win on a clash
    named = msgspec.to_builtins(channel)
    named.pop("extra", None)
    wire.update(named)
    return wire


def encode_config_push(push: ConfigPush) -> bytes:
    """Compact JSON (canonical form) for ``.../{node}/config``. Raises ``ConfigPushInvalid``.

    Checks that ``gh_uid``/``zone_uid``/``node_id`` and every channel name are strict topic segments
    (the node moves into that namespace and builds topics from them), that the secret is present, that
    every value is plain finite JSON and that the result fits 4096 bytes. Unnamed channel keys
    (``ChannelConfig.extra``) are merged into the channel object; named fields win on a clash.
    """
    if not push.node_secret:
        raise ConfigPushInvalid("missing_node_secret", "a node without a secret refuses every command")
    for what, value in (("gh_uid", push.gh_uid), ("zone_uid", push.zone_uid), ("node_id", push.node_id)):
        problem = validate_segment(value, what, strict=True)
        if problem is not None:
            raise ConfigPushInvalid("invalid_namespace", problem.detail)
    namespace = f"hydro/{push.gh_uid}/{push.zone_uid}/{push.node_id}/"
    for channel in push.channels:
        problem = validate_segment(channel.name, "channel", strict=True)
        if problem is not None:
            raise ConfigPushInvalid("invalid_channel", problem.detail)
        if len(channel.name) > MAX_CHANNEL_LEN:
            raise ConfigPushInvalid("invalid_channel", f"channel name longer than {MAX_CHANNEL_LEN} chars")
        # The longest topic the node will use for this channel must fit the firmware's buffer.
        longest = f"{namespace}{channel.name}/command_response"
        if len(longest.encode()) > MAX_TOPIC_BYTES:
            raise ConfigPushInvalid("invalid_channel", f"topic {longest!r} exceeds {MAX_TOPIC_BYTES} bytes")
    body: dict[str, Any] = {
        "node_id": push.node_id,
        "version": push.version,
        "type": push.type,
        "gh_uid": push.gh_uid,
        "zone_uid": push.zone_uid,
        "channels": [_channel_wire(channel) for channel in push.channels],
        "wifi": push.wifi,
        "mqtt": push.mqtt,
    }
    for name in ("limits", "calibration", "fail_safe_guards"):
        value = getattr(push, name)
        if value is not None:
            body[name] = value
    body["node_secret"] = push.node_secret
    try:
        # Canonical rendering refuses NaN/inf and non-JSON values (msgspec would write NaN as null).
        wire = canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise ConfigPushInvalid("invalid_value", str(exc)) from None
    if len(wire) > MAX_CONFIG_BYTES:
        raise ConfigPushInvalid("payload_too_large", f"{len(wire)} bytes, the node drops more than 4096")
    return wire


def time_response(now: float) -> TimeResponse:
    """The answer to a time request at server time ``now`` (Unix seconds, truncated to an integer)."""
    if not math.isfinite(now):
        raise ValueError("now must be finite")
    seconds = int(now)
    return TimeResponse(unix_ts=seconds, server_time=seconds)


def encode_time_response(now: float) -> bytes:
    """Wire payload for ``hydro/time/response``:
    ``{"message_type":"time_response","unix_ts":<int s>,"server_time":<int s>}``."""
    return msgspec.json.encode(time_response(now))
