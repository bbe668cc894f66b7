"""Strategies x restart types: who gets a new incarnation, who is retired, in which order.

The supervised children are ``a``, ``b``, ``c`` (started in that order); ``b`` is the child whose
exit is examined, ``a`` and ``c`` are permanent siblings. A *normal* exit is ``b`` asking pykka to
stop itself (``self.stop()``, the same ``_ActorStop`` that ``ActorRef.stop()`` sends): exit kind
``normal``. A *crash* is an exception in a tell handler: exit kind ``crash``.
"""

from __future__ import annotations

import threading

import pytest
from sup_support import (
    Journal,
    MakeSystem,
    Reports,
    barrier,
    generation,
    restart_count,
    starts,
    stops,
    worker,
)

from hydrovisor.supervisors import (
    ActorStopped,
    CellState,
    ExitKind,
    ExitReason,
    NoSuchActor,
    Restart,
    Strategy,
    SupervisorFlags,
    supervisor_spec,
)
from hydrovisor.supervisors.supervisor import should_restart
from tests.helpers import wait_until


def lifecycle(journal: Journal, since: int) -> list[tuple[str, str, int]]:
    """start / stop / failure events since ``since`` as ``(event, name, generation)``."""
    return [(e[0], e[1], e[2]) for e in journal.since(since) if e[0] in ("start", "stop", "failure")]


EXPECTED_AFTER_RESTART = {
    Strategy.ONE_FOR_ONE: [("start", "b", 2)],
    # siblings stop in reverse start order, then the whole group starts in order
    Strategy.ONE_FOR_ALL: [
        ("stop", "c", 1),
        ("stop", "a", 1),
        ("start", "a", 2),
        ("start", "b", 2),
        ("start", "c", 2),
    ],
    Strategy.REST_FOR_ONE: [("stop", "c", 1), ("start", "b", 2), ("start", "c", 2)],
}
NEW_INCARNATIONS = {
    Strategy.ONE_FOR_ONE: {"a": 1, "b": 2, "c": 1},
    Strategy.ONE_FOR_ALL: {"a": 2, "b": 2, "c": 2},
    Strategy.REST_FOR_ONE: {"a": 1, "b": 2, "c": 2},
}


@pytest.mark.parametrize("exit_kind", ["normal", "crash"])
@pytest.mark.parametrize("restart", list(Restart))
@pytest.mark.parametrize("strategy", list(Strategy))
def test_strategy_restart_matrix(  # noqa: PLR0917 - fixtures and parameters
    make_system: MakeSystem,
    journal: Journal,
    reports: Reports,
    strategy: Strategy,
    restart: Restart,
    exit_kind: str,
) -> None:
    system = make_system(
        SupervisorFlags(strategy=strategy, max_restarts=5, period=60.0),
        [worker("a", journal), worker("b", journal, restart=restart), worker("c", journal)],
    )
    assert starts(journal) == [("a", 1), ("b", 1), ("c", 1)]
    mark = journal.mark()

    system.tell("/b", "stop-self" if exit_kind == "normal" else "crash")

    first = ("stop", "b", 1) if exit_kind == "normal" else ("failure", "b", 1)
    restarted = {"permanent": True, "transient": exit_kind == "crash", "temporary": False}[restart]
    if restarted:
        expected = [first, *EXPECTED_AFTER_RESTART[strategy]]
        wait_until(lambda: len(lifecycle(journal, mark)) >= len(expected), what="restart group")
        barrier(system)
        assert lifecycle(journal, mark) == expected
        generations = {name: generation(system, f"/{name}") for name in "abc"}
        assert generations == NEW_INCARNATIONS[strategy]
        assert [system.ask(f"/{n}", "ping") for n in "abc"] == [(n, g) for n, g in generations.items()]
        # only the child that exited is counted as restarted (OTP counts one restart per failure)
        assert restart_count(system, "/b", exit_kind) == 1
        assert restart_count(system, "/a") == restart_count(system, "/c") == 0
        assert system.cell("/b").restarts_total == 1
        assert system.cell("/b").state is CellState.RUNNING
    else:
        if restart is Restart.TEMPORARY:
            wait_until(lambda: "/b" not in system.paths(), what="temporary child removed")
            with pytest.raises(NoSuchActor):
                system.ask("/b", "ping")
        else:
            wait_until(lambda: system.cell("/b").state is CellState.STOPPED, what="transient retired")
            with pytest.raises(ActorStopped):
                system.ask("/b", "ping")
        barrier(system)
        assert lifecycle(journal, mark) == [first]
        assert {n: generation(system, f"/{n}") for n in "ac"} == {"a": 1, "c": 1}
        assert restart_count(system, "/b") == 0
        assert system.cell("/").children == (
            ("/a", "/c") if restart is Restart.TEMPORARY else ("/a", "/b", "/c")
        )

    exits = reports.events("child_exited", "/b")
    assert len(exits) == 1
    assert exits[0]["reason"].startswith(exit_kind)
    failure = system.cell("/b").last_failure if "/b" in system.paths() else None
    if exit_kind == "normal":
        assert failure is None  # a normal exit is not a failure
    elif failure is not None:
        assert failure.kind == "crash"
    assert should_restart(restart, ExitReason(ExitKind(exit_kind))) is restarted


