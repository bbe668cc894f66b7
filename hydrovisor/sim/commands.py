"""Node-side command admission (PROTOCOL §5): format, signature, time window, and the ``cmd_id`` cache.

``check_command`` applies the firmware's checks in this order and returns the ``Command`` or the reply a
node sends instead:

1. valid JSON object with exactly ``cmd, cmd_id, params, ts, sig`` of the right types
   → else ``INVALID invalid_command_format`` (``cmd_id`` echoed when readable, else ``"unknown"``);
2. a node secret is stored → else ``ERROR missing_node_secret``;
3. the HMAC verifies (``hydrovisor.protocol.verify``) → else ``ERROR invalid_signature``;
4. the clock is synced → else ``ERROR time_not_synced``;
5. ``|now - ts| <= 10 s`` → else ``ERROR timestamp_expired``.

Only admitted commands enter the ``CommandCache``; rejections are not remembered.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import msgspec

from hydrovisor.protocol import UNKNOWN_CMD_ID, Command, verify

__all__ = ["RUNNING", "TS_TOLERANCE_S", "CommandCache", "Rejection", "check_command"]

TS_TOLERANCE_S = 10.0
RUNNING = "RUNNING"
"""Cache state of a command that was acknowledged and has no terminal status yet."""

_KEYS = frozenset({"cmd", "cmd_id", "params", "ts", "sig"})
_CMD = re.compile(r"[A-Za-z0-9_-]{1,31}")
_CMD_ID = re.compile(r"[A-Za-z0-9_-]{1,63}")


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """The reply to a command that was not admitted: ``status`` (INVALID or ERROR) and ``error_code``."""

    cmd_id: str
    status: str
    error_code: str
    error_message: str


def _readable_cmd_id(payload: Any) -> str:
    if isinstance(payload, dict):
        cmd_id = payload.get("cmd_id")
        if isinstance(cmd_id, str) and _CMD_ID.fullmatch(cmd_id):
            return cmd_id
    return UNKNOWN_CMD_ID


def _format_problem(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "payload is not a JSON object"
    keys = set(payload)
    if keys != _KEYS:
        extra, missing = sorted(keys - _KEYS), sorted(_KEYS - keys)
        return f"keys must be exactly cmd, cmd_id, params, ts, sig (extra {extra}, missing {missing})"
    if not isinstance(payload["cmd"], str) or not _CMD.fullmatch(payload["cmd"]):
        return "cmd must be 1-31 chars of [A-Za-z0-9_-]"
    if not isinstance(payload["cmd_id"], str) or not _CMD_ID.fullmatch(payload["cmd_id"]):
        return "cmd_id must be 1-63 chars of [A-Za-z0-9_-]"
    if not isinstance(payload["params"], dict):
        return "params must be an object"
    if isinstance(payload["ts"], bool) or not isinstance(payload["ts"], int):
        return "ts must be integer seconds"
    if not isinstance(payload["sig"], str):
        return "sig must be a string"
    return None


def check_command(raw: bytes, *, secret: str | None, now: float, synced: bool) -> Command | Rejection:
    """Admit one command payload as the firmware does (see the module docstring). Never raises."""
    try:
        payload: Any = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        payload = None
    problem = _format_problem(payload)
    if problem is not None:
        return Rejection(cmd_id=_readable_cmd_id(payload), status="INVALID", error_code="invalid_command_format",
                         error_message=problem)
    cmd_id = payload["cmd_id"]
    if not secret:
        return Rejection(cmd_id=cmd_id, status="ERROR", error_code="missing_node_secret",
                         error_message="no node secret stored; signed commands are refused")
    if not verify(secret, payload):
        return Rejection(cmd_id=cmd_id, status="ERROR", error_code="invalid_signature",
                         error_message="HMAC signature does not match")
    if not synced:
        return Rejection(cmd_id=cmd_id, status="ERROR", error_code="time_not_synced",
                         error_message="the node has not received the time yet")
    if abs(now - payload["ts"]) > TS_TOLERANCE_S:
        return Rejection(cmd_id=cmd_id, status="ERROR", error_code="timestamp_expired",
                         error_message=f"ts is more than {TS_TOLERANCE_S:g} s away from the node clock")
    return Command(cmd=payload["cmd"], cmd_id=cmd_id, params=payload["params"], ts=payload["ts"], sig=payload["sig"])


class CommandCache:
    """The firmware's ``cmd_id`` cache: at most ``capacity`` entries, each forgotten ``ttl_s`` after admission.

    An entry is ``RUNNING`` from admission until ``finish`` records its terminal status. The oldest entry is
    evicted when full.
    """

    def __init__(self, capacity: int = 128, ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = capacity
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def _expire(self) -> None:
        horizon = self._clock() - self._ttl_s
        while self._entries:
            first = next(iter(self._entries.values()))
            if first[0] > horizon:
                break
            self._entries.popitem(last=False)

    def get(self, cmd_id: str) -> str | None:
        """``RUNNING``, the terminal status, or None when unknown or expired."""
        self._expire()
        entry = self._entries.get(cmd_id)
        return entry[1] if entry is not None else None

    def start(self, cmd_id: str) -> None:
        """Remember ``cmd_id`` as running (evicting the oldest entry when full)."""
        self._expire()
        self._entries.pop(cmd_id, None)
        while len(self._entries) >= self._capacity:
            self._entries.popitem(last=False)
        self._entries[cmd_id] = (self._clock(), RUNNING)

    def finish(self, cmd_id: str, status: str) -> None:
        """Record the terminal ``status`` of ``cmd_id`` (kept with its admission time; re-added if evicted)."""
        entry = self._entries.get(cmd_id)
        if entry is None:
            self.start(cmd_id)
            entry = self._entries[cmd_id]
        self._entries[cmd_id] = (entry[0], status)
