"""Durable notifications: the pending queue is drained to webhooks, failures end in the DLQ.

- :mod:`.policy` — retry backoff, attempts, batch/poll/timeout (:class:`DeliveryPolicy`);
- :mod:`.webhooks` — :class:`WebhookSender`, the loop-side HTTP client;
- :mod:`.outbox` — :class:`Outbox`, the loop-side database port of the notifier;
- :mod:`.wiring` — the notifier's child spec under ``/store`` (imported by ``hydrovisor.tree``);
- the actor is :class:`hydrovisor.actors.notifier.Notifier`, the HTTP API ``hydrovisor.http.routes.dlq``.
"""

from hydrovisor.notifications.outbox import Outbox
from hydrovisor.notifications.policy import DeliveryPolicy
from hydrovisor.notifications.webhooks import DeliveryFailed, WebhookSender, redact

__all__ = ["DeliveryFailed", "DeliveryPolicy", "Outbox", "WebhookSender", "redact"]
