"""An event loop running in a background thread, for tests, benchmarks and the simulator.

The production process runs its loop on the main thread (see ``hydrovisor.app``); code that
only needs *a* loop plus the timer service and bridge (supervision tests, benchmarks) uses
this instead. It is still exactly one loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from hydrovisor.runtime.affinity import LoopAffinity
from hydrovisor.runtime.bridge import Bridge
from hydrovisor.runtime.timers import TimerService

T = TypeVar("T")


class LoopThread:
    """Start with ``with LoopThread() as lt:``; ``lt.run(coro)`` waits for a coroutine's result."""

    def __init__(self, *, debug: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="event-loop", daemon=True)
        self._ready = threading.Event()
        self.affinity = LoopAffinity(self.loop, debug=debug)
        self.timers = TimerService(self.loop, self.affinity)
        self.bridge = Bridge(self.loop, self.affinity)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def __enter__(self) -> LoopThread:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result from the calling thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
