"""Zone workflows over HTTP (issue 12): start, read, list, cancel; the zone's emergency stop and its clearing."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from hydrovisor.http.body import path_uid, query_int, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.http.routes.zones import who, zone_or_404
from hydrovisor.store.repos import workflows

routes = web.RouteTableDef()

STATUSES = ("running", "completed", "failed", "cancelled")
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]


class StartBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/zones/{uid}/workflows``."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    params: dict[str, Any] = {}


class StopBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST .../emergency-stop`` (the reason is optional: a person pressing it has no time to type)."""

    reason: Reason = "operator emergency stop"


class ClearBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST .../emergency-stop/clear``: why it is safe to go on (audited)."""

    reason: Reason


def _wf_id(request: web.Request) -> str:
    value = request.match_info["wf_id"]
    if not value.startswith("wf-") or not 4 <= len(value) <= 64 or not all(c.isalnum() or c == "-" for c in value):
        raise ApiError(400, "invalid_workflow_id", "a workflow id looks like wf-<hex>")
    return value


@routes.post("/api/v1/zones/{uid}/workflows")
async def start(request: web.Request) -> web.Response:
    """Start a workflow: 202 with it; 409 when one runs, the zone is not ready for it, its emergency stop is
    latched or the safety gate refuses (with the reason); 400/422 for a bad type or params."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    body = await read_body(request, StartBody, storable=True)
    record = await services.workflows.start(uid, body.type, body.params, who(request))
    return ok(record, status=202)


@routes.get("/api/v1/zones/{uid}/workflows")
async def listing(request: web.Request) -> web.Response:
    """The zone's workflows, newest first (``?status=``, ``?limit=``)."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
    await zone_or_404(services, uid)
    limit = query_int(request, "limit", 100, low=1, high=1000)
    return ok(await workflows.list_for_zone(services.db.pool, uid, status, limit))


@routes.get("/api/v1/zones/{uid}/workflows/{wf_id}")
async def read(request: web.Request) -> web.Response:
    """One workflow: type, status, current stage, every stage, reason codes, the commands it sent."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    record = await workflows.get(services.db.pool, uid, _wf_id(request))
    if record is None:
        raise ApiError(404, "workflow_not_found", f"no such workflow in zone {uid}")
    return ok(record)


@routes.post("/api/v1/zones/{uid}/workflows/{wf_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    """Cancel: 202; the workflow stops what it started (confirmed) and ends ``cancelled``."""
    services = request.app[SERVICES]
    record = await services.workflows.cancel(path_uid(request), _wf_id(request))
    return ok(record, status=202)


@routes.post("/api/v1/zones/{uid}/emergency-stop")
async def emergency_stop(request: web.Request) -> web.Response:
    """Everything in the zone stops (each stop confirmed or reported), workflows fail, nothing starts
    until an operator clears it."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    body = await read_body(request, StopBody, storable=True) if request.can_read_body else StopBody()
    report = await services.workflows.emergency_stop(uid, body.reason, who(request))
    return ok(report, status=202)


@routes.post("/api/v1/zones/{uid}/emergency-stop/clear")
async def clear_emergency_stop(request: web.Request) -> web.Response:
    """Clear the latch (audited): 200, or 409 ``emergency_stop_not_active``."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    body = await read_body(request, ClearBody, storable=True)
    await zone_or_404(services, uid)
    if not await services.workflows.clear_emergency_stop(uid, who(request), body.reason):
        raise ApiError(409, "emergency_stop_not_active", f"zone {uid} has no emergency stop latched")
    return ok(await workflows.automation(services.db.pool, uid))


@routes.get("/api/v1/zones/{uid}/automation")
async def automation(request: web.Request) -> web.Response:
    """The zone's automation state: water state, emergency-stop latch, corrections failed closed until."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    await zone_or_404(services, uid)
    return ok(await workflows.automation(services.db.pool, uid))
