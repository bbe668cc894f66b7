"""``WebhookSender``: POSTs a notification as JSON to every configured URL. Loop-side only.

Body: ``{"kind": ..., "id": ..., "payload": {...}}``; headers ``X-Hydrovisor-Notification-Id``
(stable across retries and DLQ replays: consumers dedupe by it, delivery is at-least-once) and
``X-Hydrovisor-Attempt``. Success = every URL answered 2xx within ``timeout`` (redirects are
not followed: a 3xx is a failure). A retry goes to every URL again, including those that had
already accepted it, so consumers must be idempotent on the id.

The aiohttp ``ClientSession`` is created on first use, on the event loop, and only ever used
there (actors reach :meth:`send` through the bridge). URLs may embed secrets (tokens in the
path or query), so errors name a webhook by its position and ``scheme://host:port`` only.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Sequence

import aiohttp
import msgspec

from hydrovisor.runtime.affinity import guard
from hydrovisor.store.repos.notifications import Notification

_OK = range(200, 300)


class DeliveryFailed(Exception):
    """At least one webhook did not accept the notification; the message says which and why."""


def redact(url: str) -> str:
    """``scheme://host[:port]`` of a URL: what logs and errors may show of it."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


class WebhookSender:
    """Owns the HTTP client session; create it anywhere, use it on the event loop only."""

    def __init__(self, urls: Sequence[str], *, timeout: float) -> None:
        self.urls = tuple(urls)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, note: Notification) -> None:
        """Deliver ``note`` to every URL concurrently; raise :class:`DeliveryFailed` unless all took it."""
        if not self.urls:
            return
        session = self._open()
        body = msgspec.json.encode({"kind": note.kind, "id": note.id, "payload": note.payload})
        headers = {"Content-Type": "application/json", "User-Agent": "hydrovisor-notifier",
                   "X-Hydrovisor-Notification-Id": str(note.id), "X-Hydrovisor-Attempt": str(note.attempts + 1)}
        problems = await asyncio.gather(*(self._post(session, url, body, headers) for url in self.urls))
        failed = [f"webhook {i} ({redact(url)}): {problem}"
                  for i, (url, problem) in enumerate(zip(self.urls, problems, strict=True), start=1) if problem]
        if failed:
            raise DeliveryFailed("; ".join(failed))

    async def close(self) -> None:
        """Close the session (a later :meth:`send` opens a new one); idempotent."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _open(self) -> aiohttp.ClientSession:
        guard(self._loop, "WebhookSender")
        if self._session is None or self._session.closed:
            self._loop = asyncio.get_running_loop()
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def _post(self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> str:
        """'' when the URL accepted the notification, else why not."""
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as reply:
                return "" if reply.status in _OK else f"HTTP {reply.status}"
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except aiohttp.ClientConnectorError as exc:
            return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
        except aiohttp.ClientError as exc:
            return type(exc).__name__
