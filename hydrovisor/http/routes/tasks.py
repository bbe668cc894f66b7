"""Scheduled tasks over HTTP (issue 13, DOMAIN §5): submit, read with its timeline, list.

Status codes of ``POST /api/v1/tasks``:

- **201** a task was stored: ``accepted``, or one of the fail-fast terminals when it arrived too late
  (``expired`` after ``expires_at``, ``rejected`` after ``due_at``; never executed, ``reason_code`` says why);
- **200** the correlation id already names a task requested with the same values: that task, unchanged;
- **409** ``idempotency_payload_mismatch``: the correlation id names a task requested with other values;
- **404** ``zone_not_found``; **422** ``invalid_field`` with ``field`` (a dotted path such as
  ``due_at`` or ``payload.duration_s``); **400** a body that is not a JSON object (or holds a NUL character).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from hydrovisor.http.body import check_storable, decode_json, query_int, query_time, query_uid
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.http.routes.zones import who, zone_or_404
from hydrovisor.store.repos import tasks
from hydrovisor.tasks.contract import ContractError, TaskStatus, parse_request

routes = web.RouteTableDef()

TASK_ID_PATTERN = r"^tk-[0-9a-f]{20}$"
_TASK_ID = re.compile(TASK_ID_PATTERN)
STATUSES = tuple(s.value for s in TaskStatus)


def _invalid(exc: ContractError) -> ApiError:
    return ApiError(422, "invalid_field", f"{exc.field}: {exc.message}", field=exc.field)


@routes.post("/api/v1/tasks")
async def submit(request: web.Request) -> web.Response:
    """Submit a task (see the module docstring for every status code)."""
    services = request.app[SERVICES]
    raw = await request.read()
    value = decode_json(raw)  # 400 invalid_json / too_deeply_nested
    if value is None:
        raise ApiError(400, "empty_body", "a JSON body is required")
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    check_storable(value)  # 400 nul_character naming the path
    try:
        task_request = parse_request(raw)
    except ContractError as exc:
        raise _invalid(exc) from None
    await zone_or_404(services, task_request.zone_uid)
    try:
        task, created = await tasks.enqueue(services.db.pool, task_request, now=dt.datetime.now(dt.UTC),
                                            created_by=who(request))
    except tasks.IdempotencyMismatch as exc:
        raise ApiError(409, "idempotency_payload_mismatch",
                       f"correlation_id {exc.correlation_id} already names task {exc.task_id}, requested with other "
                       "values; use a new correlation id for a different task", task_id=exc.task_id) from None
    return ok(task, status=201 if created else 200)


T = TypeVar("T")


def _param(request: web.Request, name: str, parse: Callable[[], T]) -> T:
    """``parse()`` the query parameter ``name``; its 400 (and a parameter given twice) names it in ``field``."""
    if len(request.query.getall(name, [])) > 1:
        raise ApiError(400, "invalid_parameter", f"query parameter {name} is given more than once", field=name)
    try:
        return parse()
    except ApiError as exc:
        raise ApiError(exc.status, exc.code, exc.message, field=name) from None


def _status(request: web.Request) -> TaskStatus | None:
    raw = request.query.get("status")
    if raw is None:
        return None
    if raw not in STATUSES:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(STATUSES)}")
    return TaskStatus(raw)


@routes.get("/api/v1/tasks")
async def listing(request: web.Request) -> web.Response:
    """Tasks newest first: ``?zone_uid=``, ``?status=``, ``?since=`` (received at or after; unix seconds or
    RFC 3339 with an offset), ``?limit=`` (1..1000, default 100). A bad parameter: 400 naming it in ``field``."""
    zone_uid = _param(request, "zone_uid", lambda: query_uid(request, "zone_uid"))
    status = _param(request, "status", lambda: _status(request))
    since = _param(request, "since", lambda: query_time(request, "since", -1.0))  # -1: not given
    limit = _param(request, "limit", lambda: query_int(request, "limit", 100, low=1, high=1000))
    found = await tasks.list_tasks(
        request.app[SERVICES].db.pool, zone_uid=zone_uid, status=status,
        since=None if since < 0 else dt.datetime.fromtimestamp(since, dt.UTC), limit=limit)
    return ok(found)


@routes.get("/api/v1/tasks/{task_id}")
async def read(request: web.Request) -> web.Response:
    """One task with its timeline (events oldest first)."""
    task_id = request.match_info["task_id"]
    if not _TASK_ID.match(task_id):
        raise ApiError(400, "invalid_task_id", "a task id looks like tk-<20 hex digits>", field="task_id")
    found = await tasks.detail(request.app[SERVICES].db.pool, task_id)
    if found is None:
        raise ApiError(404, "task_not_found", f"no task {task_id}")
    return ok(found)

