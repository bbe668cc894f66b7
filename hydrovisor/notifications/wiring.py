"""The notifier's child spec under ``/store``: built on the loop by ``hydrovisor.tree``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydrovisor.actors.notifier import Notifier, NotifierMetrics
from hydrovisor.notifications.outbox import Outbox
from hydrovisor.notifications.policy import DeliveryPolicy
from hydrovisor.notifications.webhooks import WebhookSender
from hydrovisor.supervisors import ChildSpec

if TYPE_CHECKING:
    from hydrovisor.config import Settings
    from hydrovisor.services import Services

NOTIFIER_ID = "notifier"
NOTIFIER_PATH = f"/store/{NOTIFIER_ID}"

# The policy of notifiers built from now on. Only the webhook URLs are a setting; tests (and
# embedders) may replace this module attribute before an instance starts to use other timings.
DEFAULT_POLICY = DeliveryPolicy()


def notifier_child(settings: Settings, services: Services, *, hang_timeout: float | None,
                   policy: DeliveryPolicy | None = None) -> ChildSpec:
    """The ``notifier`` child: one sender (HTTP session) and one set of metrics per instance,
    shared by the actor's incarnations (a restarted notifier reopens the session on first use)."""
    policy = policy or DEFAULT_POLICY
    sender = WebhookSender(settings.webhook_urls, timeout=policy.timeout)
    metrics = NotifierMetrics(services.registry)
    outbox = Outbox(services.db)
    return ChildSpec(NOTIFIER_ID, lambda ctx: Notifier.start(
        ctx, outbox=outbox, send=sender.send, close=sender.close, consumers=len(sender.urls), metrics=metrics,
        policy=policy), hang_timeout=hang_timeout)
