"""Commands: insert QUEUED before publishing, guarded status updates, timeline, recovery queries.

Every status change is ``UPDATE ... WHERE status = ANY(allowed predecessors)`` (PROTOCOL §6 as
data in ``hydrovisor.protocol.statuses``), so a terminal status is never overwritten and a status
never moves down, whatever the interleaving of actors, late replies and restarted incarnations.
Each report is also written to ``command_events`` in the same transaction, applied or not.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
import msgspec

from hydrovisor.protocol import TERMINAL, CommandStatus, allowed_predecessors


class CommandRecord(msgspec.Struct, frozen=True):
    """A command row."""

    cmd_id: str
    zone_uid: str | None
    node_uid: str
    channel: str
    cmd: str
    params: dict[str, Any]
    source: str
    trace_id: str | None
    status: str
    timeout_s: float
    deadline_at: float
    publish_attempts: int
    created_at: float
    sent_at: float | None
    ack_at: float | None
    terminal_at: float | None
    failed_at: float | None
    error_code: str | None
    error_message: str | None
    details: dict[str, Any] | None

    @property
    def terminal(self) -> bool:
        """True once the status is terminal."""
        return CommandStatus(self.status) in TERMINAL


class CommandEvent(msgspec.Struct, frozen=True):
    """One status report of a command (``applied`` False for late/duplicate/contradicting ones)."""

    status: str
    applied: bool
    source: str
    details: dict[str, Any]
    at: float


_COLUMNS = """cmd_id, zone_uid, node_uid, channel, cmd, params, source, trace_id, status, timeout_s,
    date_part('epoch', deadline_at) AS deadline_at, publish_attempts, date_part('epoch', created_at) AS created_at,
    date_part('epoch', sent_at) AS sent_at, date_part('epoch', ack_at) AS ack_at,
    date_part('epoch', terminal_at) AS terminal_at, date_part('epoch', failed_at) AS failed_at,
    error_code, error_message, details"""


def _record(row: asyncpg.Record) -> CommandRecord:
    data = dict(row)
    data["params"] = json.loads(data["params"])
    data["details"] = json.loads(data["details"]) if data["details"] else None
    return CommandRecord(**data)


class NewCommand(msgspec.Struct, frozen=True):
    """What the API accepted."""

    cmd_id: str
    zone_uid: str | None
    node_uid: str
    channel: str
    cmd: str
    params: dict[str, Any]
    source: str
    trace_id: str | None
    timeout_s: float


async def insert_queued(pool: asyncpg.Pool, new: NewCommand) -> tuple[CommandRecord, bool]:
    """Store a command as QUEUED; if the cmd_id exists, return the stored one and False."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO commands (cmd_id, zone_uid, node_uid, channel, cmd, params, source, trace_id, status, timeout_s, deadline_at) "
            "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, 'QUEUED', $9, now() + make_interval(secs => $9)) "
            f"ON CONFLICT (cmd_id) DO NOTHING RETURNING {_COLUMNS}",
            new.cmd_id, new.zone_uid, new.node_uid, new.channel, new.cmd, json.dumps(new.params), new.source,
            new.trace_id, new.timeout_s)
        if row is not None:
            await conn.execute("INSERT INTO command_events (cmd_id, status, applied, source) VALUES ($1, 'QUEUED', true, 'server')",
                               new.cmd_id)
            return _record(row), True
        existing = await conn.fetchrow(f"SELECT {_COLUMNS} FROM commands WHERE cmd_id = $1", new.cmd_id)
        return _record(existing), False


