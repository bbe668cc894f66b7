"""Scheduled tasks (issue 13, DOMAIN §5): creation with idempotency, the dispatcher's claim and finish,
expiry, restart recovery, retries, each task's timeline and the scheduler's per-zone cursors.

The rules come from :mod:`hydrovisor.tasks.contract`; this module makes them hold under concurrency:

- a correlation id names one task while its key lives (``task_idempotency_keys``: 24 h after receipt, or
  until the task expires when that is later). Two requests with one id race on the key's primary key
  (``INSERT ... ON CONFLICT``), never on a check-then-insert: exactly one creates the task;
- every status change is one guarded ``UPDATE ... WHERE status IN (predecessors)``, so a terminal status
  never changes and two dispatchers never claim one task;
- the timeline (``task_events``, plus an entry in the zone timeline) is written after the task commits,
  best effort: a failing event write is logged and never fails, blocks or duplicates the task.

Times are timezone-aware ``datetime`` in UTC. Functions that take ``now`` use it for every rule
(due, expired, lapsed key), so a dispatcher can run on an injected clock; where ``now`` is optional the
database clock stamps the row.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from typing import Any, TypeAlias

import asyncpg
import msgspec

from hydrovisor.store.repos.events import add_zone_event
from hydrovisor.tasks.contract import (
    IDEMPOTENCY_WINDOW,
    OUTCOME_DECISIONS,
    PREDECESSORS,
    REASON_RECEIVED_AFTER_DUE,
    REASON_RECEIVED_AFTER_EXPIRY,
    Decision,
    TaskRequest,
    TaskStatus,
    TaskType,
    check_request,
    fingerprint,
    initial_status,
    next_retry,
    retry_correlation_id,
)

log = logging.getLogger(__name__)

Pool: TypeAlias = asyncpg.Pool | asyncpg.Connection  # either runs one statement

REASON_EXPIRED_BEFORE_DISPATCH = "task_expired_before_dispatch"
REASON_RECOVERED = "task_recovered_after_restart"
MESSAGES = {
    REASON_RECEIVED_AFTER_EXPIRY: "received at or after its expires_at: stored expired, never executed",
    REASON_RECEIVED_AFTER_DUE: "received after its due_at: stored rejected, never executed",
    REASON_EXPIRED_BEFORE_DISPATCH: "its expires_at passed before it was dispatched: never executed",
    REASON_RECOVERED: "found unfinished after a restart (or a change of scheduler leader) past its expires_at: not "
                      "resumed; whether its command acted is not known here, check the zone",
}
"""The message stored with each terminal the store itself decides (the executor words its own outcomes)."""


class TaskRecord(msgspec.Struct, kw_only=True):
    """A stored task, as ``GET /api/v1/tasks/{id}`` shows it (times RFC 3339 in UTC)."""

    id: str
    zone_uid: str
    task_type: TaskType
    payload: dict[str, Any]
    scheduled_for: dt.datetime | None
    due_at: dt.datetime
    expires_at: dt.datetime
    correlation_id: str
    status: TaskStatus
    decision: Decision | None
    reason_code: str | None
    error_code: str | None
    message: str | None
    action_required: bool
    command_submitted: bool
    command_effect_confirmed: bool
    attempt: int
    parent_correlation_id: str | None
    workflow_id: str | None
    cmd_id: str | None
    created_by: str
    accepted_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    next_attempt_at: dt.datetime | None


class TaskEvent(msgspec.Struct, kw_only=True):
    """One entry of a task's timeline: ``type`` is the status it moved to, or ``dispatched`` /
    ``retry_scheduled``; ``status`` the task's status right after."""

    id: int
    task_id: str
    type: str
    status: str
    details: dict[str, Any]
    at: dt.datetime


