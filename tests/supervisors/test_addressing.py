"""Stable paths: messages survive restarts, undeliverable ones fail loudly, escalation restarts subtrees.

Delivery contract checked here: a message sent to a path is handled exactly once by whichever
incarnation is current when it is dequeued, in send order, or it fails with a clear error
(``NoSuchActor`` / ``ActorStopped``). The one message that *causes* a crash is consumed by the
crashing incarnation: it is not redelivered (an ask for it gets the exception).
"""

from __future__ import annotations

import threading
import time

import pykka
import pytest
from sup_support import (
    Journal,
    MakeSystem,
    Reports,
    barrier,
    generation,
    restart_count,
    running_incarnations,
    starts,
    stops,
    worker,
)

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorStopped,
    Backoff,
    CapacityExceeded,
    CellState,
    DuplicateChild,
    ExitKind,
    ExitReason,
    NoSuchActor,
    Restart,
    StartChild,
    StartFailed,
    Strategy,
    SupervisorFlags,
    TerminateChild,
    supervisor_spec,
)
from tests.helpers import wait_until

# messages across restarts -------------------------------------------------------------------------


def test_tells_in_flight_during_a_crash_are_handled_exactly_once_in_order(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal)])
    total, k = 1000, 137
    for n in range(total):
        system.tell("/w", "crash" if n == k else ("seq", n))
    wait_until(lambda: len(journal.of("seq")) == total - 1, what="all other messages handled")
    handled = journal.of("seq")
    assert [e[3] for e in handled] == [n for n in range(total) if n != k]  # once each, in order
    assert {e[2] for e in handled if e[3] < k} == {1}
    assert {e[2] for e in handled if e[3] > k} == {2}
    barrier(system)
    assert system.cell("/w").restarts_total == 1
    assert len(system.cell("/w").mailbox) == 0


def test_concurrent_senders_keep_their_own_order_across_crashes(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(max_restarts=10), [worker("w", journal)])
    senders, per_sender = 4, 250

    def send(sender: int) -> None:
        for i in range(per_sender):
            system.tell("/w", ("seq", (sender, i)))
            if i % 100 == 50:
                system.tell("/w", "crash")

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    wait_until(lambda: len(journal.of("seq")) == senders * per_sender, what="every message")
    handled = [e[3] for e in journal.of("seq")]
    assert len(set(handled)) == len(handled)
    for s in range(senders):
        assert [i for (sender, i) in handled if sender == s] == list(range(per_sender))
    crashes = senders * sum(1 for i in range(per_sender) if i % 100 == 50)
    wait_until(lambda: system.cell("/w").restarts_total == crashes)


def test_ask_queued_behind_a_crash_is_answered_by_the_next_incarnation(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal)])
    crashing = pykka.ThreadingFuture()
    queued = pykka.ThreadingFuture()
    system.send("/w", "crash", reply_to=crashing)
    system.send("/w", "ping", reply_to=queued)
    with pytest.raises(RuntimeError):
        crashing.get(timeout=5)  # the crashing message is consumed: its asker gets the exception
    assert queued.get(timeout=5) == ("w", 2)


def test_tells_during_backoff_reach_the_restarted_child(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal, backoff=Backoff(initial=0.2))])
    crashed_at = time.monotonic()
    system.tell("/w", "crash")
    wait_until(lambda: system.cell("/w").state is CellState.RESTARTING, what="backoff window")
    for n in range(10):
        system.tell("/w", ("seq", n))  # nobody runs at the path now: they wait in its mailbox
    assert system.cell("/w").state is CellState.RESTARTING
    assert len(system.cell("/w").mailbox) == 10
    wait_until(lambda: len(journal.of("seq")) == 10, what="held messages delivered")
    assert [(e[2], e[3]) for e in journal.of("seq")] == [(2, n) for n in range(10)]
    restarted_at = wait_until(lambda: max(system.cell("/w").started_at - crashed_at, 0))
    assert restarted_at >= 0.19  # the backoff delay was honoured


