"""``Notifier``: drains ``notifications_pending`` to the webhooks; failures retry, then the DLQ.

Every ``poll_interval`` s (and at once after a non-empty batch, or when told :class:`Wake`) it
leases a batch of due notifications (``FOR UPDATE SKIP LOCKED`` + lease, see
``hydrovisor.store.repos.notifications``), then delivers them one after the other, in id order,
through the bridge; each outcome is stored before the next one is sent:

- every webhook answered 2xx -> the pending row is deleted (delivered);
- otherwise the attempt is counted and the row is due again after ``min(cap, base * 2^n)`` ±10 %;
  the ``max_attempts``-th failure moves it to the DLQ in one transaction.

Order: while webhooks accept, notifications leave in id order (a command's statuses in the order
they were stored); a retried one arrives after later ones, so consumers order by status rank and
dedupe by ``id``.

It never crashes on a database or HTTP error: a failed claim is retried next tick, a failed
outcome write abandons the rest of the batch (the database is probably down; those rows are due
again when their lease ends, and a notification whose outcome could not be stored may be
delivered twice: at-least-once, consumers dedupe by ``id``). Database trouble is logged once
when it starts and once when it ends, not every tick.

No webhook configured: due notifications are deleted without delivery, up to ``DISCARD_LIMIT``
per statement (no claim, no lease: there is no delivery to protect), and counted in
``hydrovisor_notifications_unrouted_total`` (a warning at start says so). Rationale: there is no
consumer to wait for; every status is durable in ``commands``/``command_events`` (served by
``GET /api/v1/commands/{id}/events``), so nothing is lost, while keeping the rows would grow
the table without bound (about four per command) and flood a webhook added months later with
stale statuses a consumer might act on. Instances sharing one database must therefore share the
same webhook configuration: an instance without webhooks consumes the queue too.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from hydrovisor.notifications.outbox import Outbox
from hydrovisor.notifications.policy import DeliveryPolicy
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.store.repos.notifications import Notification, QueueCounts
from hydrovisor.supervisors import ActorContext, SupervisedActor

log = logging.getLogger(__name__)

# Without webhooks nothing is delivered, so no delivery time bounds the batch (unlike a claim's
# lease); with the next statement right after a non-empty one, ~4 notifications per command are
# cleared in a handful of statements per second at the command rates one process reaches.
DISCARD_LIMIT = 1000

Send = Callable[[Notification], Coroutine[Any, Any, None]]
Close = Callable[[], Coroutine[Any, Any, None]]


class Wake(msgspec.Struct, frozen=True):
    """Look for due notifications now (e.g. right after a DLQ replay) instead of at the next tick."""


class _Tick(msgspec.Struct, frozen=True):
    pass


class _Claimed(msgspec.Struct, frozen=True):
    outcome: Outcome


class _Discarded(msgspec.Struct, frozen=True):
    outcome: Outcome


class _Sent(msgspec.Struct, frozen=True):
    note: Notification
    outcome: Outcome


class _Recorded(msgspec.Struct, frozen=True):
    note: Notification
    result: str  # delivered | failed | dead_lettered
    error: str
    outcome: Outcome


class _Counted(msgspec.Struct, frozen=True):
    outcome: Outcome


class NotifierMetrics:
    """Prometheus instruments of the notifier."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pending = Gauge("hydrovisor_notifications_pending", "Notifications waiting for delivery.",
                             registry=registry)
        self.dlq = Gauge("hydrovisor_notifications_dlq", "Notifications in the dead-letter queue.", registry=registry)
        self.delivered = Counter("hydrovisor_notifications_delivered_total",
                                 "Notifications every webhook accepted.", registry=registry)
        self.failed = Counter("hydrovisor_notifications_failed_total",
                              "Failed delivery attempts (retried, or dead-lettered after the last).",
                              registry=registry)
        self.dead_lettered = Counter("hydrovisor_notifications_dead_lettered_total",
                                     "Notifications moved to the dead-letter queue.", registry=registry)
        self.unrouted = Counter("hydrovisor_notifications_unrouted_total",
                                "Notifications acknowledged without delivery: no webhook is configured.",
                                registry=registry)


def _reason(error: BaseException | None) -> str:
    if error is None:
        return ""
    return str(error) or type(error).__name__


