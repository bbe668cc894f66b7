"""``POST /api/v1/commands`` (and zone/node-scoped variants), reads, ``?wait=``, timelines."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from hydrovisor.commands.submit import SubmitRequest
from hydrovisor.http.body import Uid, check_storable, decode_json, path_uid, query_int, query_time, query_uid
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.protocol import CommandStatus
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import CommandRecord

routes = web.RouteTableDef()

CmdId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,63}$")]
MAX_WAIT_S = 60


class CommandBody(msgspec.Struct, forbid_unknown_fields=True):
    """The command request (DOMAIN §1 HTTP contract)."""

    cmd: Annotated[str, msgspec.Meta(min_length=1, max_length=31)]
    node_uid: Uid
    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,63}$")]
    params: dict[str, Any] = {}
    cmd_id: CmdId | None = None
    zone_uid: Uid | None = None
    source: Annotated[str, msgspec.Meta(max_length=64)] = "api"
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    trace_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    ts: Any = None  # accepted for compatibility; the server signs with its own time


async def _decode(request: web.Request, **forced: str) -> CommandBody:
    data = decode_json(await request.read())
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    check_storable(data)  # stored as text and jsonb, signed recursively
    if "type" in data:
        raise ApiError(400, "legacy_field_type", "the field `type` is not supported: use `cmd`")
    for field in ("cmd", "node_uid", "channel"):
        if field not in data and field not in forced:
            raise ApiError(400, f"missing_{field}", f"`{field}` is required")
    for field, value in forced.items():
        if field in data and data[field] != value:
            raise ApiError(400, f"{field}_mismatch", f"`{field}` in the body differs from the URL ({value})")
        data[field] = value
    try:
        return msgspec.convert(data, CommandBody)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_body", f"invalid body: {exc}") from None


def _view(row: CommandRecord) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(row)
    data["command_id"] = row.cmd_id
    data["command_submitted"] = row.status not in (CommandStatus.QUEUED, CommandStatus.SEND_FAILED)
    data["command_effect_confirmed"] = row.status == CommandStatus.DONE
    return data


async def submit(request: web.Request, **forced: str) -> web.Response:
    """Store QUEUED, start the tracker, answer once SENT is stored (202) or the send failed."""
    services = request.app[SERVICES]
    body = await _decode(request, **forced)
    done = await services.submitter.submit(SubmitRequest(
        cmd=body.cmd, node_uid=body.node_uid, channel=body.channel, params=body.params, cmd_id=body.cmd_id,
        zone_uid=body.zone_uid, source=body.source, timeout_s=body.timeout_s, trace_id=body.trace_id))
    return ok(_view(done.row), status=202 if done.created else 200)


def _cmd_id(request: web.Request) -> str:
    value = request.match_info["cmd_id"]
    if not 1 <= len(value) <= 63 or not all(c.isalnum() or c in "_-" for c in value):
        raise ApiError(400, "invalid_cmd_id", "cmd_id is 1-63 chars of [A-Za-z0-9_-]")
    return value


@routes.post("/api/v1/commands")
async def create(request: web.Request) -> web.Response:
    """Submit a command."""
    return await submit(request)


@routes.post("/api/v1/zones/{uid}/commands")
async def create_in_zone(request: web.Request) -> web.Response:
    """Submit a command to a node of this zone."""
    return await submit(request, zone_uid=path_uid(request))


@routes.post("/api/v1/nodes/{uid}/commands")
async def create_for_node(request: web.Request) -> web.Response:
    """Submit a command to this node."""
    return await submit(request, node_uid=path_uid(request))


@routes.get("/api/v1/commands/{cmd_id}")
async def read(request: web.Request) -> web.Response:
    """One command; ``?wait=N`` holds up to N s (≤ 60) for a terminal status."""
    services = request.app[SERVICES]
    cmd_id = _cmd_id(request)
    wait = query_int(request, "wait", 0, low=0, high=MAX_WAIT_S)
    if not wait:
        return ok(_view(await services.submitter.row(cmd_id)))
    return ok(_view(await services.submitter.wait_terminal(cmd_id, wait)))


@routes.get("/api/v1/commands/{cmd_id}/events")
async def timeline(request: web.Request) -> web.Response:
    """Every status report of a command, applied or not (late replies included)."""
    services = request.app[SERVICES]
    cmd_id = _cmd_id(request)
    await services.submitter.row(cmd_id)
    return ok(await commands.events(services.db.pool, cmd_id))


@routes.get("/api/v1/commands")
async def listing(request: web.Request) -> web.Response:
    """Newest first; page with ``before`` = the ``created_at`` of the last item."""
    status = request.query.get("status")
    if status is not None and status not in CommandStatus.__members__:
        raise ApiError(400, "invalid_status", f"status must be one of {', '.join(CommandStatus)}")
    rows = await commands.list_commands(
        request.app[SERVICES].db.pool, zone_uid=query_uid(request, "zone_uid"),
        node_uid=query_uid(request, "node_uid"), status=status,
        since=query_time(request, "since", 0.0) or None,
        before_created=query_time(request, "before", 0.0) or None,
        limit=query_int(request, "limit", 100, low=1, high=1000))
    return ok([_view(r) for r in rows])