def test_backoff_grows_with_consecutive_restarts(make_system: MakeSystem, journal: Journal) -> None:
    backoff = Backoff(initial=0.05, factor=3.0, maximum=1.0)
    system = make_system(SupervisorFlags(max_restarts=5), [worker("w", journal, backoff=backoff)])
    times = []
    for expected_delay in (0.05, 0.15):
        crashed = time.monotonic()
        system.tell("/w", "crash")
        gen = len(journal.of("start")) + 1
        wait_until(lambda gen=gen: generation(system, "/w") == gen)
        times.append((expected_delay, time.monotonic() - crashed))
    for expected_delay, took in times:
        assert took >= expected_delay * 0.9
    assert system.cell("/w").consecutive_restarts == 2


def test_backoff_series_resets_once_the_child_ran_for_reset_after(make_system: MakeSystem, journal: Journal) -> None:
    """Checked when the next failure comes (no sweep of every child): a child that ran longer than
    ``reset_after`` restarts after the initial delay again, not after the grown one."""
    backoff = Backoff(initial=0.05, factor=40.0, maximum=5.0, reset_after=0.3)
    system = make_system(SupervisorFlags(max_restarts=5), [worker("w", journal, backoff=backoff)])
    system.tell("/w", "crash")
    wait_until(lambda: generation(system, "/w") == 2)
    assert system.cell("/w").consecutive_restarts == 1
    time.sleep(0.4)  # runs past reset_after: the next crash starts a new series (0.05 s, not 2 s)
    crashed = time.monotonic()
    system.tell("/w", "crash")
    wait_until(lambda: generation(system, "/w") == 3, timeout=1.5)
    assert time.monotonic() - crashed < 1.5
    assert system.cell("/w").consecutive_restarts == 1


def test_two_children_backing_off_at_once_both_restart(make_system: MakeSystem, journal: Journal) -> None:
    backoff = Backoff(initial=0.15)
    system = make_system(
        SupervisorFlags(),
        [worker("a", journal, backoff=backoff), worker("b", journal, backoff=backoff), worker("c", journal)],
    )
    system.tell("/a", "crash")
    wait_until(lambda: system.cell("/a").state is CellState.RESTARTING)
    system.tell("/b", "crash")
    system.tell("/c", "crash")  # no backoff: restarted at once
    wait_until(lambda: generation(system, "/c") == 2)
    wait_until(lambda: generation(system, "/a") == 2, what="a restarted after its backoff")
    wait_until(lambda: generation(system, "/b") == 2, what="b restarted after its backoff")


# undeliverable messages fail loudly ---------------------------------------------------------------


def test_asks_and_tells_to_stopped_or_unknown_paths_fail_clearly(
    make_system: MakeSystem, journal: Journal, loop_thread: LoopThread
) -> None:
    system = make_system(
        SupervisorFlags(),
        [worker("tmp", journal, restart=Restart.TEMPORARY), worker("tr", journal, restart=Restart.TRANSIENT)],
    )
    system.tell("/tmp", "stop-self")
    system.tell("/tr", "stop-self")
    wait_until(lambda: "/tmp" not in system.paths())
    wait_until(lambda: system.cell("/tr").state is CellState.STOPPED)

    with pytest.raises(NoSuchActor) as missing:
        system.ask("/tmp", "ping")
    assert missing.value.code == "actor_not_found"
    with pytest.raises(NoSuchActor):
        system.tell("/tmp", "ping")
    with pytest.raises(NoSuchActor):
        system.ask("/no/such/path", "ping")
    with pytest.raises(ActorStopped) as stopped:
        system.ask("/tr", "ping")
    assert stopped.value.code == "actor_stopped"
    assert "normal" in str(stopped.value)
    with pytest.raises(ActorStopped):
        system.tell("/tr", "ping")
    # the same from the loop, through the bridge
    with pytest.raises(NoSuchActor):
        loop_thread.run(loop_thread.bridge.ask("/tmp", "ping"))
    with pytest.raises(ActorStopped):
        loop_thread.run(loop_thread.bridge.ask("/tr", "ping"))


