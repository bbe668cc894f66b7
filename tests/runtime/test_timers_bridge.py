"""Timer service, bridge and loop affinity on a real loop thread with real actor threads."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.runtime.affinity import LoopAffinity, LoopAffinityError, guard
from hydrovisor.runtime.bridge import Bridge, LoopReply, Outcome
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorSystem,
    ChildSpec,
    StartChild,
    SupervisedActor,
    SupervisorFlags,
    TerminateChild,
)
from tests.helpers import wait_until


def settle(lt: LoopThread, delay: float) -> None:
    """Wait until a timer scheduled now for ``delay`` has fired (timers fire in due order)."""
    done = threading.Event()
    lt.timers.after(delay, done.set)
    assert done.wait(5), "sentinel timer did not fire"


class Probe(SupervisedActor):
    """Records what it receives (with the receiving thread) and drives timers and pipes."""

    def __init__(self, ctx: Any, seen: list[tuple[Any, ...]]) -> None:
        super().__init__(ctx)
        self.seen = seen

    def on_receive(self, message: Any) -> Any:
        system = self.ctx.system
        if message == "arm-timer":
            system.timers.after(
                0.05, lambda: system.tell(self.path, ("fired", system.bridge.affinity.on_loop()))
            )
            self.seen.append(("armed", time.monotonic()))
        elif isinstance(message, tuple) and message[0] == "pipe":
            system.bridge.pipe(message[1], lambda outcome: system.tell(self.path, outcome))
        elif message == "slow":
            time.sleep(0.3)  # a slow handler: the loop must keep running meanwhile
            return "done"
        elif message == "fail":
            raise ValueError("handler failed")
        else:
            self.seen.append((message, threading.current_thread().name, time.monotonic()))
        return None


@pytest.fixture
def system(lt: LoopThread) -> Iterator[tuple[ActorSystem, list[tuple[Any, ...]]]]:
    seen: list[tuple[Any, ...]] = []
    actor_system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry())
    actor_system.start(SupervisorFlags(), [ChildSpec("probe", lambda ctx: Probe.start(ctx, seen))])
    yield actor_system, seen
    assert actor_system.stop(timeout=5)


async def on_loop(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the loop thread (as a coroutine) and return its result."""
    return fn()


# timers ---------------------------------------------------------------------------------------------


def test_after_from_a_plain_thread_fires_once_on_the_loop(lt: LoopThread) -> None:
    fired: list[tuple[float, bool]] = []
    start = time.monotonic()
    lt.timers.after(0.05, lambda: fired.append((time.monotonic() - start, lt.affinity.on_loop())))
    settle(lt, 0.15)
    assert len(fired) == 1
    elapsed, on_the_loop = fired[0]
    assert elapsed >= 0.045
    assert on_the_loop


def test_after_from_an_actor_thread_tells_the_actor(
    lt: LoopThread, system: tuple[ActorSystem, list[tuple[Any, ...]]]
) -> None:
    actor_system, seen = system
    actor_system.tell("/probe", "arm-timer")
    fired = wait_until(lambda: [s for s in seen if s[0] == ("fired", True)], what="timer message")
    armed_at = next(s[1] for s in seen if s[0] == "armed")
    assert fired[0][2] - armed_at >= 0.045
    assert fired[0][1] != "event-loop"  # handled on the actor's own thread
    settle(lt, 0.1)
    assert len([s for s in seen if s[0] == ("fired", True)]) == 1


def test_after_and_every_from_the_loop(lt: LoopThread) -> None:
    async def scenario() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        once: asyncio.Future[float] = loop.create_future()
        start = time.monotonic()
        lt.timers.after(0.03, lambda: once.set_result(time.monotonic() - start))
        ticks = 0
        enough = asyncio.Event()

        def tick() -> None:
            nonlocal ticks
            ticks += 1
            if ticks == 5:
                enough.set()

        timer = lt.timers.every(0.01, tick)
        elapsed = await once
        await asyncio.wait_for(enough.wait(), 5)
        timer.cancel()
        count = ticks
        await asyncio.sleep(0.05)
        assert ticks == count  # cancelled on the loop: not one more tick
        return elapsed, count

    elapsed, count = lt.run(scenario())
    assert elapsed >= 0.025
    assert count >= 5


