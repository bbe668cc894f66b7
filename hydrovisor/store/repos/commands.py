"""Commands: insert QUEUED before publishing, guarded status updates, timeline, recovery queries.

Every status change is ``UPDATE ... WHERE status = ANY(allowed predecessors)`` (PROTOCOL §6 as
data in ``hydrovisor.protocol.statuses``), so a terminal status is never overwritten and a status
never moves down, whatever the interleaving of actors, late replies and restarted incarnations.
Each report is also written to ``command_events`` in the same transaction, applied or not.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from hydrovisor.protocol import TERMINAL, CommandStatus, allowed_predecessors

_PREDECESSORS = {target: sorted(s.value for s in allowed_predecessors(target)) for target in CommandStatus}


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
    return _from_dict(dict(row))


def _from_dict(data: dict[str, Any]) -> CommandRecord:
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


# One statement (one round trip, its own transaction): the row and its QUEUED event, or the
# existing row when the cmd_id is taken.
_INSERT_QUEUED = f"""
WITH inserted AS (
    INSERT INTO commands (cmd_id, zone_uid, node_uid, channel, cmd, params, source, trace_id, status, timeout_s,
        deadline_at)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, 'QUEUED', $9, now() + make_interval(secs => $9))
    ON CONFLICT (cmd_id) DO NOTHING RETURNING {_COLUMNS}
), recorded AS (
    INSERT INTO command_events (cmd_id, status, applied, source) SELECT cmd_id, 'QUEUED', true, 'server' FROM inserted
)
SELECT true AS created, * FROM inserted
UNION ALL
SELECT false AS created, {_COLUMNS} FROM commands WHERE cmd_id = $1 AND NOT EXISTS (SELECT 1 FROM inserted)"""


async def insert_queued(pool: asyncpg.Pool, new: NewCommand) -> tuple[CommandRecord, bool]:
    """Store a command as QUEUED; if the cmd_id exists, return the stored one and False."""
    row = await pool.fetchrow(
        _INSERT_QUEUED, new.cmd_id, new.zone_uid, new.node_uid, new.channel, new.cmd, json.dumps(new.params),
        new.source, new.trace_id, new.timeout_s)
    if row is None:  # the same cmd_id was being inserted concurrently: its row is committed now
        existing = await get(pool, new.cmd_id)
        if existing is None:
            raise LookupError(f"command {new.cmd_id} conflicted but is not stored")
        return existing, False
    data = dict(row)
    created: bool = data.pop("created")
    return _from_dict(data), created


async def get(pool: asyncpg.Pool, cmd_id: str) -> CommandRecord | None:
    """One command."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM commands WHERE cmd_id = $1", cmd_id)
    return _record(row) if row else None


async def rearm(pool: asyncpg.Pool, cmd_id: str) -> CommandRecord | None:
    """A resend of a SEND_FAILED command was accepted: a fresh deadline (now + its timeout), or it
    would be published and at once timed out. ``None`` if the row is no longer SEND_FAILED."""
    row = await pool.fetchrow(
        f"UPDATE commands SET deadline_at = now() + make_interval(secs => timeout_s), updated_at = now() "
        f"WHERE cmd_id = $1 AND status = 'SEND_FAILED' RETURNING {_COLUMNS}", cmd_id)
    return _record(row) if row is not None else None


class Report(msgspec.Struct, frozen=True):
    """One status report for a command: the status it asks for and what comes with it."""

    target: CommandStatus
    source: str
    error_code: str | None = None
    error_message: str | None = None
    details: dict[str, Any] | None = None


