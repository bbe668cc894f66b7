"""The live supervision tree: ``GET /api/v1/actors[/{path}]`` and an admin restart."""

from __future__ import annotations

from aiohttp import web

from hydrovisor.http.auth import Role, require_role
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.supervisors import ROOT, NoSuchActor, SupervisionError, describe, kill_request

routes = web.RouteTableDef()


def _depth(request: web.Request) -> int | None:
    raw = request.query.get("depth")
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "invalid_depth", "depth must be a non-negative integer")
    return int(raw)


def _describe(request: web.Request, path: str) -> web.Response:
    try:
        return ok(describe(request.app[SERVICES].system, path, depth=_depth(request)))
    except NoSuchActor:
        raise ApiError(404, "actor_not_found", f"no actor at path {path}") from None


@routes.get("/api/v1/actors")
async def tree(request: web.Request) -> web.Response:
    """The whole tree (``?depth=N`` limits how deep)."""
    return _describe(request, ROOT)


@routes.get("/api/v1/actors/{path:.+}")
async def subtree(request: web.Request) -> web.Response:
    """One path and its subtree, e.g. ``/api/v1/actors/store/db_health``."""
    return _describe(request, "/" + request.match_info["path"].strip("/"))


@routes.post("/api/v1/actors/{path:.+}/restart")
async def restart(request: web.Request) -> web.Response:
    """Admin: fail the actor on purpose; its supervisor restarts it (counts toward intensity)."""
    require_role(request, Role.ADMIN)
    services = request.app[SERVICES]
    path = "/" + request.match_info["path"].strip("/")
    try:
        parent, message = kill_request(path, "restart requested over HTTP")
        await services.bridge.ask(parent, message, within=services.settings.shutdown_timeout)
    except NoSuchActor:
        raise ApiError(404, "actor_not_found", f"no running actor at path {path}") from None
    except SupervisionError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return ok(describe(services.system, path, depth=0), status=202)
