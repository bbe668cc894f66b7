"""The zone timeline, de-duplicated alerts and node error reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec


class ZoneEvent(msgspec.Struct, frozen=True):
    """One entry of a zone's timeline (DOMAIN §4: command, decision, safety, workflow, alert events)."""

    id: int
    zone_uid: str | None
    node_uid: str | None
    type: str
    details: dict[str, Any]
    created_at: float
    cmd_id: str | None
    correlation_id: str | None
    decision: str | None
    reason_code: str | None


class Alert(msgspec.Struct, frozen=True):
    """An alert, de-duplicated by (zone, code, dedupe key) while ACTIVE."""

    id: int
    zone_uid: str | None
    node_uid: str | None
    source: str
    code: str
    type: str
    severity: str
    details: dict[str, Any]
    status: str
    dedupe_key: str
    count: int
    first_seen_at: float
    last_seen_at: float
    resolved_at: float | None
    resolved_by: str | None
    resolved_reason: str | None


class Raised(msgspec.Struct, frozen=True):
    """What :func:`raise_alert` did: ``opened`` a new ACTIVE alert, or counted one more occurrence."""

    id: int
    count: int
    opened: bool


ALERT_SOURCES = ("biz", "infra")
ALERT_STATUSES = ("ACTIVE", "RESOLVED")
SEVERITIES = ("info", "warning", "critical")

_EVENT_COLUMNS = ("id, zone_uid, node_uid, type, details, date_part('epoch', created_at) AS created_at, cmd_id, "
                  "correlation_id, decision, reason_code")
_ALERT_COLUMNS = ("id, zone_uid, node_uid, source, code, type, severity, details, status, dedupe_key, count, "
                  "date_part('epoch', first_seen_at) AS first_seen_at, date_part('epoch', last_seen_at) AS last_seen_at, "
                  "date_part('epoch', resolved_at) AS resolved_at, resolved_by, resolved_reason")
# the webhook payload of an alert change (the durable notification path, kind "alert")
_ALERT_NOTE = ("jsonb_build_object('id', id, 'zone_uid', zone_uid, 'node_uid', node_uid, 'source', source, "
               "'code', code, 'severity', severity, 'status', status, 'count', count, 'dedupe_key', dedupe_key, "
               "'resolved_by', resolved_by, 'resolved_reason', resolved_reason)")


def _event(row: asyncpg.Record) -> ZoneEvent:
    return ZoneEvent(**{**dict(row), "details": json.loads(row["details"])})


def alert_from_row(row: asyncpg.Record) -> Alert:
    """An :class:`Alert` from a row selected with the alert columns."""
    return Alert(**{**dict(row), "details": json.loads(row["details"])})


async def add_zone_event(
    pool: asyncpg.Pool | asyncpg.Connection, zone_uid: str | None, node_uid: str | None, event_type: str,
    details: dict[str, Any], *, cmd_id: str | None = None, correlation_id: str | None = None,
    decision: str | None = None, reason_code: str | None = None,
) -> int:
    """Append to the zone timeline; returns the event's id."""
    value: int = await pool.fetchval(
        "INSERT INTO zone_events (zone_uid, node_uid, type, details, cmd_id, correlation_id, decision, reason_code) "
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8) RETURNING id",
        zone_uid, node_uid, event_type, json.dumps(details, default=str), cmd_id, correlation_id, decision,
        reason_code)
    return value


async def list_zone_events(pool: asyncpg.Pool, zone_uid: str | None, limit: int = 200,
                           node_uid: str | None = None) -> list[ZoneEvent]:
    """Newest-last timeline of a zone (or of a node when ``node_uid`` is given): its newest ``limit`` entries."""
    rows = await pool.fetch(
        f"SELECT * FROM (SELECT {_EVENT_COLUMNS} "
        "FROM zone_events WHERE ($1::text IS NULL OR zone_uid = $1) AND ($3::text IS NULL OR node_uid = $3) "
        "ORDER BY created_at DESC, id DESC LIMIT $2) t ORDER BY created_at, id",
        zone_uid, limit, node_uid)
    return [_event(r) for r in rows]


async def zone_events_after(pool: asyncpg.Pool, zone_uid: str, after_id: int, limit: int) -> list[ZoneEvent] | None:
    """The first ``limit`` entries of a zone's timeline after its event ``after_id`` in (created_at, id)
    order (``after_id`` 0: from the beginning); ``None`` when ``after_id`` is no event of that zone."""
    if after_id == 0:
        rows = await pool.fetch(f"SELECT {_EVENT_COLUMNS} FROM zone_events WHERE zone_uid = $1 "
                                "ORDER BY created_at, id LIMIT $2", zone_uid, limit)
        return [_event(r) for r in rows]
    async with pool.acquire() as conn:
        anchor = await conn.fetchrow("SELECT created_at, id FROM zone_events WHERE id = $1 AND zone_uid = $2",
                                     after_id, zone_uid)
        if anchor is None:
            return None
        rows = await conn.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM zone_events WHERE zone_uid = $1 AND (created_at, id) > ($2, $3) "
            "ORDER BY created_at, id LIMIT $4", zone_uid, anchor["created_at"], anchor["id"], limit)
    return [_event(r) for r in rows]


