"""The amqtt client as a simulated node uses it: one connection per session, no auto-reconnect, an LWT.

amqtt's client logs the broker URI — password included — at DEBUG, and its packet-logger plugin logs
CONNECT packets: clients get no plugins, and ``quiet_amqtt_client_logs`` keeps ``amqtt.client`` above DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from amqtt.client import MQTTClient

from hydrovisor.sim.wire import LWT_PAYLOAD

__all__ = ["abort", "broker_uri", "close", "discard", "new_client", "quiet_amqtt_client_logs", "redact_uri"]

QOS_1 = 1


def quiet_amqtt_client_logs() -> None:
    """Raise ``amqtt.client`` to INFO when it would log at DEBUG (it logs passwords there)."""
    logger = logging.getLogger("amqtt.client")
    if logger.getEffectiveLevel() <= logging.DEBUG:
        logger.setLevel(logging.INFO)


def broker_uri(url: str, username: str | None, password: str | None) -> str:
    """``url`` (``mqtt://host:port`` or ``mqtts://...``) with these credentials (percent-encoded) in it.

    Credentials already in ``url`` are replaced when ``username`` is given, kept otherwise.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "ws", "wss"):
        raise ValueError(f"broker URL must be mqtt://, mqtts://, ws:// or wss://, not {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("broker URL has no host")
    if username is None:
        return url
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    userinfo = quote(username, safe="")
    if password is not None:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit((parts.scheme, f"{userinfo}@{netloc}", parts.path, parts.query, parts.fragment))


def redact_uri(uri: str) -> str:
    """``uri`` without its password, for logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = quote(parts.username or "", safe="")
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


def new_client(client_id: str, *, will_topic: str, keep_alive_s: int, connect_timeout_s: float) -> MQTTClient:
    """A client with clean session, the ``offline`` LWT (retained, QoS 1) on ``will_topic``, no plugins."""
    quiet_amqtt_client_logs()
    config: dict[str, Any] = {
        "auto_reconnect": False,
        "cleansession": True,
        "keep_alive": keep_alive_s,
        "ping_delay": 0,  # amqtt sends keep_alive - ping_delay in CONNECT and pings after that much idleness
        "connection_timeout": max(1, round(connect_timeout_s)),
        "default_qos": QOS_1,
        "plugins": {},
        "will": {"topic": will_topic, "message": LWT_PAYLOAD, "qos": QOS_1, "retain": True},
    }
    return MQTTClient(client_id=client_id, config=config)


async def close(client: MQTTClient, grace: float = 3.0) -> None:
    """Graceful: DISCONNECT (the broker discards the will), then close. Never raises; gives up after ``grace``
    s (amqtt's teardown can block on a full socket buffer) and drops the connection instead."""
    disconnecting: asyncio.Task[Any] = asyncio.ensure_future(client.disconnect())
    disconnecting.add_done_callback(_consume)
    done, _ = await asyncio.wait({disconnecting}, timeout=grace)
    if not done or disconnecting.cancelled() or disconnecting.exception() is not None:
        disconnecting.cancel()
        await abort(client, grace)


async def abort(client: MQTTClient, grace: float = 3.0) -> None:
    """Vanish like a device losing power: close TCP without DISCONNECT (the broker publishes the will)."""
    handler = getattr(client, "_handler", None)
    adapter = getattr(handler, "writer", None)
    stream = getattr(adapter, "_writer", None)
    transport = getattr(stream, "transport", None)
    if transport is not None:
        transport.abort()
    monitor = getattr(client, "_disconnect_task", None)
    if isinstance(monitor, asyncio.Task) and not monitor.done():
        # amqtt notices the dead socket and tears its handler down; give it a moment.
        await asyncio.wait({monitor}, timeout=grace)
    await discard(client)


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it


async def discard(client: MQTTClient, grace: float = 2.0) -> None:
    """Cancel what the client still runs (after a lost or aborted connection). Never raises
    (except ``CancelledError`` when the caller itself is cancelled)."""
    with contextlib.suppress(Exception):
        await client.cancel_tasks()
    monitor = getattr(client, "_disconnect_task", None)
    if isinstance(monitor, asyncio.Task) and not monitor.done():
        monitor.cancel()
        monitor.add_done_callback(_consume)
    handler = getattr(client, "_handler", None)
    if handler is not None and getattr(handler, "session", None) is not None:
        stopping: asyncio.Task[Any] = asyncio.ensure_future(handler.stop())
        stopping.add_done_callback(_consume)
        done, _ = await asyncio.wait({stopping}, timeout=grace)
        if not done:
            stopping.cancel()
