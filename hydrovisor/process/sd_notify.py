"""``SdNotifier``: the systemd notify protocol (``READY=1``, ``WATCHDOG=1``, ...) without libsystemd.

systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the Linux abstract namespace)
and, when the unit sets ``WatchdogSec=``, ``WATCHDOG_USEC`` (+ ``WATCHDOG_PID``). Each notification
is one datagram of ``KEY=value`` lines. Outside systemd every method is a cheap no-op.

Nothing here raises: the control plane must keep running when the notify socket goes away, so a
failed send returns ``False``, is counted, and is logged once per streak of failures.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _clean(text: str) -> str:
    # a newline would start a new KEY=value line: a STATUS could otherwise forge e.g. READY=1
    return text.replace("\r\n", " ").replace("\n", " ")


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between pings (half the timeout, like sd_watchdog_enabled advises), or None."""
    raw_pid = environ.get("WATCHDOG_PID")
    # a WATCHDOG_PID of another process means the variables were inherited from our parent:
    # systemd watches that process, not this one
    if raw_pid is not None and raw_pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1e6 if usec > 0 else None


class SdNotifier:
    """Client of systemd's notify socket; thread-safe, never raises, no-op when disabled.

    ``address`` is the ``NOTIFY_SOCKET`` value (``None``: disabled); ``watchdog_interval`` is how
    often the caller should send :meth:`watchdog` (``None``: systemd asked for no watchdog).
    """

    def __init__(self, address: str | None, watchdog_interval: float | None = None) -> None:
        self._address = address
        # the kernel wants a leading NUL for an abstract socket; systemd spells it "@"
        self._target = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval = watchdog_interval if address else None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failures = 0
        self._failing = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SdNotifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (as set by systemd)."""
        address = environ.get("NOTIFY_SOCKET") or None
        return cls(address, _watchdog_interval(environ) if address else None)

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to talk to (running under ``Type=notify``)."""
        return self._target is not None

    @property
    def send_failures(self) -> int:
        """Datagrams that could not be sent since this notifier was created."""
        with self._lock:
            return self._failures

    def ready(self, status: str | None = None) -> None:
        """Startup finished (``READY=1``): systemd marks the unit started and arms the watchdog."""
        self.notify(READY="1", **({"STATUS": status} if status is not None else {}))

    def stopping(self, status: str | None = None) -> None:
        """Shutdown began (``STOPPING=1``), so systemd shows "deactivating" rather than a failure."""
        self.notify(STOPPING="1", **({"STATUS": status} if status is not None else {}))

    def watchdog(self) -> None:
        """Keep-alive ping (``WATCHDOG=1``); send only while the process is actually healthy."""
        self.notify(WATCHDOG="1")

    def status(self, text: str) -> None:
        """Free-form status line shown by ``systemctl status``."""
        self.notify(STATUS=text)

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False when disabled, empty or not sent."""
        if self._target is None or not fields:
            return False
        payload = "".join(f"{_clean(key)}={_clean(value)}\n" for key, value in fields.items())
        data = payload.encode("utf-8", errors="replace")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    # a receiver that stops reading fills its queue; a blocking send would then
                    # freeze the caller (the event loop), so a full queue is a failed send instead
                    sock.setblocking(False)
                    self._sock = sock
                self._sock.sendto(data, self._target)
            except OSError as exc:
                self._failures += 1
                if not self._failing:
                    self._failing = True
                    log.warning("sd_notify to %s failed: %s", self._address, exc,
                                extra={"event": "sd_notify_failed", "socket": self._address,
                                       "error": str(exc), "failures": self._failures})
                return False
            self._failing = False
            return True

    def close(self) -> None:
        """Close the socket; a later notification opens a new one."""
        with self._lock:
            if self._sock is not None:
                sock, self._sock = self._sock, None
                sock.close()
