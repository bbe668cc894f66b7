"""A restart that fails is retried through the supervisor's mailbox (OTP ``try_again_restart``), so
between two attempts the supervisor answers its other requests instead of retrying in a loop."""

from __future__ import annotations

import time

from sup_support import Journal, MakeSystem, worker

from hydrovisor.supervisors import ActorContext, CellState, StartChild, SupervisorFlags, supervisor_spec
from tests.helpers import wait_until

ATTEMPT_S = 0.3


def slow_failure(ctx: ActorContext) -> BaseException | None:
    """Every restart takes ``ATTEMPT_S`` and fails."""
    if ctx.generation == 1:
        return None
    time.sleep(ATTEMPT_S)
    return RuntimeError("cannot start again")


def test_failing_restarts_do_not_block_the_supervisor(make_system: MakeSystem, journal: Journal) -> None:
    dyn = SupervisorFlags(dynamic=True, max_restarts=6, period=60.0)
    system = make_system(SupervisorFlags(max_restarts=0), [supervisor_spec("dyn", dyn)])
    system.ask("/dyn", StartChild(worker("bad", journal, {"fail_start": slow_failure})))
    system.tell("/dyn/bad", "crash")
    wait_until(lambda: len(journal.of("start")) == 2, what="the first restart attempt")
    asked = time.monotonic()
    assert system.ask("/dyn", StartChild(worker("ok", journal)), timeout=10) == "/dyn/ok"
    # answered between two attempts, not after the whole series of retries
    assert time.monotonic() - asked < 2 * ATTEMPT_S
    assert system.cell("/dyn/bad").state is not CellState.RUNNING
    # the retries go on without the caller's help, each one counted
    wait_until(lambda: system.cell("/dyn/bad").restarts_total >= 3, what="further attempts")
