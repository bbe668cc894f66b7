"""What one device connection, and all of them together, may cost the broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """Bounds of the embedded broker; see ``flow.py`` for how the in-flight ones apply.

    ``inflight_per_client`` is above the in-flight windows of common clients (mosquitto_pub -M 20
    by default, ESP-MQTT's outbox), so a polite device is never paused; the broker-wide bounds cap
    the memory held for unstored messages at ``inflight_total_bytes`` of payload.
    """

    connect_timeout: float = 10.0
    max_connect_bytes: int = 2048
    keep_alive_factor: float = 1.5
    max_packet_bytes: int = 256 * 1024
    inflight_per_client: int = 100
    inflight_total: int = 20_000
    inflight_total_bytes: int = 64 * 1024 * 1024
