"""The loop side of the telemetry writer: store a batch, keep poison out, settle receipts.

The writer actor decides *when* a batch is written; this decides *how*, on the event loop: one
transaction for the batch (``repos.telemetry.write_batch``, idempotent for device timestamps), and
then the receipts of every sample in it are settled, which is when the devices get their PUBACKs
and the HTTP ingest its 2xx.

A batch PostgreSQL refuses because of what is *in* it (a data error, not an outage) is split in
halves until the refused samples are alone; each is quarantined (``telemetry_quarantine``, counted
as ``quarantined``, logged) and the rest is stored. So one bad sample never holds back the fleet's.
Any other error (connection lost, database down) propagates: the writer keeps the batch and
retries, and the receipts stay open, so nothing is acknowledged that is not stored.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

import asyncpg
import msgspec

from hydrovisor.actors.telemetry_writer import StoreSample
from hydrovisor.broker.receipts import ReceiptBook
from hydrovisor.devices.ingest import DropReason, TelemetryCounters
from hydrovisor.store.repos import telemetry

log = logging.getLogger(__name__)

# what the contents of a batch can cause, as opposed to the database or the network failing
_DATA_ERRORS = (
    asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError,
    UnicodeError, ValueError, TypeError, OverflowError,
)


class BatchResult(msgspec.Struct, frozen=True):
    """What became of one batch."""

    stored: int
    duplicates: int
    quarantined: int


class TelemetryStore:
    """Writes batches for the telemetry writer (call on the loop)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool], book: ReceiptBook, counters: TelemetryCounters) -> None:
        self._pool = pool
        self._book = book
        self._counters = counters

    async def write(self, batch: Sequence[StoreSample]) -> BatchResult:
        """Store ``batch``; raises only when nothing of it was decided (retry it whole)."""
        stored: Counter[str] = Counter()
        quarantined: Counter[str] = Counter()
        try:
            stored.update(await telemetry.write_batch(self._pool(), [item.sample for item in batch]))
        except _DATA_ERRORS as exc:
            await self._isolate(batch, exc, stored, quarantined)
        duplicates = Counter(item.sample.source for item in batch) - stored - quarantined
        for source, n in duplicates.items():
            self._counters.dropped.labels(reason=DropReason.DUPLICATE, source=source).inc(n)
        self._book.settle(item.token for item in batch)
        return BatchResult(stored.total(), duplicates.total(), quarantined.total())

    async def _isolate(
        self, batch: Sequence[StoreSample], error: Exception, stored: Counter[str], quarantined: Counter[str],
    ) -> None:
        """Store what of a batch that failed with ``error`` can be, split until the culprits are alone."""
        if len(batch) == 1:
            sample = batch[0].sample
            await telemetry.quarantine(self._pool(), sample, f"{type(error).__name__}: {error}")
            quarantined[sample.source] += 1
            self._counters.dropped.labels(reason=DropReason.QUARANTINED, source=sample.source).inc()
            log.error("telemetry sample quarantined: %s", error, extra={
                "event": "telemetry_quarantined", "node_uid": sample.node_uid, "zone_id": sample.zone_uid,
                "error": type(error).__name__,
            })
            return
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            try:
                stored.update(await telemetry.write_batch(self._pool(), [item.sample for item in half]))
            except _DATA_ERRORS as exc:
                await self._isolate(half, exc, stored, quarantined)