class TaskDetail(TaskRecord, kw_only=True):
    """A task with its timeline, oldest first."""

    timeline: list[TaskEvent]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How a running task ended (:func:`finish`). ``command_effect_confirmed`` means the command reached
    DONE; it needs ``command_submitted`` and ``completed``. "Nothing to do" is ``completed`` + ``skip``."""

    status: TaskStatus
    decision: Decision
    reason_code: str | None = None
    error_code: str | None = None
    action_required: bool = False
    command_submitted: bool = False
    command_effect_confirmed: bool = False
    workflow_id: str | None = None
    cmd_id: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        allowed = OUTCOME_DECISIONS.get(self.status)
        if allowed is None:
            raise ValueError(f"a task finishes completed or failed, not {self.status}")
        if self.decision not in allowed:
            raise ValueError(f"decision {self.decision} does not go with status {self.status}")
        if self.command_effect_confirmed and not (self.command_submitted and self.status == TaskStatus.COMPLETED):
            raise ValueError("command_effect_confirmed needs command_submitted and status completed")


class IdempotencyMismatch(Exception):
    """The correlation id names a task with another fingerprint (HTTP 409 ``idempotency_payload_mismatch``)."""

    def __init__(self, correlation_id: str, task_id: str) -> None:
        super().__init__(f"correlation_id {correlation_id} names task {task_id}, which was requested with "
                         "other values")
        self.correlation_id = correlation_id
        self.task_id = task_id


_COLUMNS = ("id, zone_uid, task_type, payload, scheduled_for, due_at, expires_at, correlation_id, status, decision, "
            "reason_code, error_code, action_required, command_submitted, command_effect_confirmed, attempt, "
            "parent_correlation_id, workflow_id, cmd_id, created_by, accepted_at, started_at, finished_at, "
            "next_attempt_at, message")
_T_COLUMNS = ", ".join(f"t.{c.strip()}" for c in _COLUMNS.split(","))


def _record(row: asyncpg.Record) -> TaskRecord:
    return msgspec.convert({**dict(row), "payload": json.loads(row["payload"])}, TaskRecord)


def _from(status: TaskStatus) -> list[str]:
    """The statuses a guarded update may move a task to ``status`` from (the contract's rule)."""
    return sorted(PREDECESSORS[status])


def new_task_id() -> str:
    """``tk-`` and 20 hex digits (80 random bits)."""
    return f"tk-{uuid.uuid4().hex[:20]}"


# --- creation --------------------------------------------------------------------------------------

async def enqueue(pool: asyncpg.Pool, request: TaskRequest, *, now: dt.datetime,
                  created_by: str = "scheduler") -> tuple[TaskRecord, bool]:
    """Store a task unless its correlation id already names one: ``(task, True)`` when created,
    ``(the existing task, False)`` for the same fingerprint; :class:`IdempotencyMismatch` for another.

    The request is checked against the contract (``ContractError``). Received at or after ``expires_at``
    it is stored ``expired``, after ``due_at`` ``rejected`` (never executed). ``now`` is the receipt time:
    it decides those and whether an old key has lapsed. Race-free: concurrent calls with one correlation
    id create one task.
    """
    request = check_request(request)
    status, reason = initial_status(request, now)
    return await _create(pool, request, status=status, reason_code=reason, next_attempt_at=None, now=now,
                         created_by=created_by)


async def _create(pool: asyncpg.Pool, request: TaskRequest, *, status: TaskStatus, reason_code: str | None,
                  next_attempt_at: dt.datetime | None, now: dt.datetime, created_by: str) -> tuple[TaskRecord, bool]:
    digest = fingerprint(request)
    task_id = new_task_id()
    terminal = status != TaskStatus.ACCEPTED
    async with pool.acquire() as conn, conn.transaction():
        # The key first: a concurrent request with this id waits here for this transaction, then finds the key.
        # A lapsed key is taken over (the old task keeps its row); a live one is left alone (WHERE false).
        owned = await conn.fetchval(
            "INSERT INTO task_idempotency_keys (correlation_id, fingerprint, task_id, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4::timestamptz, greatest($4::timestamptz + $5::interval, $6::timestamptz)) "
            "ON CONFLICT (correlation_id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
            "task_id = EXCLUDED.task_id, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at "
            "WHERE task_idempotency_keys.expires_at <= EXCLUDED.created_at RETURNING task_id",
            request.correlation_id, digest, task_id, now, IDEMPOTENCY_WINDOW, request.expires_at)
        if owned is None:
            key = await conn.fetchrow(
                "SELECT fingerprint, task_id FROM task_idempotency_keys WHERE correlation_id = $1",
                request.correlation_id)
            assert key is not None  # the conflict that kept us from inserting is this committed row
            if key["fingerprint"] != digest:
                raise IdempotencyMismatch(request.correlation_id, key["task_id"])
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM tasks WHERE id = $1", key["task_id"])
            assert row is not None  # the key's foreign key
            return _record(row), False
        row = await conn.fetchrow(
            f"INSERT INTO tasks (id, zone_uid, task_type, payload, scheduled_for, due_at, expires_at, correlation_id, "
            "fingerprint, status, decision, reason_code, attempt, parent_correlation_id, created_by, accepted_at, "
            "finished_at, next_attempt_at, message) "
            "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
            f"CASE WHEN $17::boolean THEN $16::timestamptz END, $18, $19) RETURNING {_COLUMNS}",
            task_id, request.zone_uid, str(request.task_type), msgspec.json.encode(request.payload).decode(),
            request.scheduled_for, request.due_at, request.expires_at, request.correlation_id, digest, str(status),
            str(Decision.FAIL) if terminal else None, reason_code, request.attempt, request.parent_correlation_id,
            created_by, now, terminal, next_attempt_at, MESSAGES.get(reason_code or ""))
    task = _record(row)
    await _event(pool, task, str(status), {"created_by": created_by, "attempt": task.attempt})
    return task, True


async def create_retry(pool: asyncpg.Pool, parent: TaskRecord, *, now: dt.datetime) -> tuple[TaskRecord, bool] | None:
    """The retry of a ``failed`` task: a new ``accepted`` task with correlation id ``<root>:retry<N>``,
    ``parent_correlation_id`` = the root's, ``attempt`` + 1, due when its backoff has passed
    (``next_attempt_at``). None when no retry is allowed (3 attempts made, or the backoff reaches
    ``expires_at``). Idempotent by the retry's correlation id: ``(task, created)`` as :func:`enqueue`.
    """
    if parent.status != TaskStatus.FAILED:
        raise ValueError(f"only a failed task is retried; task {parent.id} is {parent.status}")
    at = next_retry(parent, now)
    if at is None:
        return None
    root = parent.parent_correlation_id or parent.correlation_id
    request = check_request(TaskRequest(
        zone_uid=parent.zone_uid, task_type=parent.task_type, payload=parent.payload, due_at=parent.due_at,
        expires_at=parent.expires_at, scheduled_for=parent.scheduled_for,
        correlation_id=retry_correlation_id(root, parent.attempt), parent_correlation_id=root,
        attempt=parent.attempt + 1))
    # a retry runs after its due time by design: it is not "received after due_at", hence accepted
    retry, created = await _create(pool, request, status=TaskStatus.ACCEPTED, reason_code=None,
                                   next_attempt_at=at, now=now, created_by="retry")
    if created:
        await _event(pool, parent, "retry_scheduled", {"retry_task_id": retry.id,
                                                       "retry_correlation_id": retry.correlation_id,
                                                       "next_attempt_at": at.isoformat()})
    return retry, created


# --- reading -----------------------------------------------------------------------------------------

async def get(pool: Pool, task_id: str) -> TaskRecord | None:
    """One task."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM tasks WHERE id = $1", task_id)
    return None if row is None else _record(row)


async def timeline(pool: Pool, task_id: str) -> list[TaskEvent]:
    """The task's events, oldest first."""
    rows = await pool.fetch("SELECT id, task_id, type, status, details, at FROM task_events WHERE task_id = $1 "
                            "ORDER BY at, id", task_id)
    return [msgspec.convert({**dict(r), "details": json.loads(r["details"])}, TaskEvent) for r in rows]


async def detail(pool: asyncpg.Pool, task_id: str) -> TaskDetail | None:
    """One task with its timeline."""
    task = await get(pool, task_id)
    if task is None:
        return None
    return TaskDetail(**msgspec.structs.asdict(task), timeline=await timeline(pool, task_id))


async def list_tasks(pool: Pool, *, zone_uid: str | None = None, status: TaskStatus | None = None,
                     since: dt.datetime | None = None, limit: int = 100) -> list[TaskRecord]:
    """Tasks newest first (by receipt), optionally of one zone, in one status, received at or after ``since``."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM tasks WHERE ($1::text IS NULL OR zone_uid = $1) "
        "AND ($2::text IS NULL OR status = $2) AND ($3::timestamptz IS NULL OR accepted_at >= $3) "
        "ORDER BY accepted_at DESC, id DESC LIMIT $4",
        zone_uid, None if status is None else str(status), since, limit)
    return [_record(r) for r in rows]


async def running(pool: Pool) -> list[TaskRecord]:
    """Tasks ``running``, by due time: what the dispatcher's recovery sweep looks at (accepted ones, often
    hundreds planned ahead, are not its business)."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM tasks WHERE status = 'running' ORDER BY due_at, id")
    return [_record(r) for r in rows]


