"""JSON errors for every failure: ``{"status":"error","code":...,"message":...}``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from hydrovisor.http.keys import MAX_BODY_BYTES
from hydrovisor.refusals import Refused
from hydrovisor.store.errors import DB_DOWN

log = logging.getLogger("hydrovisor.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Refused):
    """Raise from a handler to answer with a JSON error; ``extra`` fields join the body."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Encode ``body`` (Structs included) with msgspec."""
    return web.Response(body=msgspec.json.encode(body), status=status, headers=headers,
                        content_type="application/json")


def ok(data: Any, status: int = 200) -> web.Response:
    """The success envelope ``{"status":"ok","data":...}``."""
    return json_response({"status": "ok", "data": data}, status)


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The error envelope."""
    return {"status": "error", "code": code, "message": message, **extra}


def _nul_in_url(request: web.Request) -> bool:
    if not request.path.startswith("/api/"):
        return False
    return "\x00" in request.path or any("\x00" in key or "\x00" in value for key, value in request.query.items())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn refusals (:class:`ApiError` and the services' own), aiohttp's HTTP exceptions and unexpected failures
    into JSON bodies."""
    limit = request.app[MAX_BODY_BYTES]
    try:
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        if _nul_in_url(request):  # PostgreSQL text holds no NUL: refused here for every API route at once
            raise ApiError(400, "nul_character", "the URL contains a NUL character (%00)")
        return await handler(request)
    except Refused as exc:
        return json_response(error_body(exc.code, exc.message, **exc.extra), exc.status, exc.headers)
    except DB_DOWN as exc:
        log.warning("database unavailable during %s %s: %s", request.method, request.path, exc,
                    extra={"event": "http_db_unavailable"})
        return json_response(error_body("db_unreachable", "the database is unreachable; retry shortly"), 503,
                             {"Retry-After": "2"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, f"http_{exc.status}")
        message = exc.reason if exc.status != 413 else f"request body exceeds the limit of {limit} bytes"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response(error_body(code, message), exc.status, headers)
    except Exception:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error in %s %s", request.method, request.path,
                      extra={"event": "http_internal_error", "error_id": error_id})
        return json_response(
            error_body("internal_error", "internal error; see the server log", error_id=error_id), 500)
