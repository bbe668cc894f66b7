"""Typed request bodies and query parameters: every bad input is a 400 naming the field."""

from __future__ import annotations

import datetime as dt
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


async def read_body(request: web.Request, kind: type[T]) -> T:
    """Decode the JSON body into ``kind``; 400 ``invalid_body`` with msgspec's path on failure."""
    raw = await request.read()
    if not raw:
        raise ApiError(400, "empty_body", "a JSON body is required")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"invalid body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None


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
        return float(raw)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_time", f"{name} must be unix seconds or ISO 8601, got {raw!r}") from None
    if parsed.tzinfo is None:
        raise ApiError(400, "invalid_time", f"{name} needs a timezone (e.g. 2026-11-23T10:00:00Z)")
    return parsed.timestamp()


def query_int(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """A bounded integer query parameter."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


def to_builtins(value: Any) -> Any:
    """Structs to JSON-ready builtins."""
    return msgspec.to_builtins(value)
