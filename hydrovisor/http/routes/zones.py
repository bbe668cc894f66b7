"""Zones: create, list, delete; versioned settings and their history; the zone timeline; the safety reset."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from hydrovisor.http.auth import ROLE_KEY, Role
from hydrovisor.http.body import Name, Uid, path_uid, query_int, query_uid, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.services import Services
from hydrovisor.store.repos import events, fleet
from hydrovisor.store.repos import zones as repo
from hydrovisor.store.repos.fleet import Zone
from hydrovisor.store.repos.zones import Deleted, SettingsVersion
from hydrovisor.zoneplane.runtime import ZoneUnavailable
from hydrovisor.zones.safety import LOCK_CODES
from hydrovisor.zones.settings import FieldError, ZoneSettings, parse_settings, resolve_devices

routes = web.RouteTableDef()

MAX_ID = 2**63 - 1
MAX_VERSION = 2**31 - 2  # zone_settings_versions.version is an int4 and the next one is version + 1

# The alerts a "reset safety lock" resolves (DOMAIN §4: the ones that lock a zone's pumps).

Version = Annotated[int, msgspec.Meta(ge=1, le=MAX_VERSION, description="the settings version this edit is based on")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class NewZone(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/zones`` body; ``settings`` (default: every DOMAIN §4 default) becomes version 1."""

    greenhouse_uid: Uid
    uid: Uid
    name: Name
    settings: dict[str, Any] = {}


class SettingsEdit(msgspec.Struct, forbid_unknown_fields=True):
    """``PUT /api/v1/zones/{uid}/settings`` body: the whole new document and the version it edits."""

    version: Version
    settings: dict[str, Any]


class ReasonBody(msgspec.Struct, forbid_unknown_fields=True):
    """Why an operator acts (kept in the audit trail)."""

    reason: Reason


def who(request: web.Request) -> str:
    """The caller as the audit trail names it: the role its token carries."""
    return str(request.get(ROLE_KEY, Role.OPERATOR))


async def zone_or_404(services: Services, uid: str) -> Zone:
    """The zone, or 404 ``zone_not_found``."""
    zone = await fleet.get_zone(services.db.pool, uid)
    if zone is None:
        raise ApiError(404, "zone_not_found", f"zone {uid} does not exist")
    return zone


def _invalid(errors: list[FieldError]) -> ApiError:
    shown = "; ".join(f"{e.path}: {e.message}" for e in errors[:3])
    return ApiError(422, "invalid_settings", f"invalid settings: {shown}", errors=msgspec.to_builtins(errors))


async def _validated(services: Services, zone_uid: str | None, raw: dict[str, Any]) -> ZoneSettings:
    """Parse the document and bind its roles against the zone's node channels; 422 with every error."""
    parsed = parse_settings(raw)
    if isinstance(parsed, list):
        raise _invalid(parsed)
    channels = await repo.zone_channels(services.db.pool, zone_uid) if zone_uid else []
    resolved = resolve_devices(parsed, channels)
    if isinstance(resolved, list):
        raise _invalid(resolved)
    return parsed


async def settings_view(services: Services, stored: SettingsVersion) -> dict[str, Any]:
    """A stored version as ``GET .../settings`` shows it: the document, and every role's node channel
    with where it came from (``settings`` or ``auto``: a channel of the zone's nodes named like the
    role). ``errors`` lists what keeps the stored document from being used (e.g. an ambiguous role
    after a node was bound); empty when it is in force as shown."""
    view: dict[str, Any] = {"zone_uid": stored.zone_uid, "version": stored.version, "created_at": stored.created_at,
                            "created_by": stored.created_by, "settings": stored.document, "devices": {},
                            "errors": []}
    parsed = parse_settings(stored.document)
    if isinstance(parsed, list):
        view["errors"] = msgspec.to_builtins(parsed)
        return view
    resolved = resolve_devices(parsed, await repo.zone_channels(services.db.pool, stored.zone_uid))
    if isinstance(resolved, list):
        view["errors"] = msgspec.to_builtins(resolved)
        return view
    view["devices"] = {role.value: {"node_uid": d.node_uid, "channel": d.channel, "source": d.source}
                       for role, d in sorted(resolved.items())}
    return view


# --- zones ---------------------------------------------------------------------------------------

@routes.post("/api/v1/zones")
async def create_zone(request: web.Request) -> web.Response:
    """Create a zone of an existing greenhouse (201) with version 1 of its settings; 404 unknown
    greenhouse, 409 uid exists, 422 invalid settings."""
    body = await read_body(request, NewZone, storable=True)
    services = request.app[SERVICES]
    pool = services.db.pool
    if not await fleet.greenhouse_exists(pool, body.greenhouse_uid):
        raise ApiError(404, "greenhouse_not_found", f"greenhouse {body.greenhouse_uid} does not exist")
    settings = await _validated(services, None, body.settings)
    created = await fleet.create_zone(pool, body.uid, body.greenhouse_uid, body.name,
                                      msgspec.to_builtins(settings), created_by=who(request))
    if created is None:
        raise ApiError(409, "zone_exists", f"zone {body.uid} already exists")
    services.devices.registry.put_zone(created.uid, created.greenhouse_uid)
    await services.zones.start(created.uid)
    return ok(created, status=201)


