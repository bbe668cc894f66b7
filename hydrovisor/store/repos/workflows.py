"""Zone workflows (their stages and commands) and each zone's automation state (issue 12).

A workflow row is written by its actor at every stage change; those writes are guarded (``WHERE status =
'running'``) so a terminal status is never overwritten, and at most one workflow runs per zone (a partial
unique index). The zone's automation row holds the water state workflows leave behind and the
emergency-stop latch, which refuses new workflows until an operator clears it.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import msgspec

RUNNING = "running"
TERMINAL = frozenset({"completed", "failed", "cancelled"})


class StageRecord(msgspec.Struct, kw_only=True):
    """One stage of a workflow: when it started and ended, and how (``outcome`` ok|skipped|failed|...)."""

    name: str
    started_at: float
    resumable: bool = False
    ended_at: float | None = None
    outcome: str | None = None
    reason_code: str | None = None


class CommandRef(msgspec.Struct, kw_only=True):
    """A command a workflow sent, with the terminal status it ended with (None while open)."""

    cmd_id: str
    stage: str
    role: str
    node_uid: str
    channel: str
    cmd: str
    params: dict[str, Any]
    status: str | None = None
    error_code: str | None = None


class WorkflowRecord(msgspec.Struct, kw_only=True):
    """``GET /api/v1/zones/{uid}/workflows/{id}``."""

    id: str
    zone_uid: str
    type: str
    params: dict[str, Any]
    status: str
    stage: str
    reason_code: str | None
    message: str | None
    stages: list[StageRecord]
    commands: list[CommandRef]
    cancel_requested: bool
    created_by: str
    created_at: float
    updated_at: float
    ended_at: float | None


class Automation(msgspec.Struct, frozen=True, kw_only=True):
    """A zone's automation state (defaults for a zone that never had one)."""

    zone_uid: str
    water_state: str = "unknown"
    estop_active: bool = False
    estop_reason: str | None = None
    estop_at: float | None = None
    solution_started_at: float | None = None
    correction_blocked_until: float | None = None


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """What a workflow actor writes: the whole of its mutable part."""

    stage: str
    stages: list[StageRecord]
    commands: list[CommandRef]
    status: str = RUNNING
    reason_code: str | None = None
    message: str | None = None


_COLUMNS = ("id, zone_uid, type, params, status, stage, reason_code, message, stages, commands, "
            "cancel_requested_at IS NOT NULL AS cancel_requested, created_by, "
            "date_part('epoch', created_at) AS created_at, date_part('epoch', updated_at) AS updated_at, "
            "date_part('epoch', ended_at) AS ended_at")
_AUTOMATION = ("zone_uid, water_state, estop_active, estop_reason, date_part('epoch', estop_at) AS estop_at, "
               "date_part('epoch', solution_started_at) AS solution_started_at, "
               "date_part('epoch', correction_blocked_until) AS correction_blocked_until")


def _record(row: asyncpg.Record) -> WorkflowRecord:
    data = dict(row)
    for key in ("params", "stages", "commands"):
        data[key] = json.loads(data[key])
    return msgspec.convert(data, WorkflowRecord)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def create(pool: asyncpg.Pool, *, wf_id: str, zone_uid: str, wf_type: str, params: dict[str, Any],
                 stage: str, created_by: str) -> WorkflowRecord | str:
    """Insert a running workflow; or the reason it may not start: ``workflow_already_running`` (with that
    one's id after a colon) or ``emergency_stop_active``. One statement: the latch and the index decide."""
    async with pool.acquire() as conn, conn.transaction():
        estop = await conn.fetchval("SELECT estop_active FROM zone_automation WHERE zone_uid = $1 FOR SHARE", zone_uid)
        if estop:
            return "emergency_stop_active"
        try:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"INSERT INTO zone_workflows (id, zone_uid, type, params, status, stage, created_by) "
                    f"VALUES ($1, $2, $3, $4::jsonb, 'running', $5, $6) RETURNING {_COLUMNS}",
                    wf_id, zone_uid, wf_type, _json(params), stage, created_by)
        except asyncpg.UniqueViolationError:
            running = await conn.fetchval(
                "SELECT id FROM zone_workflows WHERE zone_uid = $1 AND status = 'running'", zone_uid)
            return f"workflow_already_running:{running}"
    assert row is not None
    return _record(row)


async def save(pool: asyncpg.Pool | asyncpg.Connection, wf_id: str, progress: Progress) -> bool:
    """Write a running workflow's progress (and its terminal status, once); False when it is terminal already."""
    ended = progress.status in TERMINAL
    result: str = await pool.execute(
        "UPDATE zone_workflows SET stage = $2, stages = $3::jsonb, commands = $4::jsonb, status = $5, "
        "reason_code = $6, message = $7, updated_at = now(), ended_at = CASE WHEN $8 THEN now() END "
        "WHERE id = $1 AND status = 'running'",
        wf_id, progress.stage, _json(progress.stages), _json(progress.commands), progress.status,
        progress.reason_code, progress.message, ended)
    return result.endswith(" 1")