# --- the dispatcher ---------------------------------------------------------------------------------

async def due_tasks(pool: Pool, now: dt.datetime, limit: int) -> list[TaskRecord]:
    """Claim up to ``limit`` due tasks and return them ``running``, earliest due first.

    Due: ``accepted``, ``due_at <= now``, its backoff over (``next_attempt_at`` null or ``<= now``) and not
    expired (``expires_at > now``). Selected by due time in SQL; ``FOR UPDATE SKIP LOCKED`` and the move to
    ``running`` in the same statement, so concurrent callers split the backlog and never share a task.
    """
    rows = await pool.fetch(
        "WITH picked AS (SELECT id FROM tasks WHERE status = 'accepted' AND due_at <= $1 AND expires_at > $1 "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), "
        "claimed AS (UPDATE tasks t SET status = 'running', started_at = $1, updated_at = now() FROM picked "
        f"WHERE t.id = picked.id AND t.status = 'accepted' RETURNING {_T_COLUMNS}) "
        "SELECT * FROM claimed ORDER BY due_at, id", now, limit)
    tasks = [_record(r) for r in rows]
    await _events_running(pool, tasks)
    return tasks


async def claim(pool: Pool, task_id: str, now: dt.datetime | None = None) -> bool:
    """Move one ``accepted``, unexpired task to ``running``; False when another claimer won or it is not
    claimable (``now``: default the database clock). Whether it is due is the caller's choice:
    :func:`due_tasks` is the dispatcher's way to pick and claim by due time in one statement."""
    row = await pool.fetchrow(
        f"UPDATE tasks t SET status = 'running', started_at = coalesce($2, now()), updated_at = now() "
        f"WHERE id = $1 AND status = ANY($3::text[]) AND expires_at > coalesce($2, now()) RETURNING {_T_COLUMNS}",
        task_id, now, _from(TaskStatus.RUNNING))
    if row is None:
        return False
    await _event(pool, _record(row), "running", {})
    return True


