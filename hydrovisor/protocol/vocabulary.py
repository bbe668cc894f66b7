"""Names the fleet uses: metric types (PROTOCOL.md §8), node types and node uids (§4).

Everything here is a pure mapping; deciding what to do with an unknown name (store as ``OTHER`` or
drop with ``unknown_metric``) is the caller's business, so the original spelling is always kept.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from hydrovisor.protocol.messages import NodeHello

__all__ = [
    "ACCEPTED_METRICS",
    "CANONICAL_METRICS",
    "KNOWN_METRICS",
    "NODE_TYPES",
    "MetricName",
    "is_valid_node_uid",
    "mac_from_hardware_id",
    "node_uid_from_hello",
    "normalize_metric",
    "normalize_node_type",
]

CANONICAL_METRICS: frozenset[str] = frozenset({
    "PH", "EC", "TEMPERATURE", "HUMIDITY", "CO2", "LIGHT_INTENSITY", "WATER_LEVEL", "WATER_LEVEL_SWITCH",
    "FLOW_RATE", "PUMP_CURRENT", "SOIL_MOISTURE", "SOIL_TEMP", "WIND_SPEED", "OUTSIDE_TEMP",
})
ACCEPTED_METRICS: frozenset[str] = frozenset({
    "OUTSIDE_LIGHT", "OUTSIDE_HUMIDITY", "OUTSIDE_PRESSURE", "PRESSURE", "WIND_DIRECTION", "RAIN_DETECTED",
})
KNOWN_METRICS: frozenset[str] = CANONICAL_METRICS | ACCEPTED_METRICS
"""Metric types stored as themselves; anything else (``TDS``, ``LIGHT``, ``PUMP_STATE`` ...) is unknown."""


class MetricName(msgspec.Struct, frozen=True):
    """A normalised ``metric_type``: ``name`` is stripped and upper-cased; ``known`` says whether it is in
    ``KNOWN_METRICS``; ``original`` is the wire spelling (to keep under ``OTHER`` or to log a drop)."""

    name: str
    known: bool
    original: str


def normalize_metric(raw: str) -> MetricName:
    """Strip and upper-case ``raw``; no aliases, so ``TDS`` stays ``TDS`` with ``known=False``."""
    name = raw.strip().upper()
    return MetricName(name=name, known=name in KNOWN_METRICS, original=raw)


NODE_TYPES: tuple[str, ...] = (
    "ph", "ec", "climate", "irrig", "light", "relay", "water_sensor", "recirculation", "unknown",
)
"""Canonical node types (PROTOCOL.md §4)."""

# Spellings seen from simulators and older firmware, after lower-casing and dropping a "_node" suffix.
# storage_irrigation_node drives the tank valves and the main pump (channel storage_state): that is the
# irrigation node's job, so it maps to irrig.
_NODE_TYPE_ALIASES: dict[str, str] = {
    "irrigation": "irrig",
    "irr": "irrig",
    "storage_irrigation": "irrig",
    "pump": "irrig",
    "clim": "climate",
    "lighting": "light",
    "water": "water_sensor",
    "water_level": "water_sensor",
    "recirc": "recirculation",
}

_UID_PREFIX: dict[str, str] = {
    "ph": "ph", "ec": "ec", "climate": "clim", "irrig": "irr", "light": "light", "relay": "relay",
    "water_sensor": "water", "recirculation": "recirc", "unknown": "node",
}


def normalize_node_type(raw: object) -> str:
    """Map a wire node type onto ``NODE_TYPES``: canonical names as is, ``ph_node``-style suffixes and
    a few aliases (``storage_irrigation_node`` → ``irrig``, ``irrigation`` → ``irrig`` ...); else
    ``unknown``."""
    if not isinstance(raw, str):
        return "unknown"
    name = raw.strip().lower().replace("-", "_")
    if name.endswith("_node"):
        name = name.removesuffix("_node")
    name = _NODE_TYPE_ALIASES.get(name, name)
    return name if name in NODE_TYPES else "unknown"


_NODE_UID = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MAX_NODE_UID = 64
_HARDWARE_MAC = re.compile(r"(?:esp32[-_:]?)?((?:[0-9a-f]{2}[:-]?){5}[0-9a-f]{2})", re.IGNORECASE)


def is_valid_node_uid(value: object) -> bool:
    """``^[a-z0-9][a-z0-9_-]*$`` and at most 64 characters."""
    return isinstance(value, str) and len(value) <= _MAX_NODE_UID and _NODE_UID.fullmatch(value) is not None


def mac_from_hardware_id(hardware_id: str) -> str | None:
    """The 12 lowercase hex digits of the MAC in ``esp32-<12 hex>`` (``:``/``-`` separators and upper case
    tolerated, the ``esp32`` prefix optional), or None."""
    match = _HARDWARE_MAC.fullmatch(hardware_id.strip())
    if match is None:
        return None
    return re.sub(r"[:-]", "", match.group(1)).lower()


def node_uid_from_hello(hello: NodeHello) -> str:
    """The uid a node registers under (PROTOCOL.md §4).

    A valid ``provisioning_meta.node_uid`` wins. Otherwise ``nd-{prefix}-{mac}`` with the prefix from the
    normalised node type (``ph ec clim irr light relay water recirc node``) and the MAC from the hardware
    id. When the hardware id holds no MAC (simulators with free-form ids) the 12 hex digits are the start
    of SHA-256 of the hardware id instead: stable across restarts and still a valid uid.
    """
    wanted = hello.provisioning_meta.node_uid if hello.provisioning_meta is not None else None
    if wanted is not None and is_valid_node_uid(wanted):
        return wanted
    prefix = _UID_PREFIX.get(normalize_node_type(hello.node_type), "node")
    mac = mac_from_hardware_id(hello.hardware_id)
    if mac is None:
        mac = hashlib.sha256(hello.hardware_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"nd-{prefix}-{mac}"
