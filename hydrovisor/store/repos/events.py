"""The zone timeline, de-duplicated alerts and node error reports."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import msgspec


class ZoneEvent(msgspec.Struct, frozen=True):
    """One entry of a zone's timeline."""

    id: int
    zone_uid: str | None
    node_uid: str | None
    type: str
    details: dict[str, Any]
    created_at: float


class Alert(msgspec.Struct, frozen=True):
    """An alert, de-duplicated by (zone, code, dedupe key) while ACTIVE."""

    id: int
    zone_uid: str | None
    node_uid: str | None
    source: str
    code: str
    type: str
    details: dict[str, Any]
    status: str
    count: int
    first_seen_at: float
    last_seen_at: float


async def add_zone_event(
    pool: asyncpg.Pool, zone_uid: str | None, node_uid: str | None, event_type: str, details: dict[str, Any],
) -> None:
    """Append to the zone timeline."""
    await pool.execute(
        "INSERT INTO zone_events (zone_uid, node_uid, type, details) VALUES ($1, $2, $3, $4::jsonb)",
        zone_uid, node_uid, event_type, json.dumps(details, default=str))


async def list_zone_events(pool: asyncpg.Pool, zone_uid: str | None, limit: int = 200,
                           node_uid: str | None = None) -> list[ZoneEvent]:
    """Newest-last timeline of a zone (or of a node when ``node_uid`` is given)."""
    rows = await pool.fetch(
        "SELECT * FROM (SELECT id, zone_uid, node_uid, type, details, date_part('epoch', created_at) AS created_at "
        "FROM zone_events WHERE ($1::text IS NULL OR zone_uid = $1) AND ($3::text IS NULL OR node_uid = $3) "
        "ORDER BY created_at DESC, id DESC LIMIT $2) t ORDER BY created_at, id",
        zone_uid, limit, node_uid)
    return [ZoneEvent(**{**dict(r), "details": json.loads(r["details"])}) for r in rows]


async def raise_alert(
    pool: asyncpg.Pool, *, zone_uid: str | None, node_uid: str | None, source: str, code: str,
    alert_type: str, details: dict[str, Any], dedupe_key: str = "",
) -> None:
    """Open an alert, or bump the count of the ACTIVE one with the same (zone, code, key)."""
    await pool.execute(
        "INSERT INTO alerts (zone_uid, node_uid, source, code, type, details, dedupe_key) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) "
        "ON CONFLICT (coalesce(zone_uid, ''), code, dedupe_key) WHERE status = 'ACTIVE' "
        "DO UPDATE SET count = alerts.count + 1, last_seen_at = now(), details = EXCLUDED.details",
        zone_uid, node_uid, source, code, alert_type, json.dumps(details, default=str), dedupe_key)


async def resolve_alert(pool: asyncpg.Pool, *, zone_uid: str | None, code: str, dedupe_key: str = "") -> bool:
    """Resolve the ACTIVE alert with that (zone, code, key); False when none was active."""
    status = await pool.execute(
        "UPDATE alerts SET status = 'RESOLVED', resolved_at = now() "
        "WHERE status = 'ACTIVE' AND coalesce(zone_uid, '') = coalesce($1, '') AND code = $2 AND dedupe_key = $3",
        zone_uid, code, dedupe_key)
    return not status.endswith(" 0")


async def list_alerts(pool: asyncpg.Pool, status: str | None = None, zone_uid: str | None = None) -> list[Alert]:
    """Alerts, newest first."""
    rows = await pool.fetch(
        "SELECT id, zone_uid, node_uid, source, code, type, details, status, count, "
        "date_part('epoch', first_seen_at) AS first_seen_at, date_part('epoch', last_seen_at) AS last_seen_at "
        "FROM alerts WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR zone_uid = $2) "
        "ORDER BY last_seen_at DESC, id DESC LIMIT 500", status, zone_uid)
    return [Alert(**{**dict(r), "details": json.loads(r["details"])}) for r in rows]


async def add_node_error(
    pool: asyncpg.Pool, *, node_uid: str, level: str, component: str | None, error_code: str | None,
    message: str | None, details: dict[str, Any], ts: float | None,
) -> None:
    """Store an error report of a node."""
    await pool.execute(
        "INSERT INTO node_errors (node_uid, level, component, error_code, message, details, ts) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, to_timestamp($7))",
        node_uid, level, component, error_code, message, json.dumps(details, default=str), ts)