async def record_dispatch(pool: Pool, task_id: str, *, cmd_id: str | None = None,
                          workflow_id: str | None = None) -> bool:
    """Note on a ``running`` task that its command (or workflow) was submitted, before the outcome is known:
    restart recovery then knows something may have acted. False when the task is not running."""
    row = await pool.fetchrow(
        "UPDATE tasks t SET command_submitted = true, cmd_id = coalesce($2, cmd_id), "
        f"workflow_id = coalesce($3, workflow_id), updated_at = now() WHERE id = $1 AND status = 'running' "
        f"RETURNING {_T_COLUMNS}", task_id, cmd_id, workflow_id)
    if row is None:
        return False
    await _event(pool, _record(row), "dispatched", {"cmd_id": cmd_id, "workflow_id": workflow_id})
    return True


async def finish(pool: Pool, task_id: str, outcome: Outcome, now: dt.datetime | None = None) -> TaskRecord | None:
    """End a ``running`` task with ``outcome``; None when it is not running (a terminal status never changes).
    ``command_submitted`` stays true once :func:`record_dispatch` set it."""
    row = await pool.fetchrow(
        "UPDATE tasks t SET status = $2, decision = $3, reason_code = $4, error_code = $5, action_required = $6, "
        "command_submitted = command_submitted OR $7, command_effect_confirmed = $8, "
        "workflow_id = coalesce($9, workflow_id), cmd_id = coalesce($10, cmd_id), "
        "finished_at = coalesce($11, now()), message = $13, updated_at = now() "
        f"WHERE id = $1 AND status = ANY($12::text[]) RETURNING {_T_COLUMNS}",
        task_id, str(outcome.status), str(outcome.decision), outcome.reason_code, outcome.error_code,
        outcome.action_required, outcome.command_submitted, outcome.command_effect_confirmed, outcome.workflow_id,
        outcome.cmd_id, now, [str(TaskStatus.RUNNING)], outcome.message)  # not _from(): only restart recovery fails an accepted task
    if row is None:
        return None
    task = _record(row)
    await _event(pool, task, str(task.status), {"decision": task.decision, "reason_code": task.reason_code,
                                                "error_code": task.error_code, "message": task.message})
    return task


async def expire_overdue(pool: Pool, now: dt.datetime) -> list[TaskRecord]:
    """``accepted`` tasks whose ``expires_at`` passed before dispatch → ``expired`` (``decision=fail``,
    ``task_expired_before_dispatch``, ``action_required``: a deadline was missed); returns them."""
    rows = await pool.fetch(
        "UPDATE tasks t SET status = 'expired', decision = 'fail', reason_code = $2, action_required = true, "
        f"finished_at = $1, message = $4, updated_at = now() WHERE status = ANY($3::text[]) AND expires_at <= $1 "
        f"RETURNING {_T_COLUMNS}", now, REASON_EXPIRED_BEFORE_DISPATCH, _from(TaskStatus.EXPIRED),
        MESSAGES[REASON_EXPIRED_BEFORE_DISPATCH])
    tasks = [_record(r) for r in rows]
    for task in tasks:
        await _event(pool, task, "expired", {"reason_code": REASON_EXPIRED_BEFORE_DISPATCH})
    return tasks


