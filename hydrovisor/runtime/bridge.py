"""The bridge between actor threads and the one event loop.

Actors -> loop: :meth:`Bridge.submit` returns a ``concurrent.futures.Future``; :meth:`Bridge.pipe`
delivers the outcome back as a message, so the actor stays responsive while the coroutine runs.
Loop -> actors: :meth:`Bridge.ask` awaits a reply through an asyncio future completed with
``call_soon_threadsafe`` — never ``await pykka_future``, which blocks the loop in ``get()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hydrovisor.runtime.affinity import LoopAffinity

if TYPE_CHECKING:
    from hydrovisor.supervisors.system import ActorSystem

T = TypeVar("T")

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


class Outcome(msgspec.Struct, frozen=True):
    """Result of a piped coroutine: ``value`` when ``error`` is ``None``."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the coroutine returned normally."""
        return self.error is None


class LoopReply:
    """A reply slot for asks issued from the loop: completes an asyncio future thread-safely."""

    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self._loop = loop
        self._future = future

    def set(self, value: Any = None) -> None:
        self._post(value, None)

    def set_exception(self, exc_info: ExcInfo | None = None) -> None:
        self._post(None, (exc_info or sys.exc_info())[1])

    def _post(self, value: Any, error: BaseException | None) -> None:
        # Runs on the replying actor's thread: raising here would kill that actor's loop.
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody awaits this reply
            self._loop.call_soon_threadsafe(_resolve, self._future, value, error)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the asker gave up (timeout / cancellation)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Bridge:
    """Moves work and replies across the loop/actor boundary without blocking the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, affinity: LoopAffinity) -> None:
        self.loop = loop
        self.affinity = affinity
        self._system: ActorSystem | None = None

    def attach(self, system: ActorSystem) -> None:
        """Bind the actor system whose paths :meth:`ask` and :meth:`tell` address."""
        self._system = system

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the loop from an actor thread; the caller may wait with a timeout."""
        if self.affinity.on_loop():
            coro.close()
            raise RuntimeError("Bridge.submit is for actor threads; on the loop, await directly")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def pipe(self, coro: Coroutine[Any, Any, Any], deliver: Callable[[Outcome], None]) -> None:
        """Run ``coro`` on the loop and hand its :class:`Outcome` to ``deliver`` (usually a tell)."""

        def done(fut: concurrent.futures.Future[Any]) -> None:
            if fut.cancelled():
                deliver(Outcome(error=asyncio.CancelledError()))
            elif fut.exception() is not None:
                deliver(Outcome(error=fut.exception()))
            else:
                deliver(Outcome(value=fut.result()))

        asyncio.run_coroutine_threadsafe(coro, self.loop).add_done_callback(done)

    async def ask(self, path: str, message: Any, within: float = 5.0) -> Any:
        """Ask the actor at ``path`` from the loop without blocking it."""
        return await asyncio.wait_for(self.request(path, message), within)

    def request(self, path: str, message: Any) -> asyncio.Future[Any]:
        """Send ``message`` to ``path`` (on the loop) and return the future of its reply.

        Unlike :meth:`ask` there is no deadline: a caller that stops waiting (``asyncio.shield``
        plus a timeout) can still learn later what became of a request that stays queued.
        """
        if self._system is None:
            raise RuntimeError("bridge is not attached to an actor system")
        future: asyncio.Future[Any] = self.loop.create_future()
        self._system.send(path, message, reply_to=LoopReply(self.loop, future))
        return future
