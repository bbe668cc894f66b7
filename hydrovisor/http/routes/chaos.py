"""``/admin/chaos``: inject real faults on command (admin, and only with ``chaos_enabled``)."""

from __future__ import annotations

from aiohttp import web

from hydrovisor.chaos.engine import ChaosRequest
from hydrovisor.http.auth import Role, require_role
from hydrovisor.http.body import read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES

routes = web.RouteTableDef()


def _allowed(request: web.Request) -> None:
    require_role(request, Role.ADMIN)
    if not request.app[SERVICES].settings.chaos_enabled:
        raise ApiError(403, "chaos_disabled", "fault injection is disabled (set HYDROVISOR_CHAOS_ENABLED=1)")


@routes.post("/admin/chaos/inject")
async def inject(request: web.Request) -> web.Response:
    """Start one fault; 202 with its incident id. It ends by itself after ``duration`` seconds."""
    _allowed(request)
    body = await read_body(request, ChaosRequest, storable=True)
    injection = await request.app[SERVICES].chaos.inject(body)
    return ok(injection, status=202)


@routes.get("/admin/chaos")
async def active(request: web.Request) -> web.Response:
    """The injections running now."""
    _allowed(request)
    return ok(request.app[SERVICES].chaos.active())