async def get(pool: asyncpg.Pool, zone_uid: str, wf_id: str) -> WorkflowRecord | None:
    """One workflow of the zone."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM zone_workflows WHERE id = $1 AND zone_uid = $2", wf_id,
                              zone_uid)
    return None if row is None else _record(row)


async def by_id(pool: asyncpg.Pool, wf_id: str) -> WorkflowRecord | None:
    """One workflow, any zone (its actor loads itself with this)."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM zone_workflows WHERE id = $1", wf_id)
    return None if row is None else _record(row)


async def list_for_zone(pool: asyncpg.Pool, zone_uid: str, status: str | None, limit: int = 100) -> list[WorkflowRecord]:
    """The zone's workflows, newest first."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM zone_workflows WHERE zone_uid = $1 AND ($2::text IS NULL OR status = $2) "
        "ORDER BY created_at DESC, id DESC LIMIT $3", zone_uid, status, limit)
    return [_record(r) for r in rows]


async def running_ids(pool: asyncpg.Pool, zone_uid: str) -> list[str]:
    """Ids of the zone's running workflows (at most one; a list so a broken invariant still shows)."""
    rows = await pool.fetch("SELECT id FROM zone_workflows WHERE zone_uid = $1 AND status = 'running'", zone_uid)
    return [r["id"] for r in rows]


async def request_cancel(pool: asyncpg.Pool, zone_uid: str, wf_id: str) -> WorkflowRecord | None:
    """Mark a cancel request (kept if the process dies before the actor acts on it)."""
    row = await pool.fetchrow(
        f"UPDATE zone_workflows SET cancel_requested_at = coalesce(cancel_requested_at, now()) "
        f"WHERE id = $1 AND zone_uid = $2 RETURNING {_COLUMNS}", wf_id, zone_uid)
    return None if row is None else _record(row)


async def automation(pool: asyncpg.Pool | asyncpg.Connection, zone_uid: str) -> Automation:
    """The zone's automation state."""
    row = await pool.fetchrow(f"SELECT {_AUTOMATION} FROM zone_automation WHERE zone_uid = $1", zone_uid)
    return Automation(zone_uid=zone_uid) if row is None else Automation(**dict(row))


async def set_water_state(pool: asyncpg.Pool | asyncpg.Connection, zone_uid: str, water_state: str, *,
                          solution_started: bool = False) -> None:
    """Record the water state a workflow left the zone in (``solution_started``: a new solution begins now)."""
    await pool.execute(
        "INSERT INTO zone_automation (zone_uid, water_state, solution_started_at) "
        "VALUES ($1, $2, CASE WHEN $3 THEN now() END) ON CONFLICT (zone_uid) DO UPDATE SET water_state = $2, "
        "solution_started_at = CASE WHEN $3 THEN now() ELSE zone_automation.solution_started_at END, "
        "updated_at = now()", zone_uid, water_state, solution_started)


async def set_estop(pool: asyncpg.Pool | asyncpg.Connection, zone_uid: str, reason: str) -> bool:
    """Latch the emergency stop; False when it was latched already."""
    latched: bool | None = await pool.fetchval(
        "INSERT INTO zone_automation (zone_uid, water_state, estop_active, estop_reason, estop_at) "
        "VALUES ($1, 'unknown', true, $2, now()) ON CONFLICT (zone_uid) DO UPDATE SET estop_active = true, "
        "estop_reason = $2, estop_at = now(), water_state = 'unknown', updated_at = now() "
        "WHERE NOT zone_automation.estop_active RETURNING true", zone_uid, reason)
    return bool(latched)


async def clear_estop(pool: asyncpg.Pool, zone_uid: str, by: str) -> bool:
    """An operator clears the latch; False when it was not set."""
    cleared: bool | None = await pool.fetchval(
        "UPDATE zone_automation SET estop_active = false, estop_cleared_by = $2, updated_at = now() "
        "WHERE zone_uid = $1 AND estop_active RETURNING true", zone_uid, by)
    return bool(cleared)


async def block_corrections(pool: asyncpg.Pool | asyncpg.Connection, zone_uid: str, seconds: float) -> None:
    """Corrections of the zone fail closed for ``seconds`` (doses had no effect)."""
    await pool.execute(
        "INSERT INTO zone_automation (zone_uid, correction_blocked_until) VALUES ($1, now() + make_interval(secs => $2)) "
        "ON CONFLICT (zone_uid) DO UPDATE SET correction_blocked_until = now() + make_interval(secs => $2), "
        "updated_at = now()", zone_uid, float(seconds))
