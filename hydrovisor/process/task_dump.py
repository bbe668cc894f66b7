"""Task and thread dumps of a live process, taken from a watchdog thread while the loop may be stalled.

:func:`capture` never calls into the event loop (it is typically blocked when a dump is wanted) and
never raises: whatever cannot be read is reported as such instead of failing the dump. Coroutine
stacks follow the ``await`` chain of each task; the task that is running on the loop thread right
now is suspended nowhere, so its stack is read from that thread's frames instead.

Threads of a worker pool (:func:`watch_pool`) name the pooled actor whose turn they are running and
for how long, so a stuck turn's stack is attributed to its actor.
"""

from __future__ import annotations

import asyncio
import linecache
import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Protocol

import msgspec

log = logging.getLogger(__name__)

# asyncio.all_tasks copies a WeakSet the loop thread may be mutating; a few retries suffice in practice.
_ALL_TASKS_ATTEMPTS = 5


class FrameInfo(msgspec.Struct, frozen=True):
    """One stack frame: ``function`` is the code's qualified name, ``code`` its source line if readable."""

    file: str
    line: int
    function: str
    code: str | None


class TaskInfo(msgspec.Struct, frozen=True):
    """One asyncio task; ``stack`` is outermost first, innermost last, cut to the innermost frames.

    ``state`` is ``"pending"``, ``"done"`` or ``"cancelled"``. ``exception`` is the task's exception
    when it failed, or why its stack could not be read.
    """

    task_id: int
    name: str
    state: str
    coroutine: str
    stack: list[FrameInfo]
    stack_depth: int
    exception: str | None


class ThreadInfo(msgspec.Struct, frozen=True):
    """One thread; ``stack`` is outermost first, cut to the innermost frames, ``stack_depth`` is uncut.

    On a pool worker running a turn, ``actor`` is that actor's path and ``turn_s`` how long the
    turn has been running (else both are ``None``).
    """

    thread_id: int
    name: str
    daemon: bool
    is_loop_thread: bool
    stack: list[FrameInfo]
    stack_depth: int
    actor: str | None = None
    turn_s: float | None = None


class _PooledActor(Protocol):
    @property
    def path(self) -> str: ...


class _Worker(Protocol):
    # read-only members: the pool's Worker has plain attributes
    @property
    def ident(self) -> int | None: ...
    @property
    def actor(self) -> _PooledActor | None: ...
    @property
    def turn_started(self) -> float | None: ...


class Pool(Protocol):
    """What a dump needs of a worker pool (:class:`hydrovisor.supervisors.WorkerPool`)."""

    def workers(self) -> Iterable[_Worker]:
        """The pool's current worker threads."""
        ...


_watched: weakref.WeakSet[Pool] = weakref.WeakSet()


def watch_pool(pool: Pool) -> None:
    """Attribute ``pool``'s worker threads to the actors they run in every later dump (until it is gone)."""
    _watched.add(pool)


class TaskDump(msgspec.Struct, frozen=True):
    """Every task of one loop and every thread of the process at ``taken_at`` (unix time)."""

    incident_id: str
    context: str
    taken_at: float
    total_tasks: int
    tasks: list[TaskInfo]
    total_threads: int
    threads: list[ThreadInfo]


# A frame read down to plain values first: source lines are looked up afterwards, since file I/O
# releases the GIL and the observed threads may move on meanwhile.
_RawFrame = tuple[str, int, str]


def capture(
    loop: asyncio.AbstractEventLoop | None,
    incident_id: str,
    context: str,
    *,
    loop_thread_id: int | None = None,
    max_frames: int = 40,
    pools: Iterable[Pool] | None = None,
) -> TaskDump:
    """Dump the tasks of ``loop`` (none when ``loop`` is ``None``) and the stacks of all threads.

    Safe from any thread and while ``loop`` is blocked; never raises. Each stack keeps its
    innermost ``max_frames`` frames. ``loop_thread_id`` is the ident of the thread running
    ``loop``; that thread gets ``is_loop_thread=True``. Worker threads of ``pools`` (default: every
    pool passed to :func:`watch_pool`) show the actor whose turn they run.
    """
    taken_at = time.time()
    now = time.monotonic()
    thread_frames = sys._current_frames()
    turns = _turns(list(_watched) if pools is None else pools, now)
    tasks = [_task_info(task, thread_frames, max_frames) for task in _all_tasks(loop)]
    tasks.sort(key=lambda info: (info.name, info.task_id))
    threads = _thread_infos(thread_frames, loop_thread_id, max_frames, turns)
    return TaskDump(
        incident_id=incident_id,
        context=context,
        taken_at=taken_at,
        total_tasks=len(tasks),
        tasks=tasks,
        total_threads=len(threads),
        threads=threads,
    )


def to_json(dump: TaskDump) -> bytes:
    """The dump as JSON."""
    return msgspec.json.encode(dump)


def _turns(pools: Iterable[Pool], now: float) -> dict[int, tuple[str, float | None]]:
    """Thread ident -> (actor path, seconds into its turn) of every pool worker running a turn."""
    turns: dict[int, tuple[str, float | None]] = {}
    for pool in pools:
        try:
            workers = list(pool.workers())
        except Exception:  # a dump must not fail because of one pool
            log.exception("task dump: cannot list the workers of %r", pool)
            continue
        for worker in workers:
            # one read each: the worker may finish its turn meanwhile (then the values may be one turn apart)
            ident, actor, started = worker.ident, worker.actor, worker.turn_started
            if ident is None or actor is None:
                continue
            turns[ident] = (actor.path, round(now - started, 3) if started is not None else None)
    return turns


