"""What a zone actor starts from, read from PostgreSQL in one round trip."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from hydrovisor.zones.settings import FieldError, ZoneSettings, parse_settings


class ZoneChannel(msgspec.Struct, frozen=True):
    """A channel of a node bound to the zone (roles are resolved from these)."""

    node_uid: str
    name: str
    type: str
    actuator_type: str | None
    relay_type: str | None


class ZoneSnapshot(msgspec.Struct, frozen=True):
    """A zone's stored settings (latest version) and the channels of its bound nodes.

    ``settings_errors`` is set when the stored document no longer validates (a newer release
    tightened a rule): the zone then runs on the defaults and says so, instead of not running.
    """

    uid: str
    version: int
    settings: ZoneSettings
    channels: tuple[ZoneChannel, ...]
    nodes_online: dict[str, bool]
    settings_errors: tuple[FieldError, ...] = ()


async def load_zone(pool: asyncpg.Pool, uid: str) -> ZoneSnapshot | None:
    """The zone's snapshot, or None when the zone does not exist (any more)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT z.uid, coalesce(v.version, 0) AS version, coalesce(v.document, '{}'::jsonb) AS document "
            "FROM zones z LEFT JOIN LATERAL (SELECT version, document FROM zone_settings_versions "
            "  WHERE zone_uid = z.uid ORDER BY version DESC LIMIT 1) v ON true WHERE z.uid = $1", uid)
        if row is None:
            return None
        channels = await conn.fetch(
            "SELECT c.node_uid, c.name, c.type, c.actuator_type, c.relay_type FROM node_channels c "
            "JOIN nodes n ON n.uid = c.node_uid WHERE n.zone_uid = $1 ORDER BY c.node_uid, c.name", uid)
        online = await conn.fetch("SELECT uid, online FROM nodes WHERE zone_uid = $1", uid)
    document: Any = row["document"]
    parsed = parse_settings(document if isinstance(document, str | bytes) else msgspec.json.encode(document))
    settings, errors = (parsed, ()) if isinstance(parsed, ZoneSettings) else (ZoneSettings(), tuple(parsed))
    return ZoneSnapshot(uid=uid, version=int(row["version"]), settings=settings, settings_errors=errors,
                        channels=tuple(ZoneChannel(**dict(c)) for c in channels),
                        nodes_online={r["uid"]: bool(r["online"]) for r in online})