def test_every_cancelled_from_another_thread_stops(lt: LoopThread) -> None:
    ticks: list[float] = []
    timer = lt.timers.every(0.01, lambda: ticks.append(time.monotonic()))
    wait_until(lambda: len(ticks) >= 5, what="five ticks")
    timer.cancel()
    timer.cancel()  # idempotent
    assert timer.cancelled
    at_cancel = len(ticks)
    settle(lt, 0.05)
    assert len(ticks) <= at_cancel + 1  # at most the tick already running when cancel was called
    frozen = len(ticks)
    settle(lt, 0.05)
    assert len(ticks) == frozen


def test_every_cancelled_inside_its_callback(lt: LoopThread) -> None:
    ticks: list[int] = []
    holder: dict[str, Any] = {}

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            holder["timer"].cancel()

    holder["timer"] = lt.timers.every(0.01, tick)
    wait_until(lambda: len(ticks) >= 3)
    settle(lt, 0.06)
    assert len(ticks) == 3


def test_cancel_before_firing(lt: LoopThread) -> None:
    fired: list[str] = []
    lt.timers.after(0.03, lambda: fired.append("late")).cancel()
    lt.timers.every(0.03, lambda: fired.append("periodic")).cancel()
    settle(lt, 0.08)
    assert fired == []


def test_cancel_before_the_loop_armed_the_timer(lt: LoopThread) -> None:
    fired: list[str] = []
    loop_busy, release = threading.Event(), threading.Event()

    def block_loop() -> None:
        loop_busy.set()
        release.wait(5)

    lt.loop.call_soon_threadsafe(block_loop)
    assert loop_busy.wait(5)
    # the loop is busy: these timers are not armed yet when they are cancelled
    lt.timers.after(0.0, lambda: fired.append("immediate")).cancel()
    lt.timers.every(0.001, lambda: fired.append("periodic")).cancel()
    release.set()
    settle(lt, 0.03)
    assert fired == []


def test_a_failing_periodic_callback_keeps_ticking(lt: LoopThread, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        raise ValueError("callback bug")

    timer = lt.timers.every(0.01, flaky)
    try:
        wait_until(lambda: len(calls) >= 3, what="ticks despite failures")
    finally:
        timer.cancel()
    assert any(getattr(r, "event", None) == "timer_failed" for r in caplog.records)


def test_every_rejects_a_non_positive_interval(lt: LoopThread) -> None:
    with pytest.raises(ValueError, match="interval"):
        lt.timers.every(0, lambda: None)


# bridge ---------------------------------------------------------------------------------------------


def test_submit_from_a_thread_runs_on_the_loop(lt: LoopThread) -> None:
    async def work(x: int) -> tuple[bool, int]:
        await asyncio.sleep(0.01)
        return lt.affinity.on_loop(), x * 2

    async def broken() -> None:
        raise ValueError("coroutine failed")

    assert lt.bridge.submit(work(21)).result(timeout=5) == (True, 42)
    with pytest.raises(ValueError, match="coroutine failed"):
        lt.bridge.submit(broken()).result(timeout=5)


def test_submit_from_an_actor_thread(
    lt: LoopThread, system: tuple[ActorSystem, list[tuple[Any, ...]]]
) -> None:
    actor_system, _ = system

    async def value() -> str:
        return "from the loop"

    class Submitter(SupervisedActor):
        def on_receive(self, message: Any) -> Any:
            return self.ctx.system.bridge.submit(value()).result(timeout=5)

    actor_system.ask("/", TerminateChild("probe"))  # the root is static: swap its child
    system_paths = actor_system.paths()
    assert system_paths == ["/"]
    dynamic = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry())
    dynamic.start(SupervisorFlags(dynamic=True), [])
    try:
        path = dynamic.ask("/", StartChild(ChildSpec("sub", Submitter.start)))
        assert dynamic.ask(path, "go") == "from the loop"
    finally:
        assert dynamic.stop(timeout=5)