async def get(pool: asyncpg.Pool, cmd_id: str) -> CommandRecord | None:
    """One command."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM commands WHERE cmd_id = $1", cmd_id)
    return _record(row) if row else None


async def transition(
    pool: asyncpg.Pool, cmd_id: str, target: CommandStatus, *, source: str, error_code: str | None = None,
    error_message: str | None = None, details: dict[str, Any] | None = None,
) -> CommandRecord | None:
    """Move ``cmd_id`` to ``target`` if its current status allows it; returns the updated row, or
    ``None`` when the guard refused (the report is still recorded, as not applied)."""
    predecessors = sorted(s.value for s in allowed_predecessors(target))
    terminal = target in TERMINAL
    failed = terminal and target is not CommandStatus.DONE
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE commands SET status = $2, updated_at = now(), "
            "sent_at = CASE WHEN $2 = 'SENT' THEN now() ELSE sent_at END, "
            "ack_at = CASE WHEN $2 = 'ACK' THEN now() ELSE ack_at END, "
            "terminal_at = CASE WHEN $4 THEN now() ELSE NULL END, "
            "failed_at = CASE WHEN $5 THEN now() ELSE NULL END, "
            "error_code = CASE WHEN $4 THEN $6 ELSE error_code END, "
            "error_message = CASE WHEN $4 THEN $7 ELSE error_message END, "
            "details = coalesce($8::jsonb, details), "
            "publish_attempts = publish_attempts + CASE WHEN $2 IN ('SENT', 'SEND_FAILED') THEN 1 ELSE 0 END "
            f"WHERE cmd_id = $1 AND status = ANY($3::text[]) RETURNING {_COLUMNS}",
            cmd_id, target.value, predecessors, terminal, failed, error_code, error_message,
            json.dumps(details, default=str) if details is not None else None)
        event = {k: v for k, v in (("error_code", error_code), ("error_message", error_message),
                                   ("details", details)) if v is not None}
        if row is not None:
            # the notification is queued in the same transaction as the status it reports, so a
            # stored status is never left unannounced (DOMAIN §1: delivered, pending or dead-lettered)
            await conn.execute(
                "INSERT INTO notifications_pending (kind, payload) VALUES ('command_status', $1::jsonb)",
                json.dumps({"cmd_id": cmd_id, "status": target.value, "node_uid": row["node_uid"],
                            "zone_uid": row["zone_uid"], "cmd": row["cmd"], "error_code": error_code,
                            "source": source}))
        await conn.execute(
            "INSERT INTO command_events (cmd_id, status, applied, source, details) VALUES ($1, $2, $3, $4, $5::jsonb)",
            cmd_id, target.value, row is not None, source, json.dumps(event, default=str))
        return _record(row) if row is not None else None


async def insert_device_stub(pool: asyncpg.Pool, cmd_id: str, node_uid: str, zone_uid: str | None,
                             channel: str) -> bool:
    """A reply for a cmd_id we never stored: a stub row (source=device, cmd=unknown, ACK) so the
    terminal that follows goes through the normal guarded path. False if the row exists."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            "INSERT INTO commands (cmd_id, zone_uid, node_uid, channel, cmd, source, status, timeout_s, deadline_at, ack_at) "
            "VALUES ($1, $2, $3, $4, 'unknown', 'device', 'ACK', 30, now(), now()) ON CONFLICT (cmd_id) DO NOTHING",
            cmd_id, zone_uid, node_uid, channel)
        created = bool(status.endswith(" 1"))
        if created:
            await conn.execute("INSERT INTO command_events (cmd_id, status, applied, source, details) "
                               "VALUES ($1, 'ACK', true, 'device', '{\"stub\": true}')", cmd_id)
        return created


async def events(pool: asyncpg.Pool, cmd_id: str) -> list[CommandEvent]:
    """The command's status timeline, oldest first."""
    rows = await pool.fetch(
        "SELECT status, applied, source, details, date_part('epoch', at) AS at FROM command_events "
        "WHERE cmd_id = $1 ORDER BY id", cmd_id)  # id follows the row lock: true order
    return [CommandEvent(**{**dict(r), "details": json.loads(r["details"])}) for r in rows]


async def open_commands(pool: asyncpg.Pool) -> list[CommandRecord]:
    """Every non-terminal command (adopted by new actors at start), oldest deadline first."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM commands WHERE status IN ('QUEUED', 'SENT', 'ACK') ORDER BY deadline_at")
    return [_record(r) for r in rows]


async def list_commands(
    pool: asyncpg.Pool, *, zone_uid: str | None, node_uid: str | None, status: str | None, since: float | None,
    before_created: float | None, limit: int,
) -> list[CommandRecord]:
    """Newest first, keyset-paged by ``created_at``."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM commands WHERE ($1::text IS NULL OR zone_uid = $1) "
        "AND ($2::text IS NULL OR node_uid = $2) AND ($3::text IS NULL OR status = $3) "
        "AND ($4::timestamptz IS NULL OR created_at >= $4) AND ($5::timestamptz IS NULL OR created_at < $5) "
        "ORDER BY created_at DESC, cmd_id LIMIT $6",
        zone_uid, node_uid, status, _ts(since), _ts(before_created), limit)
    return [_record(r) for r in rows]


def _ts(value: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, tz=dt.UTC) if value is not None else None
