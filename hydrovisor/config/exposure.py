"""Where the listeners bind, and who the API serves without a token (secure defaults, issue 10 #11).

Like Mosquitto 2.x: a listener that admits clients without credentials binds to loopback only.
That is MQTT in development mode (anonymous devices: anyone who can reach it could read the
``node_secret`` of config pushes and forge signed commands) and HTTP without an API token. Such
a listener binds to ``127.0.0.1`` when no host is configured; another interface needs the
explicit opt-in ``allow_remote_dev`` (``HYDROVISOR_ALLOW_REMOTE_DEV=1``), and every start then
logs a warning. Listeners that require credentials (production settings) bind to ``0.0.0.0``
unless a host is configured.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from hydrovisor.config.settings import Settings

LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
OPT_IN_VARIABLE = "HYDROVISOR_ALLOW_REMOTE_DEV"


@dataclass(frozen=True, slots=True)
class Listener:
    """One listener as it will bind: ``open_because`` says why it admits without credentials."""

    name: str  # "http" or "mqtt"
    host: str
    port: int
    configured: bool  # the host was set (file or environment), not derived
    open_because: str | None

    @property
    def variable(self) -> str:
        """The environment variable that sets this host."""
        return f"HYDROVISOR_{self.name.upper()}_HOST"

    @property
    def exposed(self) -> bool:
        """Admits without credentials and is reachable from other machines."""
        return self.open_because is not None and not is_loopback(self.host)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; a host name may resolve anywhere: False."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def has_token(settings: Settings) -> bool:
    """An API bearer token is configured (either role)."""
    return bool(settings.api_token or settings.admin_token)


def listeners(settings: Settings) -> tuple[Listener, Listener]:
    """The HTTP and the MQTT listener of ``settings``, hosts resolved."""
    http_open = None if has_token(settings) else "no API token configured"
    mqtt_open = "dev mode admits anonymous devices" if settings.dev_mode else None
    return (_listener("http", settings.http.host, settings.http.port, http_open),
            _listener("mqtt", settings.mqtt.host, settings.mqtt.port, mqtt_open))


def _listener(name: str, host: str | None, port: int, open_because: str | None) -> Listener:
    derived = LOOPBACK if open_because is not None else ALL_INTERFACES
    return Listener(name, host if host is not None else derived, port, host is not None, open_because)


def problem(settings: Settings) -> str | None:
    """Why ``settings`` would expose a listener that needs no credentials, or None."""
    if settings.allow_remote_dev:
        return None
    for listener in listeners(settings):
        if listener.exposed:
            return (f"{listener.name}.host ({listener.variable}) = {listener.host!r} would serve beyond this "
                    f"machine without credentials ({listener.open_because}): use a loopback address, configure "
                    f"credentials, or accept the risk with {OPT_IN_VARIABLE}=1")
    return None


def http_access(settings: Settings) -> str:
    """Who the HTTP API serves, for the startup line."""
    if has_token(settings):
        return "bearer token required"
    role = "admin (dev mode)" if settings.dev_mode else "operator (admin needs dev mode or HYDROVISOR_ADMIN_TOKEN)"
    return f"no API token configured: loopback clients only, as {role}"
