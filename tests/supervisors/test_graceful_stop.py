"""A graceful stop (terminate, system stop, escalation) handles what was queued before it, as in OTP.

The shutdown signal queues behind the messages already accepted; the child works through them
within its shutdown timeout. Whatever is still queued when that timeout runs out is counted and
reported in one line, never dropped silently.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from sup_support import Journal, MakeSystem, Reports, child, stops, worker

from hydrovisor.supervisors import (
    ActorContext,
    ActorStopped,
    ActorSystem,
    StartChild,
    SupervisedActor,
    SupervisorFlags,
    TerminateChild,
    supervisor_spec,
)
from tests.helpers import wait_until


class Slow(SupervisedActor):
    """``("slow", n)`` takes ``delay`` s and journals ``n``; ``("block", event)`` waits for ``event``."""

    def __init__(self, ctx: ActorContext, journal: Journal, delay: float) -> None:
        super().__init__(ctx)
        self.journal = journal
        self.delay = delay

    def on_receive(self, message: Any) -> Any:
        kind, arg = message
        if kind == "block":
            arg.wait()
        elif kind == "slow":
            time.sleep(self.delay)
            self.journal.add("slow", arg)
        return None

    def on_stop(self) -> None:
        self.journal.add("stop", self.ctx.name, self.ctx.generation)


def dropped(system: ActorSystem, path: str) -> float:
    total = 0.0
    for metric in system.dropped_messages.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["path"] == path:
                total += sample.value
    return total


def test_terminate_child_drains_its_backlog_before_stopping(
    make_system: MakeSystem, journal: Journal
) -> None:
    system = make_system(SupervisorFlags(), [supervisor_spec("zones", SupervisorFlags(dynamic=True))])
    system.ask("/zones", StartChild(worker("z", journal)))
    gate = threading.Event()
    system.tell("/zones/z", ("block", gate))
    wait_until(lambda: journal.of("blocked"))
    for n in range(2000):
        system.tell("/zones/z", ("seq", n))
    asked = pykka.ThreadingFuture()
    system.send("/zones/z", "ping", reply_to=asked)
    done = pykka.ThreadingFuture()
    system.send("/zones", TerminateChild("z"), reply_to=done)
    gate.set()
    assert done.get(timeout=10) is None
    assert [e[3] for e in journal.of("seq")] == list(range(2000))
    assert asked.get(timeout=1) == ("z", 1)
    assert stops(journal) == [("z", 1)]  # on_stop after the backlog
    assert dropped(system, "/zones/*") == 0


def test_system_stop_drains_backlogs_in_reverse_start_order(make_system: MakeSystem, journal: Journal) -> None:
    system = make_system(SupervisorFlags(), [worker("a", journal), worker("b", journal)])
    gate = threading.Event()
    system.tell("/a", ("block", gate))
    wait_until(lambda: journal.of("blocked"))
    for n in range(500):
        system.tell("/a", ("seq", n))
        system.tell("/b", ("seq", n))
    threading.Timer(0.1, gate.set).start()
    assert system.stop(timeout=10) is True
    assert len(journal.of("seq")) == 1000
    assert stops(journal) == [("b", 1), ("a", 1)]


def test_backlog_left_after_the_shutdown_timeout_is_counted_and_reported(
    make_system: MakeSystem, journal: Journal, reports: Reports
) -> None:
    spec = child("s", lambda ctx: Slow.start(ctx, journal, 0.02), shutdown_timeout=0.3)
    system = make_system(SupervisorFlags(dynamic=True), [])
    system.ask("/", StartChild(spec))
    gate = threading.Event()
    system.tell("/s", ("block", gate))
    total = 200  # 4 s of work: far beyond the 0.3 s shutdown timeout
    for n in range(total):
        system.tell("/s", ("slow", n))
    asks = [pykka.ThreadingFuture() for _ in range(3)]
    for future in asks:
        system.send("/s", ("slow", -1), reply_to=future)
    done = pykka.ThreadingFuture()
    system.send("/", TerminateChild("s"), reply_to=done)
    gate.set()
    started = time.monotonic()
    assert done.get(timeout=5) is None
    assert time.monotonic() - started < 1.5
    handled = len(journal.of("slow"))
    assert 0 < handled < total
    assert journal.of("stop") == [("stop", "s", 1)]  # it stopped cleanly at the deadline: no brutal kill
    assert reports.events("brutal_kill") == []
    for future in asks:  # queued last, never reached: they fail loudly
        with pytest.raises(ActorStopped):
            future.get(timeout=1)
    left = total + len(asks) - handled
    assert dropped(system, "/*") == left
    [report] = reports.events("backlog_dropped", "/s")
    assert report["dropped"] == left