class Notifier(SupervisedActor):
    """See the module docstring."""

    def __init__(
        self, ctx: ActorContext, *, outbox: Outbox, send: Send, close: Close, consumers: int,
        metrics: NotifierMetrics, policy: DeliveryPolicy,
    ) -> None:
        super().__init__(ctx)
        self._outbox = outbox
        self._send = send
        self._close = close
        self._consumers = consumers
        self._metrics = metrics
        self._policy = policy
        self._batch: collections.deque[Notification] = collections.deque()
        self._busy = False  # a claim or a batch is in progress
        self._counting = False
        self._counted_at = 0.0
        self._db_failures = 0
        self._timer: Timer | None = None

    def on_start(self) -> None:
        if not self._consumers:
            log.warning("no webhook configured (HYDROVISOR_WEBHOOK_URLS): status notifications are "
                        "acknowledged without delivery; command history stays in command_events",
                        extra={"event": "notifications_unrouted"})
        self._timer = self.tell_self_every(self._policy.poll_interval, _Tick())
        self.actor_ref.tell(_Tick())

    def on_stop(self) -> None:
        self._stop_timer()
        try:  # the session belongs to the loop: close it there
            self.ctx.system.bridge.submit(self._close()).result(timeout=2)
        except Exception as exc:
            log.warning("webhook session not closed cleanly: %s", _reason(exc))

    def on_failure(self, *_: Any) -> None:
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick | Wake):
            self._refresh_counts(force=False)
            if not self._busy:
                self._claim()
        elif isinstance(message, _Claimed):
            self._claimed(message.outcome)
        elif isinstance(message, _Discarded):
            self._discarded(message.outcome)
        elif isinstance(message, _Sent):
            self._sent(message.note, message.outcome)
        elif isinstance(message, _Recorded):
            self._recorded(message)
        elif isinstance(message, _Counted):
            self._counting = False
            if message.outcome.ok:
                counts: QueueCounts = message.outcome.value
                self._metrics.pending.set(counts.pending)
                self._metrics.dlq.set(counts.dlq)
        else:
            return super().on_receive(message)
        return None

    def _claim(self) -> None:
        self._busy = True
        if not self._consumers:
            self.pipe_to_self(self._outbox.discard(DISCARD_LIMIT), _Discarded)
            return
        policy = self._policy
        self.pipe_to_self(self._outbox.claim(policy.batch_size, policy.lease), _Claimed)

    def _discarded(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self._busy = False
            self._db_trouble("discard undeliverable notifications", outcome.error)
            return
        self._db_recovered()
        count: int = outcome.value
        self._metrics.unrouted.inc(count)
        if count:
            self._refresh_counts(force=False)
            self._claim()  # more may be due already
        else:
            self._busy = False

    def _claimed(self, outcome: Outcome) -> None:
        if not outcome.ok:
            self._busy = False
            self._db_trouble("claim", outcome.error)
            return
        self._db_recovered()
        notes: list[Notification] = outcome.value
        if not notes:
            self._busy = False
            return
        self._batch.extend(notes)
        self._next()

    def _next(self) -> None:
        if not self._batch:
            self._refresh_counts(force=False)
            self._claim()  # right after a batch: more may be due already
            return
        note = self._batch.popleft()
        self.pipe_to_self(self._send(note), lambda outcome: _Sent(note, outcome))

    def _sent(self, note: Notification, outcome: Outcome) -> None:
        if outcome.ok:
            self._pipe_record(self._outbox.delivered(note), note, "delivered", "")
            return
        self._metrics.failed.inc()
        error = _reason(outcome.error)[:2000]
        failures = note.attempts + 1
        if self._policy.exhausted(failures):
            self._pipe_record(self._outbox.dead_letter(note, error), note, "dead_lettered", error)
        else:
            retry_in = self._policy.delay(failures)
            self._pipe_record(self._outbox.failed(note, error, retry_in), note, "failed", error)

    def _pipe_record(self, coro: Coroutine[Any, Any, Any], note: Notification, result: str, error: str) -> None:
        self.pipe_to_self(coro, lambda outcome: _Recorded(note, result, error, outcome))

    def _recorded(self, msg: _Recorded) -> None:
        note, outcome = msg.note, msg.outcome
        if not outcome.ok:
            # the database is probably down: stop here; the rest of the batch (and this one) are
            # due again when their lease ends
            self._batch.clear()
            self._busy = False
            self._db_trouble(f"record {msg.result} of notification {note.id}", outcome.error)
            return
        self._db_recovered()
        extra = {"notification_id": note.id, "kind": note.kind, "attempts": note.attempts + 1}
        if msg.result == "delivered":
            self._metrics.delivered.inc()
        elif msg.result == "dead_lettered" and outcome.value is not None:
            self._metrics.dead_lettered.inc()
            log.error("notification %d dead-lettered after %d attempts: %s", note.id, note.attempts + 1, msg.error,
                      extra={"event": "notification_dead_lettered", "dlq_id": outcome.value, **extra})
            self._refresh_counts(force=True)
        elif msg.result == "failed" and outcome.value:
            log.warning("notification %d not delivered (attempt %d of %d): %s", note.id, note.attempts + 1,
                        self._policy.max_attempts, msg.error, extra={"event": "notification_retry", **extra})
        if msg.result in ("failed", "dead_lettered") and not outcome.value:
            log.warning("notification %d: lease lost before its outcome was stored (another claimer owns it)",
                        note.id, extra={"event": "notification_lease_lost", **extra})
        self._next()

    def _refresh_counts(self, *, force: bool) -> None:
        now = time.monotonic()
        if self._counting or (not force and now - self._counted_at < self._policy.counts_interval):
            return
        self._counting = True
        self._counted_at = now
        self.pipe_to_self(self._outbox.counts(), _Counted)

    def _db_trouble(self, what: str, error: BaseException | None) -> None:
        self._db_failures += 1
        if self._db_failures == 1:
            log.error("notifier could not %s: %s; retrying every %.1f s", what, _reason(error),
                      self._policy.poll_interval, extra={"event": "notifier_db_failed"})
        else:
            log.debug("notifier could not %s: %s", what, _reason(error))

    def _db_recovered(self) -> None:
        if self._db_failures:
            log.info("notifier reaches the database again after %d failures", self._db_failures,
                     extra={"event": "notifier_db_recovered"})
            self._db_failures = 0
