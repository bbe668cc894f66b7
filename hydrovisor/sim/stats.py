"""Counters a simulated node keeps (read by fleets, the CLI and tests)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeStats"]


@dataclass
class NodeStats:
    """Counters of one node (monotonic, never reset)."""

    connects: int = 0
    connect_failures: int = 0
    sessions_ended: int = 0
    telemetry_sent: int = 0
    heartbeats_sent: int = 0
    statuses_sent: int = 0
    config_reports_sent: int = 0
    config_pushes: int = 0
    config_rejected: int = 0
    commands_received: int = 0
    commands_answered: int = 0
    replies_sent: int = 0
    replies_dropped: int = 0
    contradictions_sent: int = 0
    bad_json_sent: int = 0
    offline_windows: int = 0
    publish_failures: int = 0
