"""A zone's versioned settings, its deletion, the channels its settings resolve against, and the
audited safety reset. (The zone rows themselves: :mod:`hydrovisor.store.repos.fleet`; its timeline
and alerts: :mod:`hydrovisor.store.repos.events`.)"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from hydrovisor.store.repos import events
from hydrovisor.store.repos.events import Alert


class SettingsVersion(msgspec.Struct, frozen=True):
    """One stored version of a zone's settings document (the newest is in force)."""

    zone_uid: str
    version: int
    document: dict[str, Any]
    created_at: float
    created_by: str


class SafetyReset(msgspec.Struct, frozen=True):
    """An audited "reset safety lock": who, why, and the alerts it resolved."""

    id: int
    zone_uid: str
    by: str
    reason: str
    alert_ids: list[int]
    at: float
    resolved: list[Alert]


class Deleted(enum.Enum):
    """Outcome of :func:`delete_zone`."""

    DELETED = "deleted"
    NOT_FOUND = "not_found"
    HAS_NODES = "has_nodes"


_VERSION_COLUMNS = "zone_uid, version, document, date_part('epoch', created_at) AS created_at, created_by"


def _version(row: asyncpg.Record) -> SettingsVersion:
    return SettingsVersion(**{**dict(row), "document": json.loads(row["document"])})


async def get_settings(pool: asyncpg.Pool, zone_uid: str) -> SettingsVersion | None:
    """The settings in force (the newest version); ``None`` for an unknown zone."""
    row = await pool.fetchrow(f"SELECT {_VERSION_COLUMNS} FROM zone_settings_versions WHERE zone_uid = $1 "
                              "ORDER BY version DESC LIMIT 1", zone_uid)
    return _version(row) if row else None


async def put_settings(pool: asyncpg.Pool, zone_uid: str, expected_version: int, document: dict[str, Any],
                       created_by: str) -> SettingsVersion | None:
    """Store ``document`` as version ``expected_version + 1`` if ``expected_version`` is the newest
    version now; ``None`` otherwise (someone else changed the settings first, or no such zone).

    Optimistic: no lock is held; of two writers editing the same version the primary key lets
    exactly one insert the next version.
    """
    row = await pool.fetchrow(
        "INSERT INTO zone_settings_versions (zone_uid, version, document, created_by) "
        "SELECT $1, $2 + 1, $3::jsonb, $4 "
        "WHERE (SELECT max(version) FROM zone_settings_versions WHERE zone_uid = $1) = $2 "
        f"ON CONFLICT (zone_uid, version) DO NOTHING RETURNING {_VERSION_COLUMNS}",
        zone_uid, expected_version, json.dumps(document), created_by)
    return _version(row) if row else None


async def settings_history(pool: asyncpg.Pool, zone_uid: str, *, limit: int = 100,
                           before: int | None = None) -> list[SettingsVersion]:
    """Stored versions, newest first (``before``: only versions older than that one, for paging)."""
    rows = await pool.fetch(
        f"SELECT {_VERSION_COLUMNS} FROM zone_settings_versions WHERE zone_uid = $1 "
        "AND ($2::int IS NULL OR version < $2) ORDER BY version DESC LIMIT $3", zone_uid, before, limit)
    return [_version(r) for r in rows]


async def zone_channels(pool: asyncpg.Pool, zone_uid: str) -> list[tuple[str, str]]:
    """``(node_uid, channel)`` of every channel of the nodes bound to the zone, ordered; the
    candidates for roles the settings leave to be filled by channel name."""
    rows = await pool.fetch(
        "SELECT c.node_uid, c.name FROM node_channels c JOIN nodes n ON n.uid = c.node_uid "
        "WHERE n.zone_uid = $1 ORDER BY c.node_uid, c.name", zone_uid)
    return [(r["node_uid"], r["name"]) for r in rows]


async def delete_zone(pool: asyncpg.Pool, zone_uid: str) -> Deleted:
    """Delete a zone with no node bound to it nor binding to it; its settings versions go with it,
    its timeline, alerts, commands and telemetry stay (they name the zone by uid only)."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            # a concurrent bind/preregister of a node to this zone waits on (or is refused by) this lock
            exists = await conn.fetchval("SELECT true FROM zones WHERE uid = $1 FOR UPDATE", zone_uid)
            if not exists:
                return Deleted.NOT_FOUND
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM nodes WHERE zone_uid = $1 OR pending_zone_uid = $1)",
                                   zone_uid):
                return Deleted.HAS_NODES
            await conn.execute("DELETE FROM zones WHERE uid = $1", zone_uid)
    except asyncpg.ForeignKeyViolationError:  # a node was bound in between
        return Deleted.HAS_NODES
    return Deleted.DELETED


async def reset_safety(pool: asyncpg.Pool, zone_uid: str, codes: Sequence[str], *, by: str,
                       reason: str) -> SafetyReset:
    """"Reset safety lock" (DOMAIN §4): resolve the zone's ACTIVE alerts with one of ``codes``,
    record who and why (``safety_resets``) and add a ``SAFETY_RESET`` entry to the zone's
    timeline: one transaction. A reset with nothing to resolve is recorded too."""
    async with pool.acquire() as conn, conn.transaction():
        resolved = await events.resolve_zone_alerts(conn, zone_uid, codes, by=by, reason=reason)
        ids = [a.id for a in resolved]
        row = await conn.fetchrow(
            "INSERT INTO safety_resets (zone_uid, by, reason, alert_ids) VALUES ($1, $2, $3, $4) "
            "RETURNING id, zone_uid, by, reason, alert_ids, date_part('epoch', at) AS at",
            zone_uid, by, reason, ids)
        await events.add_zone_event(
            conn, zone_uid, None, "SAFETY_RESET",
            {"reset_id": row["id"], "by": by, "reason": reason, "alert_ids": ids,
             "codes": sorted({a.code for a in resolved})},
            decision="reset", reason_code="operator_safety_reset")
    return SafetyReset(**{**dict(row), "alert_ids": list(row["alert_ids"]), "resolved": resolved})


async def list_safety_resets(pool: asyncpg.Pool, zone_uid: str, limit: int = 100) -> list[SafetyReset]:
    """The zone's safety resets, newest first (without the resolved alerts' rows)."""
    rows = await pool.fetch(
        "SELECT id, zone_uid, by, reason, alert_ids, date_part('epoch', at) AS at FROM safety_resets "
        "WHERE zone_uid = $1 ORDER BY at DESC, id DESC LIMIT $2", zone_uid, limit)
    return [SafetyReset(**{**dict(r), "alert_ids": list(r["alert_ids"]), "resolved": []}) for r in rows]