def test_normal_stop_handles_messages_queued_before_it_and_fails_those_after(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("t", journal, restart=Restart.TRANSIENT)])
    gate = threading.Event()
    system.tell("/t", ("block", gate))
    wait_until(lambda: journal.of("blocked"))
    before = [pykka.ThreadingFuture() for _ in range(3)]
    for future in before:
        system.send("/t", "ping", reply_to=future)
    ctx = system.cell("/t").ctx
    assert ctx is not None
    assert ctx.actor is not None
    stopped = ctx.actor.actor_ref.stop(block=False)  # queued behind the three asks
    after = [pykka.ThreadingFuture() for _ in range(3)]
    for future in after:
        system.send("/t", "ping", reply_to=future)
    gate.set()
    assert [f.get(timeout=5) for f in before] == [("t", 1)] * 3
    assert stopped.get(timeout=5) is True
    for future in after:  # never handled: failed when the transient child was retired
        with pytest.raises(ActorStopped, match="normal"):
            future.get(timeout=5)
    assert system.cell("/t").state is CellState.STOPPED


# dynamic supervisors ------------------------------------------------------------------------------


def test_dynamic_supervisor_cap_duplicates_and_start_failures(
    make_system: MakeSystem, journal: Journal
) -> None:
    zones = SupervisorFlags(dynamic=True, max_children=2)
    system = make_system(SupervisorFlags(), [supervisor_spec("zones", zones)])
    assert system.ask("/zones", StartChild(worker("z1", journal))) == "/zones/z1"
    with pytest.raises(DuplicateChild) as dup:
        system.ask("/zones", StartChild(worker("z1", journal)))
    assert dup.value.code == "duplicate_child"
    bad = worker("bad", journal, {"fail_start": lambda _ctx: RuntimeError("nope")})
    with pytest.raises(StartFailed, match="nope"):
        system.ask("/zones", StartChild(bad))
    assert system.ask("/zones", StartChild(worker("z2", journal))) == "/zones/z2"
    with pytest.raises(CapacityExceeded) as cap:
        system.ask("/zones", StartChild(worker("z3", journal)))
    assert cap.value.code == "capacity_exceeded"
    assert cap.value.limit == 2
    assert system.paths() == ["/", "/zones", "/zones/z1", "/zones/z2"]
    assert system.cell("/zones").children == ("/zones/z1", "/zones/z2")
    # refusals are Rejections: the supervisor never crashed
    assert generation(system, "/zones") == 1
    assert system.cell("/zones").restarts_total == 0
    assert system.ask("/zones/z2", "ping") == ("z2", 1)


def test_dynamic_children_that_exit_free_capacity(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(dynamic=True, max_children=1))
    system.ask("/", StartChild(worker("c1", journal, restart=Restart.TEMPORARY)))
    system.tell("/c1", "crash")  # temporary: not restarted, forgotten
    wait_until(lambda: system.paths() == ["/"])
    system.ask("/", StartChild(worker("c2", journal, restart=Restart.TRANSIENT)))
    system.tell("/c2", "stop-self")  # transient, normal: retired; dynamic children are forgotten
    wait_until(lambda: system.paths() == ["/"])
    assert system.ask("/", StartChild(worker("c3", journal))) == "/c3"


def test_terminate_child_answers_queued_asks_then_removes_the_path(
    make_system: MakeSystem, journal: Journal, reports: Reports
) -> None:
    system = make_system(SupervisorFlags(), [supervisor_spec("zones", SupervisorFlags(dynamic=True))])
    system.ask("/zones", StartChild(worker("z", journal)))
    gate = threading.Event()
    system.tell("/zones/z", ("block", gate))
    wait_until(lambda: journal.of("blocked"))
    queued = [pykka.ThreadingFuture() for _ in range(3)]
    for future in queued:
        system.send("/zones/z", "ping", reply_to=future)

    done = pykka.ThreadingFuture()
    system.send("/zones", TerminateChild("z"), reply_to=done)
    wait_until(lambda: system.cell("/zones/z").state is CellState.STOPPING)
    gate.set()  # a graceful stop queues behind what was accepted before it (OTP shutdown)
    assert done.get(timeout=5) is None
    assert [future.get(timeout=5) for future in queued] == [("z", 1)] * 3
    assert "/zones/z" not in system.paths()
    assert system.cell("/zones").children == ()
    assert stops(journal) == [("z", 1)]
    assert reports.events("child_terminated", "/zones/z")
    with pytest.raises(NoSuchActor):
        system.ask("/zones", TerminateChild("z"))
    with pytest.raises(NoSuchActor):
        system.tell("/zones/z", "ping")