def _all_tasks(loop: asyncio.AbstractEventLoop | None) -> list[asyncio.Task[object]]:
    if loop is None:
        return []
    for _ in range(_ALL_TASKS_ATTEMPTS):
        try:
            return list(asyncio.all_tasks(loop))
        except RuntimeError:  # "Set changed size during iteration": the loop thread created a task
            continue
    log.warning("task dump: asyncio.all_tasks kept racing with the loop thread; dumping threads only")
    return []


def _task_info(task: asyncio.Task[object], thread_frames: Mapping[int, FrameType], max_frames: int) -> TaskInfo:
    coro: object = task.get_coro()
    if task.cancelled():
        state = "cancelled"
    elif task.done():
        state = "done"
    else:
        state = "pending"
    # The private field rather than task.exception(): that would mark the exception as retrieved and
    # silence asyncio's "exception was never retrieved" report, and a dump must not change behaviour.
    failure = getattr(task, "_exception", None) if state == "done" else None
    exception = None if failure is None else repr(failure)
    try:
        raw = _coroutine_frames(coro, thread_frames)
    except Exception as exc:  # a dump must not fail because of one odd task
        raw, exception = [], f"stack unavailable: {exc!r}"
    return TaskInfo(
        task_id=id(task),
        name=task.get_name(),
        state=state,
        coroutine=getattr(coro, "__qualname__", None) or repr(coro),
        stack=_frame_infos(raw[max(len(raw) - max_frames, 0) :]),
        stack_depth=len(raw),
        exception=exception,
    )


def _coroutine_frames(coro: object, thread_frames: Mapping[int, FrameType]) -> list[_RawFrame]:
    """Frames of a coroutine's ``await`` chain, outermost first."""
    frames: list[FrameType] = []
    awaited: object = coro
    while awaited is not None:
        frame = _first_attr(awaited, "cr_frame", "gi_frame", "ag_frame")
        if not isinstance(frame, FrameType):  # a future, a finished coroutine, a C awaitable: the chain ends
            break
        frames.append(frame)
        if _first_attr(awaited, "cr_running", "gi_running", "ag_running"):
            # Executing right now: what it calls lives on the thread's stack, not in the await chain.
            frames.extend(_frames_inside(frame, thread_frames))
            break
        awaited = _first_attr(awaited, "cr_await", "gi_yieldfrom", "ag_await")
    return [_raw(frame) for frame in frames]


def _first_attr(obj: object, *names: str) -> object:
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _frames_inside(outer: FrameType, thread_frames: Mapping[int, FrameType]) -> list[FrameType]:
    """The frames called from ``outer`` on whichever thread is executing it, outermost first."""
    for top in thread_frames.values():
        inner: list[FrameType] = []
        frame: FrameType | None = top
        while frame is not None:
            if frame is outer:
                inner.reverse()
                return inner
            inner.append(frame)
            frame = frame.f_back
    return []


def _thread_infos(
    thread_frames: Mapping[int, FrameType],
    loop_thread_id: int | None,
    max_frames: int,
    turns: Mapping[int, tuple[str, float | None]],
) -> list[ThreadInfo]:
    # (ident, name, daemon, innermost frame) of every thread, then their stacks.
    threads: list[tuple[int, str, bool, FrameType | None]] = []
    for thread in threading.enumerate():
        if thread.ident is None:  # not started: enumerate() should not list it, but nothing to dump anyway
            continue
        top = thread_frames.get(thread.ident)
        # No frame: the thread ended between the two snapshots.
        name = thread.name if top is not None else f"{thread.name} (stack unavailable: thread exited)"
        threads.append((thread.ident, name, thread.daemon, top))
    known = {ident for ident, _, _, _ in threads}
    threads.extend(
        # Started outside the threading module (C extensions), or just now.
        (ident, f"<thread {ident} unknown to threading>", False, top)
        for ident, top in thread_frames.items()
        if ident not in known
    )
    infos: list[ThreadInfo] = []
    for ident, name, daemon, top in threads:
        stack, depth = _thread_stack(top, max_frames)
        actor, turn_s = turns.get(ident, (None, None))
        infos.append(
            ThreadInfo(
                thread_id=ident,
                name=name,
                daemon=daemon,
                is_loop_thread=ident == loop_thread_id,
                stack=_frame_infos(stack),
                stack_depth=depth,
                actor=actor,
                turn_s=turn_s,
            )
        )
    return infos


def _thread_stack(top: FrameType | None, max_frames: int) -> tuple[list[_RawFrame], int]:
    """The innermost ``max_frames`` frames from ``top`` outward, outermost first, and the full depth."""
    kept: list[_RawFrame] = []
    depth = 0
    frame = top
    while frame is not None:
        if depth < max_frames:
            kept.append(_raw(frame))
        depth += 1
        frame = frame.f_back
    kept.reverse()
    return kept, depth


def _raw(frame: FrameType) -> _RawFrame:
    code = frame.f_code
    return code.co_filename, frame.f_lineno or 0, code.co_qualname


def _frame_infos(raw: list[_RawFrame]) -> list[FrameInfo]:
    return [FrameInfo(file=file, line=line, function=func, code=_source(file, line)) for file, line, func in raw]


def _source(file: str, line: int) -> str | None:
    try:
        text = linecache.getline(file, line).strip()
    except Exception:  # unreadable or undecodable source: the location alone still helps
        return None
    return text or None