async def fail_recovered(pool: Pool, task_id: str, now: dt.datetime | None = None) -> bool:
    """Finalise a task found ``accepted`` or ``running`` after a restart: ``failed``, ``decision=fail``,
    ``task_recovered_after_restart``, ``action_required``. False when it had ended meanwhile."""
    row = await pool.fetchrow(
        "UPDATE tasks t SET status = 'failed', decision = 'fail', reason_code = $2, action_required = true, "
        "finished_at = coalesce($3, now()), message = $5, updated_at = now() "
        f"WHERE id = $1 AND status = ANY($4::text[]) RETURNING {_T_COLUMNS}",
        task_id, REASON_RECOVERED, now, _from(TaskStatus.FAILED), MESSAGES[REASON_RECOVERED])
    if row is None:
        return False
    await _event(pool, _record(row), "failed", {"reason_code": REASON_RECOVERED})
    return True


# --- schedule cursors -----------------------------------------------------------------------------

async def get_cursor(pool: Pool, zone_uid: str, kind: str) -> dt.datetime | None:
    """How far the zone's ``kind`` schedule has been planned; None before its first window."""
    value: dt.datetime | None = await pool.fetchval(
        "SELECT cursor FROM schedule_cursors WHERE zone_uid = $1 AND kind = $2", zone_uid, kind)
    return value


async def set_cursor(pool: Pool, zone_uid: str, kind: str, cursor: dt.datetime) -> dt.datetime:
    """Move the cursor forward to ``cursor`` (never back: a stale write keeps the later one); returns it."""
    if cursor.tzinfo is None:
        raise ValueError("a schedule cursor is an aware datetime")
    value: dt.datetime = await pool.fetchval(
        "INSERT INTO schedule_cursors (zone_uid, kind, cursor) VALUES ($1, $2, $3) ON CONFLICT (zone_uid, kind) "
        "DO UPDATE SET cursor = greatest(schedule_cursors.cursor, EXCLUDED.cursor), updated_at = now() "
        "RETURNING cursor", zone_uid, kind, cursor)
    return value


# --- the timeline (best effort) -------------------------------------------------------------------

async def _events_running(pool: Pool, tasks: list[TaskRecord]) -> None:
    """The ``running`` timeline entries of a claim, two statements for the whole batch (a burst of due tasks
    is claimed hundreds at a time: one round trip per entry was most of a claim's cost). Best effort, as
    :func:`_event`."""
    if not tasks:
        return
    ids = [task.id for task in tasks]
    try:
        await pool.execute("INSERT INTO task_events (task_id, type, status, details) "
                           "SELECT unnest($1::text[]), 'running', 'running', '{}'::jsonb", ids)
        await pool.execute(
            "INSERT INTO zone_events (zone_uid, type, details, correlation_id) "
            "SELECT z, 'task', jsonb_build_object('task_id', i, 'task_type', t, 'event', 'running', 'status', 'running'), c "
            "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(i, z, t, c)",
            ids, [task.zone_uid for task in tasks], [str(task.task_type) for task in tasks],
            [task.correlation_id for task in tasks])
    except Exception as exc:  # best effort by contract; logged
        log.warning("%d claimed tasks: running entries not written: %s", len(tasks), exc,
                    extra={"event": "task_event_write_failed"})


async def _event(pool: Pool, task: TaskRecord, event_type: str, details: dict[str, Any]) -> None:
    """Append to the task's timeline and the zone's. Never raises: the task is stored already, and a lost
    timeline entry must not turn a stored task into an error (which a client would retry)."""
    try:
        await pool.execute("INSERT INTO task_events (task_id, type, status, details) VALUES ($1, $2, $3, $4::jsonb)",
                           task.id, event_type, str(task.status), json.dumps(details, default=str))
    except Exception as exc:  # best effort by contract; logged
        log.warning("task %s: timeline entry %s not written: %s", task.id, event_type, exc,
                    extra={"event": "task_event_write_failed", "correlation_id": task.correlation_id})
    try:
        await add_zone_event(pool, task.zone_uid, None, "task", {"task_id": task.id, "task_type": str(task.task_type),
                                                                 "event": event_type, "status": str(task.status),
                                                                 **details},
                             correlation_id=task.correlation_id,
                             decision=None if task.decision is None else str(task.decision),
                             reason_code=task.reason_code)
    except Exception as exc:
        log.warning("task %s: zone timeline entry %s not written: %s", task.id, event_type, exc,
                    extra={"event": "task_event_write_failed", "correlation_id": task.correlation_id})