# One statement per report, so a lone report is its own transaction (one round trip): the guarded
# UPDATE; the notification, queued with the status it reports so a stored status is never left
# unannounced (DOMAIN §1: delivered, pending or dead-lettered); and the timeline entry, applied or
# not. The event's EXISTS reads ``updated``, so its id is drawn after the row lock: ids give the true order.
_TRANSITION = f"""
WITH updated AS (
    UPDATE commands SET status = $2, updated_at = now(),
        sent_at = CASE WHEN $2 = 'SENT' THEN now() ELSE sent_at END,
        ack_at = CASE WHEN $2 = 'ACK' THEN now() ELSE ack_at END,
        terminal_at = CASE WHEN $4 THEN now() ELSE NULL END,
        failed_at = CASE WHEN $5 THEN now() ELSE NULL END,
        error_code = CASE WHEN $4 THEN $6 ELSE error_code END,
        error_message = CASE WHEN $4 THEN $7 ELSE error_message END,
        details = coalesce($8::jsonb, details),
        publish_attempts = publish_attempts + CASE WHEN $2 IN ('SENT', 'SEND_FAILED') THEN 1 ELSE 0 END
    WHERE cmd_id = $1 AND status = ANY($3::text[]) RETURNING {_COLUMNS}
), notified AS (
    INSERT INTO notifications_pending (kind, payload)
    SELECT 'command_status', jsonb_build_object('cmd_id', $1::text, 'status', $2::text, 'node_uid', node_uid,
        'zone_uid', zone_uid, 'cmd', cmd, 'error_code', $6::text, 'source', $9::text) FROM updated
), recorded AS (
    INSERT INTO command_events (cmd_id, status, applied, source, details)
    SELECT $1, $2, EXISTS (SELECT 1 FROM updated), $9, $10::jsonb
)
SELECT * FROM updated"""


async def transition(
    pool: asyncpg.Pool, cmd_id: str, target: CommandStatus, *, source: str, error_code: str | None = None,
    error_message: str | None = None, details: dict[str, Any] | None = None,
) -> CommandRecord | None:
    """Move ``cmd_id`` to ``target`` if its current status allows it; returns the updated row, or
    ``None`` when the guard refused (the report is still recorded, as not applied)."""
    report = Report(target, source, error_code=error_code, error_message=error_message, details=details)
    return (await apply_reports(pool, cmd_id, [report]))[0]


async def apply_reports(pool: asyncpg.Pool, cmd_id: str, reports: Sequence[Report]) -> list[CommandRecord | None]:
    """Apply ``reports`` in order, in ONE transaction, each exactly as :func:`transition` would
    (guarded, recorded, announced); per report the updated row, or ``None`` when refused."""
    async with pool.acquire() as conn:
        if len(reports) == 1:
            return [await _apply(conn, cmd_id, reports[0])]
        async with conn.transaction():
            return [await _apply(conn, cmd_id, report) for report in reports]


async def _apply(conn: asyncpg.Connection, cmd_id: str, report: Report) -> CommandRecord | None:
    target = report.target
    terminal = target in TERMINAL
    event = {k: v for k, v in (("error_code", report.error_code), ("error_message", report.error_message),
                               ("details", report.details)) if v is not None}
    row = await conn.fetchrow(
        _TRANSITION, cmd_id, target.value, _PREDECESSORS[target], terminal,
        terminal and target is not CommandStatus.DONE, report.error_code, report.error_message,
        json.dumps(report.details, default=str) if report.details is not None else None, report.source,
        json.dumps(event, default=str))
    return _record(row) if row is not None else None


async def apply_orphan_reply(pool: asyncpg.Pool, cmd_id: str, report: Report, *, node_uid: str,
                             zone_uid: str | None, channel: str) -> tuple[bool, CommandRecord | None]:
    """A device's reply for a command no actor tracks, in ONE transaction: first, for a cmd_id we never
    stored, a stub row (source=device, cmd=unknown, ACK: DOMAIN §1), then ``report`` exactly as
    :func:`apply_reports` would (the stub's own ACK aside). Returns whether a stub was created, and
    the row as the report left it (``None``: not applied, or the stub's ACK)."""
    async with pool.acquire() as conn, conn.transaction():
        status = await conn.execute(
            "INSERT INTO commands (cmd_id, zone_uid, node_uid, channel, cmd, source, status, timeout_s, deadline_at, ack_at) "
            "VALUES ($1, $2, $3, $4, 'unknown', 'device', 'ACK', 30, now(), now()) ON CONFLICT (cmd_id) DO NOTHING",
            cmd_id, zone_uid, node_uid, channel)
        created = bool(status.endswith(" 1"))
        if created:
            await conn.execute("INSERT INTO command_events (cmd_id, status, applied, source, details) "
                               "VALUES ($1, 'ACK', true, 'device', '{\"stub\": true}')", cmd_id)
            if report.target is CommandStatus.ACK:
                return True, None
        return created, await _apply(conn, cmd_id, report)


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
