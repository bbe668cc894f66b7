"""Messages an incarnation sends itself (piped results, timers, ``actor_ref.tell``) are its own.

The path's mailbox outlives an incarnation, so a result that incarnation 1 piped to itself can sit
queued behind the message that crashes it. Incarnation 2 must never handle it (it would pop work it
never did); the runtime drops it, counts it and logs it.
"""

from __future__ import annotations

import threading
from typing import Any

from sup_support import Journal, MakeSystem, Reports, child, generation

from hydrovisor.supervisors import ActorContext, ActorSystem, SupervisedActor, SupervisorFlags
from tests.helpers import wait_until


class Done:
    """A private result: which incarnation asked for it."""

    def __init__(self, asked_by: int) -> None:
        self.asked_by = asked_by


class Piper(SupervisedActor):
    """``"pipe"`` / ``"timer"`` / ``"self"``: send itself a :class:`Done` three ways."""

    def __init__(self, ctx: ActorContext, journal: Journal) -> None:
        super().__init__(ctx)
        self.journal = journal

    def on_receive(self, message: Any) -> Any:
        gen = self.ctx.generation
        if isinstance(message, Done):
            self.journal.add("done", gen, message.asked_by)
        elif message == "pipe":
            self.pipe_to_self(_value(gen), lambda outcome: Done(outcome.value))
        elif message == "timer":
            self.tell_self_after(0.01, Done(gen))
        elif message == "self":
            self.actor_ref.tell(Done(gen))
        elif isinstance(message, tuple) and message[0] == "block":
            message[1].wait()
        elif message == "crash":
            raise RuntimeError("crash on command")
        elif message == "ping":
            return gen
        return None


async def _value(value: int) -> int:
    return value


def stale_count(system: ActorSystem, path: str) -> float:
    total = 0.0
    for metric in system.stale_messages.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["path"] == path:
                total += sample.value
    return total


def test_private_messages_of_a_crashed_incarnation_never_reach_its_successor(
    make_system: MakeSystem, journal: Journal, reports: Reports
) -> None:
    system = make_system(SupervisorFlags(), [child("p", lambda ctx: Piper.start(ctx, journal))])
    gate = threading.Event()
    for kind in ("pipe", "timer", "self"):
        system.tell("/p", kind)
    system.tell("/p", ("block", gate))
    system.tell("/p", "crash")
    # while incarnation 1 is blocked its three results queue up behind the crash
    wait_until(lambda: len(system.cell("/p").mailbox) == 4, what="three private results queued")
    gate.set()
    wait_until(lambda: generation(system, "/p") == 2, what="restart")
    assert system.ask("/p", "ping") == 2  # handled after the stale results were taken
    assert journal.of("done") == []
    assert stale_count(system, "/p") == 3
    assert len(reports.events("stale_message_dropped", "/p")) == 3
    # the successor's own private messages still arrive
    system.tell("/p", "pipe")
    system.tell("/p", "self")
    wait_until(lambda: len(journal.of("done")) == 2)
    assert {e[1:] for e in journal.of("done")} == {(2, 2)}
