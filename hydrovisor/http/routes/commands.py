"""``POST /api/v1/commands`` (and zone/node-scoped variants), reads, ``?wait=``, timelines."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

import msgspec
from aiohttp import web

from hydrovisor.actors.command import Preload
from hydrovisor.commands.plane import default_timeout
from hydrovisor.commands.spawn import StartQueued, start_command_actor
from hydrovisor.commands.waiters import StatusNews
from hydrovisor.http.body import Uid, check_storable, decode_json, path_uid, query_int, query_time, query_uid
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.protocol import CommandInvalid, CommandStatus, sign_command
from hydrovisor.services import Services
from hydrovisor.store.repos import commands, nodes
from hydrovisor.store.repos.commands import CommandRecord, NewCommand
from hydrovisor.store.repos.nodes import NodeRecord
from hydrovisor.supervisors import CapacityExceeded
from hydrovisor.zones.safety import fail_safe_allowed, starts_actuator

routes = web.RouteTableDef()

CmdId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,63}$")]
SYSTEM_CHANNELS = frozenset({"system", "storage_state"})  # firmware channels that accept commands
SUBMIT_WAIT_S = 5.0
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


async def _check_target(services: Services, body: CommandBody) -> NodeRecord:
    """The node must exist, be bound and validated, in the given zone, and own the channel."""
    node, channel_type = await nodes.get_command_target(services.db.pool, body.node_uid, body.channel)
    if node is None:
        raise ApiError(404, "node_not_found", f"node {body.node_uid} does not exist")
    if node.zone_uid is None:
        raise ApiError(409, "node_not_bound", f"node {body.node_uid} is not bound to a zone")
    if not node.validated:
        raise ApiError(409, "node_not_validated", f"node {body.node_uid} is not validated yet")
    if body.zone_uid is not None and body.zone_uid != node.zone_uid:
        raise ApiError(409, "node_zone_mismatch",
                       f"node {body.node_uid} is bound to {node.zone_uid}, not {body.zone_uid}")
    if body.channel not in SYSTEM_CHANNELS and channel_type != "ACTUATOR":
        raise ApiError(400, "channel_not_actuator", f"{body.channel} is not an actuator channel of {node.uid}")
    return node


async def _check_safety(services: Services, body: CommandBody, node: NodeRecord) -> None:
    """The one pump-safety gate (DOMAIN §4), for operators as for automation: a start the zone refuses is
    a 409 with the zone's reason code (recorded by the zone as an event); nothing is stored or sent."""
    if node.zone_uid is None or not starts_actuator(body.cmd, body.params):
        return
    refusal = await services.zones.check_start(node.zone_uid, node_uid=node.uid, channel=body.channel, cmd=body.cmd,
                                               params=body.params, source=body.source)
    if refusal is not None:
        raise ApiError(409, "pump_safety_blocked",
                       f"{body.cmd} on {node.uid}/{body.channel} refused: {refusal.message}",
                       reason_code=refusal.reason_code)


async def submit(request: web.Request, **forced: str) -> web.Response:
    """Store QUEUED, start the tracker, answer once SENT is stored (202) or the send failed."""
    services = request.app[SERVICES]
    body = await _decode(request, **forced)
    cmd_id = body.cmd_id or f"cmd-{uuid.uuid4().hex}"
    try:
        sign_command(body.cmd, cmd_id, body.params, int(time.time()), "transport-sanity-check")
    except CommandInvalid as exc:
        raise ApiError(400, exc.code, exc.message) from None
    if services.control.actuation_blocked:
        relay_type = await nodes.channel_relay_type(services.db.pool, body.node_uid, body.channel)
        if not fail_safe_allowed(body.cmd, body.params, relay_type):
            state = services.control.state.value
            raise ApiError(503, "safe_mode_active", f"the system is in {state}: only commands that drive an actuator "
                           "to its fail-safe state are accepted", system_state=state, headers={"Retry-After": "30"})
    node = await _check_target(services, body)
    await _check_safety(services, body, node)
    new = NewCommand(cmd_id=cmd_id, zone_uid=node.zone_uid, node_uid=body.node_uid, channel=body.channel, cmd=body.cmd,
                     params=body.params, source=body.source, trace_id=body.trace_id,
                     timeout_s=body.timeout_s or default_timeout(body.params))
    plane = services.commands
    with plane.waiters.watching(cmd_id, lambda news: news.settled_submit) as settled:
        row, created = await commands.insert_queued(services.db.pool, new)
        if not created:
            same = (row.node_uid, row.channel, row.cmd, row.params) == (new.node_uid, new.channel, new.cmd, new.params)
            if not same:
                raise ApiError(409, "cmd_id_conflict", f"cmd_id {cmd_id} exists with another target or params")
            if row.status == CommandStatus.SEND_FAILED:  # a resend: the old deadline has likely passed
                row = await commands.rearm(services.db.pool, cmd_id) or await _row(services, cmd_id)
            if row.status not in (CommandStatus.QUEUED, CommandStatus.SEND_FAILED):
                return ok(_view(row))  # the same command again: no second publish
        try:
            started = await start_command_actor(services.system, plane, cmd_id, Preload(row=row, node=node))
        except StartQueued:
            # the start request is queued at the supervisor: the command is durable (QUEUED) and will
            # be tracked; a 5xx here would invite a retry under a new cmd_id, i.e. a second actuation
            return ok(_view(await _row(services, cmd_id)), status=202)
        except CapacityExceeded:
            await commands.transition(services.db.pool, cmd_id, CommandStatus.SEND_FAILED, source="server",
                                      error_code="capacity_exceeded", error_message="too many commands in flight")
            raise ApiError(429, "too_many_commands", "too many commands in flight; retry with the same cmd_id",
                           headers={"Retry-After": "1"}) from None
        if not started and not created:
            return ok(_view(row))  # its tracker is already publishing it
        news = await plane.waiters.wait(settled, SUBMIT_WAIT_S)
    return _answer(await _news_row(services, cmd_id, news), news, created)


def _answer(row: CommandRecord, news: StatusNews | None, created: bool) -> web.Response:
    if news is not None and news.sync_failed:
        raise ApiError(500, "command_state_sync_failed",
                       "the command was published but its SENT status could not be stored; "
                       "its status will be reconciled", command_id=row.cmd_id)
    if row.status == CommandStatus.SEND_FAILED:
        raise ApiError(502, "command_send_failed", f"the command could not be sent: {row.error_code}",
                       command_id=row.cmd_id, error_code=row.error_code)
    return ok(_view(row), status=202 if created else 200)


async def _row(services: Services, cmd_id: str) -> CommandRecord:
    row = await commands.get(services.db.pool, cmd_id)
    if row is None:
        raise ApiError(404, "command_not_found", f"command {cmd_id} does not exist")
    return row


async def _news_row(services: Services, cmd_id: str, news: StatusNews | None) -> CommandRecord:
    """The row the news was stored with (no read), else the stored row."""
    return news.row if news is not None and news.row is not None else await _row(services, cmd_id)


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
        return ok(_view(await _row(services, cmd_id)))
    waiters = services.commands.waiters
    with waiters.watching(cmd_id, lambda news: news.terminal) as terminal:
        row = await _row(services, cmd_id)
        if not row.terminal:
            row = await _news_row(services, cmd_id, await waiters.wait(terminal, wait))
    return ok(_view(row))


@routes.get("/api/v1/commands/{cmd_id}/events")
async def timeline(request: web.Request) -> web.Response:
    """Every status report of a command, applied or not (late replies included)."""
    services = request.app[SERVICES]
    cmd_id = _cmd_id(request)
    await _row(services, cmd_id)
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
