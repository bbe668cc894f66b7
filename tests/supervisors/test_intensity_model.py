"""Restart intensity: the pure ``add_restart`` against an OTP reference model, then a real tree.

OTP (``supervisor:add_restart/3``) keeps the restarts with ``R >= Now - Period``, prepends ``Now``
and terminates when more than ``MaxR`` remain: exactly ``max_restarts`` restarts inside the
window are allowed, one more escalates, and a restart exactly ``period`` old still counts.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from sup_support import (
    TEST_POOL,
    Journal,
    MakeSystem,
    Worker,
    barrier,
    child,
    generation,
    restart_count,
    running_incarnations,
    worker,
)

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorSystem,
    CellState,
    ExitKind,
    ExitReason,
    Restart,
    SupervisorFlags,
    supervisor_spec,
)
from hydrovisor.supervisors.intensity import add_restart
from hydrovisor.supervisors.spec import Execution
from tests.helpers import wait_until

# unit tests -------------------------------------------------------------------------------------


def fold(times: list[float], max_restarts: int, period: float) -> list[bool]:
    history: tuple[float, ...] = ()
    verdicts = []
    for now in times:
        history, exceeded = add_restart(history, now, max_restarts, period)
        verdicts.append(exceeded)
    return verdicts


def test_zero_max_restarts_escalates_on_first_restart() -> None:
    assert add_restart((), 100.0, 0, 5.0) == ((100.0,), True)


def test_exactly_max_restarts_in_period_are_allowed_one_more_escalates() -> None:
    assert fold([0.0, 1.0, 2.0, 3.0], 3, 5.0) == [False, False, False, True]


def test_restarts_older_than_period_are_pruned() -> None:
    history, exceeded = add_restart((0.0, 1.0), 7.0, 1, 5.0)
    assert history == (7.0,)
    assert not exceeded


def test_history_is_newest_first_and_only_keeps_the_window() -> None:
    history, exceeded = add_restart((4.0, 3.0, 1.0), 6.0, 5, 3.5)
    assert history == (6.0, 4.0, 3.0)
    assert not exceeded


def test_restart_exactly_period_old_still_counts_like_otp() -> None:
    # OTP keeps R >= Now - Period: a restart exactly `period` ago is inside the window.
    history, exceeded = add_restart((0.0,), 5.0, 1, 5.0)
    assert history == (5.0, 0.0)
    assert exceeded


def test_spread_out_restarts_never_escalate() -> None:
    assert not any(fold([i * 2.5 for i in range(50)], 1, 2.0))


# property: add_restart vs an independent OTP model -------------------------------------------


def otp_model(times: list[float], max_restarts: int, period: float) -> tuple[list[bool], list[list[float]]]:
    """Count, over *all* past restarts, those inside the window ending now (inclusive)."""
    seen: list[float] = []
    verdicts, windows = [], []
    for now in times:
        seen.append(now)
        window = [t for t in reversed(seen) if now - t <= period]
        windows.append(window)
        verdicts.append(len(window) > max_restarts)
    return verdicts, windows


gaps = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=8).map(float),  # exact boundaries happen often
        st.floats(min_value=0.0, max_value=8.0, allow_nan=False, allow_infinity=False),
    ),
    max_size=40,
)
periods = st.one_of(
    st.integers(min_value=1, max_value=10).map(float),
    st.floats(min_value=0.01, max_value=10.0, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=400)
@given(gaps=gaps, max_restarts=st.integers(min_value=0, max_value=5), period=periods)
def test_add_restart_matches_otp_model(gaps: list[float], max_restarts: int, period: float) -> None:
    times, now = [], 1000.0
    for gap in gaps:
        now += gap
        times.append(now)
    expected, windows = otp_model(times, max_restarts, period)

    history: tuple[float, ...] = ()
    for i, now in enumerate(times):
        history, exceeded = add_restart(history, now, max_restarts, period)
        assert exceeded == expected[i], (i, now, history)
        assert list(history) == windows[i]
        if exceeded:
            break  # the supervisor is gone: nothing after an escalation is folded
        assert len(history) <= max_restarts


# integration: a real supervisor, a child crashing on command -----------------------------------


def crash_n_times(system: ActorSystem, path: str, n: int) -> None:
    """Queue ``n`` crash commands at once: each incarnation consumes exactly one of them."""
    for _ in range(n):
        system.tell(path, "crash")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    max_restarts=st.integers(min_value=0, max_value=4),
    escalate=st.booleans(),
    nested=st.booleans(),
)
def test_real_supervisor_escalates_after_max_restarts(
    execution: Execution, max_restarts: int, escalate: bool, nested: bool
) -> None:
    journal = Journal()
    exits: list[ExitReason] = []
    flags = SupervisorFlags(max_restarts=max_restarts, period=60.0, liveness_interval=0.05)
    child = worker("w", journal)
    crashes = max_restarts + 1 if escalate else max_restarts
    with LoopThread() as lt:
        system = ActorSystem(
            bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry(), on_root_exit=exits.append,
            pool=TEST_POOL,
        )
        if nested:
            system.start(
                SupervisorFlags(max_restarts=5, period=60.0),
                [worker("sibling", journal), supervisor_spec("mid", flags, (child,))],
            )
            path, sup = "/mid/w", "/mid"
        else:
            system.start(flags, [child])
            path, sup = "/w", "/"
        try:
            crash_n_times(system, path, crashes)
            if not escalate:
                wait_until(lambda: generation(system, path) == crashes + 1, what="last incarnation")
                assert system.ask(path, "ping") == ("w", crashes + 1)
                assert system.cell(path).restarts_total == crashes
                assert restart_count(system, path, "crash") == crashes
                assert restart_count(system, path) == crashes
                assert exits == []
            elif nested:
                # /mid gave up; the root restarted it, and with it a fresh /mid/w
                wait_until(lambda: system.cell(sup).restarts_total == 1, what="root to restart /mid")
                wait_until(lambda: "/mid/w" in system.paths() and generation(system, path) == 1)
                assert system.ask(path, "ping") == ("w", 1)
                assert system.cell(sup).last_failure is not None
                assert system.cell(sup).last_failure.kind == ExitKind.ESCALATED.value
                assert restart_count(system, sup, ExitKind.ESCALATED.value) == 1
                assert system.cell(path).restarts_total == 0  # a new cell, a fresh count
                # the counter is per path for the life of the process: it keeps the old crashes
                assert restart_count(system, path, "crash") == max_restarts
                assert system.ask("/sibling", "ping") == ("sibling", 1)  # one_for_one in the root
                assert exits == []
            else:
                wait_until(lambda: exits, what="on_root_exit")
                assert [e.kind for e in exits] == [ExitKind.ESCALATED]
                assert exits[0].kind.value == "reached_max_restart_intensity"
                assert exits[0].abnormal
                assert restart_count(system, path) == max_restarts
                assert system.paths() == ["/"]  # the root stopped its children before failing
        finally:
            assert system.stop(timeout=10)
        # every incarnation ended (none was abandoned): its thread, or its turns on the pool
        wait_until(lambda: not running_incarnations(journal))


def test_restarts_spaced_beyond_the_period_never_escalate(
    make_system: MakeSystem, exits: list[ExitReason]
) -> None:
    journal = Journal()
    system = make_system(SupervisorFlags(max_restarts=1, period=0.15), [worker("w", journal)])
    for n in range(1, 4):
        system.tell("/w", "crash")
        wait_until(lambda n=n: generation(system, "/w") == n + 1)
        # the next crash is handled (timestamped) at least this much later: outside the window
        time.sleep(0.2)
    assert system.cell("/w").restarts_total == 3
    assert restart_count(system, "/w") == 3
    assert exits == []


def test_failing_restart_counts_against_the_same_window(
    make_system: MakeSystem, exits: list[ExitReason]
) -> None:
    journal = Journal()
    spec = child(
        "w",
        lambda ctx: Worker.start(
            ctx, journal, fail_start=lambda c: RuntimeError("no") if c.generation > 1 else None
        ),
    )
    make_system(SupervisorFlags(max_restarts=3, period=60.0), [spec]).tell("/w", "crash")
    wait_until(lambda: exits, what="escalation")
    # crash (1) + three failed restarts = 4 > 3
    assert [e.kind for e in exits] == [ExitKind.ESCALATED]
    assert [g for (_, _, g, *_) in journal.of("start")] == [1, 2, 3, 4]


@pytest.mark.parametrize("max_restarts", [0, 2])
def test_temporary_and_transient_exits_do_not_count(
    make_system: MakeSystem, exits: list[ExitReason], max_restarts: int
) -> None:
    journal = Journal()
    system = make_system(
        SupervisorFlags(max_restarts=max_restarts, period=60.0),
        [worker("t", journal, restart=Restart.TEMPORARY), worker("n", journal, restart=Restart.TRANSIENT)],
    )
    system.tell("/t", "crash")  # temporary: never restarted, so not a restart
    system.tell("/n", "stop-self")  # transient, normal exit: not restarted
    wait_until(lambda: "/t" not in system.paths())
    wait_until(lambda: system.cell("/n").state == "stopped")
    assert exits == []
    assert restart_count(system, "/t") == restart_count(system, "/n") == 0


def test_exceeded_intensity_exits_like_otp_shutdown_so_a_transient_supervisor_stays_down(
    make_system: MakeSystem, exits: list[ExitReason]
) -> None:
    journal = Journal()
    mid = SupervisorFlags(max_restarts=0, period=60.0)
    system = make_system(
        SupervisorFlags(max_restarts=5, period=60.0),
        [worker("sibling", journal),
         supervisor_spec("mid", mid, (worker("w", journal),), restart=Restart.TRANSIENT)],
    )
    system.tell("/mid/w", "crash")
    wait_until(lambda: system.cell("/mid").state is CellState.STOPPED, what="/mid given up")
    barrier(system)
    assert system.cell("/mid").restarts_total == 0  # OTP: exit reason shutdown, transient: no restart
    assert system.cell("/mid").last_failure is not None  # still recorded and reported as a failure
    assert system.cell("/mid").last_failure.kind == ExitKind.ESCALATED.value
    assert "/mid/w" not in system.paths()
    assert system.ask("/sibling", "ping") == ("sibling", 1)
    assert exits == []
