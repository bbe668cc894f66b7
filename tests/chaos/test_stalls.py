"""Injected stalls really block the loop, end by themselves, and show up in a task dump."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from types import TracebackType

import pytest

from hydrovisor.chaos import stalls
from hydrovisor.chaos.stalls import StallKind, schedule_stall
from hydrovisor.process import task_dump
from hydrovisor.runtime.loop_thread import LoopThread
from tests.helpers import wait_until

DURATION = 0.4

# The function each kind blocks the loop in, as a task dump names it.
STALL_FUNCTION = {
    StallKind.CPU_BOUND_LOOP: "_cpu_bound_loop",
    StallKind.SYNC_IO_BLOCK: "_sync_io_block",
    StallKind.CROSS_LOCK_DEADLOCK: "_CrossLock.deadlock",
    StallKind.RECURSIVE_AWAIT: "_recursive_await",
}


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    with LoopThread() as loop_thread:
        yield loop_thread


class FakeActor:
    """``run_in_actor`` backed by plain threads; remembers what it ran so tests can inspect it."""

    def __init__(self, start_after: float = 0.0) -> None:
        self.start_after = start_after
        self.ran: list[Callable[[], None]] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.ran.append(fn)
        thread = threading.Thread(target=self._run, args=(fn,), name="fake-actor", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, fn: Callable[[], None]) -> None:
        time.sleep(self.start_after)
        fn()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive()


class Heartbeat:
    """Pings the loop from another thread every few ms; the loop records when each ping ran."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.beats: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ping, name="heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5)

    def _ping(self) -> None:
        while not self._stop.wait(0.005):
            self.loop.call_soon_threadsafe(lambda: self.beats.append(time.monotonic()))

    def max_gap(self) -> float:
        return max(b - a for a, b in pairwise(self.beats))


def assert_loop_responsive(lt: LoopThread) -> None:
    started = time.monotonic()
    assert lt.run(asyncio.sleep(0, "alive"), timeout=2) == "alive"
    assert time.monotonic() - started < 0.2


@pytest.mark.parametrize("kind", list(StallKind))
def test_stall_blocks_the_loop_for_its_duration_and_ends_by_itself(lt: LoopThread, kind: StallKind) -> None:
    actor = FakeActor()
    scheduled = time.monotonic()
    with Heartbeat(lt.loop) as heartbeat:
        future = schedule_stall(kind, lt.loop, DURATION, run_in_actor=actor)
        result = future.result(timeout=5)
        time.sleep(0.05)  # a few beats after the stall, so its gap is closed

    assert heartbeat.max_gap() >= 0.8 * DURATION
    assert result.kind is kind
    assert scheduled + 0.05 <= result.started < result.ended
    assert 0.95 * DURATION <= result.ended - result.started < DURATION + 0.5
    assert_loop_responsive(lt)
    actor.join()
    if kind is StallKind.CROSS_LOCK_DEADLOCK:
        (actor_side,) = actor.ran
        locks = actor_side.__self__  # type: ignore[attr-defined]
        assert not locks.lock_a.locked()
        assert not locks.lock_b.locked()
    else:
        assert actor.ran == []


@pytest.mark.parametrize("kind", list(StallKind))
def test_a_task_dump_during_the_stall_shows_where_the_loop_is_stuck(lt: LoopThread, kind: StallKind) -> None:
    actor = FakeActor()
    function = STALL_FUNCTION[kind]
    future = schedule_stall(kind, lt.loop, 2.0, run_in_actor=actor)  # long: a dump under load takes time

    def dump_showing_the_stall() -> task_dump.TaskDump | None:
        dump = task_dump.capture(lt.loop, "inc", "LOOP_STALL_DETECTED", loop_thread_id=lt.affinity.thread_id)
        (loop_thread,) = (t for t in dump.threads if t.is_loop_thread)
        # recursive_await descends and unwinds over and over: wait for a moment it is deep.
        deep_enough = kind is not StallKind.RECURSIVE_AWAIT or any(
            t.name == f"chaos-stall-{kind}" and t.stack_depth > 100 for t in dump.tasks)
        # the deadlock's coroutine also runs (briefly, unblocked) before the actor thread exists
        both_sides = kind is not StallKind.CROSS_LOCK_DEADLOCK or any(
            t.name == "fake-actor" and "_CrossLock._actor_side" in [f.function for f in t.stack] for t in dump.threads)
        stuck = function in [f.function for f in loop_thread.stack]
        return dump if deep_enough and both_sides and stuck else None

    dump = wait_until(dump_showing_the_stall, timeout=4, what=f"{function} on the loop thread")
    assert not future.done()  # taken while the loop was stuck
    (task,) = (t for t in dump.tasks if t.name == f"chaos-stall-{kind}")
    assert function in [f.function for f in task.stack]
    if kind is StallKind.RECURSIVE_AWAIT:
        assert task.stack_depth > 100
        assert len(task.stack) == 40
    if kind is StallKind.CROSS_LOCK_DEADLOCK:
        # The other half of the deadlock: the actor, holding B, waits for the loop.
        (actor_thread,) = (t for t in dump.threads if t.name == "fake-actor")
        assert "_CrossLock._actor_side" in [f.function for f in actor_thread.stack]
    future.result(timeout=5)
    actor.join()


def test_a_late_actor_calls_the_deadlock_off_without_hanging(
    lt: LoopThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stalls, "_ACTOR_MARGIN", 0.1)
    actor = FakeActor(start_after=0.8)
    future = schedule_stall(StallKind.CROSS_LOCK_DEADLOCK, lt.loop, 0.3, run_in_actor=actor, delay=0)

    with pytest.raises(TimeoutError, match="did not take lock B"):
        future.result(timeout=5)
    assert_loop_responsive(lt)
    actor.join()  # it ran after all, found A free and finished
    locks = actor.ran[0].__self__  # type: ignore[attr-defined]
    assert not locks.lock_a.locked()
    assert not locks.lock_b.locked()


def test_schedule_from_the_loop_itself(lt: LoopThread) -> None:
    async def schedule() -> object:
        return schedule_stall(StallKind.CPU_BOUND_LOOP, asyncio.get_running_loop(), 0.3, run_in_actor=FakeActor())

    future = lt.run(schedule())
    assert future.result(timeout=5).kind is StallKind.CPU_BOUND_LOOP  # type: ignore[attr-defined]


def test_cancelled_before_it_starts_the_stall_is_called_off(lt: LoopThread) -> None:
    with Heartbeat(lt.loop) as heartbeat:
        future = schedule_stall(StallKind.CPU_BOUND_LOOP, lt.loop, 0.5, run_in_actor=FakeActor(), delay=0.2)
        assert future.cancel()
        time.sleep(0.4)

    assert heartbeat.max_gap() < 0.2
    assert_loop_responsive(lt)


def test_rejects_a_non_positive_duration(lt: LoopThread) -> None:
    with pytest.raises(ValueError, match="duration"):
        schedule_stall(StallKind.SYNC_IO_BLOCK, lt.loop, 0, run_in_actor=FakeActor())
