"""Every pykka failure path reaches the supervisor (see ``hydrovisor.supervisors.actor``).

pykka alone: a tell handler exception stops the actor (``on_failure``); an ask exception only
goes to the caller; an ``on_start`` exception stops the actor without ``on_failure``; a
``BaseException`` stops *every* actor; a hung handler is never noticed. Here each one becomes an
exit the supervisor acts on.
"""

from __future__ import annotations

import threading
import time

import pykka
import pytest
from sup_support import (
    Crash,
    Journal,
    MakeSystem,
    Reports,
    Worker,
    barrier,
    child,
    generation,
    pooled,
    restart_count,
    running_incarnations,
    starts,
    stops,
    worker,
)

from hydrovisor.runtime.bridge import LoopReply
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorContext,
    ActorHung,
    ActorSystem,
    CellState,
    ExitKind,
    ExitReason,
    Rejection,
    Restart,
    StartChild,
    StartFailed,
    SupervisorFlags,
    supervisor_spec,
)
from tests.helpers import wait_until


class Refused(Rejection):
    code = "refused"


def assert_restarted(system: ActorSystem, path: str, kind: str, restarts: int = 1) -> None:
    """Wait for incarnation ``restarts + 1`` at ``path`` and check what the supervisor recorded."""
    wait_until(lambda: generation(system, path) == restarts + 1, what=f"{path} restarted")
    cell = system.cell(path)
    assert cell.restarts_total == restarts
    assert cell.last_failure is not None
    assert cell.last_failure.kind == kind
    assert restart_count(system, path, kind) == restarts


# exceptions in handlers ---------------------------------------------------------------------------


def test_exception_in_tell_handler_restarts_the_child(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal)])
    system.tell("/w", "crash")
    assert_restarted(system, "/w", "crash")
    assert "Crash" in system.cell("/w").last_failure.reason  # type: ignore[union-attr]
    assert journal.of("failure") == [("failure", "w", 1)]  # on_failure ran, like pykka's own loop
    assert system.ask("/w", "ping") == ("w", 2)


def test_exception_in_ask_reaches_the_caller_and_restarts_the_child(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal)])
    with pytest.raises(Crash, match="crashed on command"):
        system.ask("/w", "crash")
    assert_restarted(system, "/w", "crash")
    assert system.ask("/w", "ping") == ("w", 2)


def test_exception_in_proxy_call_reaches_the_caller_and_restarts_the_child(
    make_system: MakeSystem, journal: Journal
) -> None:
    class WithMethods(Worker):
        def explode(self) -> None:
            raise Crash("via proxy")

        def echo(self, value: int) -> tuple[int, int]:
            return self.ctx.generation, value

    system = make_system(SupervisorFlags(), [child("p", lambda ctx: WithMethods.start(ctx, journal))])
    ctx = system.cell("/p").ctx
    assert ctx is not None
    assert ctx.actor is not None
    proxy = ctx.actor.actor_ref.proxy()
    with pytest.raises(Crash, match="via proxy"):
        proxy.explode().get(timeout=5)
    assert_restarted(system, "/p", "crash")


def test_rejection_in_ask_reaches_the_caller_and_the_child_keeps_running(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal)])
    with pytest.raises(Refused):
        system.ask("/w", ("raise", Refused("not now")))
    system.tell("/w", ("raise", Refused("tells are only logged")))
    assert system.ask("/w", "ping") == ("w", 1)
    barrier(system)
    assert system.cell("/w").restarts_total == 0
    assert system.cell("/w").last_failure is None
    assert restart_count(system, "/w") == 0
    assert journal.of("failure") == []


def test_base_exception_is_contained_to_one_actor(make_system: MakeSystem, journal: Journal) -> None:
    """pykka would call ``ActorRegistry.stop_all()``; here only the failing actor exits."""
    system = make_system(SupervisorFlags(max_restarts=5), [worker("a", journal), worker("b", journal)])
    unrelated = pykka.ThreadingActor.start()  # a plain pykka actor elsewhere in the process
    try:
        system.tell("/a", ("raise", SystemExit(3)))
        assert_restarted(system, "/a", "base_exception")
        with pytest.raises(KeyboardInterrupt):
            system.ask("/a", ("raise", KeyboardInterrupt()))
        assert_restarted(system, "/a", "base_exception", restarts=2)
        assert system.ask("/b", "ping") == ("b", 1)  # the sibling never stopped
        assert generation(system, "/b") == 1
        assert unrelated.is_alive()
        assert unrelated.ask("still there?", timeout=5) is None
    finally:
        unrelated.stop()


# failures while starting --------------------------------------------------------------------------


