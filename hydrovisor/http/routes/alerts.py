"""Alerts (DOMAIN §4): list with filters, resolve one with a reason."""

from __future__ import annotations

from aiohttp import web

from hydrovisor.http.body import query_int, query_uid, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.http.routes.zones import MAX_ID, ReasonBody, who
from hydrovisor.store.repos import events
from hydrovisor.store.repos.events import ALERT_SOURCES, ALERT_STATUSES

routes = web.RouteTableDef()


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise ApiError(400, "invalid_parameter", f"{name} must be one of {', '.join(allowed)}")
    return value


def _alert_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 19) or not 1 <= int(raw) <= MAX_ID:
        raise ApiError(400, "invalid_alert_id", "the alert id is a positive integer")
    return int(raw)


@routes.get("/api/v1/alerts")
async def list_alerts(request: web.Request) -> web.Response:
    """Alerts, newest first (by last seen): ``?zone_uid=``, ``?status=ACTIVE|RESOLVED``,
    ``?source=biz|infra``, ``?limit=`` (default 500)."""
    status = _choice(request, "status", ALERT_STATUSES)
    source = _choice(request, "source", ALERT_SOURCES)
    zone = query_uid(request, "zone_uid")
    limit = query_int(request, "limit", 500, low=1, high=5000)
    return ok(await events.list_alerts(request.app[SERVICES].db.pool, status, zone, source=source, limit=limit))


@routes.post("/api/v1/alerts/{id}/resolve")
async def resolve(request: web.Request) -> web.Response:
    """Operator: resolve one ACTIVE alert, with who and why kept on it and in its zone's timeline;
    404 ``alert_not_found``, 409 ``alert_not_active`` (already resolved)."""
    services = request.app[SERVICES]
    alert_id = _alert_id(request)
    body = await read_body(request, ReasonBody, storable=True)
    resolved = await events.resolve_alert_by_id(services.db.pool, alert_id, by=who(request), reason=body.reason)
    if resolved is None:
        existing = await events.get_alert(services.db.pool, alert_id)
        if existing is None:
            raise ApiError(404, "alert_not_found", f"alert {alert_id} does not exist")
        raise ApiError(409, "alert_not_active", f"alert {alert_id} is already {existing.status}",
                       alert=existing)
    if resolved.zone_uid is not None:  # the zone lets go of the lock this alert held, if it was one
        services.zones.alert_resolved(resolved.zone_uid, resolved.code, resolved.dedupe_key)
    return ok(resolved)
