"""The pooled dispatcher itself: turns, fairness, blocking calls, the watchdog, abandonment, stop.

Every other module of this directory runs the supervision semantics against both execution models;
this one checks what only the pool has to guarantee. Real threads, a real loop, no mocks: the
actors below are ordinary supervised actors scheduled on a real :class:`WorkerPool`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from sup_support import (
    TEST_POOL,
    Journal,
    MakeSystem,
    barrier,
    generation,
    running_incarnations,
    stops,
    worker,
)

from hydrovisor.runtime.blocking import AskCycle, BlockingCallInPool
from hydrovisor.supervisors import ActorContext, ActorSystem, ChildSpec, SupervisedActor, SupervisorFlags
from hydrovisor.supervisors.pool import PoolSettings, StuckTurn
from hydrovisor.supervisors.spec import Execution
from tests.helpers import wait_until

POOL = Execution.POOL


def settings(**changes: Any) -> PoolSettings:
    """The test pool (strict, ``stuck_after=0.3``) with ``changes``."""
    return msgspec.structs.replace(TEST_POOL, **changes)


class Probe(SupervisedActor):
    """Journals ``("seq", name, item, worker thread name)``; detects two of its handlers at once."""

    def __init__(self, ctx: ActorContext, journal: Journal) -> None:
        super().__init__(ctx)
        self.journal = journal
        self._lock = threading.Lock()
        self._inside = 0

    def on_receive(self, message: Any) -> Any:
        with self._lock:
            self._inside += 1
            overlap = self._inside > 1
        if overlap:
            self.journal.add("overlap", self.ctx.name)
        time.sleep(0)  # give another worker every chance to run a second handler of this actor now
        self.journal.add("seq", self.ctx.name, message, threading.current_thread().name)
        with self._lock:
            self._inside -= 1
        return message


class Caller(SupervisedActor):
    """``("call", fn)`` runs ``fn(self)`` in the handler and answers ``("ok", value)`` or
    ``("raised", exception)``; ``("tell-call", fn)`` does the same and journals the answer."""

    def __init__(self, ctx: ActorContext, journal: Journal) -> None:
        super().__init__(ctx)
        self.journal = journal
        self.level = 0

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return self.ctx.name, self.ctx.generation
        kind, fn = message
        try:
            answer: tuple[str, Any] = ("ok", fn(self))
        except Exception as exc:
            answer = ("raised", exc)
        if kind == "tell-call":
            self.journal.add("called", self.ctx.name, answer)
        return answer


def probe(child_id: str, journal: Journal) -> ChildSpec:
    return ChildSpec(child_id, lambda ctx: Probe.start(ctx, journal), execution=POOL)


def caller(child_id: str, journal: Journal, execution: Execution = POOL, **spec: Any) -> ChildSpec:
    return ChildSpec(child_id, lambda ctx: Caller.start(ctx, journal), execution=execution, **spec)


def ref_of(system: ActorSystem, path: str) -> Any:
    ctx = system.cell(path).ctx
    assert ctx is not None
    assert ctx.actor is not None
    return ctx.actor.actor_ref


def send_concurrently(senders: int, send: Callable[[int], None]) -> None:
    """Run ``send(sender)`` on ``senders`` threads at once."""
    start = threading.Barrier(senders)

    def run(sender: int) -> None:
        start.wait()
        send(sender)

    threads = [threading.Thread(target=run, args=(s,)) for s in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)


# where pooled actors run ----------------------------------------------------------------------


def test_pooled_children_run_on_the_pool_and_supervisors_on_their_own_thread(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal, execution=POOL)])
    ctx = system.cell("/w").ctx
    assert ctx is not None
    assert ctx.pool is system.pool
    [start] = journal.of("start")
    assert start[3].name.startswith(f"{system.pool.name}-worker-")  # on_start ran in a turn
    assert ctx.actor is not None
    assert ctx.actor.execution == "pool"
    root = system.cell("/").ctx
    assert root is not None
    assert root.pool is None


# turns ------------------------------------------------------------------------------------------


def test_an_actor_never_runs_two_turns_at_once_under_many_senders(
    make_system: MakeSystem, journal: Journal
) -> None:
    # short turns: the actors go back to the run queue all the time and move between the workers
    system = make_system(SupervisorFlags(), [probe(f"p{i}", journal) for i in range(3)],
                         pool=settings(workers=4, turn_messages=2))
    senders, per_sender = 8, 200

    def send(sender: int) -> None:
        for i in range(per_sender):
            system.tell(f"/p{i % 3}", (sender, i))

    send_concurrently(senders, send)
    wait_until(lambda: len(journal.of("seq")) == senders * per_sender, what="every message")
    assert journal.of("overlap") == []
    assert len({e[3] for e in journal.of("seq")}) > 1  # several workers took turns
    for i in range(3):
        assert generation(system, f"/p{i}") == 1


def test_each_sender_keeps_its_order_under_many_concurrent_senders(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [probe("p", journal)], pool=settings(turn_messages=3))
    senders, per_sender = 8, 250

    def send(sender: int) -> None:
        for i in range(per_sender):
            if i % 50 == 49:  # an ask among the tells is answered in its place in the sequence
                assert system.ask("/p", (sender, i)) == (sender, i)
            else:
                system.tell("/p", (sender, i))

    send_concurrently(senders, send)
    wait_until(lambda: len(journal.of("seq")) == senders * per_sender, what="every message")
    handled = [e[2] for e in journal.of("seq")]
    for s in range(senders):
        assert [i for (sender, i) in handled if sender == s] == list(range(per_sender))


def test_a_flooded_actor_yields_after_its_turn_budget(make_system: MakeSystem, journal: Journal) -> None:
    budget = 8
    # one worker: the journal is the exact order of turns; nothing stays stuck long enough for a spare
    system = make_system(
        SupervisorFlags(),
        [worker("a", journal, execution=POOL), worker("b", journal, execution=POOL)],
        pool=settings(workers=1, turn_messages=budget, stuck_after=5.0),
    )
    gate = threading.Event()
    system.tell("/a", ("block", gate))  # a's turn holds the only worker while both floods queue
    wait_until(lambda: journal.of("blocked"))
    total = 100
    for n in range(total):
        system.tell("/a", ("seq", n))
    for n in range(total):
        system.tell("/b", ("seq", n))
    mark = journal.mark()
    gate.set()
    wait_until(lambda: len(journal.of("seq", mark)) == 2 * total, what="both floods handled")
    order = [e[1] for e in journal.of("seq", mark)]
    runs: list[tuple[str, int]] = []
    for name in order:
        if runs and runs[-1][0] == name:
            runs[-1] = (name, runs[-1][1] + 1)
        else:
            runs.append((name, 1))
    # a's first turn: the blocking message and budget - 1 more; then the two alternate, a turn each
    assert runs[0] == ("a", budget - 1)
    assert all(length == budget for _, length in runs[1:-2])
    assert max(length for _, length in runs) == budget
    # b was handled while most of a's flood was still queued
    first_b = order.index("b")
    assert first_b == budget - 1
    assert order[first_b:].count("a") == total - (budget - 1)


def test_messages_queued_behind_a_crash_go_to_the_next_pooled_incarnation(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [worker("w", journal, execution=POOL)],
                         pool=settings(workers=2, turn_messages=4))
    for n in range(10):
        system.tell("/w", ("seq", n))
    system.tell("/w", "crash")  # in the middle of a turn: the rest of that turn's messages stay queued
    for n in range(10, 30):
        system.tell("/w", ("seq", n))
    wait_until(lambda: len(journal.of("seq")) == 30, what="every message")
    assert [(e[2], e[3]) for e in journal.of("seq")] == [(1, n) for n in range(10)] + [(2, n) for n in range(10, 30)]
    assert system.cell("/w").restarts_total == 1
    wait_until(lambda: running_incarnations(journal) == [("w", 2)], what="the crashed incarnation's turn to end")


# blocking calls in pooled handlers --------------------------------------------------------------


async def _late(value: str) -> str:
    await asyncio.sleep(0.2)
    return value


def _ask(me: Caller) -> Any:
    return me.ctx.system.ask("/other", "ping", timeout=5)


def _ref_ask(me: Caller) -> Any:
    return ref_of(me.ctx.system, "/other").ask("ping", timeout=5)


def _bridge_call(me: Caller) -> Any:
    return me.ctx.system.bridge.submit(_late("late")).result(timeout=5)


def _stop_blocking(me: Caller) -> Any:
    return ref_of(me.ctx.system, "/other").stop(block=True, timeout=5)


def _proxy_set(me: Caller) -> Any:
    ref_of(me.ctx.system, "/other").proxy().level = 3
    return "set"


BLOCKING_CALLS = {
    "ask": (_ask, ("other", 1)),
    "ref_ask": (_ref_ask, ("other", 1)),
    "bridge_call": (_bridge_call, "late"),
    "stop_block": (_stop_blocking, True),
    "proxy_set": (_proxy_set, "set"),
}


@pytest.mark.parametrize("call", list(BLOCKING_CALLS))
@pytest.mark.parametrize("mode", ["strict-pool", "lenient-pool", "thread"])
def test_blocking_calls_raise_in_a_strict_pool_are_compensated_in_a_lenient_one_and_work_on_threads(
    make_system: MakeSystem, journal: Journal, call: str, mode: str
) -> None:
    execution = Execution.THREAD if mode == "thread" else POOL
    system = make_system(
        SupervisorFlags(), [caller("c", journal, execution), caller("other", journal, Execution.THREAD)],
        pool=settings(strict=mode == "strict-pool"),
    )
    fn, value = BLOCKING_CALLS[call]
    system.tell("/other", ("call", lambda _me: time.sleep(0.05)))  # so that /c really has to wait
    outcome, result = system.ask("/c", ("call", fn), timeout=10)
    if mode == "strict-pool":
        assert outcome == "raised"
        assert isinstance(result, BlockingCallInPool)
        assert result.code == "blocking_call_in_pool"
        assert "/c made a blocking" in str(result)
        assert system.pool.blocking_compensated == 0
    else:  # compensated by a spare worker, or a thread actor that holds only its own thread
        assert (outcome, result) == ("ok", value)
        if mode == "lenient-pool":
            assert system.pool.blocking_compensated == 1
    assert generation(system, "/c") == 1  # the caller caught it and went on


def test_blocking_calls_in_a_lenient_pool_get_a_spare_worker_and_work_goes_on(
    make_system: MakeSystem, journal: Journal
) -> None:
    workers = 2
    system = make_system(
        SupervisorFlags(),
        [caller(f"c{i}", journal) for i in range(workers)]
        + [caller("free", journal), worker("gate", journal, execution=Execution.THREAD)],
        pool=settings(workers=workers, strict=False, stuck_after=10.0),
    )
    gate = threading.Event()
    system.tell("/gate", ("block", gate))  # the thread actor every caller now waits for
    wait_until(lambda: journal.of("blocked"))

    def wait_for_gate(me: Caller) -> Any:
        return me.ctx.system.ask("/gate", ("seq", me.ctx.name), timeout=10)

    for i in range(workers):
        system.tell(f"/c{i}", ("tell-call", wait_for_gate))
    pool = system.pool
    wait_until(lambda: pool.blocking_compensated == workers, what="every core worker blocked")
    assert pool.spare_workers() == workers
    # every core worker waits in an ask: a spare runs the others
    assert system.ask("/free", "ping") == ("free", 1)
    gate.set()
    wait_until(lambda: len(journal.of("called")) == workers, what="the blocked asks answered")
    assert sorted(e[2] for e in journal.of("called")) == [("ok", f"c{i}") for i in range(workers)]
    wait_until(lambda: pool.spare_workers() == 0, timeout=5, what="spare workers to retire")


@pytest.mark.parametrize("execution", [Execution.POOL, Execution.THREAD], ids=["pool", "thread"])
@pytest.mark.parametrize("via", ["path", "ref"])
def test_an_ask_to_itself_raises_ask_cycle_at_once(
    make_system: MakeSystem, journal: Journal, execution: Execution, via: str
) -> None:
    system = make_system(SupervisorFlags(), [caller("c", journal, execution)])

    def ask_myself(me: Caller) -> Any:
        if via == "path":
            return me.ctx.system.ask(me.path, "ping", timeout=5)
        return me.actor_ref.ask("ping", timeout=5)

    asked = time.monotonic()
    outcome, error = system.ask("/c", ("call", ask_myself), timeout=10)
    assert time.monotonic() - asked < 1.0  # not after the 5 s timeout
    assert outcome == "raised"
    assert isinstance(error, AskCycle)
    assert error.code == "ask_cycle"


@pytest.mark.parametrize("execution", [Execution.POOL, Execution.THREAD], ids=["lenient-pool", "thread"])
def test_an_ask_cycle_between_two_actors_raises_ask_cycle_at_once(
    make_system: MakeSystem, journal: Journal, execution: Execution
) -> None:
    # a strict pool refuses the first ask already; a lenient one lets it wait (on a spare worker)
    system = make_system(
        SupervisorFlags(), [caller("a", journal, execution), caller("b", journal, execution)],
        pool=settings(strict=False),
    )

    def b_asks_a(me: Caller) -> Any:
        return me.ctx.system.ask("/a", "ping", timeout=5)

    def a_asks_b(me: Caller) -> Any:
        return me.ctx.system.ask("/b", ("call", b_asks_a), timeout=5)

    asked = time.monotonic()
    outcome, answer = system.ask("/a", ("call", a_asks_b), timeout=10)
    assert time.monotonic() - asked < 1.0
    # b's ask of a, which waits for b, raised at once; b answered a with that
    assert outcome == "ok"
    b_outcome, error = answer
    assert b_outcome == "raised"
    assert isinstance(error, AskCycle)
    assert "/b -> /a" in str(error)
    assert generation(system, "/a") == generation(system, "/b") == 1


# the watchdog -------------------------------------------------------------------------------------


def _doze(release: threading.Event) -> None:
    while not release.is_set():  # blocking no future sees: only the watchdog notices it
        time.sleep(0.01)


def test_a_stuck_turn_is_reported_covered_by_a_spare_and_the_actor_replaced(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(
        SupervisorFlags(liveness_interval=0.05),
        [caller("sleepy", journal, hang_timeout=0.4), caller("other", journal)],
        pool=settings(workers=1, stuck_after=0.2),
    )
    pool = system.pool
    stuck: list[StuckTurn] = []
    pool.on_stuck(stuck.append)
    first = system.cell("/sleepy").ctx
    assert first is not None
    first_actor = first.actor
    release = threading.Event()
    try:
        system.tell("/sleepy", ("tell-call", lambda _me: _doze(release)))
        wait_until(lambda: stuck, timeout=5, what="the stuck turn reported")
        [report] = stuck
        assert report.path == "/sleepy"
        assert report.running_for_s >= 0.2
        assert "in _doze" in report.stack
        assert "time.sleep" in report.stack
        assert pool.stuck_turns == 1
        assert pool.spare_workers() == 1
        # the only core worker sleeps: the spare runs the other actor ...
        assert system.ask("/other", "ping") == ("other", 1)
        # ... and the replacement of the hung one, abandoned by its supervisor's hang detection
        wait_until(lambda: (generation(system, "/sleepy") or 0) > 1, timeout=5, what="sleepy replaced")
        cell = system.cell("/sleepy")
        assert cell.last_failure is not None
        assert cell.last_failure.kind == "hung"
        assert system.ask("/sleepy", "ping")[1] > 1
        assert not first.exited.is_set()  # still in its handler: Python cannot interrupt it
        assert pool.stuck_turns == 1
    finally:
        release.set()
    # the stuck turn ends: the old incarnation exits silently, its worker is free, the spare retires
    wait_until(first.exited.is_set, what="the abandoned incarnation to exit")
    wait_until(lambda: all(w.actor is not first_actor for w in pool.workers()), what="its worker free")
    wait_until(lambda: pool.spare_workers() == 0, timeout=5, what="the spare to retire")
    assert journal.of("called") == [("called", "sleepy", ("ok", None))]  # it did finish, unheard
    barrier(system)
    assert system.cell("/sleepy").restarts_total == 1  # the late end was not reported as an exit
    assert system.ask("/other", "ping") == ("other", 1)


# abandonment and stop -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["new_generation", "close"])
def test_an_idle_pooled_actor_given_up_on_exits(make_system: MakeSystem, journal: Journal, how: str) -> None:
    system = make_system(SupervisorFlags(), [worker("idle", journal, execution=POOL)])
    cell = system.cell("/idle")
    ctx = cell.ctx
    assert ctx is not None
    actor = ctx.actor
    assert actor is not None
    barrier(system)
    assert not ctx.exited.is_set()
    if how == "new_generation":  # what abandoning it does: its mailbox belongs to a successor now
        cell.mailbox.new_generation()
    else:  # what closing the path does (its supervisor was given up on)
        cell.mailbox.close("test")
    wait_until(ctx.exited.is_set, timeout=5, what="the idle incarnation to run once more and exit")
    assert actor.actor_stopped.is_set()
    wait_until(lambda: not running_incarnations(journal), what="its worker to be free")
    assert stops(journal) == []  # given up on: no on_stop, and no exit reported
    barrier(system)
    assert system.cell("/idle").restarts_total == 0


def test_a_pooled_actor_given_up_on_during_the_last_message_of_its_turn_exits_when_it_returns(
    make_system: MakeSystem, journal: Journal
) -> None:
    # a budget of one: the turn ends with that message, without asking the mailbox for another
    system = make_system(SupervisorFlags(), [worker("w", journal, execution=POOL, hang_timeout=None)],
                         pool=settings(turn_messages=1, stuck_after=5.0))
    cell = system.cell("/w")
    ctx = cell.ctx
    assert ctx is not None
    gate = threading.Event()
    system.tell("/w", ("block", gate))
    wait_until(lambda: journal.of("blocked"))
    cell.mailbox.new_generation()  # given up on while in its handler
    gate.set()
    wait_until(ctx.exited.is_set, timeout=5, what="the incarnation to see it was given up on and exit")
    wait_until(lambda: not running_incarnations(journal), what="its worker to be free")
    assert stops(journal) == []


def test_pool_stop_joins_its_threads(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(), [worker(f"w{i}", journal, execution=POOL) for i in range(8)])
    for i in range(8):
        for n in range(20):
            system.tell(f"/w{i}", ("seq", n))
    assert [system.ask(f"/w{i}", "ping") for i in range(8)] == [(f"w{i}", 1) for i in range(8)]
    name = system.pool.name
    threads = [w.thread for w in system.pool.workers()]
    threads += [t for t in threading.enumerate() if t.name == f"{name}-watchdog"]
    assert len(threads) == TEST_POOL.workers + 1
    assert system.stop(timeout=10)
    assert [t.name for t in threads if t is not None and t.is_alive()] == []  # joined by stop()
    assert len(stops(journal)) == 8
    pool = system.pool
    assert pool.workers() == []
    pool.start()  # a stopped pool stays stopped
    assert pool.workers() == []
    assert [t for t in threading.enumerate() if t.name.startswith(f"{name}-")] == []
