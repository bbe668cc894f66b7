"""The config a simulated node stores: what a config push sets and what ``config_report`` echoes (PROTOCOL §7)."""

from __future__ import annotations

from typing import Any

import msgspec

from hydrovisor.protocol import MAX_CONFIG_BYTES, TEMP_GH, TEMP_ZONE, ChannelConfig, validate_segment
from hydrovisor.sim.options import FieldConfig
from hydrovisor.sim.profiles import Profile

__all__ = ["StoredConfig", "channel_wire", "config_report", "initial_config", "parse_config_push"]

_EXTRA_SECTIONS = ("limits", "calibration", "fail_safe_guards")


class StoredConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The node's stored config. ``channels`` is what the last push carried (None: the hardware's own).

    Unbound when ``gh_uid``/``zone_uid`` are the temp namespace; then the node lives under its hardware id.
    ``repr`` masks the secret.
    """

    node_id: str
    gh_uid: str = TEMP_GH
    zone_uid: str = TEMP_ZONE
    node_secret: str | None = None
    version: int = 3
    channels: tuple[dict[str, Any], ...] | None = None
    sections: dict[str, Any] = {}

    @property
    def is_bound(self) -> bool:
        """True when configured into a real greenhouse/zone."""
        return not (self.gh_uid == TEMP_GH and self.zone_uid == TEMP_ZONE)

    def namespace(self, hardware_id: str) -> tuple[str, str, str]:
        """``(gh, zone, node)`` the node publishes under: the temp namespace uses the hardware id."""
        if self.is_bound:
            return (self.gh_uid, self.zone_uid, self.node_id)
        return (TEMP_GH, TEMP_ZONE, hardware_id)

    def __repr__(self) -> str:
        secret = "<redacted>" if self.node_secret else None
        return (f"StoredConfig(node_id={self.node_id!r}, gh_uid={self.gh_uid!r}, zone_uid={self.zone_uid!r}, "
                f"node_secret={secret}, version={self.version}, channels={self.channels!r})")


def initial_config(hardware_id: str, field: FieldConfig | None) -> StoredConfig:
    """A fresh node (temp namespace, no secret) or one configured in the field."""
    if field is None:
        return StoredConfig(node_id=hardware_id)
    return StoredConfig(node_id=field.node_uid, gh_uid=field.gh_uid, zone_uid=field.zone_uid,
                        node_secret=field.node_secret)


def parse_config_push(raw: bytes) -> StoredConfig | None:
    """The config a node stores from a push, or None when it would reject it (and stay silent).

    Requires a JSON object of at most 4096 bytes with string ``gh_uid``/``zone_uid``/``node_id`` that are valid
    topic segments, a non-empty ``node_secret``, and either both or neither of gh/zone in the temp namespace
    (both = unbind). ``channels`` entries without a string ``name`` are dropped.
    """
    if len(raw) > MAX_CONFIG_BYTES:
        return None
    try:
        payload: Any = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    gh, zone, node_id, secret = (payload.get(key) for key in ("gh_uid", "zone_uid", "node_id", "node_secret"))
    if not (isinstance(gh, str) and isinstance(zone, str) and isinstance(node_id, str)):
        return None
    if any(validate_segment(value, strict=True) is not None for value in (gh, zone, node_id)):
        return None
    if not isinstance(secret, str) or not secret:
        return None
    if (gh == TEMP_GH) != (zone == TEMP_ZONE):
        return None
    channels_raw = payload.get("channels")
    channels: tuple[dict[str, Any], ...] | None = None
    if isinstance(channels_raw, list) and channels_raw:
        channels = tuple(c for c in channels_raw if isinstance(c, dict) and isinstance(c.get("name"), str))
    version = payload.get("version")
    sections = {name: payload[name] for name in _EXTRA_SECTIONS if isinstance(payload.get(name), dict)}
    return StoredConfig(node_id=node_id, gh_uid=gh, zone_uid=zone, node_secret=secret,
                        version=version if isinstance(version, int) and not isinstance(version, bool) else 3,
                        channels=channels, sections=sections)


def channel_wire(channel: ChannelConfig) -> dict[str, Any]:
    """A profile channel as a ``config_report`` entry (unnamed ``extra`` keys merged, named fields win)."""
    wire: dict[str, Any] = dict(channel.extra)
    named = msgspec.to_builtins(channel)
    named.pop("extra", None)
    wire.update(named)
    return wire


def config_report(stored: StoredConfig, profile: Profile, *, fw_version: str, echo_secret: bool) -> dict[str, Any]:
    """The ``config_report`` body: the full stored config, echoing the pushed gh/zone and channels."""
    channels = list(stored.channels) if stored.channels is not None else [channel_wire(c) for c in profile.channels]
    report: dict[str, Any] = {
        "node_id": stored.node_id,
        "version": stored.version,
        "type": profile.node_type,
        "gh_uid": stored.gh_uid,
        "zone_uid": stored.zone_uid,
        "channels": channels,
        "wifi": {"configured": True},
        "mqtt": {"configured": True},
        "fw_version": fw_version,
        **stored.sections,
    }
    if echo_secret and stored.node_secret:
        report["node_secret"] = stored.node_secret
    return report
