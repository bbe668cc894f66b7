"""Task dumps taken from another thread, the way the loop guard takes them while the loop is stalled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import msgspec
import pytest

from hydrovisor.process import task_dump
from hydrovisor.process.task_dump import TaskDump, TaskInfo, ThreadInfo
from hydrovisor.runtime.loop_thread import LoopThread
from tests.helpers import wait_until


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    with LoopThread() as loop_thread:
        yield loop_thread


def _loop_thread(dump: TaskDump) -> ThreadInfo:
    (thread,) = (t for t in dump.threads if t.is_loop_thread)
    return thread


def _task(dump: TaskDump, name: str) -> TaskInfo:
    (task,) = (t for t in dump.tasks if t.name == name)
    return task


def _functions(stack: list[task_dump.FrameInfo]) -> list[str]:
    return [frame.function for frame in stack]


def _blocked_in_known_function(entered: threading.Event, release: threading.Event) -> None:
    entered.set()
    release.wait(10)


async def _outer(event: asyncio.Event) -> None:
    await _inner(event)


async def _inner(event: asyncio.Event) -> None:
    await event.wait()


async def _deep_await(depth: int, event: asyncio.Event) -> None:
    if depth == 0:
        await event.wait()
    else:
        await _deep_await(depth - 1, event)


async def _blocking_task(entered: threading.Event, release: threading.Event) -> None:
    _blocked_in_known_function(entered, release)


def _recurse(depth: int, entered: threading.Event, release: threading.Event) -> None:
    if depth == 0:
        _blocked_in_known_function(entered, release)
    else:
        _recurse(depth - 1, entered, release)


def test_blocked_loop_shows_the_blocking_function_in_the_loop_thread(lt: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()
    lt.loop.call_soon_threadsafe(_blocked_in_known_function, entered, release)
    assert entered.wait(5)
    try:
        dump = task_dump.capture(lt.loop, "inc-1", "LOOP_STALL_DETECTED", loop_thread_id=lt.affinity.thread_id)
    finally:
        release.set()

    assert (dump.incident_id, dump.context) == ("inc-1", "LOOP_STALL_DETECTED")
    loop_thread = _loop_thread(dump)
    assert loop_thread.name == "event-loop"
    assert loop_thread.daemon
    (frame,) = (f for f in loop_thread.stack if f.function == "_blocked_in_known_function")
    assert frame.file == __file__
    assert frame.code in {"entered.set()", "release.wait(10)"}  # source lines are read too
    assert "BaseEventLoop.run_forever" in _functions(loop_thread.stack)
    assert loop_thread.stack_depth >= len(loop_thread.stack)
    # Every thread is there, the capturing one included.
    assert threading.get_ident() in {t.thread_id for t in dump.threads}
    assert dump.total_threads == len(dump.threads) >= 2


def test_named_tasks_appear_with_their_await_chain(lt: LoopThread) -> None:
    event = lt.run(_make_event())
    lt.loop.call_soon_threadsafe(lambda: lt.loop.create_task(_outer(event), name="sensor-poll"))
    wait_until(lambda: any(t.get_name() == "sensor-poll" for t in asyncio.all_tasks(lt.loop)))

    dump = task_dump.capture(lt.loop, "inc-2", "manual", loop_thread_id=lt.affinity.thread_id)

    task = _task(dump, "sensor-poll")
    assert task.state == "pending"
    assert task.coroutine == "_outer"
    assert task.exception is None
    assert _functions(task.stack) == ["_outer", "_inner", "Event.wait"]
    assert task.stack[1].code == "await event.wait()"
    assert task.stack_depth == 3
    assert dump.total_tasks == len(dump.tasks)
    lt.loop.call_soon_threadsafe(event.set)


def test_the_running_task_stack_comes_from_the_loop_thread(lt: LoopThread) -> None:
    entered, release = threading.Event(), threading.Event()
    lt.loop.call_soon_threadsafe(lambda: lt.loop.create_task(_blocking_task(entered, release), name="hog"))
    assert entered.wait(5)
    try:
        dump = task_dump.capture(lt.loop, "inc-3", "stall", loop_thread_id=lt.affinity.thread_id)
    finally:
        release.set()

    task = _task(dump, "hog")
    assert task.state == "pending"
    assert _functions(task.stack)[0] == "_blocking_task"
    assert _functions(task.stack)[1] == "_blocked_in_known_function"


def test_deep_await_chain_is_cut_to_the_innermost_frames(lt: LoopThread) -> None:
    event = lt.run(_make_event())
    lt.loop.call_soon_threadsafe(lambda: lt.loop.create_task(_deep_await(200, event), name="deep"))
    wait_until(lambda: any(t.get_name() == "deep" for t in asyncio.all_tasks(lt.loop)))

    task = _task(task_dump.capture(lt.loop, "inc-4", "manual", max_frames=10), "deep")

    assert task.stack_depth == 201 + 1  # 201 levels of _deep_await, then Event.wait
    assert _functions(task.stack) == ["_deep_await"] * 9 + ["Event.wait"]
    lt.loop.call_soon_threadsafe(event.set)


def test_deep_recursion_in_a_thread_is_cut_with_the_full_depth_counted() -> None:
    entered, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=_recurse, args=(500, entered, release), name="recursive")
    thread.start()
    assert entered.wait(5)
    try:
        dump = task_dump.capture(None, "inc-5", "manual", max_frames=40)
    finally:
        release.set()
        thread.join(5)

    (info,) = (t for t in dump.threads if t.name == "recursive")
    assert len(info.stack) == 40
    assert info.stack_depth > 500  # 501 _recurse frames plus the thread bootstrap and the wait
    assert not info.daemon
    functions = _functions(info.stack)
    assert functions[0] == "_recurse"  # the outermost frames (bootstrap, run) were cut
    assert "_blocked_in_known_function" in functions
    assert len(task_dump.to_json(dump)) < 200_000


def test_without_a_loop_only_threads_are_dumped() -> None:
    dump = task_dump.capture(None, "inc-6", "manual")

    assert dump.tasks == []
    assert dump.total_tasks == 0
    assert not any(t.is_loop_thread for t in dump.threads)
    (me,) = (t for t in dump.threads if t.thread_id == threading.get_ident())
    assert me.stack[-1].function == "capture"
    assert me.name == threading.current_thread().name


def test_an_unreadable_task_stack_is_reported_not_raised(lt: LoopThread, monkeypatch: pytest.MonkeyPatch) -> None:
    event = lt.run(_make_event())
    lt.loop.call_soon_threadsafe(lambda: lt.loop.create_task(_outer(event), name="odd"))
    wait_until(lambda: any(t.get_name() == "odd" for t in asyncio.all_tasks(lt.loop)))

    def broken(*_: object) -> list[object]:
        raise ValueError("frame gone")

    monkeypatch.setattr(task_dump, "_coroutine_frames", broken)
    task = _task(task_dump.capture(lt.loop, "inc-7", "manual"), "odd")

    assert task.stack == []
    assert task.stack_depth == 0
    assert task.exception == "stack unavailable: ValueError('frame gone')"
    lt.loop.call_soon_threadsafe(event.set)


def test_json_round_trip(lt: LoopThread) -> None:
    dump = task_dump.capture(lt.loop, "inc-8", "manual", loop_thread_id=lt.affinity.thread_id)

    assert msgspec.json.decode(task_dump.to_json(dump), type=TaskDump) == dump


async def _make_event() -> asyncio.Event:
    return asyncio.Event()
