"""The notification dead-letter queue: list (operator), replay and purge (admin)."""

from __future__ import annotations

import contextlib
from typing import Any

import msgspec
from aiohttp import web

from hydrovisor.actors.notifier import Wake
from hydrovisor.http.auth import Role, require_role
from hydrovisor.http.body import query_int
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.notifications.wiring import NOTIFIER_PATH
from hydrovisor.store.repos import notifications
from hydrovisor.supervisors import SupervisionError

routes = web.RouteTableDef()

MAX_ID = 2**63 - 1


def _dlq_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        raise ApiError(400, "invalid_dlq_id", "the DLQ entry id is a positive integer")
    return int(raw)


def _not_found(dlq_id: int) -> ApiError:
    return ApiError(404, "dlq_entry_not_found",
                    f"no dead letter {dlq_id} (never existed, or already replayed or purged)", dlq_id=dlq_id)


@routes.get("/api/v1/dlq")
async def listing(request: web.Request) -> web.Response:
    """Dead letters, newest first; page with ``before`` = ``next_before`` of the previous page."""
    services = request.app[SERVICES]
    limit = query_int(request, "limit", 100, low=1, high=1000)
    before = query_int(request, "before", 0, low=1, high=MAX_ID) if "before" in request.query else None
    items, counts = await notifications.dlq_page(services.db.pool, before_id=before, limit=limit)
    data: dict[str, Any] = {
        "items": msgspec.to_builtins(items), "total": counts.dlq, "pending": counts.pending,
        "next_before": items[-1].id if len(items) == limit else None,
    }
    return ok(data)


@routes.post("/api/v1/dlq/{id}/replay")
async def replay(request: web.Request) -> web.Response:
    """Admin: back to the pending queue (attempts reset, same notification id), delivered at once."""
    require_role(request, Role.ADMIN)
    services = request.app[SERVICES]
    dlq_id = _dlq_id(request)
    notification_id = await notifications.replay(services.db.pool, dlq_id)
    if notification_id is None:
        raise _not_found(dlq_id)
    # no need to wait for the next poll; if the notifier is restarting, its next tick finds it
    with contextlib.suppress(SupervisionError):
        services.system.tell(NOTIFIER_PATH, Wake())
    return ok({"dlq_id": dlq_id, "notification_id": notification_id, "status": "pending"})


@routes.delete("/api/v1/dlq/{id}")
async def purge(request: web.Request) -> web.Response:
    """Admin: delete a dead letter for good."""
    require_role(request, Role.ADMIN)
    services = request.app[SERVICES]
    dlq_id = _dlq_id(request)
    if not await notifications.purge(services.db.pool, dlq_id):
        raise _not_found(dlq_id)
    return ok({"dlq_id": dlq_id, "purged": True})
