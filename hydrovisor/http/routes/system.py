"""``/api/v1/system``: the state machine, and the incidents with their task dumps."""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from hydrovisor.http.body import query_int
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.process.incidents import IncidentKind, summarize

routes = web.RouteTableDef()

_INCIDENT_ID = re.compile(r"^[a-z]+-[0-9a-f]{8}$")


@routes.get("/api/v1/system")
async def system_state(request: web.Request) -> web.Response:
    """State, since when, counters, thresholds and the open incidents."""
    services = request.app[SERVICES]
    control = services.control
    snapshot = control.snapshot()
    return ok({
        **msgspec.structs.asdict(snapshot),
        "actuation_blocked": control.actuation_blocked,
        "thresholds": control.machine.thresholds,
        "loop": {"healthy": control.guard.healthy, "heartbeat_age_s": round(control.guard.heartbeat_age(), 3),
                 "stall_threshold_s": control.guard.threshold, "stall_incident": control.guard.stall_incident},
        "chaos_active": services.chaos.active(),
        "open_incidents": [summarize(i) for i in control.incidents.recent(open_only=True)],
    })


@routes.get("/api/v1/system/incidents")
async def incidents(request: web.Request) -> web.Response:
    """Newest first, without dumps; ``?kind=loop_stall|state_transition|chaos``, ``?open=1``, ``?limit=``."""
    store = request.app[SERVICES].control.incidents
    raw_kind = request.query.get("kind")
    try:
        kind = IncidentKind(raw_kind) if raw_kind else None
    except ValueError:
        kinds = ", ".join(k.value for k in IncidentKind)
        raise ApiError(400, "invalid_kind", f"kind must be one of {kinds}") from None
    open_only = request.query.get("open", "0") in ("1", "true")
    limit = query_int(request, "limit", 50, low=1, high=500)
    return ok([summarize(i) for i in store.recent(kind=kind, open_only=open_only, limit=limit)])


@routes.get("/api/v1/system/incidents/{incident_id}")
async def incident(request: web.Request) -> web.Response:
    """One incident with its task dump (every task's coroutine stack, every thread's stack)."""
    incident_id = request.match_info["incident_id"]
    if not _INCIDENT_ID.match(incident_id):
        raise ApiError(400, "invalid_incident_id", "an incident id looks like stall-1a2b3c4d")
    found = request.app[SERVICES].control.incidents.get(incident_id)
    if found is None:
        raise ApiError(404, "incident_not_found", f"no incident {incident_id} (unknown, or older than the kept ones)")
    return ok(found)
