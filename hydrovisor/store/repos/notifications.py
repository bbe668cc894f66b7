"""The durable notification queue (``notifications_pending``) and its dead-letter queue.

A notification is always in exactly one place (DOMAIN §1): delivered (its pending row deleted),
pending, or dead-lettered. Every move between places is one transaction.

Claiming uses a **lease**: :func:`claim_due` locks due rows with ``FOR UPDATE SKIP LOCKED``
(concurrent claimers, in this process or another instance sharing the database, skip each
other's rows) and, in the same statement, pushes their ``next_attempt_at`` to ``now() + lease``;
the statement commits before anything is delivered, so no connection is held during HTTP calls
and nobody else sees the rows as due until the lease expires. The leased ``next_attempt_at``
doubles as a fencing token: :func:`failed` and :func:`move_to_dlq` only act on a row that still
carries the token they were given, so a claimer whose lease expired (and whose row was
re-claimed elsewhere) cannot overwrite the new owner's outcome. If the claimer dies, the row
is due again when the lease ends (delivery is at-least-once; consumers dedupe by ``id``).

Every time is the database clock (``now()``), never the caller's.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import asyncpg
import msgspec


class Notification(msgspec.Struct, frozen=True):
    """A claimed pending notification; ``lease_until`` is the fencing token of this claim."""

    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: float
    lease_until: dt.datetime


class DeadLetter(msgspec.Struct, frozen=True):
    """A dead-lettered notification. ``pending_id`` is the notification's id (stable across replays)."""

    id: int
    pending_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: float
    moved_at: float


class QueueCounts(msgspec.Struct, frozen=True):
    """Sizes of both queues."""

    pending: int
    dlq: int


async def enqueue(pool: asyncpg.Pool, kind: str, payload: dict[str, Any]) -> int:
    """Queue a notification outside any other transaction (command statuses are queued by
    :func:`hydrovisor.store.repos.commands.transition` in their own transaction); returns its id."""
    value: int = await pool.fetchval(
        "INSERT INTO notifications_pending (kind, payload) VALUES ($1, $2::jsonb) RETURNING id",
        kind, json.dumps(payload, default=str))
    return value


async def claim_due(pool: asyncpg.Pool, limit: int, lease: float) -> list[Notification]:
    """Lease up to ``limit`` due notifications (oldest due first) for ``lease`` seconds.

    One auto-committed statement: rows locked by a concurrent claimer are skipped, and once it
    commits the claimed rows are not due for anyone else until ``now() + lease``.
    """
    rows = await pool.fetch(
        "WITH due AS (SELECT id FROM notifications_pending WHERE next_attempt_at <= now() "
        "ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) "
        "UPDATE notifications_pending p SET next_attempt_at = now() + make_interval(secs => $2) FROM due "
        "WHERE p.id = due.id RETURNING p.id, p.kind, p.payload, p.attempts, p.last_error, "
        "date_part('epoch', p.created_at) AS created_at, p.next_attempt_at AS lease_until",
        limit, float(lease))
    claimed = [Notification(**{**dict(r), "payload": json.loads(r["payload"])}) for r in rows]
    return sorted(claimed, key=lambda n: n.id)


async def delivered(pool: asyncpg.Pool, notification_id: int) -> bool:
    """The notification reached its consumers: delete it. False if it was already gone.

    Not fenced by the lease: once delivered, the record *is* delivered, even if a slow
    delivery outlived its lease (the other claimer's outcome then finds no row).
    """
    status: str = await pool.execute("DELETE FROM notifications_pending WHERE id = $1", notification_id)
    return status == "DELETE 1"


async def discard_due(pool: asyncpg.Pool, limit: int) -> int:
    """Delete up to ``limit`` due notifications without delivering them (no consumer is configured,
    see ``hydrovisor.actors.notifier``): ONE statement; rows leased or locked by a claimer are
    skipped. Returns how many were deleted."""
    status: str = await pool.execute(
        "DELETE FROM notifications_pending WHERE id IN (SELECT id FROM notifications_pending "
        "WHERE next_attempt_at <= now() ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)", limit)
    return int(status.rsplit(" ", 1)[1])


async def failed(
    pool: asyncpg.Pool, notification_id: int, lease_until: dt.datetime | None, error: str, retry_in: float
) -> bool:
    """One more failed attempt: count it, keep the error, due again in ``retry_in`` s.

    ``lease_until`` (the claim's token; ``None`` = unconditional) must still be on the row,
    else nothing changes and False is returned (the lease was lost to another claimer).
    """
    status: str = await pool.execute(
        "UPDATE notifications_pending SET attempts = attempts + 1, last_error = $3, "
        "next_attempt_at = now() + make_interval(secs => $4) "
        "WHERE id = $1 AND ($2::timestamptz IS NULL OR next_attempt_at = $2)",
        notification_id, lease_until, error, float(retry_in))
    return status == "UPDATE 1"


