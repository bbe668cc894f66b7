"""A bridge call that runs out of time never answers "failed" for something that then happens."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.runtime import bridge
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import ActorSystem, ChildSpec, SupervisedActor, SupervisorFlags
from tests.helpers import wait_until


def _stall_loop(lt: LoopThread, seconds: float) -> threading.Event:
    """Block the loop thread for ``seconds`` (a stalled loop: nothing submitted can start)."""
    stalled = threading.Event()

    def block() -> None:
        stalled.set()
        time.sleep(seconds)

    lt.loop.call_soon_threadsafe(block)
    assert stalled.wait(5)
    return stalled


def _drain(lt: LoopThread) -> None:
    async def nothing() -> None:
        await asyncio.sleep(0.05)

    lt.bridge.submit(nothing()).result(timeout=5)


def test_a_call_that_never_started_is_withdrawn_and_never_runs(lt: LoopThread) -> None:
    ran: list[str] = []

    async def bind() -> str:
        ran.append("committed")
        return "bound"

    _stall_loop(lt, 0.3)
    with pytest.raises(TimeoutError) as raised:
        lt.bridge.submit(bind()).result(timeout=0.05)
    _drain(lt)  # the loop is free again: a call still scheduled would have run by now
    assert ran == []
    assert isinstance(raised.value, bridge.CallWithdrawn)


def test_a_call_already_running_reports_its_true_outcome(lt: LoopThread) -> None:
    ran: list[str] = []
    started = threading.Event()

    async def slow_bind() -> str:
        started.set()
        await asyncio.sleep(0.2)
        ran.append("committed")
        return "bound"

    call = lt.bridge.submit(slow_bind())
    assert started.wait(5)
    assert call.result(timeout=0.15) == "bound"  # not TimeoutError for a bind that then commits
    assert ran == ["committed"]


def test_a_call_that_fails_with_timeout_error_itself_is_not_withdrawn(lt: LoopThread) -> None:
    async def db_timeout() -> None:
        raise TimeoutError("statement timeout")

    call = lt.bridge.submit(db_timeout())
    wait_until(call.done, what="the call failed")
    with pytest.raises(TimeoutError, match="statement timeout") as raised:
        call.result(timeout=0.05)
    assert not isinstance(raised.value, bridge.CallWithdrawn)


class Slow(SupervisedActor):
    def on_receive(self, message: Any) -> Any:
        time.sleep(0.3)
        return f"{message} done"


@pytest.fixture
def slow_actor(lt: LoopThread) -> Iterator[ActorSystem]:
    system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry())
    system.start(SupervisorFlags(), [ChildSpec("slow", Slow.start)])
    yield system
    assert system.stop(timeout=5)


def test_an_ask_past_its_deadline_says_the_outcome_is_unknown_and_delivers_it(
    lt: LoopThread, slow_actor: ActorSystem,
) -> None:
    async def scenario() -> tuple[TimeoutError, Any]:
        with pytest.raises(TimeoutError) as raised:
            await lt.bridge.ask("/slow", "bind", within=0.05)
        return raised.value, await asyncio.wait_for(raised.value.reply, 5)  # type: ignore[attr-defined]

    timeout, late = lt.run(scenario())
    assert isinstance(timeout, bridge.AskTimeout)  # a TimeoutError: callers that only know that still catch it
    assert "may still" in str(timeout)
    assert late == "bind done"
