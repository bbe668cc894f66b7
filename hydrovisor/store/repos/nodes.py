"""Nodes and their channels: registration, binding, config reports, liveness."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec


class ChannelRecord(msgspec.Struct, frozen=True):
    """One channel of a node, as reported in its config (or given at pre-registration)."""

    name: str
    type: str
    metric: str | None = None
    unit: str | None = None
    actuator_type: str | None = None
    relay_type: str | None = None
    safe_limits: dict[str, Any] | None = None
    ml_per_second: float | None = None


class NodeRecord(msgspec.Struct, frozen=True):
    """A node row. ``node_secret`` is internal: never logged, never returned by the API."""

    uid: str
    hardware_id: str
    type: str
    state: str
    validated: bool
    zone_uid: str | None
    pending_zone_uid: str | None
    pending_since: float | None
    online: bool
    fw_version: str | None
    hardware_revision: str | None
    first_seen_at: float
    last_seen_at: float | None
    heartbeat: dict[str, Any] | None
    node_secret: str
    has_mqtt_credentials: bool


_COLUMNS = """uid, hardware_id, type, state, validated, zone_uid, pending_zone_uid,
    date_part('epoch', pending_since) AS pending_since, online, fw_version, hardware_revision,
    date_part('epoch', first_seen_at) AS first_seen_at, date_part('epoch', last_seen_at) AS last_seen_at,
    heartbeat, node_secret, mqtt_password_hash IS NOT NULL AS has_mqtt_credentials"""


def _node(row: asyncpg.Record) -> NodeRecord:
    data = dict(row)
    data["heartbeat"] = json.loads(data["heartbeat"]) if data["heartbeat"] else None
    return NodeRecord(**data)


def new_node_secret() -> str:
    """A fresh HMAC key for command signing (delivered to the node in its config push)."""
    return secrets.token_hex(24)


async def get_node(pool: asyncpg.Pool, uid: str) -> NodeRecord | None:
    """One node by uid."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM nodes WHERE uid = $1", uid)
    return _node(row) if row else None


async def get_command_target(pool: asyncpg.Pool, uid: str, channel: str) -> tuple[NodeRecord | None, str | None]:
    """One node by uid and the type of its channel ``channel`` (``None`` when it has none), in one round trip."""
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS}, (SELECT type FROM node_channels WHERE node_uid = $1 AND name = $2) AS channel_type "
        "FROM nodes WHERE uid = $1", uid, channel)
    if row is None:
        return None, None
    data = dict(row)
    channel_type: str | None = data.pop("channel_type")
    data["heartbeat"] = json.loads(data["heartbeat"]) if data["heartbeat"] else None
    return NodeRecord(**data), channel_type


async def channel_relay_type(pool: asyncpg.Pool, uid: str, channel: str) -> str | None:
    """The relay type (``NO``/``NC``) the node reported for ``channel``, if any."""
    value: str | None = await pool.fetchval(
        "SELECT relay_type FROM node_channels WHERE node_uid = $1 AND name = $2", uid, channel)
    return value


async def list_nodes(pool: asyncpg.Pool, zone_uid: str | None = None) -> list[NodeRecord]:
    """All nodes (optionally of one zone), by uid."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM nodes WHERE $1::text IS NULL OR zone_uid = $1 ORDER BY uid", zone_uid)
    return [_node(r) for r in rows]


async def register_from_hello(
    pool: asyncpg.Pool, *, uid: str, hardware_id: str, node_type: str, fw_version: str | None,
    hardware_revision: str | None,
) -> tuple[NodeRecord, bool]:
    """Insert an unbound node, or refresh the one with that hardware id; returns (node, created).

    Raises ``asyncpg.UniqueViolationError`` when ``uid`` belongs to another hardware id.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"UPDATE nodes SET fw_version = coalesce($2, fw_version), "
            f"hardware_revision = coalesce($3, hardware_revision), last_seen_at = now(), updated_at = now(), "
            f"type = CASE WHEN type = 'unknown' THEN $4 ELSE type END "
            f"WHERE hardware_id = $1 RETURNING {_COLUMNS}",
            hardware_id, fw_version, hardware_revision, node_type)
        if row is not None:
            return _node(row), False
        row = await conn.fetchrow(
            "INSERT INTO nodes (uid, hardware_id, type, fw_version, hardware_revision, node_secret, last_seen_at) "
            f"VALUES ($1, $2, $3, $4, $5, $6, now()) RETURNING {_COLUMNS}",
            uid, hardware_id, node_type, fw_version, hardware_revision, new_node_secret())
        return _node(row), True


