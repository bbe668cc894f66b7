"""Loop affinity: asyncio objects belong to the one event loop thread, and this checks it."""

from __future__ import annotations

import asyncio
import threading


class LoopAffinityError(RuntimeError):
    """An asyncio-owning object was used from a thread other than the loop's."""

    code = "loop_affinity_violation"


class LoopAffinity:
    """Remembers the loop thread; ``check`` fails loudly anywhere else.

    Components that own asyncio objects (pool, broker, HTTP) call ``check`` on entry. With
    ``debug=True`` the loop also runs in asyncio debug mode, which raises on
    ``call_soon``/``call_later`` from a foreign thread and reports slow callbacks.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, debug: bool = False) -> None:
        self.loop = loop
        self.thread_id: int | None = None
        if debug:
            loop.set_debug(True)
        if loop.is_running():
            self.thread_id = threading.get_ident()
        else:
            loop.call_soon(self._capture)

    def _capture(self) -> None:
        self.thread_id = threading.get_ident()

    def on_loop(self) -> bool:
        """True when the caller runs on the loop thread."""
        return self.thread_id == threading.get_ident()

    def check(self, what: str) -> None:
        """Raise :class:`LoopAffinityError` unless called on the loop thread."""
        if not self.on_loop():
            raise LoopAffinityError(
                f"{what} is bound to the event loop and was used from thread "
                f"{threading.current_thread().name!r}; go through the bridge"
            )



def guard(owner: asyncio.AbstractEventLoop | None, what: str) -> None:
    """Fail loudly unless the caller runs on ``owner``, the loop ``what`` was created on.

    Components owning asyncio objects (the database pool, the broker) call this on entry, so a
    call from an actor thread (no running loop) or from another loop raises at once instead of
    corrupting state later. ``owner=None`` means not started yet: nothing to compare.
    """
    if owner is None:
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not owner:
        raise LoopAffinityError(
            f"{what} belongs to the event loop and was used from thread "
            f"{threading.current_thread().name!r}{'' if running is None else ' on another loop'}; "
            "go through the bridge"
        )
