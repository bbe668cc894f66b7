"""One timer service on the event loop for every timeout, heartbeat and restart backoff.

No thread per timer and no ``sleep`` in actors: an actor asks for a callback (usually a ``tell``
to itself) and the loop runs it when due. Callbacks must not block: they run on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import pykka

from hydrovisor.runtime.affinity import LoopAffinity

log = logging.getLogger(__name__)


class Timer:
    """A scheduled callback; ``cancel`` is safe from any thread and idempotent."""

    __slots__ = ("_cancelled", "_handle", "_lock", "_service")

    def __init__(self, service: TimerService) -> None:
        self._service = service
        self._handle: asyncio.TimerHandle | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        """True once cancelled."""
        return self._cancelled

    def cancel(self) -> None:
        """Prevent any further run of the callback."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            handle = self._handle
        if handle is not None:
            self._service.call_on_loop(handle.cancel)

    def _arm(self, handle: asyncio.TimerHandle) -> None:
        with self._lock:
            if self._cancelled:
                handle.cancel()
            else:
                self._handle = handle


class TimerService:
    """Schedules callbacks on the loop; usable from actor threads and from the loop itself."""

    def __init__(self, loop: asyncio.AbstractEventLoop, affinity: LoopAffinity) -> None:
        self._loop = loop
        self._affinity = affinity

    def call_on_loop(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the loop soon (directly scheduled when already on it)."""
        if self._affinity.on_loop():
            self._loop.call_soon(fn)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def after(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once on the loop after ``delay`` seconds."""
        timer = Timer(self)

        def fire() -> None:
            if not timer.cancelled:
                _run(callback)

        self.call_on_loop(lambda: timer._arm(self._loop.call_later(max(0.0, delay), fire)))
        return timer

    def every(self, interval: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` on the loop every ``interval`` seconds until cancelled."""
        if interval <= 0:
            raise ValueError("interval must be > 0")
        timer = Timer(self)

        def fire() -> None:
            if timer.cancelled or not _run(callback):
                return
            timer._arm(self._loop.call_later(interval, fire))

        self.call_on_loop(lambda: timer._arm(self._loop.call_later(interval, fire)))
        return timer


def _run(callback: Callable[[], None]) -> bool:
    """Run one callback; False once its target actor is gone (a periodic timer then ends)."""
    try:
        callback()
    except pykka.ActorDeadError:
        return False
    except Exception:
        log.exception("timer callback failed", extra={"event": "timer_failed"})
    return True