async def preregister(
    pool: asyncpg.Pool, *, uid: str, hardware_id: str, node_type: str, zone_uid: str | None,
    channels: Sequence[ChannelRecord], node_secret: str | None,
) -> NodeRecord | None:
    """Register a node already configured in the field; bound and validated at once when
    ``zone_uid`` is given. ``None`` when the uid or hardware id exists."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO nodes (uid, hardware_id, type, zone_uid, validated, state, node_secret) "
            "VALUES ($1, $2, $3, $4, $4::text IS NOT NULL, "
            "CASE WHEN $4::text IS NULL THEN 'REGISTERED' ELSE 'ACTIVE' END, $5) "
            f"ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
            uid, hardware_id, node_type, zone_uid, node_secret or new_node_secret())
        if row is None:
            return None
        await _replace_channels(conn, uid, channels)
        return _node(row)


async def _replace_channels(conn: asyncpg.Connection, uid: str, channels: Sequence[ChannelRecord]) -> None:
    await conn.execute("DELETE FROM node_channels WHERE node_uid = $1", uid)
    await conn.executemany(
        "INSERT INTO node_channels (node_uid, name, type, metric, unit, actuator_type, relay_type, "
        "safe_limits, ml_per_second) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)",
        [(uid, c.name, c.type, c.metric, c.unit, c.actuator_type, c.relay_type,
          json.dumps(c.safe_limits) if c.safe_limits is not None else None, c.ml_per_second)
         for c in channels])


async def list_channels(pool: asyncpg.Pool, uid: str) -> list[ChannelRecord]:
    """Channels of one node, by name."""
    rows = await pool.fetch(
        "SELECT name, type, metric, unit, actuator_type, relay_type, safe_limits, ml_per_second "
        "FROM node_channels WHERE node_uid = $1 ORDER BY name", uid)
    out = []
    for r in rows:
        data = dict(r)
        data["safe_limits"] = json.loads(data["safe_limits"]) if data["safe_limits"] else None
        out.append(ChannelRecord(**data))
    return out


async def store_config_report(
    pool: asyncpg.Pool, uid: str, report: dict[str, Any], channels: Sequence[ChannelRecord],
    fw_version: str | None,
) -> None:
    """Keep the node's reported config (secrets already removed) and its channels."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE nodes SET config_report = $2::jsonb, fw_version = coalesce($3, fw_version), "
            "updated_at = now() WHERE uid = $1", uid, json.dumps(report), fw_version)
        await _replace_channels(conn, uid, channels)


async def set_pending_bind(pool: asyncpg.Pool, uid: str, zone_uid: str) -> None:
    """Remember a bind in progress (completed by a config_report from the new namespace)."""
    await pool.execute(
        "UPDATE nodes SET pending_zone_uid = $2, pending_since = now(), state = 'ASSIGNED', updated_at = now() "
        "WHERE uid = $1", uid, zone_uid)


async def complete_bind(pool: asyncpg.Pool, uid: str, zone_uid: str) -> None:
    """The node reported from the zone's namespace: bound, validated, active."""
    await pool.execute(
        "UPDATE nodes SET zone_uid = $2, pending_zone_uid = NULL, pending_since = NULL, validated = true, "
        "state = 'ACTIVE', updated_at = now() WHERE uid = $1", uid, zone_uid)


async def clear_pending_bind(pool: asyncpg.Pool, uid: str) -> None:
    """A pending bind expired (the node never reported from the new namespace)."""
    await pool.execute(
        "UPDATE nodes SET pending_zone_uid = NULL, pending_since = NULL, "
        "state = CASE WHEN zone_uid IS NULL THEN 'REGISTERED' ELSE state END, updated_at = now() "
        "WHERE uid = $1", uid)


async def unbind(pool: asyncpg.Pool, uid: str) -> None:
    """Back to the temp namespace: unbound and not validated."""
    await pool.execute(
        "UPDATE nodes SET zone_uid = NULL, pending_zone_uid = NULL, pending_since = NULL, validated = false, "
        "state = 'REGISTERED', updated_at = now() WHERE uid = $1", uid)


async def record_liveness(
    pool: asyncpg.Pool, uid: str, *, online: bool, last_seen_at: float | None,
    heartbeat: dict[str, Any] | None,
) -> None:
    """Persist the node's online flag, last traffic time and last heartbeat fields."""
    await pool.execute(
        "UPDATE nodes SET online = $2, last_seen_at = coalesce(to_timestamp($3), last_seen_at), "
        "heartbeat = coalesce($4::jsonb, heartbeat), updated_at = now() WHERE uid = $1",
        uid, online, last_seen_at, json.dumps(heartbeat) if heartbeat is not None else None)


async def set_mqtt_password_hash(pool: asyncpg.Pool, uid: str, password_hash: str) -> bool:
    """Store a new MQTT credential hash; False when the node does not exist."""
    status = await pool.execute(
        "UPDATE nodes SET mqtt_password_hash = $2, updated_at = now() WHERE uid = $1", uid, password_hash)
    return bool(status.endswith(" 1"))


async def mqtt_credentials(pool: asyncpg.Pool) -> list[tuple[str, str, str, str | None]]:
    """(uid, hardware_id, password_hash, zone_uid) of every node that has MQTT credentials."""
    rows = await pool.fetch(
        "SELECT uid, hardware_id, mqtt_password_hash, zone_uid FROM nodes WHERE mqtt_password_hash IS NOT NULL")
    return [(r["uid"], r["hardware_id"], r["mqtt_password_hash"], r["zone_uid"]) for r in rows]
