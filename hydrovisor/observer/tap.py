"""``MqttTap``: a real MQTT client that subscribes to ``hydro/#`` and feeds every publish to the observer.

It sees exactly what the nodes see: the server's commands (the embedded broker delivers its in-process
publishes to every matching subscription) and everything the nodes publish.

Broker access: the embedded broker's device ACL lets a device subscribe to its own ``config``/``command``
topics only, and there is no service or monitoring account. Only a development-mode broker
(``dev_mode=True``, as every test instance runs) admits an anonymous client, or one whose username the
device directory does not know, *unrestricted*: that is how the tap connects (no username by default; a
client id of its own, so it takes no device's id). Against a production broker it would need a
monitoring credential with a read-only ``hydro/#`` ACL, which does not exist yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from amqtt.client import MQTTClient

if TYPE_CHECKING:
    from hydrovisor.observer.observer import SafetyObserver

__all__ = ["MqttTap"]

log = logging.getLogger(__name__)

_QOS_1 = 1


class MqttTap:
    """Subscribes to ``topics`` on ``url`` (``mqtt://host:port``) and calls ``observer.observe`` for every
    publish with ``clock()`` as its time (zone-clock seconds, the plant sampler's clock too).

    ``before_command``: called right before a ``.../command`` publish is observed, e.g.
    ``PlantSampler.sample_now``, so command-time rules judge the plant as it is at that moment rather than
    at the last periodic sample. Runs on the event loop that calls ``start()``.
    """

    def __init__(self, observer: SafetyObserver, url: str, clock: Callable[[], float], *,
                 client_id: str = "hydrovisor-observer", username: str | None = None, password: str | None = None,
                 topics: tuple[str, ...] = ("hydro/#",), before_command: Callable[[], None] | None = None,
                 connect_timeout_s: float = 10.0) -> None:
        self._observer = observer
        self._uri = _with_credentials(url, username, password)
        self._clock = clock
        self._client_id = client_id
        self._topics = topics
        self._before_command = before_command
        self._connect_timeout_s = connect_timeout_s
        self._client: MQTTClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self.received = 0
        self.errors = 0
        self.lost: BaseException | None = None

    @property
    def running(self) -> bool:
        """True while the tap is connected and reading."""
        return self._reader is not None and not self._reader.done()

    async def start(self) -> None:
        """Connect, subscribe (waiting for the SUBACK) and start reading. Raises when the broker refuses.
        A no-op while already running."""
        if self.running:
            return
        _quiet_amqtt_client_logs()
        config: dict[str, Any] = {
            "auto_reconnect": False,  # a lost tap must show (``lost``), not silently miss a window
            "cleansession": True,
            "keep_alive": 30,
            "default_qos": _QOS_1,
            "plugins": {},  # amqtt's packet logger would log CONNECT (and so a password)
        }
        client = MQTTClient(client_id=self._client_id, config=config)
        timeout = self._connect_timeout_s
        try:
            await asyncio.wait_for(client.connect(self._uri), timeout)
            granted = await asyncio.wait_for(client.subscribe([(topic, _QOS_1) for topic in self._topics]), timeout)
            if any(code not in (0, 1, 2) for code in granted):
                raise PermissionError(f"the broker refused the subscription {self._topics} (return codes {granted})")
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 3.0)
            raise
        self._client = client
        self._reader = asyncio.get_running_loop().create_task(self._read(client), name="observer-mqtt-tap")

    async def stop(self) -> None:
        """Stop reading and disconnect (never raises)."""
        reader, self._reader = self._reader, None
        client, self._client = self._client, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 3.0)

    async def _read(self, client: MQTTClient) -> None:
        while True:
            try:
                message = await client.deliver_message()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection is gone: record it, a campaign must not pass blind
                self.lost = exc
                log.warning("observer tap lost its connection: %s", exc, extra={"event": "observer_tap_lost"})
                return
            if message is None:
                continue
            self.received += 1
            topic = message.topic
            try:
                if self._before_command is not None and topic.endswith("/command"):
                    self._before_command()
                self._observer.observe(topic, bytes(message.data or b""), self._clock())
            except Exception:  # the observer never raises on input; if it does, keep observing the rest
                self.errors += 1
                log.exception("observer failed on a publish", extra={"event": "observer_error", "topic": topic})


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with ``username``/``password`` (percent-encoded) in it when a username is given."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "ws", "wss") or not parts.hostname:
        raise ValueError(f"broker URL must be mqtt://host:port (or mqtts/ws/wss), not {url!r}")
    if username is None:
        return url
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password is not None else "")
    return urlunsplit((parts.scheme, f"{userinfo}@{netloc}", parts.path, parts.query, parts.fragment))


def _quiet_amqtt_client_logs() -> None:
    """amqtt's client logs the broker URI, password included, at DEBUG: keep it above DEBUG."""
    logger = logging.getLogger("amqtt.client")
    if logger.getEffectiveLevel() <= logging.DEBUG:
        logger.setLevel(logging.INFO)