@routes.get("/api/v1/zones")
async def list_zones(request: web.Request) -> web.Response:
    """Zones, optionally of one greenhouse (``?greenhouse_uid=``)."""
    greenhouse = query_uid(request, "greenhouse_uid")
    return ok(await fleet.list_zones(request.app[SERVICES].db.pool, greenhouse))


@routes.delete("/api/v1/zones/{uid}")
async def delete_zone(request: web.Request) -> web.Response:
    """Delete a zone no node is bound (or binding) to; its timeline and alerts are kept."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    outcome = await repo.delete_zone(services.db.pool, uid)
    if outcome is Deleted.NOT_FOUND:
        raise ApiError(404, "zone_not_found", f"zone {uid} does not exist")
    if outcome is Deleted.HAS_NODES:
        raise ApiError(409, "zone_has_nodes", f"zone {uid} has nodes bound or binding to it; unbind them first")
    services.devices.registry.forget_zone(uid)
    await services.zones.stop(uid)
    return ok({"uid": uid, "deleted": True})


# --- settings ------------------------------------------------------------------------------------

@routes.get("/api/v1/zones/{uid}/settings")
async def get_settings(request: web.Request) -> web.Response:
    """The settings in force, with each role's node channel and where it came from."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    stored = await repo.get_settings(services.db.pool, uid)
    if stored is None:  # every zone has version 1 from its creation on
        raise ApiError(404, "zone_not_found", f"zone {uid} does not exist")
    return ok(await settings_view(services, stored))


@routes.put("/api/v1/zones/{uid}/settings")
async def put_settings(request: web.Request) -> web.Response:
    """A new version of the whole document, edited from ``version``: 422 ``invalid_settings`` with
    the path of each bad value, 409 ``settings_version_conflict`` when ``version`` is not the newest."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    body = await read_body(request, SettingsEdit, storable=True)
    await zone_or_404(services, uid)
    settings = await _validated(services, uid, body.settings)
    stored = await repo.put_settings(services.db.pool, uid, body.version, msgspec.to_builtins(settings),
                                     who(request))
    if stored is None:
        current = await repo.get_settings(services.db.pool, uid)
        if current is None:
            raise ApiError(404, "zone_not_found", f"zone {uid} does not exist")
        raise ApiError(409, "settings_version_conflict",
                       f"version {body.version} is not the newest (version {current.version} is); "
                       "reload the settings and edit those", current_version=current.version)
    services.zones.reload(uid)  # the running zone takes the new version at once
    return ok(await settings_view(services, stored))


@routes.get("/api/v1/zones/{uid}/settings/history")
async def settings_history(request: web.Request) -> web.Response:
    """Every stored version, newest first (``?before=`` a version, for paging; ``?limit=``)."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    limit = query_int(request, "limit", 100, low=1, high=1000)
    before = query_int(request, "before", 0, low=1, high=MAX_VERSION + 1) if "before" in request.query else None
    await zone_or_404(services, uid)
    return ok(await repo.settings_history(services.db.pool, uid, limit=limit, before=before))


# --- timeline and safety -------------------------------------------------------------------------

@routes.get("/api/v1/zones/{uid}/events")
async def zone_events(request: web.Request) -> web.Response:
    """The zone timeline in (created_at, id) order: without ``after_id`` its newest ``limit`` entries;
    with it the first ``limit`` entries after that event (``after_id=0``: from the beginning)."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    limit = query_int(request, "limit", 200, low=1, high=5000)
    after_id = query_int(request, "after_id", 0, low=0, high=MAX_ID) if "after_id" in request.query else None
    await zone_or_404(services, uid)
    if after_id is None:
        return ok(await events.list_zone_events(services.db.pool, uid, limit))
    page = await events.zone_events_after(services.db.pool, uid, after_id, limit)
    if page is None:
        raise ApiError(400, "unknown_after_id", f"after_id {after_id} is not an event of zone {uid}")
    return ok(page)


@routes.post("/api/v1/zones/{uid}/safety/reset")
async def safety_reset(request: web.Request) -> web.Response:
    """Operator: "reset safety lock": resolves the zone's active safety-lock alerts (overcurrent,
    no flow, dry run, pump stuck on), audited with who and why."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    body = await read_body(request, ReasonBody, storable=True)
    await zone_or_404(services, uid)
    reset = await repo.reset_safety(services.db.pool, uid, LOCK_CODES, by=who(request), reason=body.reason)
    await services.zones.reset_safety(uid)
    return ok(reset)


@routes.get("/api/v1/zones/{uid}/state")
async def zone_state(request: web.Request) -> web.Response:
    """The zone's live state: readings with their age, actuators (desired/confirmed/since), level switches,
    nodes online, active alerts, safety locks, the settings version it runs on. 503 while the zone is not
    running or still loading (``Retry-After``)."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    if services.devices.registry.greenhouse_of(uid) is None:
        raise ApiError(404, "zone_not_found", f"zone {uid} does not exist")
    try:
        return ok(await services.zones.state(uid))
    except ZoneUnavailable as exc:
        raise ApiError(503, exc.code, str(exc), headers={"Retry-After": "1"}) from None
