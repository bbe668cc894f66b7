"""Payloads a simulated node publishes (PROTOCOL §4), in the shapes and time units the firmware uses."""

from __future__ import annotations

import random
from typing import Any

import msgspec

from hydrovisor.sim.actions import Outcome

__all__ = [
    "LWT_PAYLOAD",
    "command_response",
    "corrupt",
    "encode",
    "heartbeat",
    "node_hello",
    "status_online",
    "status_restarting",
    "telemetry",
    "time_request",
]

LWT_PAYLOAD = "offline"
"""The last will, the only non-JSON payload."""

_encoder = msgspec.json.Encoder()


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON."""
    return _encoder.encode(body)


def corrupt(payload: bytes, rng: random.Random) -> bytes:
    """A payload that is no longer valid JSON: truncated mid-way, or with a stray brace and a NUL appended."""
    if len(payload) > 2 and rng.random() < 0.5:
        return payload[: rng.randrange(1, len(payload) - 1)]
    return payload + b"}\x00"


def telemetry(metric: str, value: float, ts: int, unit: str, *, raw: int | None = None,
              flags: dict[str, bool] | None = None) -> dict[str, Any]:
    """``{metric_type, value, ts(s), unit, raw?, stable?, flow_active?, corrections_allowed?}``."""
    body: dict[str, Any] = {"metric_type": metric, "value": value, "ts": ts, "unit": unit}
    if raw is not None:
        body["raw"] = raw
    if flags:
        body.update(flags)
    return body


def status_online(ts: int, *, fw: str, ip: str, rssi: int) -> dict[str, Any]:
    """Retained ``status``: ``{"status":"ONLINE", ts(s), online, ip, rssi, fw}``."""
    return {"status": "ONLINE", "ts": ts, "online": True, "ip": ip, "rssi": rssi, "fw": fw}


def status_restarting(ts: int) -> dict[str, Any]:
    """``RESTARTING`` status, as simulators send before a reboot."""
    return {"status": "RESTARTING", "ts": ts}


def heartbeat(uptime: int, *, free_heap: int, rssi: int, fw_version: str) -> dict[str, Any]:
    """``heartbeat``: no ts."""
    return {"uptime": uptime, "free_heap": free_heap, "rssi": rssi, "fw_version": fw_version}


def node_hello(hardware_id: str, node_type: str, *, fw_version: str, hardware_revision: str,
               capabilities: tuple[str, ...]) -> dict[str, Any]:
    """``node_hello`` of an unbound node (no ``provisioning_meta``: the server derives the uid)."""
    return {"message_type": "node_hello", "hardware_id": hardware_id, "node_type": node_type,
            "fw_version": fw_version, "hardware_revision": hardware_revision, "capabilities": list(capabilities)}


def time_request(uptime: int) -> dict[str, Any]:
    """``hydro/time/request``."""
    return {"message_type": "time_request", "uptime": uptime}


def command_response(cmd_id: str, status: str, ts_ms: int, outcome: Outcome | None = None, *,
                     errors_in_details: bool = False) -> dict[str, Any]:
    """``{cmd_id, status, ts(ms), details?, error_code?, error_message?, message?}``.

    Firmware puts ``error_code``/``error_message`` top level; ``errors_in_details`` moves them into ``details``
    as field simulators do.
    """
    body: dict[str, Any] = {"cmd_id": cmd_id, "status": status, "ts": ts_ms}
    if outcome is None:
        return body
    details = dict(outcome.details) if outcome.details else {}
    errors = {key: value for key, value in (("error_code", outcome.error_code),
                                            ("error_message", outcome.error_message)) if value is not None}
    if errors_in_details:
        details.update(errors)
    else:
        body.update(errors)
    if details:
        body["details"] = details
    if outcome.message is not None:
        body["message"] = outcome.message
    return body
