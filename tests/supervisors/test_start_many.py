"""Dynamic supervisors start and stop their interchangeable children together (OTP's
simple_one_for_one stops them asynchronously): N children cost one wait, not N.

Each test proves the concurrency with children that wait for a sibling: started (or stopped) one
after the other they would time out, together they all succeed.
"""

from __future__ import annotations

import threading

import pytest
from sup_support import Journal, MakeSystem, worker

from hydrovisor.supervisors import (
    ActorContext,
    ActorSystem,
    CapacityExceeded,
    ChildSpec,
    DuplicateChild,
    StartChildren,
    StartedChildren,
    SupervisorFlags,
    supervisor_spec,
)

DYNAMIC = SupervisorFlags(dynamic=True, max_children=10)


def _dynamic(make_system: MakeSystem, children: list[ChildSpec] | None = None) -> ActorSystem:
    return make_system(SupervisorFlags(), [supervisor_spec("dyn", DYNAMIC, children or [])])


def _rendezvous(journal: Journal, n: int, *, on: str) -> list[ChildSpec]:
    """``n`` children whose on_start (``on="start"``) or on_stop waits until all n got there."""
    barrier = threading.Barrier(n, timeout=2.0)

    def wait(_: ActorContext) -> None:
        barrier.wait()

    if on == "start":
        return [worker(f"c{i}", journal, {"fail_start": wait}, start_timeout=3.0) for i in range(n)]
    return [worker(f"c{i}", journal, {"block_stop": _BarrierEvent(barrier)}) for i in range(n)]


class _BarrierEvent:
    """Looks like the ``threading.Event`` the test worker waits on in ``on_stop``."""

    def __init__(self, barrier: threading.Barrier) -> None:
        self._barrier = barrier

    def wait(self) -> None:
        self._barrier.wait()


def test_start_children_launches_all_before_waiting_for_any(make_system: MakeSystem, journal: Journal) -> None:
    sys_ = _dynamic(make_system)
    specs = tuple(_rendezvous(journal, 3, on="start"))
    reply = sys_.ask("/dyn", StartChildren(specs), timeout=10)
    assert reply == StartedChildren(started=("/dyn/c0", "/dyn/c1", "/dyn/c2"))
    assert [sys_.ask(p, "ping") for p in reply.started] == [("c0", 1), ("c1", 1), ("c2", 1)]


def test_start_children_reports_each_failure_and_keeps_the_others(make_system: MakeSystem, journal: Journal) -> None:
    sys_ = _dynamic(make_system)

    def broken(_: ActorContext) -> BaseException:
        return RuntimeError("no sensor")

    specs = (worker("ok", journal), worker("bad", journal, {"fail_start": broken}), worker("ok2", journal))
    reply = sys_.ask("/dyn", StartChildren(specs), timeout=10)
    assert reply.started == ("/dyn/ok", "/dyn/ok2")
    assert [path for path, _ in reply.failed] == ["/dyn/bad"]
    assert "no sensor" in reply.failed[0][1]
    assert sys_.cell("/dyn").children == ("/dyn/ok", "/dyn/ok2")


def test_start_children_refuses_the_whole_batch_on_a_duplicate_or_over_the_cap(
    make_system: MakeSystem, journal: Journal
) -> None:
    sys_ = _dynamic(make_system, [worker("a", journal)])
    with pytest.raises(DuplicateChild):
        sys_.ask("/dyn", StartChildren((worker("b", journal), worker("a", journal))))
    with pytest.raises(DuplicateChild):
        sys_.ask("/dyn", StartChildren((worker("c", journal), worker("c", journal))))
    with pytest.raises(CapacityExceeded):
        sys_.ask("/dyn", StartChildren(tuple(worker(f"x{i}", journal) for i in range(10))))
    assert sys_.cell("/dyn").children == ("/dyn/a",)


def test_initial_children_of_a_dynamic_supervisor_start_together(make_system: MakeSystem, journal: Journal) -> None:
    sys_ = _dynamic(make_system, _rendezvous(journal, 3, on="start"))
    assert sys_.cell("/dyn").children == ("/dyn/c0", "/dyn/c1", "/dyn/c2")


def test_dynamic_children_stop_together(make_system: MakeSystem, journal: Journal) -> None:
    """Each child's on_stop waits for its siblings': stopped one by one, each would hit its
    shutdown timeout and be abandoned (a ``brutal_kill``); stopped together, all stop cleanly."""
    sys_ = _dynamic(make_system, _rendezvous(journal, 3, on="stop"))
    assert sys_.stop(timeout=10)
    assert sorted(name for _, name, _ in journal.of("stop")) == ["c0", "c1", "c2"]
    assert journal.of("failure") == []  # no on_stop gave up waiting for its siblings
    assert sys_.abandoned_threads == 0