def test_terminate_static_child(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(), [worker("a", journal), worker("b", journal)])
    system.ask("/", TerminateChild("a"))
    assert system.paths() == ["/", "/b"]
    assert system.cell("/").children == ("/b",)
    system.tell("/b", "crash")  # the supervisor carries on with the remaining child
    wait_until(lambda: generation(system, "/b") == 2)


# escalation ---------------------------------------------------------------------------------------


def test_escalation_from_a_nested_supervisor_restarts_it_and_its_children(
    make_system: MakeSystem, journal: Journal, exits: list[ExitReason]
) -> None:
    mid = SupervisorFlags(max_restarts=1, period=60.0)
    system = make_system(
        SupervisorFlags(max_restarts=3, period=60.0),
        [worker("x", journal), supervisor_spec("mid", mid, (worker("m1", journal), worker("m2", journal)))],
    )
    mark = journal.mark()
    system.tell("/mid/m1", "crash")
    wait_until(lambda: generation(system, "/mid/m1") == 2)
    system.tell("/mid/m1", "crash")  # second restart in the period: /mid gives up
    wait_until(lambda: system.cell("/mid").restarts_total == 1, what="root to restart /mid")
    wait_until(lambda: "/mid/m2" in system.paths() and generation(system, "/mid/m2") == 1)
    barrier(system, "/mid")
    barrier(system)
    assert [(e[0], e[1], e[2]) for e in journal.since(mark) if e[0] in ("start", "stop")] == [
        ("start", "m1", 2),
        ("stop", "m2", 1),  # /mid stopped its remaining child before failing
        ("start", "m1", 1),  # the new /mid: fresh cells, started in order
        ("start", "m2", 1),
    ]
    # the old children's shutdown reports did not make the new /mid restart its new children
    assert system.cell("/mid/m1").restarts_total == 0
    assert system.cell("/mid/m2").restarts_total == 0
    assert system.ask("/mid/m2", "ping") == ("m2", 1)
    cell = system.cell("/mid")
    assert cell.last_failure is not None
    assert cell.last_failure.kind == "reached_max_restart_intensity"
    assert restart_count(system, "/mid", "reached_max_restart_intensity") == 1
    assert generation(system, "/x") == 1
    assert exits == []


def test_escalation_at_the_root_calls_on_root_exit(
    make_system: MakeSystem, journal: Journal, exits: list[ExitReason], reports: Reports
) -> None:
    system = make_system(
        SupervisorFlags(strategy=Strategy.ONE_FOR_ONE, max_restarts=0),
        [worker("a", journal), worker("b", journal), worker("c", journal)],
    )
    system.tell("/b", "crash")
    wait_until(lambda: exits, what="on_root_exit")
    assert len(exits) == 1
    assert exits[0].kind is ExitKind.ESCALATED
    assert exits[0].abnormal
    assert "/b" in exits[0].detail
    assert stops(journal) == [("c", 1), ("a", 1)]  # the survivors, in reverse start order
    assert system.paths() == ["/"]
    assert reports.events("escalation", "/")
    assert reports.events("root_exited", "/")
    assert system.cell("/").last_failure is not None
    with pytest.raises(NoSuchActor):
        system.ask("/a", "ping")
    wait_until(lambda: not running_incarnations(journal))
    assert system.stop(timeout=5)


def test_stopping_the_system_is_not_a_root_exit(
    make_system: MakeSystem, journal: Journal, exits: list[ExitReason]
) -> None:
    for _ in range(20):
        system = make_system(SupervisorFlags(), [worker("a", journal)])
        assert system.stop(timeout=5)
    time.sleep(0.02)
    assert exits == []
    assert len(starts(journal)) == len(stops(journal)) == 20
