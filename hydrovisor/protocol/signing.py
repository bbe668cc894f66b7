"""Canonical JSON, HMAC-SHA256 command signatures and the command encoder (PROTOCOL.md §5).

The firmware recomputes the signature over *its* canonical rendering of the parsed command, so
``canonical_json`` must match the firmware's rules byte for byte (checked against the protocol's test
vectors). The wire payload is itself rendered canonically: whatever the node's JSON parser does, it
reads back exactly the values that were signed.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from typing import Any

from hydrovisor.protocol.messages import Command

__all__ = [
    "MAX_COMMAND_BYTES",
    "CommandInvalid",
    "canonical_json",
    "encode_command",
    "sign",
    "sign_command",
    "verify",
]

MAX_COMMAND_BYTES = 4096
"""The firmware drops larger incoming payloads."""

_MAX_DEPTH = 32  # far beyond any real params object; bounds recursion on hostile input
_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def _string(value: str) -> str:
    # Only '"', '\' and control characters are escaped; everything else stays raw UTF-8.
    return '"' + _ESCAPE.sub(_escape_char, value) + '"'


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {value!r} has no JSON form")
    if value.is_integer():
        return str(int(value))
    text = f"{value:.15g}"
    if float(text) != value:
        text = f"{value:.17g}"
    return text


def _render(value: object, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError("nesting too deep")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_number(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
        # Bytewise order of the UTF-8 keys (equal to code point order, spelled out to match the firmware).
        keys = sorted(value, key=lambda k: k.encode("utf-8"))
        out.append("{")
        for index, key in enumerate(keys):
            if index:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _render(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _render(item, out, depth + 1)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def canonical_json(obj: object) -> bytes:
    """Render ``obj`` as Protocol 2.0 canonical JSON (UTF-8 bytes).

    Keys sorted bytewise, no whitespace, strings with JSON escapes for ``"``, ``\\`` and control characters
    (``\\u00XX`` lowercase hex) and raw UTF-8 otherwise, integral numbers (``2500.0`` too) as integers,
    other floats as ``%.15g`` or ``%.17g`` when 15 digits do not round-trip, ``true/false/null``.
    Raises ``TypeError`` for non-JSON values or non-string keys and ``ValueError`` for non-finite
    numbers, unencodable strings (lone surrogates) or nesting deeper than 32.
    """
    out: list[str] = []
    _render(obj, out, 0)
    return "".join(out).encode("utf-8")


def sign(secret: str, payload: Mapping[str, Any]) -> str:
    """Lowercase hex HMAC-SHA256 (key ``secret``) of the canonical JSON of ``payload`` without ``sig``."""
    body = {key: value for key, value in payload.items() if key != "sig"}
    return hmac.new(secret.encode("utf-8"), canonical_json(body), hashlib.sha256).hexdigest()


def verify(secret: str, payload_with_sig: Mapping[str, Any]) -> bool:
    """Check ``payload_with_sig["sig"]`` in constant time, as a node does. Never raises.

    False for an empty secret (firmware refuses signed commands without one), a missing or non-string
    ``sig``, or a payload that has no canonical form. The comparison is exact: like the firmware, an
    upper-case hex signature does not verify.
    """
    try:
        sig = payload_with_sig.get("sig")
        if not secret or not isinstance(sig, str):
            return False
        expected = sign(secret, payload_with_sig)
        return hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, AttributeError, RecursionError):
        return False


class CommandInvalid(ValueError):
    """A command that must not be sent. ``code``: ``invalid_cmd``, ``invalid_cmd_id``, ``invalid_params``,
    ``param_out_of_range``, ``invalid_ts``, ``missing_node_secret`` or ``payload_too_large``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


_CMD = re.compile(r"[A-Za-z0-9_-]{1,31}")
_CMD_ID = re.compile(r"[A-Za-z0-9_-]{1,63}")
_MAX_INTEGRAL = 1e15  # integral numbers at or above this may print differently on the node's side