def test_on_start_failure_during_restart_counts_toward_intensity(
    make_system: MakeSystem, journal: Journal, exits: list[ExitReason]
) -> None:
    budget = {"failures": 1}

    def fail_once_after_first(ctx: ActorContext) -> BaseException | None:
        if ctx.generation > 1 and budget["failures"] > 0:
            budget["failures"] -= 1
            return RuntimeError("on_start failed")
        return None

    spec = child("w", lambda ctx: Worker.start(ctx, journal, fail_start=fail_once_after_first))
    system = make_system(SupervisorFlags(max_restarts=2, period=60), [spec])
    system.tell("/w", "crash")
    wait_until(lambda: generation(system, "/w") == 3, what="third incarnation")
    cell = system.cell("/w")
    assert cell.restarts_total == 2  # the crash, then the failed start
    assert restart_count(system, "/w", "crash") == 1
    assert restart_count(system, "/w", "start_failed") == 1
    assert cell.last_failure is not None
    assert cell.last_failure.kind == "start_failed"
    assert journal.of("failure") == [("failure", "w", 1), ("failure", "w", 2)]  # on_failure for on_start too
    assert exits == []
    # one more failure inside the period is the third restart: > max_restarts=2 escalates
    system.tell("/w", "crash")
    wait_until(lambda: exits, what="escalation")
    assert [e.kind for e in exits] == [ExitKind.ESCALATED]


@pytest.mark.parametrize("failure", [RuntimeError("bad config"), SystemExit(2)])
def test_initial_start_failure_raises_and_leaves_nothing_running(
    make_system: MakeSystem, journal: Journal, exits: list[ExitReason], failure: BaseException
) -> None:
    before = set(threading.enumerate())
    system = make_system(start=False)
    children = [
        worker("a", journal),
        supervisor_spec(
            "sup",
            SupervisorFlags(),
            (worker("x", journal), worker("bad", journal, {"fail_start": lambda _ctx: failure})),
        ),
        worker("never", journal),
    ]
    with pytest.raises(StartFailed) as info:
        system.start(SupervisorFlags(), children)
    assert info.value.code == "child_start_failed"
    assert "bad" in str(info.value)
    # started in order until the failure, then everything stopped in reverse
    assert starts(journal) == [("a", 1), ("x", 1), ("bad", 1)]
    assert stops(journal) == [("x", 1), ("a", 1)]
    assert system.paths() == []
    wait_until(lambda: not running_incarnations(journal), what="every incarnation to end")

    def leftover() -> list[threading.Thread]:
        # a pooled tree leaves the pool's own threads behind (see conftest: ActorSystem.stop() skips
        # the pool when no root runs); they hold no incarnation, and make_system's teardown ends them
        return [t for t in threading.enumerate()
                if t not in before and not (pooled() and t.name.startswith("actors-"))]

    wait_until(lambda: not leftover(), what="every started thread to end")
    # the failure was reported to the caller of start(); on_root_exit is for a running tree
    time.sleep(0.05)
    assert exits == []


def test_factory_exception_is_a_start_failure(make_system: MakeSystem) -> None:
    def broken_factory(ctx: ActorContext) -> pykka.ActorRef[Worker]:
        raise ValueError("factory bug")

    system = make_system(start=False)
    with pytest.raises(StartFailed, match="ValueError: factory bug"):
        system.start(SupervisorFlags(), [child("f", broken_factory)])
    assert system.paths() == []


def test_on_start_that_never_finishes_is_abandoned_with_start_failed(
    make_system: MakeSystem, journal: Journal
) -> None:
    gate = threading.Event()
    system = make_system(SupervisorFlags(dynamic=True))
    slow = worker("slow", journal, {"block_start": gate}, start_timeout=0.1)
    with pytest.raises(StartFailed, match="did not finish"):
        system.ask("/", StartChild(slow))
    assert system.paths() == ["/"]
    assert system.abandoned_threads == 1
    assert system.ask("/", StartChild(worker("ok", journal))) == "/ok"  # the supervisor is fine
    gate.set()  # the abandoned thread wakes up, sees it was abandoned and exits silently
    wait_until(lambda: not running_incarnations(journal, "slow"), what="the abandoned start to end")
    assert journal.of("stop") == []


# hung actors --------------------------------------------------------------------------------------


def test_hung_actor_is_abandoned_and_replaced(
    make_system: MakeSystem, journal: Journal, reports: Reports
) -> None:
    gate = threading.Event()
    system = make_system(
        SupervisorFlags(liveness_interval=0.05),
        [worker("h", journal, hang_timeout=0.2), worker("s", journal)],
    )
    try:
        started = time.monotonic()
        system.tell("/h", ("block", gate))
        hung_reply = pykka.ThreadingFuture()  # an ask queued behind the hung message
        system.send("/h", ("seq", 0), reply_to=hung_reply)
        wait_until(lambda: system.cell("/h").restarts_total == 1 and generation(system, "/h"))
        new_generation = generation(system, "/h")
        assert new_generation is not None
        assert new_generation > 1  # (abandoning also bumps the mailbox generation: it may skip one)
        assert time.monotonic() - started >= 0.2
        assert system.cell("/h").last_failure is not None
        assert system.cell("/h").last_failure.kind == "hung"
        assert system.abandoned_threads == 1
        assert reports.events("child_exited", "/h")[0]["reason"].startswith("hung")
        # the queued ask is handled by the new incarnation
        assert hung_reply.get(timeout=5) == 0
        assert system.ask("/h", "ping") == ("h", new_generation)
        assert generation(system, "/s") == 1
    finally:
        gate.set()
    wait_until(lambda: ("h", 1) not in running_incarnations(journal), what="abandoned one to exit once released")
    for n in range(1, 21):
        system.tell("/h", ("seq", n))
    wait_until(lambda: len(journal.of("seq")) == 21)
    # nothing was stolen by the released thread: every message after the hang went to generation 2
    assert {e[2] for e in journal.of("seq")} == {new_generation}
    assert [e[3] for e in journal.of("seq")] == list(range(21))
    assert journal.of("unblocked") == [("unblocked", "h", 1)]
    assert journal.of("stop") == []  # an abandoned incarnation runs no on_stop
    barrier(system)
    assert system.cell("/h").restarts_total == 1  # the late wake-up was not reported as an exit


