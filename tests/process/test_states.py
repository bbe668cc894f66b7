"""The state machine of DOMAIN §6, driven with a fake clock."""

from __future__ import annotations

import pytest

from hydrovisor.process.states import StateMachine, SystemState, Thresholds, Transition

S = SystemState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def machine(clock: Clock) -> StateMachine:
    return StateMachine(Thresholds(degraded_after=3, safe_mode_after=5, recovery_cycles=3, safe_mode_ttl=60.0),
                        clock=clock, wall=clock)


def errors(machine: StateMachine, n: int) -> list[Transition]:
    return [t for t in (machine.record_error(f"e{i}", "test") for i in range(n)) if t is not None]


def good_cycles(machine: StateMachine, n: int) -> list[Transition]:
    return [t for t in (machine.record_cycle(True) for _ in range(n)) if t is not None]


def test_the_documented_path_running_degraded_safe_recovering_running(machine: StateMachine) -> None:
    assert errors(machine, 2) == []
    (degraded,) = errors(machine, 1)
    assert (degraded.from_state, degraded.to_state) == (S.RUNNING, S.DEGRADED)
    assert degraded.reason.startswith("consecutive_errors=3")
    assert errors(machine, 1) == []
    (safe,) = errors(machine, 1)
    assert (safe.from_state, safe.to_state) == (S.DEGRADED, S.SAFE_MODE)
    assert good_cycles(machine, 2) == []
    (recovering,) = good_cycles(machine, 1)
    assert recovering.to_state is S.RECOVERING
    assert good_cycles(machine, 2) == []
    (running,) = good_cycles(machine, 1)
    assert running.to_state is S.RUNNING
    snap = machine.snapshot()
    assert snap.counters.transitions_total == 4
    assert snap.counters.consecutive_errors == 0
    assert snap.safe_episode_s is None


def test_every_transition_has_its_own_incident_id_and_time_in_old_state(machine: StateMachine, clock: Clock) -> None:
    clock.now += 12.5
    transitions = errors(machine, 5)
    assert [t.to_state for t in transitions] == [S.DEGRADED, S.SAFE_MODE]
    assert transitions[0].in_old_state_s == 12.5
    assert transitions[1].in_old_state_s == 0.0
    ids = {t.incident_id for t in transitions}
    assert len(ids) == 2 and all(i.startswith("state-") for i in ids)


def test_a_good_cycle_resets_the_consecutive_errors(machine: StateMachine) -> None:
    errors(machine, 2)
    machine.record_cycle(True)
    assert errors(machine, 2) == []
    assert machine.state is S.RUNNING
    assert machine.snapshot().counters.errors_total == 4


def test_a_bad_cycle_does_not_count_towards_recovery(machine: StateMachine) -> None:
    errors(machine, 5)
    good_cycles(machine, 2)
    machine.record_cycle(False)
    assert good_cycles(machine, 2) == []
    assert machine.state is S.SAFE_MODE
    assert good_cycles(machine, 1)[0].to_state is S.RECOVERING


def test_degraded_recovers_to_running_after_good_cycles(machine: StateMachine) -> None:
    errors(machine, 3)
    (back,) = good_cycles(machine, 3)
    assert (back.from_state, back.to_state) == (S.DEGRADED, S.RUNNING)


def test_a_stall_goes_straight_to_safe_mode_from_any_live_state(machine: StateMachine) -> None:
    stall = machine.record_stall("loop_stall_detected", "loop_guard", "stall-00000001")
    assert stall is not None
    assert (stall.from_state, stall.to_state, stall.cause) == (S.RUNNING, S.SAFE_MODE, "stall-00000001")
    good_cycles(machine, 2)
    assert machine.record_stall("again", "loop_guard") is None  # already there: recovery starts over
    assert good_cycles(machine, 2) == []
    assert machine.snapshot().counters.stalls_total == 2


def test_an_error_while_recovering_goes_back_to_safe_mode(machine: StateMachine) -> None:
    errors(machine, 5)
    good_cycles(machine, 3)
    assert machine.state is S.RECOVERING
    back = machine.record_error("db: down", "health_cycle")
    assert back is not None and back.to_state is S.SAFE_MODE
    assert back.reason == "recovery failed: db: down"


def test_safe_mode_outliving_its_ttl_is_fatal_counted_from_the_episode_start(machine: StateMachine,
                                                                              clock: Clock) -> None:
    errors(machine, 5)  # SAFE_MODE at t=1000
    clock.now += 40
    good_cycles(machine, 3)  # RECOVERING
    machine.record_error("flap", "test")  # back to SAFE_MODE at t=1040: the episode began at 1000
    clock.now += 21
    fatal = machine.record_cycle(False)
    assert fatal is not None and fatal.to_state is S.FATAL
    assert "TTL" in fatal.reason and fatal.owner == "safe_mode_ttl"


def test_fatal_is_never_cleared(machine: StateMachine) -> None:
    assert machine.record_fatal("root escalated", "root_supervisor") is not None
    assert machine.record_fatal("again", "x") is None
    assert good_cycles(machine, 10) == []
    assert errors(machine, 10) == []
    assert machine.record_stall("stall", "loop_guard") is None
    assert machine.state is S.FATAL


def test_running_again_starts_a_fresh_episode(machine: StateMachine, clock: Clock) -> None:
    machine.record_stall("stall", "loop_guard")
    good_cycles(machine, 6)
    assert machine.state is S.RUNNING
    clock.now += 100  # longer than the TTL, but the old episode is over
    machine.record_stall("stall", "loop_guard")
    clock.now += 30
    assert machine.record_cycle(True) is None
    assert machine.snapshot().safe_episode_s == 30.0
