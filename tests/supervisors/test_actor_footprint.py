"""The light per-actor state (issue 14: 100,000 actors per process) keeps the semantics it replaces:
:class:`LazyEvent` behaves like ``threading.Event`` across threads, a cell's restart history and
child list appear on first use."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from hydrovisor.supervisors import Cell, ChildSpec, SupervisedActor
from hydrovisor.supervisors.context import ActorContext, LazyEvent


def test_lazy_event_is_a_flag_until_a_thread_waits() -> None:
    event = LazyEvent()
    assert isinstance(event, threading.Event)
    assert not event.is_set()
    assert event.wait(0) is False
    event.set()
    assert event.is_set() and event.isSet()
    assert event.wait() is True  # set: returns at once, no Event created
    assert event._waiter is None
    event.clear()
    assert not event.is_set()
    assert event.wait(0.01) is False


def test_lazy_event_wakes_a_waiting_thread() -> None:
    event = LazyEvent()
    woke: list[tuple[bool, float]] = []

    def waiter() -> None:
        began = time.monotonic()
        woke.append((event.wait(5), time.monotonic() - began))

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    event.set()
    for t in threads:
        t.join(5)
    assert [ok for ok, _ in woke] == [True, True, True]
    assert all(waited < 4 for _, waited in woke)


def test_lazy_event_clear_then_set_again_across_threads() -> None:
    event = LazyEvent()
    assert event.wait(0.01) is False  # creates the waiting Event
    event.set()
    event.clear()
    assert event.wait(0.01) is False  # the waiting Event was cleared with the flag
    threading.Timer(0.02, event.set).start()
    assert event.wait(5) is True


@pytest.mark.parametrize("rounds", [2000])
def test_lazy_event_never_misses_a_set_racing_the_first_wait(rounds: int) -> None:
    for _ in range(rounds):
        event = LazyEvent()
        setter = threading.Thread(target=event.set)
        setter.start()
        assert event.wait(5) is True
        setter.join()


class _Idle(SupervisedActor):
    pass


def test_cell_creates_restart_history_and_children_on_first_use() -> None:
    cell = Cell("/a", ChildSpec("a", _Idle.start))
    assert cell.restart_times == () and cell.restarts_within(10) == 0
    assert cell.children == ()
    cell.remove_child("/a/x")  # nothing to forget: no error
    cell.record_restart()
    cell.record_restart()
    assert len(cell.restart_times) == 2 and cell.restarts_within(10) == 2
    assert cell.restarts_total == 2 and cell.consecutive_restarts == 2
    cell.add_child("/a/x")
    cell.add_child("/a/y")
    cell.remove_child("/a/x")
    assert cell.children == ("/a/y",)
    with pytest.raises(AttributeError):
        cell.unknown = 1  # type: ignore[attr-defined]  # slotted: one per live path


def test_cell_keeps_the_last_64_restarts() -> None:
    cell = Cell("/a", ChildSpec("a", _Idle.start))
    for _ in range(100):
        cell.record_restart()
    assert len(cell.restart_times) == 64
    assert cell.restarts_total == 100


def test_a_released_context_leaves_no_cycle_with_its_actor() -> None:
    class Actor:
        def __init__(self, ctx: ActorContext) -> None:
            self.ctx = ctx
            ctx.actor = self  # type: ignore[assignment]

    ctx = ActorContext(system=None, path="/a", mailbox=None, generation=1,  # type: ignore[arg-type]
                       report_exit=lambda _g, _r: None)
    actor = Actor(ctx)
    gone = weakref.ref(actor)
    ctx.release()
    gc.disable()
    try:
        del actor
        assert gone() is None  # freed by reference counting, no collection needed
    finally:
        gc.enable()
    assert ctx.actor is None
