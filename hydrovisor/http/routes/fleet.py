"""Greenhouses and zones."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from hydrovisor.http.body import Name, Uid, query_uid, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.store.repos import fleet

routes = web.RouteTableDef()


class NewGreenhouse(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/greenhouses`` body."""

    uid: Uid
    name: Name


class NewZone(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/zones`` body."""

    greenhouse_uid: Uid
    uid: Uid
    name: Name
    settings: dict[str, Any] = {}


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


@routes.post("/api/v1/zones")
async def create_zone(request: web.Request) -> web.Response:
    """Create a zone of an existing greenhouse (201); 404 unknown greenhouse, 409 uid exists."""
    body = await read_body(request, NewZone, storable=True)
    services = request.app[SERVICES]
    pool = services.db.pool
    if not await fleet.greenhouse_exists(pool, body.greenhouse_uid):
        raise ApiError(404, "greenhouse_not_found", f"greenhouse {body.greenhouse_uid} does not exist")
    created = await fleet.create_zone(pool, body.uid, body.greenhouse_uid, body.name, body.settings)
    if created is None:
        raise ApiError(409, "zone_exists", f"zone {body.uid} already exists")
    services.devices.registry.put_zone(created.uid, created.greenhouse_uid)
    return ok(created, status=201)


@routes.get("/api/v1/zones")
async def list_zones(request: web.Request) -> web.Response:
    """Zones, optionally of one greenhouse (``?greenhouse_uid=``)."""
    greenhouse = query_uid(request, "greenhouse_uid")
    return ok(await fleet.list_zones(request.app[SERVICES].db.pool, greenhouse))
