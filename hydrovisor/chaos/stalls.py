"""Real event-loop stalls for fault injection.

Each kind truly blocks the loop thread for about ``duration`` seconds and ends by itself: nothing
here is an ``asyncio.sleep`` pretending to be a stall, so the loop guard, the watchdog and the task
dump see exactly what a genuine bug of that kind would show them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import socket
import threading
import time
from collections.abc import Callable

import msgspec

RunInActor = Callable[[Callable[[], None]], None]
"""Runs the callable on an actor's thread (never the loop's); returns without waiting for it."""

# Levels of one recursive_await descent: deep enough to show in a dump, far below the recursion limit.
_RECURSION_DEPTH = 300
# How much longer than the stall the deadlock's actor side waits (for the loop, for lock B) before giving
# up: covers the lag between its steps and the loop's, while still bounding a late or stuck actor.
_ACTOR_MARGIN = 2.0

# asyncio keeps only weak references to tasks; these are awaited by nobody.
_running: set[asyncio.Task[None]] = set()


class StallKind(enum.StrEnum):
    """What blocks the loop."""

    CPU_BOUND_LOOP = "cpu_bound_loop"
    SYNC_IO_BLOCK = "sync_io_block"
    CROSS_LOCK_DEADLOCK = "cross_lock_deadlock"
    RECURSIVE_AWAIT = "recursive_await"


class StallResult(msgspec.Struct, frozen=True):
    """When the loop was blocked, in ``time.monotonic()`` seconds."""

    kind: StallKind
    started: float
    ended: float


def schedule_stall(
    kind: StallKind,
    loop: asyncio.AbstractEventLoop,
    duration: float,
    *,
    run_in_actor: RunInActor,
    delay: float = 0.05,
) -> concurrent.futures.Future[StallResult]:
    """Block ``loop`` for about ``duration`` s in the way ``kind`` describes, starting ``delay`` s from now.

    Callable from any thread, the loop's included; the delay lets whatever triggered the stall (an
    HTTP response, say) be flushed first. ``run_in_actor`` is only used by
    :attr:`StallKind.CROSS_LOCK_DEADLOCK`. The future resolves once the stall is over and the loop is
    free again; cancelling it before the stall begins calls the stall off.
    """
    if duration <= 0 or delay < 0:
        raise ValueError(f"duration must be > 0 and delay >= 0, got {duration} and {delay}")
    result: concurrent.futures.Future[StallResult] = concurrent.futures.Future()

    def start() -> None:
        if not result.set_running_or_notify_cancel():
            return
        task = loop.create_task(_deliver(kind, duration, run_in_actor, result), name=f"chaos-stall-{kind}")
        _running.add(task)
        task.add_done_callback(_running.discard)

    # call_later is not thread-safe; the hop through call_soon_threadsafe makes the whole thing so.
    loop.call_soon_threadsafe(loop.call_later, delay, start)
    return result


async def _deliver(
    kind: StallKind, duration: float, run_in_actor: RunInActor, result: concurrent.futures.Future[StallResult]
) -> None:
    try:
        outcome = await _stall(kind, duration, run_in_actor)
    except BaseException as exc:  # goes to whoever waits on the future; the task itself is awaited by nobody
        result.set_exception(exc)
        if not isinstance(exc, Exception):
            raise
    else:
        result.set_result(outcome)


async def _stall(kind: StallKind, duration: float, run_in_actor: RunInActor) -> StallResult:
    if kind is StallKind.CROSS_LOCK_DEADLOCK:
        started, ended = await _CrossLock(duration).deadlock(run_in_actor)
        return StallResult(kind, started, ended)
    started = time.monotonic()
    if kind is StallKind.CPU_BOUND_LOOP:
        _cpu_bound_loop(duration)
    elif kind is StallKind.SYNC_IO_BLOCK:
        _sync_io_block(duration)
    else:
        await _recursive_await_stall(duration)
    return StallResult(kind, started, time.monotonic())


def _cpu_bound_loop(duration: float) -> int:
    """Pure-Python arithmetic on the loop thread until ``duration`` has elapsed.

    The GIL is only handed over at the interpreter's switch interval, which is what lets a watchdog
    thread run (and notice) while the loop is stuck here.
    """
    deadline = time.monotonic() + duration
    accumulator = 0
    while time.monotonic() < deadline:
        for i in range(10_000):  # ~ a millisecond of work between clock reads
            accumulator = (accumulator * 31 + i) % 1_000_003
    return accumulator


def _sync_io_block(duration: float) -> None:
    """A blocking ``recv`` on a socket pair nobody writes to, bounded by a socket timeout."""
    deadline = time.monotonic() + duration
    reader, writer = socket.socketpair()
    with reader, writer:
        # Loop on the remaining time: a timeout may wake a hair early, and the stall must last the full duration.
        while (remaining := deadline - time.monotonic()) > 0:
            reader.settimeout(remaining)
            try:
                reader.recv(1)
            except TimeoutError:
                continue


async def _recursive_await_stall(duration: float) -> None:
    """Descend and unwind a chain of recursive awaits until ``duration`` has elapsed.

    Awaiting a coroutine that never suspends does not yield to the loop, so the loop is blocked the
    whole time, with a deep coroutine stack for a dump to show.
    """
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        await _recursive_await(_RECURSION_DEPTH)


async def _recursive_await(depth: int) -> int:
    work = sum(i * i for i in range(50))
    if depth == 0:
        return work
    return work + await _recursive_await(depth - 1)


class _CrossLock:
    """A true deadlock between the loop and an actor thread, broken by timeouts.

    The loop holds asyncio lock A and blocks its thread waiting for threading lock B; the actor holds
    B and waits for a coroutine that needs A, which the blocked loop can never run. After ``duration``
    the loop's wait for B times out, A is released, the actor's coroutine gets it and the actor
    releases B.
    """

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.lock_a = asyncio.Lock()
        self.lock_b = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._actor_holds_b = asyncio.Event()
        self._actor_done = asyncio.Event()

    async def deadlock(self, run_in_actor: RunInActor) -> tuple[float, float]:
        """Run the loop's side; returns when the loop was blocked, once the actor has released B too."""
        patience = self.duration + _ACTOR_MARGIN
        async with self.lock_a:
            run_in_actor(self._actor_side)
            try:
                # Asynchronously: the loop must stay free until the actor truly holds B.
                await asyncio.wait_for(self._actor_holds_b.wait(), patience)
            except TimeoutError:
                raise TimeoutError(f"the actor did not take lock B within {patience:.1f}s; no stall") from None
            started = time.monotonic()
            # Synchronously, on the loop thread: from here on the loop cannot run the actor's coroutine.
            if self.lock_b.acquire(timeout=self.duration):
                self.lock_b.release()  # only if the actor gave up early; never keep B
            ended = time.monotonic()
        await asyncio.wait_for(self._actor_done.wait(), patience)
        return started, ended

    def _actor_side(self) -> None:
        """On the actor's thread: hold B while waiting for a coroutine that needs A."""
        patience = self.duration + _ACTOR_MARGIN
        if not self.lock_b.acquire(timeout=patience):
            return
        try:
            future = asyncio.run_coroutine_threadsafe(self._needs_a(), self._loop)
            self._signal(self._actor_holds_b)
            try:
                future.result(timeout=patience)
            except TimeoutError:
                future.cancel()
            except concurrent.futures.CancelledError:  # the loop is shutting down and cancelled it
                pass
        except RuntimeError:  # the loop closed before the coroutine could be submitted
            pass
        finally:
            self.lock_b.release()
            self._signal(self._actor_done)

    async def _needs_a(self) -> None:
        async with self.lock_a:
            pass

    def _signal(self, event: asyncio.Event) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting any more
            self._loop.call_soon_threadsafe(event.set)