def test_actor_ref_stop_is_a_normal_exit(make_system: MakeSystem, journal: Journal, reports: Reports) -> None:
    system = make_system(SupervisorFlags(), [worker("t", journal, restart=Restart.TRANSIENT)])
    ctx = system.cell("/t").ctx
    assert ctx is not None
    assert ctx.actor is not None
    assert ctx.actor.actor_ref.stop(timeout=5) is True
    wait_until(lambda: system.cell("/t").state is CellState.STOPPED)
    assert [e["reason"] for e in reports.events("child_exited", "/t")] == ["normal"]
    assert system.cell("/t").last_failure is None
    assert stops(journal) == [("t", 1)]


def test_temporary_siblings_are_retired_by_a_group_restart(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(
        SupervisorFlags(strategy=Strategy.ONE_FOR_ALL),
        [worker("tmp", journal, restart=Restart.TEMPORARY), worker("p", journal)],
    )
    mark = journal.mark()
    system.tell("/p", "crash")
    wait_until(lambda: generation(system, "/p") == 2)
    barrier(system)
    assert system.paths() == ["/", "/p"]
    assert lifecycle(journal, mark) == [("failure", "p", 1), ("stop", "tmp", 1), ("start", "p", 2)]


def test_rest_for_one_leaves_earlier_siblings_alone_even_temporary(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(
        SupervisorFlags(strategy=Strategy.REST_FOR_ONE),
        [worker("tmp", journal, restart=Restart.TEMPORARY), worker("p", journal), worker("q", journal)],
    )
    system.tell("/p", "crash")
    wait_until(lambda: generation(system, "/q") == 2)
    assert generation(system, "/tmp") == 1
    assert system.paths() == ["/", "/p", "/q", "/tmp"]


def test_group_restart_does_not_resurrect_a_retired_transient_sibling(
    make_system: MakeSystem, journal: Journal
) -> None:
    """A transient child that finished normally stopped for good (its mailbox is closed).

    A later one_for_all restart must not leave it half-alive (running but unaddressable).
    """
    system = make_system(
        SupervisorFlags(strategy=Strategy.ONE_FOR_ALL),
        [worker("done", journal, restart=Restart.TRANSIENT), worker("p", journal)],
    )
    system.tell("/done", "stop-self")
    wait_until(lambda: system.cell("/done").state is CellState.STOPPED)
    system.tell("/p", "crash")
    wait_until(lambda: generation(system, "/p") == 2)
    barrier(system)
    cell = system.cell("/done")
    assert cell.state is CellState.STOPPED
    assert cell.ctx is None
    with pytest.raises(ActorStopped):
        system.ask("/done", "ping")
    assert starts(journal) == [("done", 1), ("p", 1), ("p", 2)]


def test_messages_queued_to_a_sibling_restarted_by_the_group_reach_its_next_incarnation(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(
        SupervisorFlags(strategy=Strategy.ONE_FOR_ALL), [worker("a", journal), worker("b", journal)]
    )
    gate = threading.Event()
    system.tell("/b", ("block", gate))
    wait_until(lambda: journal.of("blocked"))
    for n in range(5):
        system.tell("/b", ("seq", n))
    system.tell("/a", "crash")
    # the supervisor now waits (up to b's shutdown timeout) for b to finish its current message
    wait_until(lambda: system.cell("/b").state is CellState.STOPPING, what="b being stopped")
    gate.set()
    wait_until(lambda: len(journal.of("seq")) == 5, what="queued messages handled")
    assert [(e[2], e[3]) for e in journal.of("seq")] == [(2, n) for n in range(5)]
    assert stops(journal) == [("b", 1)]


def test_children_start_in_order_and_stop_in_reverse_depth_first(
    make_system: MakeSystem, journal: Journal
) -> None:
    inner = SupervisorFlags(strategy=Strategy.ONE_FOR_ALL)
    system = make_system(
        SupervisorFlags(),
        [
            worker("a", journal),
            supervisor_spec("sup", inner, (worker("x", journal), worker("y", journal))),
            worker("c", journal),
        ],
    )
    assert starts(journal) == [("a", 1), ("x", 1), ("y", 1), ("c", 1)]
    assert system.paths() == ["/", "/a", "/c", "/sup", "/sup/x", "/sup/y"]
    assert system.cell("/sup").children == ("/sup/x", "/sup/y")
    assert system.stop(timeout=10)
    assert stops(journal) == [("c", 1), ("y", 1), ("x", 1), ("a", 1)]
    assert system.paths() == []


def test_restarted_supervisor_restarts_its_children_in_order(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(
        SupervisorFlags(),
        [supervisor_spec("sup", SupervisorFlags(), (worker("x", journal), worker("y", journal)))],
    )
    mark = journal.mark()
    ctx = system.cell("/sup").ctx
    assert ctx is not None
    assert ctx.actor is not None
    ctx.actor.actor_ref.stop(timeout=5)  # a permanent supervisor that exits normally is restarted
    wait_until(lambda: len(starts(journal, mark)) == 2)
    barrier(system)
    # new cells: each child is generation 1 of a fresh path
    assert lifecycle(journal, mark) == [
        ("stop", "y", 1),
        ("stop", "x", 1),
        ("start", "x", 1),
        ("start", "y", 1),
    ]
    assert system.ask("/sup/y", "ping") == ("y", 1)