def test_submit_on_the_loop_raises_and_closes_the_coroutine(lt: LoopThread) -> None:
    async def never_run() -> None:
        raise AssertionError("must not run")

    async def scenario() -> str:
        coro = never_run()
        with pytest.raises(RuntimeError, match="actor threads"):
            lt.bridge.submit(coro)
        return inspect.getcoroutinestate(coro)

    assert lt.run(scenario()) == inspect.CORO_CLOSED


def test_pipe_delivers_outcomes(lt: LoopThread) -> None:
    outcomes: list[tuple[Outcome, bool]] = []

    async def ok() -> int:
        await asyncio.sleep(0.01)
        return 7

    async def fails() -> int:
        raise KeyError("missing")

    async def cancelled() -> int:
        raise asyncio.CancelledError

    def deliver(outcome: Outcome) -> None:
        outcomes.append((outcome, threading.current_thread().name in ("event-loop", "MainThread")))

    lt.bridge.pipe(ok(), deliver)
    lt.bridge.pipe(fails(), deliver)
    lt.bridge.pipe(cancelled(), deliver)
    wait_until(lambda: len(outcomes) == 3, what="three outcomes")
    assert all(known_thread for _, known_thread in outcomes)
    by_kind = {type(o.error).__name__ if o.error else "ok": o for o, _ in outcomes}
    assert by_kind["ok"].ok
    assert by_kind["ok"].value == 7
    assert not by_kind["KeyError"].ok
    assert isinstance(by_kind["KeyError"].error, KeyError)
    assert isinstance(by_kind["CancelledError"].error, asyncio.CancelledError)
    # deliver runs on the loop, or at once on the calling thread when the coroutine already
    # finished (concurrent.futures add_done_callback): either way it must only tell, never block


def test_pipe_to_self_from_an_actor(system: tuple[ActorSystem, list[tuple[Any, ...]]]) -> None:
    actor_system, seen = system

    async def ok() -> str:
        return "rows"

    async def fails() -> str:
        raise ConnectionError("db down")

    actor_system.tell("/probe", ("pipe", ok()))
    actor_system.tell("/probe", ("pipe", fails()))

    def outcomes() -> list[Outcome]:
        return [s[0] for s in seen if isinstance(s[0], Outcome)]

    wait_until(lambda: len(outcomes()) == 2, what="both outcomes told to the actor")
    assert sorted(str(o.value or type(o.error).__name__) for o in outcomes()) == [
        "ConnectionError",
        "rows",
    ]


def test_bridge_ask_never_blocks_the_loop(
    lt: LoopThread, system: tuple[ActorSystem, list[tuple[Any, ...]]]
) -> None:
    async def scenario() -> tuple[Any, float, list[float]]:
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.03)
        started = time.monotonic()
        reply = await lt.bridge.ask("/probe", "slow", within=5)
        elapsed = time.monotonic() - started
        task.cancel()
        return reply, elapsed, [t for t in ticks if t >= started - 0.02]

    reply, elapsed, ticks = lt.run(scenario())
    assert reply == "done"
    assert elapsed >= 0.3
    assert len(ticks) >= 10  # ~30 expected at 10 ms; a blocked loop would give ~1
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.15


def test_bridge_ask_errors(lt: LoopThread, system: tuple[ActorSystem, list[tuple[Any, ...]]]) -> None:
    loop_errors: list[dict[str, Any]] = []
    lt.loop.call_soon_threadsafe(lt.loop.set_exception_handler, lambda _loop, ctx: loop_errors.append(ctx))

    with pytest.raises(ValueError, match="handler failed"):
        lt.run(lt.bridge.ask("/probe", "fail"))
    with pytest.raises(TimeoutError):
        lt.run(lt.bridge.ask("/probe", "slow", within=0.05))
    # the late reply to the abandoned ask is dropped quietly and the loop carries on
    assert lt.run(lt.bridge.ask("/probe", "slow", within=5)) == "done"
    assert loop_errors == []