def test_busy_but_healthy_actor_is_not_abandoned(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(liveness_interval=0.02), [worker("w", journal, hang_timeout=0.3)])
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # twice the hang timeout of continuous short messages
        system.ask("/w", "ping")
    assert generation(system, "/w") == 1
    assert system.abandoned_threads == 0


@pytest.mark.parametrize("where", ["handler", "on_stop"])
def test_child_ignoring_stop_is_abandoned_on_shutdown(
    make_system: MakeSystem, journal: Journal, reports: Reports, where: str
) -> None:
    gate = threading.Event()
    kwargs = {"block_stop": gate} if where == "on_stop" else {}
    system = make_system(
        SupervisorFlags(),
        [worker("a", journal), worker("stuck", journal, kwargs, shutdown_timeout=0.2, hang_timeout=None)],
    )
    if where == "handler":
        system.tell("/stuck", ("block", gate))
        wait_until(lambda: journal.of("blocked"))
    try:
        started = time.monotonic()
        assert system.stop(timeout=5) is True
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 2.0
        assert system.abandoned_threads == 1
        assert [r["path"] for r in reports.events("brutal_kill")] == ["/stuck"]
        assert ("a", 1) in stops(journal)  # the rest of the tree still stopped in order
        assert system.paths() == []
    finally:
        gate.set()
    wait_until(lambda: not running_incarnations(journal), what="released incarnations to exit")


def test_crash_in_on_stop_is_reported_as_crash(make_system: MakeSystem, journal: Journal) -> None:
    class BadStop(Worker):
        def on_stop(self) -> None:
            super().on_stop()
            raise Crash("on_stop failed")

    system = make_system(
        SupervisorFlags(),
        [child("b", lambda ctx: BadStop.start(ctx, journal), restart=Restart.TRANSIENT)],
    )
    system.tell("/b", "stop-self")
    # a normal stop whose on_stop raised is abnormal: a transient child is restarted
    assert_restarted(system, "/b", "crash")
    assert system.cell("/b").state is CellState.RUNNING


@pytest.mark.parametrize("error", [RuntimeError("on_failure bug"), SystemExit(9)])
def test_failing_on_failure_hook_does_not_lose_the_exit(
    make_system: MakeSystem, journal: Journal, error: BaseException
) -> None:
    class BadHook(Worker):
        def on_failure(self, *_: object) -> None:
            raise error

    system = make_system(SupervisorFlags(), [child("b", lambda ctx: BadHook.start(ctx, journal))])
    system.tell("/b", "crash")
    assert_restarted(system, "/b", "crash")
    assert system.ask("/b", "ping") == ("b", 2)


def test_reply_to_an_asker_that_cannot_take_it_does_not_kill_the_actor(
    make_system: MakeSystem, journal: Journal
) -> None:
    """An ask issued from a loop that has closed since: the reply cannot be posted there."""
    system = make_system(SupervisorFlags(), [worker("w", journal)])
    with LoopThread() as other:
        future = other.loop.create_future()
    assert other.loop.is_closed()
    system.send("/w", "ping", reply_to=LoopReply(other.loop, future))
    system.send("/w", ("raise", Refused("x")), reply_to=LoopReply(other.loop, future))
    assert system.ask("/w", "ping", timeout=5) == ("w", 1)


def test_ask_to_a_hung_handler_fails_at_once_when_the_incarnation_is_abandoned(
    make_system: MakeSystem, journal: Journal
) -> None:
    gate = threading.Event()
    system = make_system(SupervisorFlags(liveness_interval=0.05), [worker("h", journal, hang_timeout=0.2)])
    try:
        stuck = pykka.ThreadingFuture()
        system.send("/h", ("block", gate), reply_to=stuck)
        with pytest.raises(ActorHung) as error:
            stuck.get(timeout=5)  # long before the asker's own timeout
        assert error.value.code == "actor_hung"
        assert error.value.path == "/h"
        assert system.ask("/h", "ping")[0] == "h"  # the replacement answers
    finally:
        gate.set()
    wait_until(lambda: ("h", 1) not in running_incarnations(journal), what="released incarnation to exit")
