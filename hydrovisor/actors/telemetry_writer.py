"""``TelemetryWriter``: group commit of validated samples into PostgreSQL; nothing acknowledged is lost.

Samples arrive as tells (cheap: a deque append), each with the token of its receipt. A batch is
written when it reaches ``batch_size`` or ``flush_interval`` elapsed, one batch in flight at a
time, by the ``write`` coroutine on the loop (``devices/telemetry_store.py``: one transaction,
poison quarantined), which settles the batch's receipts once committed: only then do devices get
their PUBACKs and HTTP clients their 2xx. A failed write keeps the batch at the head of the buffer
and retries with backoff, so while PostgreSQL is down samples wait here (bounded by
``max_buffered``, and upstream by the broker's in-flight limits, which stop reading devices
first) and are written after recovery in arrival order.

A crash of this actor loses the in-memory buffer, but nothing acknowledged: the samples' receipts
are still open. Every incarnation fails, when it starts, the receipts its predecessor left
(devices reconnect and send those messages again; the write is idempotent); a sample refused
because the buffer is full has its receipt failed at once.
While there is work and no write has succeeded for ``stall_after`` seconds the writer reports
itself failing on the health board (component ``telemetry``), which readiness and the system
state machine read.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.broker.receipts import RemoteReceipts
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.store.repos.telemetry import Sample
from hydrovisor.supervisors import ActorContext, SupervisedActor

log = logging.getLogger(__name__)

# stores a batch, settles its receipts, returns how many samples were appended (duplicates are not)
WriteBatch = Callable[[Sequence["StoreSample"]], Coroutine[Any, Any, int]]


class StoreSample(msgspec.Struct, frozen=True):
    """One validated sample to store; ``token`` stands for its receipt (``broker.receipts``)."""

    sample: Sample
    token: int = 0


class _Flush(msgspec.Struct, frozen=True):
    pass


class _Written(msgspec.Struct, frozen=True):
    size: int
    outcome: Outcome


class WriterMetrics:
    """Prometheus instruments of the writer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stored = Counter("hydrovisor_telemetry_stored_total", "Samples written to PostgreSQL.",
                              registry=registry)
        self.buffered = Gauge("hydrovisor_telemetry_buffered", "Samples waiting to be written.",
                              registry=registry)
        self.write_failures = Counter("hydrovisor_telemetry_write_failures_total",
                                      "Failed batch writes (retried).", registry=registry)
        self.refused = Counter("hydrovisor_telemetry_buffer_refused_total",
                               "Samples refused because the buffer was full.", registry=registry)


class TelemetryWriter(SupervisedActor):
    """Buffers and writes samples; see the module docstring for the failure design."""

    def __init__(
        self, ctx: ActorContext, *, write: WriteBatch, metrics: WriterMetrics,
        receipts: RemoteReceipts, health: HealthBoard, batch_size: int = 2000, flush_interval: float = 0.02,
        max_buffered: int = 500_000, stall_after: float = 30.0,
    ) -> None:
        super().__init__(ctx)
        self._write = write
        self._metrics = metrics
        self._receipts = receipts
        self._health = health
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._max_buffered = max_buffered
        self._stall_after = stall_after
        self._buffer: collections.deque[StoreSample] = collections.deque()
        self._in_flight = 0
        self._failures = 0
        self._retry_at = 0.0
        self._progress_at = time.monotonic()
        self._timer: Timer | None = None

    def on_start(self) -> None:
        self._receipts.fail_all("telemetry_writer_restarted")
        self._report_health()
        self._timer = self.tell_self_every(self._flush_interval, _Flush())

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        # graceful stop: write what is not already in flight (that batch completes on the loop)
        pending = list(self._buffer)[self._in_flight:]
        written = 0
        try:
            while written < len(pending):
                batch = pending[written:written + self._batch_size]
                self._metrics.stored.inc(self.ctx.system.bridge.submit(self._write(batch)).result(timeout=10))
                written += len(batch)
        except Exception as exc:  # the database is gone: say exactly what is lost
            log.error("telemetry writer stopped with %d samples unwritten: %s", len(pending) - written, exc,
                      extra={"event": "telemetry_unwritten", "count": len(pending) - written})

    def on_failure(self, *_: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        log.error("telemetry writer crashed with %d samples buffered", len(self._buffer),
                  extra={"event": "telemetry_unwritten", "count": len(self._buffer)})

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, StoreSample):
            self._accept(message)
        elif isinstance(message, _Flush):
            self._flush(force=True)
            self._report_health()
        elif isinstance(message, _Written):
            self._written(message)
        else:
            return super().on_receive(message)
        return None

    def _accept(self, sample: StoreSample) -> None:
        if len(self._buffer) >= self._max_buffered:
            self._metrics.refused.inc()
            self._receipts.fail((sample.token,), "buffer_full")
            return
        if not self._buffer:
            self._progress_at = time.monotonic()  # idle until now: the stall clock starts with the work
        self._buffer.append(sample)
        self._metrics.buffered.set(len(self._buffer))
        if len(self._buffer) >= self._batch_size:
            self._flush(force=False)

    def _flush(self, *, force: bool) -> None:
        if self._in_flight or not self._buffer or (not force and len(self._buffer) < self._batch_size):
            return
        if time.monotonic() < self._retry_at:
            return
        size = min(self._batch_size, len(self._buffer))
        batch = [self._buffer[i] for i in range(size)]
        self._in_flight = size
        self.pipe_to_self(self._write(batch), lambda outcome: _Written(size, outcome))

    def _report_health(self) -> None:
        stalled = time.monotonic() - self._progress_at if self._buffer else 0.0
        if stalled > self._stall_after:
            self._health.set("telemetry", False, f"no sample written for {stalled:.0f}s, {len(self._buffer)} waiting")
        else:
            self._health.set("telemetry", True, "ok")

    def _written(self, msg: _Written) -> None:
        self._in_flight = 0
        if msg.outcome.ok:
            for _ in range(msg.size):
                self._buffer.popleft()
            self._progress_at = time.monotonic()
            self._metrics.stored.inc(msg.outcome.value)
            self._metrics.buffered.set(len(self._buffer))
            if self._failures:
                log.info("telemetry writes recovered after %d failures; %d samples buffered",
                         self._failures, len(self._buffer),
                         extra={"event": "telemetry_write_recovered", "buffered": len(self._buffer)})
            self._failures = 0
            self._retry_at = 0.0
            self._flush(force=False)
            return
        self._failures += 1
        self._metrics.write_failures.inc()
        self._retry_at = time.monotonic() + min(5.0, 0.2 * 2 ** min(self._failures, 5))
        reason = str(msg.outcome.error) or type(msg.outcome.error).__name__
        if self._failures == 1:
            log.error("telemetry write failed; buffering (%d samples): %s", len(self._buffer), reason,
                      extra={"event": "telemetry_write_failed", "buffered": len(self._buffer)})
