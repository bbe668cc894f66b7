"""Device authentication for the embedded broker: the credential check and its amqtt plugin."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

log = logging.getLogger(__name__)

# amqtt keeps a refused session registered, in state "connected"; the verdict is recorded on the
# session itself (as amqtt's own auth plugins do with ``is_anonymous``) so it can be told apart.
_REFUSED = "hydrovisor_refused"


# runtime_checkable because amqtt builds the plugin Config with dacite in strict mode, which
# type-checks every field with isinstance().
@runtime_checkable
class DeviceAuthenticator(Protocol):
    """Checks the credentials a device sends in CONNECT. Runs on the event loop: keep it cheap."""

    def verify(self, username: str | None, password: str | None) -> bool:
        """True when ``username``/``password`` identify a known device."""
        ...


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt auth plugin: everyone in development mode, else only what the authenticator accepts.

    amqtt instantiates plugins itself from the broker config; the broker passes ``dev_mode`` and
    the authenticator object through this plugin's ``Config``. Fails closed: no authenticator,
    or an authenticator that raises, means rejection.
    """

    @dataclass
    class Config:
        """Plugin settings, filled from the ``plugins`` section of the broker config."""

        dev_mode: bool = False
        authenticator: DeviceAuthenticator | None = None

    async def authenticate(self, *, session: Session) -> bool:
        """Decide on one CONNECT (amqtt then answers CONNACK 0 or 5)."""
        accepted = self._decide(session)
        setattr(session, _REFUSED, not accepted)
        if not accepted:
            log.warning("device connection refused", extra={
                "event": "device_auth_rejected", "client_id": session.client_id,
                "username": session.username,
            })
        return accepted

    def _decide(self, session: Session) -> bool:
        config: DeviceAuthPlugin.Config = self.config
        if config.dev_mode:
            return True
        if config.authenticator is None:
            return False
        try:
            return config.authenticator.verify(session.username, session.password) is True
        except Exception:
            log.exception("device authenticator failed; refusing the connection", extra={
                "event": "device_auth_error", "client_id": session.client_id,
                "username": session.username,
            })
            return False


def is_refused(session: Session) -> bool:
    """True when ``DeviceAuthPlugin`` refused this session's latest CONNECT."""
    return getattr(session, _REFUSED, False) is True