async def move_to_dlq(
    pool: asyncpg.Pool, notification_id: int, error: str, lease_until: dt.datetime | None = None
) -> int | None:
    """The last attempt failed with ``error``: move the notification to the DLQ in ONE transaction.

    The DLQ row is inserted first (with ``attempts + 1``: the failed attempt counts) from the
    pending row locked ``FOR UPDATE`` (a concurrent delete or move waits for us); the pending row
    is deleted only after that insert succeeded, and any failure rolls both back. Returns the
    DLQ id, or ``None`` when the pending row is gone or no longer carries ``lease_until``.
    """
    async with pool.acquire() as conn, conn.transaction():
        dlq_id: int | None = await conn.fetchval(
            "INSERT INTO notifications_dlq (pending_id, kind, payload, attempts, last_error, created_at) "
            "SELECT id, kind, payload, attempts + 1, $2, created_at FROM notifications_pending "
            "WHERE id = $1 AND ($3::timestamptz IS NULL OR next_attempt_at = $3) FOR UPDATE RETURNING id",
            notification_id, error, lease_until)
        if dlq_id is None:
            return None
        status = await conn.execute("DELETE FROM notifications_pending WHERE id = $1", notification_id)
        if status != "DELETE 1":  # impossible while we hold the row lock; never leave it in two places
            raise RuntimeError(f"notification {notification_id} vanished while being dead-lettered")
        return dlq_id


async def replay(pool: asyncpg.Pool, dlq_id: int) -> int | None:
    """Move a dead letter back to pending in ONE transaction: due now, ``attempts`` reset to 0,
    same id as before (consumers dedupe by it), ``last_error`` kept for context. Returns the
    pending id, or ``None`` when no such DLQ entry exists (e.g. replayed or purged concurrently)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "DELETE FROM notifications_dlq WHERE id = $1 RETURNING pending_id, kind, payload, last_error, created_at",
            dlq_id)
        if row is None:
            return None
        pending_id: int = await conn.fetchval(
            "INSERT INTO notifications_pending (id, kind, payload, attempts, next_attempt_at, last_error, created_at) "
            "VALUES ($1, $2, $3, 0, now(), $4, $5) RETURNING id",
            row["pending_id"], row["kind"], row["payload"], row["last_error"], row["created_at"])
        return pending_id


async def purge(pool: asyncpg.Pool, dlq_id: int) -> bool:
    """Delete a dead letter for good (an operator decision). False if it does not exist."""
    status: str = await pool.execute("DELETE FROM notifications_dlq WHERE id = $1", dlq_id)
    return status == "DELETE 1"


async def list_dlq(pool: asyncpg.Pool, *, before_id: int | None = None, limit: int = 100) -> list[DeadLetter]:
    """Dead letters, newest first, keyset-paged: pass the last ``id`` seen as ``before_id``."""
    return await _list_dlq(pool, before_id, limit)


async def dlq_page(pool: asyncpg.Pool, *, before_id: int | None, limit: int) -> tuple[list[DeadLetter], QueueCounts]:
    """One page of :func:`list_dlq` and the queue sizes, from the same snapshot (they agree)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return await _list_dlq(conn, before_id, limit), await _counts(conn)


async def _list_dlq(conn: asyncpg.Pool | asyncpg.Connection, before_id: int | None, limit: int) -> list[DeadLetter]:
    rows = await conn.fetch(
        "SELECT id, pending_id, kind, payload, attempts, last_error, date_part('epoch', created_at) AS created_at, "
        "date_part('epoch', moved_at) AS moved_at FROM notifications_dlq "
        "WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        before_id, limit)
    return [DeadLetter(**{**dict(r), "payload": json.loads(r["payload"])}) for r in rows]


async def pending(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every pending row, oldest first (diagnostics and tests; not for hot paths)."""
    rows = await pool.fetch(
        "SELECT id, kind, payload, attempts, last_error, date_part('epoch', next_attempt_at) AS next_attempt_at "
        "FROM notifications_pending ORDER BY id")
    return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


async def counts(pool: asyncpg.Pool) -> QueueCounts:
    """How many notifications are pending and dead-lettered (for the metrics)."""
    return await _counts(pool)


async def _counts(conn: asyncpg.Pool | asyncpg.Connection) -> QueueCounts:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM notifications_pending) AS pending, "
        "(SELECT count(*) FROM notifications_dlq) AS dlq")
    return QueueCounts(pending=row["pending"], dlq=row["dlq"])
