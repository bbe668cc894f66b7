"""One validation path for telemetry from MQTT and HTTP (DOMAIN §2)."""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter

from hydrovisor.devices.registry import NodeRegistry
from hydrovisor.protocol import normalize_metric
from hydrovisor.store.repos.telemetry import Sample

FUTURE_SLACK_S = 300.0
MAX_NAME_CHARS = 128  # channel and metric names: they are index keys (btree rows are bounded)


class DropReason(enum.StrEnum):
    """Why a sample was not stored (a label of ``hydrovisor_telemetry_dropped_total``)."""

    UNKNOWN_NODE = "unknown_node"
    NODE_NOT_VALIDATED = "node_not_validated"
    NODE_UNASSIGNED = "node_unassigned"
    NODE_ZONE_MISMATCH = "node_zone_mismatch"
    UNKNOWN_METRIC = "unknown_metric"
    INVALID_VALUE = "invalid_value"
    TEMP_NAMESPACE = "temp_namespace"
    INVALID_TEXT = "invalid_text"
    MALFORMED = "malformed"
    BUFFER_FULL = "buffer_full"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


class TelemetryCounters:
    """Accepted and dropped sample counters, exported to Prometheus."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter("hydrovisor_telemetry_accepted_total", "Samples accepted for storage.",
                                ["source"], registry=registry)
        self.dropped = Counter("hydrovisor_telemetry_dropped_total", "Samples not stored, by reason.",
                               ["reason", "source"], registry=registry)


def validate_sample(
    registry: NodeRegistry, *, node_uid: str, zone_uid: str | None, channel: str, metric_type: str,
    value: object, ts: float | None, source: str, flags: Mapping[str, object] | None = None,
    now: float | None = None,
) -> Sample | DropReason:
    """Resolve and check one sample; unknown metrics are kept as ``OTHER`` with their name."""
    node = registry.get(node_uid)
    if node is None:
        return DropReason.UNKNOWN_NODE
    if node.zone_uid is None:
        return DropReason.NODE_UNASSIGNED
    if not node.validated:
        return DropReason.NODE_NOT_VALIDATED
    if zone_uid is not None and zone_uid != node.zone_uid:
        return DropReason.NODE_ZONE_MISMATCH
    number = _finite(value)
    if number is None:
        return DropReason.INVALID_VALUE
    if not _storable_name(channel) or not _storable_name(metric_type):
        return DropReason.INVALID_TEXT
    if not metric_type.strip():
        return DropReason.UNKNOWN_METRIC
    metric = normalize_metric(metric_type)
    current = time.time() if now is None else now
    sample_flags = dict(flags or {})
    ts = None if isinstance(ts, bool) else _finite(ts)  # beyond float range (a JSON integer): replaced
    if ts is not None and ts >= 1e10:  # milliseconds (PROTOCOL §3)
        ts = ts / 1000.0
    if ts is None or ts < 1e9 or ts > current + FUTURE_SLACK_S:
        sample_flags["ts_replaced"] = True
        ts = current
    return Sample(
        zone_uid=node.zone_uid,
        node_uid=node_uid,
        channel=channel,
        metric=metric.name if metric.known else "OTHER",
        metric_original=None if metric.known else metric.original,
        value=number,
        ts=ts,
        source=source,
        flags=sample_flags or None,
    )


def _finite(value: object) -> float | None:
    """``value`` as a finite float (bools are 0/1), or None: JSON integers beyond float range included,
    which ``float()`` and ``math.isfinite`` refuse with OverflowError."""
    if not isinstance(value, bool | int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _storable_name(name: str) -> bool:
    """PostgreSQL keeps no U+0000 in text; an index key must stay small."""
    return len(name) <= MAX_NAME_CHARS and "\x00" not in name
