"""``Outbox``: the notifier's database port. Each method is a coroutine that runs on the loop.

The notifier actor only *creates* these coroutines on its thread and hands them to the bridge;
``Database.pool`` is read inside the coroutine body, i.e. on the loop (the loop-affinity guard
raises anywhere else).
"""

from __future__ import annotations

from hydrovisor.store.database import Database
from hydrovisor.store.repos import notifications as repo
from hydrovisor.store.repos.notifications import Notification, QueueCounts


class Outbox:
    """The pending queue and DLQ as seen by the notifier."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, limit: int, lease: float) -> list[Notification]:
        """Lease up to ``limit`` due notifications."""
        return await repo.claim_due(self._db.pool, limit, lease)

    async def delivered(self, note: Notification) -> bool:
        """Delete a delivered notification."""
        return await repo.delivered(self._db.pool, note.id)

    async def discard(self, limit: int) -> int:
        """Delete up to ``limit`` due notifications undelivered (no webhook); how many."""
        return await repo.discard_due(self._db.pool, limit)

    async def failed(self, note: Notification, error: str, retry_in: float) -> bool:
        """Record a failed attempt (fenced by the claim's lease)."""
        return await repo.failed(self._db.pool, note.id, note.lease_until, error, retry_in)

    async def dead_letter(self, note: Notification, error: str) -> int | None:
        """Move to the DLQ after the last failed attempt (fenced by the claim's lease)."""
        return await repo.move_to_dlq(self._db.pool, note.id, error, note.lease_until)

    async def counts(self) -> QueueCounts:
        """Queue sizes for the gauges."""
        return await repo.counts(self._db.pool)
