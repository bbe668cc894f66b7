"""Nodes: list, inspect, pre-register, bind, unbind, issue MQTT credentials, timeline."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from hydrovisor.actors.node import Bind, BindRefused, Unbind
from hydrovisor.broker.directory import hash_password, new_secret
from hydrovisor.devices.registry import NodeView
from hydrovisor.devices.spawn import ensure_node_actor, node_path
from hydrovisor.http.auth import Role, require_role
from hydrovisor.http.body import Uid, path_uid, query_int, query_uid, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import SERVICES
from hydrovisor.protocol import normalize_node_type
from hydrovisor.services import Services
from hydrovisor.store.repos import events, fleet, nodes
from hydrovisor.store.repos.nodes import ChannelRecord, NodeRecord
from hydrovisor.supervisors import NoSuchActor

routes = web.RouteTableDef()

HardwareId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Secret = Annotated[str, msgspec.Meta(min_length=16, max_length=128)]


class NewChannel(msgspec.Struct, forbid_unknown_fields=True):
    """A channel of a pre-registered node."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,63}$")]
    type: Annotated[str, msgspec.Meta(pattern=r"^(SENSOR|ACTUATOR)$")]
    metric: str | None = None
    unit: str | None = None
    actuator_type: str | None = None
    relay_type: Annotated[str, msgspec.Meta(pattern=r"^(NO|NC)$")] | None = None
    safe_limits: dict[str, Any] | None = None
    ml_per_second: Annotated[float, msgspec.Meta(gt=0)] | None = None


class NewNode(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/nodes``: a node already configured in the field (it never sends hello)."""

    uid: Uid
    hardware_id: HardwareId
    type: str = "unknown"
    zone_uid: Uid | None = None
    channels: list[NewChannel] = []
    node_secret: Secret | None = None


class BindBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/nodes/{uid}/bind`` body."""

    zone_uid: Uid


def public_node(node: NodeRecord, channels: list[ChannelRecord] | None = None) -> dict[str, Any]:
    """A node as the API shows it: never the secret."""
    data: dict[str, Any] = msgspec.to_builtins(node)
    data.pop("node_secret")
    if channels is not None:
        data["channels"] = msgspec.to_builtins(channels)
    return data


async def _node_or_404(services: Services, uid: str) -> NodeRecord:
    node = await nodes.get_node(services.db.pool, uid)
    if node is None:
        raise ApiError(404, "node_not_found", f"node {uid} does not exist")
    return node


@routes.get("/api/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    """Every node (``?zone_uid=`` for one zone)."""
    zone = query_uid(request, "zone_uid")
    return ok([public_node(n) for n in await nodes.list_nodes(request.app[SERVICES].db.pool, zone)])


@routes.get("/api/v1/nodes/{uid}")
async def get_node(request: web.Request) -> web.Response:
    """One node with its channels."""
    services = request.app[SERVICES]
    node = await _node_or_404(services, path_uid(request))
    return ok(public_node(node, await nodes.list_channels(services.db.pool, node.uid)))


@routes.post("/api/v1/nodes")
async def preregister(request: web.Request) -> web.Response:
    """Pre-register a configured node; with ``zone_uid`` it is bound and validated at once."""
    body = await read_body(request, NewNode, storable=True)
    services = request.app[SERVICES]
    pool = services.db.pool
    gh_uid = None
    if body.zone_uid is not None:
        zone = await fleet.get_zone(pool, body.zone_uid)
        if zone is None:
            raise ApiError(404, "zone_not_found", f"zone {body.zone_uid} does not exist")
        gh_uid = zone.greenhouse_uid
    channels = [ChannelRecord(**msgspec.structs.asdict(c)) for c in body.channels]
    node = await nodes.preregister(pool, uid=body.uid, hardware_id=body.hardware_id,
                                   node_type=normalize_node_type(body.type), zone_uid=body.zone_uid,
                                   channels=channels, node_secret=body.node_secret)
    if node is None:
        raise ApiError(409, "node_exists", f"a node with uid {body.uid} or hardware id {body.hardware_id} exists")
    services.devices.registry.put(NodeView(uid=node.uid, hardware_id=node.hardware_id, zone_uid=node.zone_uid,
                                           gh_uid=gh_uid, validated=node.validated))
    await ensure_node_actor(services.system, services.devices, node.uid)
    if node.zone_uid is not None:
        services.zones.reload(node.zone_uid)  # its channels may fill the zone's roles
    return ok(public_node(node, await nodes.list_channels(pool, node.uid)), status=201)


async def _ask_node(services: Services, uid: str, message: Bind | Unbind) -> NodeView:
    try:
        view: NodeView = await services.bridge.ask(node_path(uid), message, within=15.0)
    except NoSuchActor:
        raise ApiError(404, "node_not_found", f"node {uid} does not exist") from None
    except BindRefused as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    return view


@routes.post("/api/v1/nodes/{uid}/bind")
async def bind(request: web.Request) -> web.Response:
    """Start binding a node to a zone: its full config (with its secret) is pushed; the node's
    ``config_report`` from the zone's namespace completes the bind (expires after 30 min)."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    body = await read_body(request, BindBody, storable=True)
    await _node_or_404(services, uid)
    zone = await fleet.get_zone(services.db.pool, body.zone_uid)
    if zone is None:
        raise ApiError(404, "zone_not_found", f"zone {body.zone_uid} does not exist")
    view = await _ask_node(services, uid, Bind(zone_uid=zone.uid, gh_uid=zone.greenhouse_uid))
    return ok(msgspec.to_builtins(view), status=202)


@routes.post("/api/v1/nodes/{uid}/unbind")
async def unbind(request: web.Request) -> web.Response:
    """Send the node back to the temp namespace; its telemetry is no longer stored."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    await _node_or_404(services, uid)
    return ok(msgspec.to_builtins(await _ask_node(services, uid, Unbind())))


@routes.post("/api/v1/nodes/{uid}/credentials")
async def issue_credentials(request: web.Request) -> web.Response:
    """Admin: issue or rotate the node's MQTT password; shown once, stored hashed."""
    require_role(request, Role.ADMIN)
    services = request.app[SERVICES]
    node = await _node_or_404(services, path_uid(request))
    password = new_secret()
    digest = hash_password(password)
    await nodes.set_mqtt_password_hash(services.db.pool, node.uid, digest)
    services.credentials_changed(node, digest)
    return ok({"username": node.uid, "password": password,
               "note": "shown once; the node may also log in with its hardware id"}, status=201)


@routes.get("/api/v1/nodes/{uid}/events")
async def node_events(request: web.Request) -> web.Response:
    """The node's part of the zone timeline."""
    services = request.app[SERVICES]
    uid = path_uid(request)
    await _node_or_404(services, uid)
    limit = query_int(request, "limit", 200, low=1, high=5000)
    return ok(await events.list_zone_events(services.db.pool, None, limit, node_uid=uid))
