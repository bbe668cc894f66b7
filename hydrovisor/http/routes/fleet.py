"""Greenhouses (zones: :mod:`hydrovisor.http.routes.zones`)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from hydrovisor.http.body import Name, Uid, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.store.repos import fleet

routes = web.RouteTableDef()


class NewGreenhouse(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/greenhouses`` body."""

    uid: Uid
    name: Name


@routes.post("/api/v1/greenhouses")
async def create_greenhouse(request: web.Request) -> web.Response:
    """Create a greenhouse (201), 409 if the uid exists."""
    body = await read_body(request, NewGreenhouse, storable=True)
    created = await fleet.create_greenhouse(request.app[SERVICES].db.pool, body.uid, body.name)
    if created is None:
        raise ApiError(409, "greenhouse_exists", f"greenhouse {body.uid} already exists")
    return ok(created, status=201)


@routes.get("/api/v1/greenhouses")
async def list_greenhouses(request: web.Request) -> web.Response:
    """Every greenhouse."""
    return ok(await fleet.list_greenhouses(request.app[SERVICES].db.pool))