def test_bridge_not_attached_and_blocking_ask_on_the_loop(
    lt: LoopThread, system: tuple[ActorSystem, list[tuple[Any, ...]]]
) -> None:
    actor_system, _ = system
    detached = Bridge(lt.loop, lt.affinity)
    with pytest.raises(RuntimeError, match="not attached"):
        lt.run(detached.ask("/probe", "x"))

    async def blocking_ask() -> Any:
        return actor_system.ask("/probe", "x")

    with pytest.raises(RuntimeError, match=r"bridge\.ask"):
        lt.run(blocking_ask())


# affinity -------------------------------------------------------------------------------------------


def test_loop_affinity_check(lt: LoopThread) -> None:
    assert lt.run(on_loop(lambda: lt.affinity.check("pool") or lt.affinity.on_loop())) is True
    assert not lt.affinity.on_loop()
    with pytest.raises(LoopAffinityError, match="pool is bound to the event loop") as info:
        lt.affinity.check("pool")
    assert info.value.code == "loop_affinity_violation"
    assert "MainThread" in str(info.value)

    errors: list[BaseException] = []

    def from_actor_like_thread() -> None:
        try:
            lt.affinity.check("broker")
        except LoopAffinityError as exc:
            errors.append(exc)

    thread = threading.Thread(target=from_actor_like_thread, name="actor-ish")
    thread.start()
    thread.join(5)
    assert len(errors) == 1
    assert "actor-ish" in str(errors[0])


def test_affinity_of_a_loop_not_yet_running() -> None:
    loop = asyncio.new_event_loop()
    try:
        affinity = LoopAffinity(loop)
        assert affinity.thread_id is None
        assert not affinity.on_loop()
        loop.run_until_complete(asyncio.sleep(0))
        assert affinity.thread_id == threading.get_ident()  # captured by the first loop iteration
        assert affinity.on_loop()
    finally:
        loop.close()


def test_loop_thread_close_is_idempotent_and_timers_after_close_are_ignored() -> None:
    lt = LoopThread()
    with lt:
        assert lt.run(on_loop(lambda: threading.current_thread().name)) == "event-loop"
    assert lt.loop.is_closed()
    lt.close()
    timer = lt.timers.after(0.01, lambda: None)  # no exception, nothing scheduled
    timer.cancel()


def test_loop_reply_to_a_closed_loop_is_dropped_quietly() -> None:
    with LoopThread() as other:
        future = other.loop.create_future()
    reply = LoopReply(other.loop, future)
    reply.set("late")  # called on an actor thread: must not raise into the actor's loop
    try:
        raise ValueError("late failure")
    except ValueError:
        reply.set_exception()
    assert not future.done()


def test_loop_reply_resolves_once(lt: LoopThread) -> None:
    async def scenario() -> tuple[Any, bool]:
        future = asyncio.get_running_loop().create_future()
        reply = LoopReply(lt.loop, future)
        threading.Thread(target=lambda: (reply.set(1), reply.set(2))).start()
        value = await asyncio.wait_for(future, 5)
        await asyncio.sleep(0.01)  # the second set is ignored, not an InvalidStateError
        return value, future.done()

    assert lt.run(scenario()) == (1, True)


def test_guard_binds_to_the_owning_loop(lt: LoopThread) -> None:
    guard(None, "pool")  # not started yet: nothing to compare
    lt.run(on_loop(lambda: guard(lt.loop, "pool")))
    with pytest.raises(LoopAffinityError, match="MainThread"):
        guard(lt.loop, "pool")  # no running loop on this thread
    with pytest.raises(LoopAffinityError, match="another loop"):
        asyncio.run(on_loop(lambda: guard(lt.loop, "pool")))