# Transport sanity limits (PROTOCOL.md §5): (low, high, low inclusive).
_PARAM_RANGES: dict[str, tuple[float, float, bool]] = {
    "ml": (0.0, 500.0, False),
    "duration_ms": (0.0, 300_000.0, False),
    "position_pct": (0.0, 100.0, True),
}


def _check_text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandInvalid("invalid_params", f"{path} holds a string that is not valid UTF-8") from None


def _check_values(value: object, path: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise CommandInvalid("invalid_params", "params nested too deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise CommandInvalid("invalid_params", f"{path} is not a finite number")
        integral = isinstance(value, int) or value.is_integer()
        if integral and abs(value) >= _MAX_INTEGRAL:
            raise CommandInvalid("param_out_of_range", f"{path}: integral numbers must stay below 1e15")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CommandInvalid("invalid_params", f"{path} has a non-string key {key!r}")
            _check_text(key, path)
            _check_values(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_values(item, f"{path}[{index}]", depth + 1)
        return
    raise CommandInvalid("invalid_params", f"{path} has unsupported type {type(value).__name__}")


def _check_ranges(params: Mapping[str, Any]) -> None:
    for name, (low, high, low_inclusive) in _PARAM_RANGES.items():
        if name not in params:
            continue
        value = params[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandInvalid("invalid_params", f"params.{name} must be a number")
        above_low = value >= low if low_inclusive else value > low
        if not (above_low and value <= high):
            bracket = "[" if low_inclusive else "("
            raise CommandInvalid(
                "param_out_of_range", f"params.{name}={value} not in {bracket}{low:g}, {high:g}]"
            )


def sign_command(cmd: str, cmd_id: str, params: Mapping[str, Any], ts: int, secret: str) -> Command:
    """Validate and sign a command; raises ``CommandInvalid``. ``ts`` is integer Unix seconds, now."""
    if not isinstance(cmd, str) or not _CMD.fullmatch(cmd):
        raise CommandInvalid("invalid_cmd", "cmd must be 1-31 chars of [A-Za-z0-9_-]")
    if not isinstance(cmd_id, str) or not _CMD_ID.fullmatch(cmd_id):
        raise CommandInvalid("invalid_cmd_id", "cmd_id must be 1-63 chars of [A-Za-z0-9_-]")
    if not isinstance(params, Mapping):
        raise CommandInvalid("invalid_params", "params must be an object")
    _check_values(params, "params", 0)
    _check_ranges(params)
    if isinstance(ts, bool) or not isinstance(ts, int) or ts <= 0:
        raise CommandInvalid("invalid_ts", "ts must be positive integer seconds")
    if not isinstance(secret, str) or not secret:
        raise CommandInvalid("missing_node_secret", "the node has no secret; it would refuse the command")
    plain_params = dict(params)
    body = {"cmd": cmd, "cmd_id": cmd_id, "params": plain_params, "ts": ts}
    return Command(cmd=cmd, cmd_id=cmd_id, params=plain_params, ts=ts, sig=sign(secret, body))


def encode_command(cmd: str, cmd_id: str, params: Mapping[str, Any], ts: int, secret: str) -> bytes:
    """The wire payload of a signed command: compact canonical JSON with exactly the keys
    ``cmd, cmd_id, params, sig, ts``. Raises ``CommandInvalid`` (see ``sign_command``), including
    ``payload_too_large`` above 4096 bytes."""
    command = sign_command(cmd, cmd_id, params, ts, secret)
    wire = canonical_json(
        {"cmd": command.cmd, "cmd_id": command.cmd_id, "params": command.params, "ts": command.ts,
         "sig": command.sig}
    )
    if len(wire) > MAX_COMMAND_BYTES:
        raise CommandInvalid("payload_too_large", f"{len(wire)} bytes, the node drops more than 4096")
    return wire
