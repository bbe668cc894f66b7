"""The bridge between actor threads and the one event loop.

Actors -> loop: :meth:`Bridge.submit` returns a :class:`BridgeCall` (a ``concurrent.futures.Future``);
:meth:`Bridge.pipe` delivers the outcome back as a message, so the actor stays responsive while the
coroutine runs. Loop -> actors: :meth:`Bridge.ask` awaits a reply through an asyncio future completed
with ``call_soon_threadsafe`` — never ``await pykka_future``, which blocks the loop in ``get()``.

Running out of time never answers "failed" for something that then happens: a call that has not
started is withdrawn (:class:`CallWithdrawn`: it never will), one that has started is waited for,
since cancelling a database write mid-flight leaves unknown whether it committed; an ask whose
message is still queued or being handled raises :class:`AskTimeout`, which carries the reply to come.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hydrovisor.runtime.affinity import LoopAffinity
from hydrovisor.runtime.blocking import blocking_call

if TYPE_CHECKING:
    from hydrovisor.supervisors import ActorSystem

T = TypeVar("T")

log = logging.getLogger(__name__)

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


class Outcome(msgspec.Struct, frozen=True):
    """Result of a piped coroutine: ``value`` when ``error`` is ``None``."""

    value: Any = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the coroutine returned normally."""
        return self.error is None


class CallWithdrawn(TimeoutError):
    """The call had not started on the loop when its time ran out; it was withdrawn and never runs."""


class OutcomeUnknown(TimeoutError):
    """The call started but had not finished after twice its time; it may still take effect.

    Its outcome, when it comes, is logged (``bridge_call_settled_late``).
    """


class AskTimeout(TimeoutError):
    """No reply within the deadline. Not a failure: the message is still queued or being handled
    and may still take effect; ``reply`` resolves with its true outcome."""

    def __init__(self, path: str, message: Any, within: float, reply: asyncio.Future[Any]) -> None:
        super().__init__(f"no reply from {path} to {type(message).__name__} within {within} s; "
                         "it may still take effect")
        self.reply = reply


class BridgeCall(concurrent.futures.Future[T]):
    """A coroutine submitted to the loop; ``result(timeout)`` never reports a timeout for a call that
    then takes effect (see the module docstring)."""

    def result(self, timeout: float | None = None) -> T:
        """The call's value (or its exception); after ``timeout`` s :class:`CallWithdrawn` if it had
        not started, else its true outcome, waiting up to ``timeout`` s more (then :class:`OutcomeUnknown`).

        Waiting is a blocking call: refused or compensated on a pool worker (:mod:`blocking`)."""
        if self.done():
            return super().result()
        with blocking_call("bridge_call"):
            return self._wait(timeout)

    def _wait(self, timeout: float | None) -> T:
        try:
            return super().result(timeout)
        except TimeoutError:
            if self.done():  # it raised TimeoutError itself, or finished on the stroke of the deadline
                return super().result()
        if self.cancel():  # only a call that has not started can be cancelled (Future semantics)
            raise CallWithdrawn(f"not started within {timeout} s: withdrawn") from None
        try:
            return super().result(timeout)
        except TimeoutError:
            if self.done():
                return super().result()
        self.add_done_callback(_log_late)
        raise OutcomeUnknown(f"started but not finished within {2 * (timeout or 0)} s; it may still take effect")


def _log_late(call: concurrent.futures.Future[Any]) -> None:
    error = call.exception()
    log.warning("a bridge call given up on settled later: %s", "ok" if error is None else repr(error),
                extra={"event": "bridge_call_settled_late"})


def _start(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], call: BridgeCall[T]) -> None:
    if not call.set_running_or_notify_cancel():  # withdrawn before the loop got to it
        coro.close()
        return
    loop.create_task(coro).add_done_callback(lambda task: _settle(task, call))


def _settle(task: asyncio.Task[T], call: BridgeCall[T]) -> None:
    if task.cancelled():
        call.set_exception(concurrent.futures.CancelledError())
    elif (error := task.exception()) is not None:
        call.set_exception(error)
    else:
        call.set_result(task.result())


def _log_late_reply(path: str, message: Any, reply: asyncio.Future[Any]) -> None:
    error = None if reply.cancelled() else reply.exception()
    log.warning("%s answered %s after its ask timed out: %s", path, type(message).__name__,
                "ok" if error is None else repr(error), extra={"event": "ask_settled_late", "path": path})


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

    def submit(self, coro: Coroutine[Any, Any, T]) -> BridgeCall[T]:
        """Run ``coro`` on the loop from an actor thread; the caller may wait with a timeout."""
        if self.affinity.on_loop():
            coro.close()
            raise RuntimeError("Bridge.submit is for actor threads; on the loop, await directly")
        call: BridgeCall[T] = BridgeCall()
        try:
            self.loop.call_soon_threadsafe(_start, self.loop, coro, call)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise
        return call

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
        """Ask the actor at ``path`` from the loop without blocking it.

        After ``within`` s raises :class:`AskTimeout`: the message cannot be taken back from the
        actor's mailbox, so the caller learns that its outcome is unknown, never that it failed.
        """
        reply = self.request(path, message)
        try:
            return await asyncio.wait_for(asyncio.shield(reply), within)
        except TimeoutError:
            if reply.done():  # the actor answered TimeoutError itself, or just in time
                return reply.result()
        reply.add_done_callback(lambda done: _log_late_reply(path, message, done))
        raise AskTimeout(path, message, within, reply)

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
