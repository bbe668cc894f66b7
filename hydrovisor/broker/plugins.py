"""The amqtt plugins of the embedded broker and the state they share with it.

amqtt instantiates plugins itself from the broker config, so the broker hands them a
:class:`BrokerHooks` object through the plugin ``Config`` (amqtt builds it with dacite in
strict mode, which type-checks fields with ``isinstance``: hence a concrete class).

- :class:`DeviceAuthPlugin` accepts exactly the sessions our listener admitted (the real
  decision is taken in ``auth.admit`` before amqtt reads the CONNECT; amqtt only ever sees
  admitted connections, so this is a fail-closed formality amqtt requires).
- :class:`DeviceAclPlugin` enforces the topic ACL on PUBLISH and SUBSCRIBE and taps the
  publishes that passed it (amqtt's ``message_broadcast`` event fires only after the publish
  ACL; ``message_received`` fires before it and would leak denied publishes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from hydrovisor.broker import acl
from hydrovisor.broker.auth import Admission, admission_of
from hydrovisor.broker.directory import DeviceDirectory
from hydrovisor.broker.messages import DeviceMessage, MessageSink
from hydrovisor.broker.receipts import Receipt, settled

log = logging.getLogger(__name__)


class BrokerHooks:
    """What the plugins and the amqtt subclass need from the embedded broker."""

    def __init__(self, directory: DeviceDirectory, on_message: MessageSink | None = None) -> None:
        self.directory = directory
        self.on_message = on_message
        self.delivering = True  # off while stopping: a broker shutdown is not a device drop

    def allows(self, session: Session, topic: str, action: Action) -> bool:
        """The topic ACL for one PUBLISH or SUBSCRIBE of ``session``."""
        if action == Action.RECEIVE:
            return True  # what a session may receive was decided when it subscribed
        admission = admission_of(session)
        if admission is not None and not admission.verified:
            return True  # development-mode client: unrestricted
        identity = self.directory.get(admission.username or "") if admission else None
        if identity is None:
            allowed = False  # not admitted by us, or its credential was revoked since
        elif action == Action.PUBLISH:
            allowed = acl.may_publish(identity, topic)
        else:
            allowed = action == Action.SUBSCRIBE and acl.may_subscribe(identity, topic)
        if not allowed:
            log.info("device topic access denied", extra={
                "event": "acl_denied", "action": str(action), "topic": topic,
                "client_id": session.client_id, "username": admission.username if admission else None,
            })
        return allowed

    def emit(
        self, client_id: str, session: Session | None, *, topic: str, payload: bytes, qos: int, retain: bool,
        receipt: Receipt,
    ) -> None:
        """Hand one device message to ``on_message`` with its receipt; never raises into amqtt."""
        sink = self.on_message
        if not self.delivering:
            receipt.fail("broker_stopping")
            return
        if sink is None:
            receipt.settle()  # nobody listens: the message is distributed to subscribers only
            return
        admission = admission_of(session)
        message = DeviceMessage(
            client_id=client_id,
            username=_verified_username(admission),
            topic=topic, payload=payload, qos=qos, retain=retain, received_at=time.time(),
        )
        try:
            sink(message, receipt)
        except Exception:
            log.exception("on_message callback failed", extra={
                "event": "broker_sink_error", "client_id": message.client_id, "topic": topic,
            })
            receipt.fail("sink_error")


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Accepts the sessions our listener admitted, refuses anything else."""

    async def authenticate(self, *, session: Session) -> bool:
        """True when the session carries our admission."""
        return admission_of(session) is not None


class DeviceAclPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Topic ACL for devices, plus the post-ACL tap feeding ``BrokerHooks.emit``."""

    @dataclass
    class Config:
        """Plugin settings, filled from the ``plugins`` section of the broker config."""

        hooks: BrokerHooks | None = None

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        """amqtt calls this for every SUBSCRIBE filter, PUBLISH and delivery (RECEIVE)."""
        hooks: BrokerHooks | None = self.config.hooks
        if hooks is None or session is None or topic is None or action is None:
            return False
        return hooks.allows(session, topic, action)

    async def on_broker_message_broadcast(self, *, client_id: str, message: Any) -> None:
        """amqtt event: a client's PUBLISH passed the topic ACL and is being distributed. Only QoS 2
        publishes take this way (``inbound.py`` takes QoS 0/1), amqtt has acknowledged them already."""
        hooks: BrokerHooks | None = self.config.hooks
        if hooks is None:
            return
        hooks.emit(
            client_id, self.context.get_session(client_id), topic=message.topic,
            payload=bytes(message.data), qos=message.qos or 0, retain=bool(message.retain), receipt=settled(),
        )


def _verified_username(admission: Admission | None) -> str | None:
    return admission.username if admission is not None and admission.verified else None