async def raise_alert(
    pool: asyncpg.Pool | asyncpg.Connection, *, zone_uid: str | None, node_uid: str | None, source: str, code: str,
    alert_type: str, details: dict[str, Any], dedupe_key: str = "", severity: str = "warning",
) -> Raised:
    """Open an alert, or bump the count of the ACTIVE one with the same (zone, code, key).

    One statement: an opened alert is announced on the durable notification path (kind ``alert``)
    in the same transaction; a repeat only counts (and takes the newest details and severity).
    """
    row = await pool.fetchrow(
        "WITH raised AS (INSERT INTO alerts (zone_uid, node_uid, source, code, type, details, dedupe_key, severity) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) "
        "ON CONFLICT (coalesce(zone_uid, ''), code, dedupe_key) WHERE status = 'ACTIVE' "
        "DO UPDATE SET count = alerts.count + 1, last_seen_at = now(), details = EXCLUDED.details, "
        "severity = EXCLUDED.severity "
        "RETURNING *, (xmax = 0) AS opened), "
        f"noted AS (INSERT INTO notifications_pending (kind, payload) SELECT 'alert', {_ALERT_NOTE} "
        "FROM raised WHERE opened) "
        "SELECT id, count, opened FROM raised",
        zone_uid, node_uid, source, code, alert_type, json.dumps(details, default=str), dedupe_key, severity)
    return Raised(id=row["id"], count=row["count"], opened=row["opened"])


def _resolve_sql(where: str, first: int) -> str:
    """Resolve the ACTIVE alerts matching ``where`` (its parameters come first; who and why are
    ``$first`` and ``$first+1``), announcing each on the notification path in the same statement."""
    return (f"WITH resolved AS (UPDATE alerts SET status = 'RESOLVED', resolved_at = now(), "
            f"resolved_by = ${first}, resolved_reason = ${first + 1} WHERE status = 'ACTIVE' AND {where} "
            f"RETURNING *), noted AS (INSERT INTO notifications_pending (kind, payload) "
            f"SELECT 'alert', {_ALERT_NOTE} FROM resolved) "
            f"SELECT {_ALERT_COLUMNS} FROM resolved ORDER BY id")


async def resolve_alert(pool: asyncpg.Pool, *, zone_uid: str | None, code: str, dedupe_key: str = "",
                        by: str = "system", reason: str | None = None) -> bool:
    """Resolve the ACTIVE alert with that (zone, code, key); False when none was active."""
    rows = await pool.fetch(
        _resolve_sql("coalesce(zone_uid, '') = coalesce($1, '') AND code = $2 AND dedupe_key = $3", 4),
        zone_uid, code, dedupe_key, by, reason)
    return bool(rows)


async def resolve_alert_by_id(pool: asyncpg.Pool, alert_id: int, *, by: str, reason: str) -> Alert | None:
    """An operator resolves one ACTIVE alert (who and why are kept; the zone's timeline gets an
    ``ALERT_RESOLVED`` entry in the same transaction); ``None`` when it is not ACTIVE (or absent)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(_resolve_sql("id = $1", 2), alert_id, by, reason)
        if row is None:
            return None
        alert = alert_from_row(row)
        await add_zone_event(conn, alert.zone_uid, alert.node_uid, "ALERT_RESOLVED",
                             {"alert_id": alert.id, "code": alert.code, "by": by, "reason": reason},
                             reason_code=alert.code)
        return alert


async def resolve_zone_alerts(conn: asyncpg.Connection, zone_uid: str, codes: Sequence[str], *, by: str,
                              reason: str) -> list[Alert]:
    """Resolve every ACTIVE alert of the zone with one of ``codes`` (inside the caller's transaction)."""
    rows = await conn.fetch(_resolve_sql("zone_uid = $1 AND code = ANY($2::text[])", 3),
                            zone_uid, list(codes), by, reason)
    return [alert_from_row(r) for r in rows]


async def get_alert(pool: asyncpg.Pool, alert_id: int) -> Alert | None:
    """One alert or ``None``."""
    row = await pool.fetchrow(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = $1", alert_id)
    return alert_from_row(row) if row else None


async def list_alerts(pool: asyncpg.Pool, status: str | None = None, zone_uid: str | None = None, *,
                      source: str | None = None, code: str | None = None, limit: int = 500) -> list[Alert]:
    """Alerts, newest first (by last seen)."""
    rows = await pool.fetch(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE ($1::text IS NULL OR status = $1) "
        "AND ($2::text IS NULL OR zone_uid = $2) AND ($3::text IS NULL OR source = $3) "
        "AND ($4::text IS NULL OR code = $4) "
        "ORDER BY last_seen_at DESC, id DESC LIMIT $5", status, zone_uid, source, code, limit)
    return [alert_from_row(r) for r in rows]


async def add_node_error(
    pool: asyncpg.Pool, *, node_uid: str, level: str, component: str | None, error_code: str | None,
    message: str | None, details: dict[str, Any], ts: float | None,
) -> None:
    """Store an error report of a node."""
    await pool.execute(
        "INSERT INTO node_errors (node_uid, level, component, error_code, message, details, ts) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, to_timestamp($7))",
        node_uid, level, component, error_code, message, json.dumps(details, default=str), ts)
