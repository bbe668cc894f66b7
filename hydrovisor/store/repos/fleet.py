"""Greenhouses and zones."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import msgspec


class Greenhouse(msgspec.Struct, frozen=True):
    """A greenhouse (``gh`` in topics)."""

    uid: str
    name: str
    created_at: float


class Zone(msgspec.Struct, frozen=True):
    """A zone (``zone`` in topics) of one greenhouse."""

    uid: str
    greenhouse_uid: str
    name: str
    settings: dict[str, Any]
    created_at: float


async def create_greenhouse(pool: asyncpg.Pool, uid: str, name: str) -> Greenhouse | None:
    """Insert; ``None`` when the uid exists already."""
    row = await pool.fetchrow(
        "INSERT INTO greenhouses (uid, name) VALUES ($1, $2) ON CONFLICT (uid) DO NOTHING "
        "RETURNING uid, name, date_part('epoch', created_at) AS created_at", uid, name)
    return Greenhouse(**dict(row)) if row else None


async def list_greenhouses(pool: asyncpg.Pool) -> list[Greenhouse]:
    """All greenhouses by uid."""
    rows = await pool.fetch(
        "SELECT uid, name, date_part('epoch', created_at) AS created_at FROM greenhouses ORDER BY uid")
    return [Greenhouse(**dict(r)) for r in rows]


async def greenhouse_exists(pool: asyncpg.Pool, uid: str) -> bool:
    """True when a greenhouse with that uid exists."""
    return bool(await pool.fetchval("SELECT EXISTS (SELECT 1 FROM greenhouses WHERE uid = $1)", uid))


# a zone's settings are the newest version of its settings document (zone_settings_versions)
_ZONE_COLUMNS = ("z.uid, z.greenhouse_uid, z.name, coalesce((SELECT v.document FROM zone_settings_versions v "
                 "WHERE v.zone_uid = z.uid ORDER BY v.version DESC LIMIT 1), '{}') AS settings, "
                 "date_part('epoch', z.created_at) AS created_at")


def _zone(row: asyncpg.Record) -> Zone:
    data = dict(row)
    data["settings"] = json.loads(data["settings"])
    return Zone(**data)


async def create_zone(
    pool: asyncpg.Pool, uid: str, greenhouse_uid: str, name: str, settings: dict[str, Any], *,
    created_by: str = "system",
) -> Zone | None:
    """Insert the zone with ``settings`` as version 1 of its settings (one statement); ``None`` when
    the uid exists already."""
    row = await pool.fetchrow(
        "WITH z AS (INSERT INTO zones (uid, greenhouse_uid, name) VALUES ($1, $2, $3) ON CONFLICT (uid) DO NOTHING "
        "RETURNING uid, greenhouse_uid, name, created_at), "
        "v AS (INSERT INTO zone_settings_versions (zone_uid, version, document, created_at, created_by) "
        "SELECT uid, 1, $4::jsonb, created_at, $5 FROM z) "
        "SELECT z.uid, z.greenhouse_uid, z.name, $4::jsonb AS settings, date_part('epoch', z.created_at) AS created_at "
        "FROM z", uid, greenhouse_uid, name, json.dumps(settings), created_by)
    return _zone(row) if row else None


async def list_zones(pool: asyncpg.Pool, greenhouse_uid: str | None = None) -> list[Zone]:
    """Zones, optionally of one greenhouse, by uid."""
    rows = await pool.fetch(
        f"SELECT {_ZONE_COLUMNS} FROM zones z WHERE $1::text IS NULL OR z.greenhouse_uid = $1 ORDER BY z.uid",
        greenhouse_uid)
    return [_zone(r) for r in rows]


async def get_zone(pool: asyncpg.Pool, uid: str) -> Zone | None:
    """One zone or ``None``."""
    row = await pool.fetchrow(f"SELECT {_ZONE_COLUMNS} FROM zones z WHERE z.uid = $1", uid)
    return _zone(row) if row else None
