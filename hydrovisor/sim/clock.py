"""The clock of a simulated ESP32: uptime from boot, wall time only once someone told it the time."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["DeviceClock"]

_MIN_UNIX = 1_000_000_000  # a time response below this is not a wall-clock time


class DeviceClock:
    """Uptime since ``reboot()`` and, after ``sync()``, Unix time (server time + monotonic elapsed).

    Like the firmware, ``now()`` before the first sync is the uptime (which a server recognises as < 10^9).
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._boot = monotonic()
        self._offset: float | None = None

    @property
    def synced(self) -> bool:
        """True once the node has been told the time (since the last reboot)."""
        return self._offset is not None

    def uptime(self) -> float:
        """Seconds since boot."""
        return self._monotonic() - self._boot

    def now(self) -> float:
        """Unix seconds when synced, else the uptime."""
        if self._offset is None:
            return self.uptime()
        return self._monotonic() + self._offset

    def sync(self, unix_ts: float) -> bool:
        """Set the wall clock to ``unix_ts`` (seconds); False (ignored) for a value that is not a Unix time."""
        if isinstance(unix_ts, bool) or not isinstance(unix_ts, int | float) or not math.isfinite(unix_ts) \
                or unix_ts < _MIN_UNIX:
            return False
        self._offset = float(unix_ts) - self._monotonic()
        return True

    def reboot(self) -> None:
        """Power cycle: uptime restarts and the wall clock is lost."""
        self._boot = self._monotonic()
        self._offset = None
