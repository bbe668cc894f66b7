"""Typed request bodies and query parameters: every bad input is a 400 naming the field."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Annotated, Any, TypeVar

import msgspec
from aiohttp import web

from hydrovisor.http.errors import ApiError

T = TypeVar("T")

UID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
Uid = Annotated[str, msgspec.Meta(pattern=UID_PATTERN, description="lowercase id: [a-z0-9][a-z0-9_-]{0,63}")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_UID = re.compile(UID_PATTERN)
# JSON nested deeper than this is refused: no request needs it, and deeper values reach code that
# recurses (msgspec, signing, PostgreSQL's jsonb) - at ~1,000 levels a RecursionError, i.e. a 500
MAX_DEPTH = 32
# query times: unix seconds within what Python datetimes and PostgreSQL timestamps both hold
MIN_TIME, MAX_TIME = 0.0, 253402300799.0  # 1970-01-01 .. 9999-12-31T23:59:59Z


async def read_body(request: web.Request, kind: type[T], *, storable: bool = False) -> T:
    """Decode the JSON body into ``kind``; 400 ``invalid_body`` with msgspec's path on failure.

    ``storable``: the body goes to PostgreSQL, so it is also refused (400, :func:`check_storable`)
    when a string holds a NUL character or the JSON nests deeper than :data:`MAX_DEPTH`.
    """
    raw = await request.read()
    if not raw:
        raise ApiError(400, "empty_body", "a JSON body is required")
    try:
        if storable:
            check_storable(msgspec.json.decode(raw))
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None


def decode_json(raw: bytes) -> Any:
    """Untyped JSON (None for an empty body); 400 ``invalid_json`` or ``too_deeply_nested``."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep() from None


def check_storable(value: Any) -> None:
    """400 unless decoded JSON ``value`` can be stored: PostgreSQL's text and jsonb hold no NUL
    character (``nul_character``, naming the path), and nesting is bounded (``too_deeply_nested``).

    Iterative, so that the check itself never recurses.
    """
    pending: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while pending:
        item, path, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ApiError(400, "nul_character", f"{path} contains a NUL character (\\u0000), which cannot be "
                                                     "stored", field=path)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _too_deep()
            entries = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in entries:
                if isinstance(key, str) and "\x00" in key:
                    raise ApiError(400, "nul_character", f"a key in {path} contains a NUL character (\\u0000)",
                                   field=path)
                pending.append((child, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]", depth + 1))


def _too_deep() -> ApiError:
    return ApiError(400, "too_deeply_nested", f"the JSON body nests deeper than {MAX_DEPTH} levels")


def path_uid(request: web.Request, name: str = "uid") -> str:
    """A uid from the URL path; 400 when malformed (so it never reaches SQL or topics)."""
    value = request.match_info[name]
    if not _UID.match(value):
        raise ApiError(400, "invalid_uid", f"{name} {value!r} is not a valid id ({UID_PATTERN})")
    return value


def query_uid(request: web.Request, name: str, *, required: bool = False) -> str | None:
    """An optional uid query parameter."""
    value = request.query.get(name)
    if value is None:
        if required:
            raise ApiError(400, "missing_parameter", f"query parameter {name} is required")
        return None
    if not _UID.match(value):
        raise ApiError(400, "invalid_uid", f"{name} {value!r} is not a valid id ({UID_PATTERN})")
    return value


def query_time(request: web.Request, name: str, default: float) -> float:
    """A time query parameter: unix seconds or ISO 8601 with a timezone; 400 otherwise (never "now")."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = _iso_time(name, raw)
    # nan, inf (1e400) and far-off years parse, then fail in datetime or PostgreSQL: a 500
    if not (math.isfinite(value) and MIN_TIME <= value <= MAX_TIME):
        raise ApiError(400, "invalid_time", f"{name} must lie between 1970-01-01 and 9999-12-31 "
                                            f"(unix seconds {MIN_TIME:.0f}..{MAX_TIME:.0f}), got {raw!r}")
    return value


def _iso_time(name: str, raw: str) -> float:
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_time", f"{name} must be unix seconds or ISO 8601, got {raw!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, "invalid_time", f"{name} needs a timezone (e.g. 2026-11-23T10:00:00Z)")
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError):  # e.g. 0001-01-01 with a positive offset
        return math.nan


def query_int(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """A bounded integer query parameter."""
    raw = request.query.get(name)
    if raw is None:
        return default
    # ASCII digits only ("²".isdigit() is True but int() refuses it), and short enough for int()
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 20) or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


def to_builtins(value: Any) -> Any:
    """Structs to JSON-ready builtins."""
    return msgspec.to_builtins(value)
