"""Bearer-token authentication with two roles, compared in constant time.

No token configured (development) -> only loopback clients are served: as admin in dev mode,
else as operator (fault injection and runtime control need dev mode or the admin token).
``HYDROVISOR_ENV=production`` refuses to start without a token (config validation).
"""

from __future__ import annotations

import enum
import hmac
import ipaddress

from aiohttp import web

from hydrovisor.config import Settings
from hydrovisor.http.errors import ApiError, Handler

PUBLIC_PATHS = frozenset({"/health/live", "/health/ready", "/metrics", "/openapi.json"})
ROLE_KEY = web.RequestKey("role", str)


class Role(enum.StrEnum):
    """Operators control the greenhouse; admins may also inject faults and manage the runtime."""

    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {Role.OPERATOR: 1, Role.ADMIN: 2}
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hydrovisor"'}


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def make_auth_middleware(settings: Settings) -> web.middleware:  # type: ignore[valid-type]
    """Middleware resolving the caller's role into ``request[ROLE_KEY]``."""
    tokens = [(t.encode(), r) for t, r in ((settings.api_token, Role.OPERATOR),
                                            (settings.admin_token, Role.ADMIN)) if t]
    # without a token any local process is a client: full control only on a developer's machine
    loopback_role = Role.ADMIN if settings.dev_mode else Role.OPERATOR

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        if not tokens:
            if not _is_loopback(request.remote):
                raise ApiError(403, "loopback_only",
                               "no API token is configured: only loopback clients are served")
            request[ROLE_KEY] = loopback_role
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(401, "auth_required", "send 'Authorization: Bearer <token>'", headers=_CHALLENGE)
        candidate = presented.strip().encode()
        role = None
        for token, token_role in tokens:  # check every token: timing does not reveal which matched
            if hmac.compare_digest(candidate, token):
                role = token_role
        if role is None:
            raise ApiError(401, "invalid_token", "the bearer token is not valid", headers=_CHALLENGE)
        request[ROLE_KEY] = role
        return await handler(request)

    return auth


def require_role(request: web.Request, role: Role) -> None:
    """403 unless the caller's role is at least ``role``."""
    current = Role(request.get(ROLE_KEY, Role.OPERATOR))
    if _RANK[current] < _RANK[role]:
        raise ApiError(403, "forbidden", f"this action needs the {role.value} role")
