"""Every rule of the observer on synthetic sequences: each one fires on the unsafe sequence and stays silent on
the matching safe one (times are zone-clock seconds)."""

from __future__ import annotations

import pytest

from hydrovisor.observer import (
    DOSE_WITHOUT_FLAGS,
    INTERLOCK_VIOLATION,
    LEFT_RUNNING_AFTER_STOP,
    NC_PUMP_OFF_TOO_LONG,
    PUMP_ON_SOURCE_BELOW_MIN,
    START_DURING_ESTOP,
    START_WITHOUT_CONFIRMED_STOP,
    PlantReading,
    SafetyObserver,
    ZoneLimits,
)
from tests.observer.wire_helpers import IRR, PH, RECIRC, SOLUTION_FILL, ZONE, Wire, plant


@pytest.fixture
def observer() -> SafetyObserver:
    return SafetyObserver()


@pytest.fixture
def wire(observer: SafetyObserver) -> Wire:
    return Wire(observer)


def rules_of(observer: SafetyObserver) -> list[str]:
    return [violation.rule for violation in observer.violations]


# -- pump_on_source_below_min ------------------------------------------------------------------------------

@pytest.mark.parametrize(("clean", "expected"), [(2.0, [PUMP_ON_SOURCE_BELOW_MIN]), (50.0, [])])
def test_pump_start_judged_on_the_physical_source_tank(observer: SafetyObserver, wire: Wire, clean: float,
                                                       expected: list[str]) -> None:
    wire.open_path(SOLUTION_FILL, 1.0)
    observer.observe_plant(ZONE, plant(clean=clean, solution=10.0, valves=SOLUTION_FILL), 2.0)
    cmd_id = wire.relay(IRR, "pump_main", True, 3.0)
    assert rules_of(observer) == expected
    if expected:
        assert observer.violations[0].cmd_id == cmd_id and "clean tank" in observer.violations[0].detail


def test_a_dry_start_names_the_last_reading_that_found_its_source_at_or_above_min(observer: SafetyObserver,
                                                                                 wire: Wire) -> None:
    wire.open_path(SOLUTION_FILL, 1.0)
    observer.observe_plant(ZONE, plant(clean=50.0, solution=10.0, valves=SOLUTION_FILL), 2.0)
    observer.observe_plant(ZONE, plant(clean=2.0, solution=10.0, valves=SOLUTION_FILL), 2.5)
    wire.relay(IRR, "pump_main", True, 3.0)
    assert rules_of(observer) == [PUMP_ON_SOURCE_BELOW_MIN]
    assert "last reading at or above it at 2.0" in observer.violations[0].detail


def test_the_source_is_the_tank_whose_supply_valve_is_open(observer: SafetyObserver, wire: Wire) -> None:
    """Recirculating an empty clean tank's neighbour is fine: the solution tank is the source."""
    wire.open_path(RECIRC, 1.0)
    observer.observe_plant(ZONE, plant(clean=0.0, solution=60.0, valves=RECIRC), 2.0)
    wire.command(IRR, "pump_main", "run_pump", 3.0, {"duration_ms": 1000})
    assert observer.violations == []
    observer.observe_plant(ZONE, plant(clean=0.0, solution=1.0, valves=RECIRC), 4.0)
    wire.command(IRR, "pump_main", "run_pump", 5.0, {"duration_ms": 1000})
    assert rules_of(observer) == [PUMP_ON_SOURCE_BELOW_MIN]


def test_a_plant_sample_older_than_the_confirmed_valves_gives_way_to_the_wire(observer: SafetyObserver,
                                                                             wire: Wire) -> None:
    # sampled while filling from the (now empty) clean tank
    observer.observe_plant(ZONE, plant(clean=1.0, solution=90.0, valves=SOLUTION_FILL), 1.0)
    # then the automation switches to recirculation, confirmed, and starts the pump before the next sample
    wire.relay(IRR, "valve_clean_supply", False, 2.0)
    wire.open_path(RECIRC, 2.0)
    wire.relay(IRR, "pump_main", True, 3.0)
    assert observer.violations == []


@pytest.mark.parametrize(("solution", "expected"), [(3.0, [PUMP_ON_SOURCE_BELOW_MIN]), (40.0, [])])
def test_single_tank_always_draws_from_the_solution_tank(solution: float, expected: list[str]) -> None:
    observer = SafetyObserver({ZONE: ZoneLimits(topology="single_tank")})
    wire = Wire(observer)
    observer.observe_plant(ZONE, plant(clean=0.0, solution=solution), 1.0)
    wire.command(IRR, "pump_main", "run_pump", 2.0, {"duration_ms": 500})
    assert rules_of(observer) == expected  # and no interlock on a single tank


@pytest.mark.parametrize(("switch", "expected"), [(0, [PUMP_ON_SOURCE_BELOW_MIN]), (1, [])])
def test_without_a_plant_the_last_level_switch_on_the_wire_decides(observer: SafetyObserver, wire: Wire,
                                                                    switch: int, expected: list[str]) -> None:
    wire.telemetry(IRR, "level_clean_min", 1.0, metric_type="WATER_LEVEL_SWITCH", value=switch)
    wire.open_path(SOLUTION_FILL, 1.0)
    wire.relay(IRR, "pump_main", True, 2.0)
    assert rules_of(observer) == expected


def test_a_pump_running_dry_past_the_grace_is_flagged_once(observer: SafetyObserver) -> None:
    observer.configure_zone(ZONE, ZoneLimits(grace_s=30.0))
    def filling(clean: float) -> PlantReading:
        return plant(clean=clean, pumps=("pump_main",), valves=SOLUTION_FILL)

    observer.observe_plant(ZONE, filling(50.0), 0.0)
    for at in (10.0, 20.0, 40.0):  # dry from 10 s: within the grace at 40 s (30 s)
        observer.observe_plant(ZONE, filling(2.0), at)
    assert observer.violations == []
    for at in (41.0, 60.0):
        observer.observe_plant(ZONE, filling(1.0), at)
    assert rules_of(observer) == [PUMP_ON_SOURCE_BELOW_MIN]
    assert observer.violations[0].at == 41.0


def test_a_pump_stopped_within_the_grace_is_fine(observer: SafetyObserver) -> None:
    observer.observe_plant(ZONE, plant(clean=2.0, pumps=("pump_main",), valves=SOLUTION_FILL), 0.0)
    observer.observe_plant(ZONE, plant(clean=2.0, pumps=(), valves=SOLUTION_FILL), 20.0)
    observer.observe_plant(ZONE, plant(clean=2.0, pumps=(), valves=SOLUTION_FILL), 100.0)
    # and a pump with no path open moves no water, whatever the tanks
    observer.observe_plant(ZONE, plant(clean=0.0, solution=0.0, pumps=("pump_main",)), 200.0)
    observer.observe_plant(ZONE, plant(clean=0.0, solution=0.0, pumps=("pump_main",)), 300.0)
    assert observer.violations == []


# -- dose_without_flags ------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [
    {"flow_active": True, "corrections_allowed": True, "stable": True},
    {"flow_active": True, "corrections_allowed": True},  # firmware omits stable when stable
])
def test_dose_with_all_flags_is_fine(observer: SafetyObserver, wire: Wire, flags: dict[str, bool]) -> None:
    wire.ph(10.0, flags)
    wire.command(PH, "pump_acid", "dose", 20.0, {"ml": 1.0})
    assert observer.violations == []


@pytest.mark.parametrize("flags", [
    {},  # sensor mode off: no flags at all
    {"flow_active": True},
    {"corrections_allowed": True, "stable": True},
    {"flow_active": True, "corrections_allowed": False},
    {"flow_active": True, "corrections_allowed": True, "stable": False},
    {"flow_active": 1, "corrections_allowed": True, "stable": True},  # only the JSON true is true
    {"flow_active": True, "corrections_allowed": True, "stable": None},
])
def test_dose_without_the_flags_is_flagged(observer: SafetyObserver, wire: Wire, flags: dict[str, object]) -> None:
    wire.ph(10.0, flags)
    cmd_id = wire.command(PH, "pump_acid", "dose", 20.0, {"ml": 1.0})
    assert rules_of(observer) == [DOSE_WITHOUT_FLAGS]
    assert observer.violations[0].cmd_id == cmd_id and observer.violations[0].node_uid == PH


def test_dose_on_a_stale_or_missing_or_foreign_reading_is_flagged(observer: SafetyObserver, wire: Wire) -> None:
    good = {"flow_active": True, "corrections_allowed": True, "stable": True}
    wire.command(PH, "pump_acid", "dose", 1.0, {"ml": 1.0})  # never heard a reading
    wire.ph(2.0, good, node="nd-ec-000000000003")  # another node's reading proves nothing for this one
    wire.command(PH, "pump_acid", "dose", 3.0, {"ml": 1.0})
    wire.ph(10.0, good)
    wire.command(PH, "pump_acid", "dose", 71.0, {"ml": 1.0})  # 61 s old, limit 60 s
    assert rules_of(observer) == [DOSE_WITHOUT_FLAGS] * 3
    assert "s old" in observer.violations[2].detail
    wire.ph(80.0, good)
    wire.telemetry(PH, "solution_temp", 85.0, metric_type="TEMPERATURE", value=21.0)  # not a pH/EC reading
    wire.command(PH, "pump_acid", "dose", 90.0, {"ml": 1.0})
    assert len(observer.violations) == 3


def test_the_latest_reading_counts_not_the_best(observer: SafetyObserver, wire: Wire) -> None:
    wire.ph(10.0, {"flow_active": True, "corrections_allowed": True, "stable": True})
    wire.ph(11.0, {"flow_active": True, "corrections_allowed": True, "stable": False})
    wire.command(PH, "pump_acid", "dose", 12.0, {"ml": 1.0})
    assert rules_of(observer) == [DOSE_WITHOUT_FLAGS]


# -- start_without_confirmed_stop ----------------------------------------------------------------------------

def test_start_after_a_confirmed_stop_is_fine(observer: SafetyObserver, wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    wire.relay(IRR, "pump_main", True, 2.0)
    wire.relay(IRR, "pump_main", False, 3.0)
    wire.relay(IRR, "valve_irrigation", True, 4.0)
    assert observer.violations == []


def test_start_while_a_stop_is_unanswered_is_flagged(observer: SafetyObserver, wire: Wire) -> None:
    stop = wire.relay(IRR, "pump_main", False, 1.0, status=None)
    start = wire.relay(IRR, "valve_irrigation", True, 2.0)
    assert rules_of(observer) == [START_WITHOUT_CONFIRMED_STOP]
    assert observer.violations[0].cmd_id == start and stop in observer.violations[0].detail
    wire.reply(IRR, "pump_main", stop, "DONE", 3.0)  # confirmed now: the next start is fine
    wire.relay(IRR, "valve_solution_fill", True, 4.0)
    assert len(observer.violations) == 1


@pytest.mark.parametrize("status", ["BUSY", "ERROR", "NO_EFFECT", "INVALID"])
def test_start_after_a_stop_that_was_not_done_is_flagged_until_a_later_stop_is(observer: SafetyObserver,
                                                                                wire: Wire, status: str) -> None:
    wire.relay(IRR, "pump_main", False, 1.0, status=status)
    wire.relay(IRR, "valve_irrigation", True, 2.0)
    assert rules_of(observer) == [START_WITHOUT_CONFIRMED_STOP]
    assert status in observer.violations[0].detail
    wire.relay(IRR, "pump_main", False, 3.0)  # DONE: supersedes the failed one
    wire.relay(IRR, "valve_solution_fill", True, 4.0)
    assert len(observer.violations) == 1


def test_a_stop_answered_no_effect_is_confirmed_by_a_later_snapshot_showing_it_off(observer: SafetyObserver,
                                                                                   wire: Wire) -> None:
    wire.relay(IRR, "valve_clean_fill", False, 1.0, status="NO_EFFECT")  # "already off": the node's word only
    probe = wire.command(IRR, "storage_state", "state", 2.0)
    wire.reply(IRR, "storage_state", probe, "DONE", 2.1, details={"snapshot": {"valve_clean_fill": False}})
    wire.relay(IRR, "valve_irrigation", True, 3.0)
    assert observer.violations == []
    wire.relay(IRR, "valve_solution_fill", False, 4.0, status="NO_EFFECT")
    probe = wire.command(IRR, "storage_state", "state", 5.0)  # a snapshot showing it on confirms nothing
    wire.reply(IRR, "storage_state", probe, "DONE", 5.1, details={"snapshot": {"valve_solution_fill": True}})
    wire.relay(IRR, "valve_clean_supply", True, 6.0)
    assert rules_of(observer) == [START_WITHOUT_CONFIRMED_STOP]


def test_the_first_terminal_is_final(observer: SafetyObserver, wire: Wire) -> None:
    """Simulators answer some commands twice (DONE then BUSY, or BUSY then DONE): the first one counts."""
    stop = wire.relay(IRR, "pump_main", False, 1.0, status="BUSY")
    wire.reply(IRR, "pump_main", stop, "DONE", 1.5)
    wire.relay(IRR, "valve_irrigation", True, 2.0)
    assert rules_of(observer) == [START_WITHOUT_CONFIRMED_STOP]
    assert observer.stats()["late_terminals"] == 1


def test_a_stop_on_another_node_does_not_hold_this_one(observer: SafetyObserver, wire: Wire) -> None:
    wire.relay(PH, "pump_acid", False, 1.0, status=None)
    wire.open_path(RECIRC, 2.0)
    wire.relay(IRR, "pump_main", True, 3.0)
    assert observer.violations == []


def test_a_reply_that_overtakes_its_command_still_confirms_it(observer: SafetyObserver, wire: Wire) -> None:
    wire.reply(IRR, "pump_main", "early-1", "DONE", 1.0)
    wire.command(IRR, "pump_main", "set_relay", 1.0, {"state": 0}, cmd_id="early-1")
    wire.relay(IRR, "valve_irrigation", True, 2.0)
    assert observer.violations == []
    assert observer.stats()["unknown_responses"] == 1


# -- interlock_violation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("valves", [(), ("valve_clean_fill",), ("valve_solution_supply",),
                                    ("valve_clean_fill", "valve_solution_fill")])
def test_pump_main_without_a_confirmed_path_is_flagged(observer: SafetyObserver, wire: Wire,
                                                       valves: tuple[str, ...]) -> None:
    wire.open_path(valves, 1.0)
    wire.command(IRR, "pump_main", "run_pump", 2.0, {"duration_ms": 1000})
    assert rules_of(observer) == [INTERLOCK_VIOLATION]


@pytest.mark.parametrize("path", [SOLUTION_FILL, RECIRC, ("valve_solution_supply", "valve_irrigation")])
def test_pump_main_on_a_confirmed_path_is_fine(observer: SafetyObserver, wire: Wire, path: tuple[str, ...]) -> None:
    wire.open_path(path, 1.0)
    wire.relay(IRR, "pump_main", True, 2.0)
    assert observer.violations == []


def test_valves_confirmed_only_by_done(observer: SafetyObserver, wire: Wire) -> None:
    wire.relay(IRR, "valve_solution_supply", True, 1.0)
    wire.relay(IRR, "valve_solution_fill", True, 1.0, status="ERROR")
    wire.relay(IRR, "pump_main", True, 2.0)
    assert rules_of(observer) == [INTERLOCK_VIOLATION]


def test_valves_from_a_state_probe_or_an_event_snapshot(observer: SafetyObserver, wire: Wire) -> None:
    probe = wire.command(IRR, "storage_state", "state", 1.0)
    wire.reply(IRR, "storage_state", probe, "DONE", 1.0, details={"snapshot": {
        "valve_solution_supply": True, "valve_solution_fill": True, "valve_irrigation": False, "pump_main": False}})
    wire.command(IRR, "pump_main", "run_pump", 2.0, {"duration_ms": 1000})
    assert observer.violations == []
    wire.event(IRR, "storage_state", "recirculation_solution_low", 3.0, snapshot={
        "valve_solution_supply": False, "valve_solution_fill": True})
    wire.command(IRR, "pump_main", "run_pump", 4.0, {"duration_ms": 1000})
    assert rules_of(observer) == [INTERLOCK_VIOLATION]


def test_a_timed_valve_reverts_by_itself(observer: SafetyObserver, wire: Wire) -> None:
    wire.relay(IRR, "valve_solution_supply", True, 1.0)
    wire.relay(IRR, "valve_solution_fill", True, 1.0, timeout_ms=10_000, stage="prepare_recirculation")
    wire.relay(IRR, "pump_main", True, 5.0)
    wire.relay(IRR, "pump_main", False, 6.0)
    assert observer.violations == []
    wire.relay(IRR, "pump_main", True, 12.0)  # the fill valve closed itself at 11 s
    assert rules_of(observer) == [INTERLOCK_VIOLATION]


def test_closing_a_valve_closes_the_path(observer: SafetyObserver, wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    wire.relay(IRR, "valve_solution_fill", False, 2.0)
    wire.relay(IRR, "pump_main", True, 3.0)
    assert rules_of(observer) == [INTERLOCK_VIOLATION]


# -- nc_pump_off_too_long ----------------------------------------------------------------------------------------

NC = ZoneLimits(topology="single_tank", nc_pump=(IRR, "pump_main"), max_recirc_off_s=600.0)


def test_nc_pump_physically_off_too_long_is_flagged_once() -> None:
    observer = SafetyObserver({ZONE: NC})
    for at in (0.0, 300.0, 600.0):
        observer.observe_plant(ZONE, plant(), at)
    assert observer.violations == []
    for at in (601.0, 900.0):
        observer.observe_plant(ZONE, plant(), at)
    assert rules_of(observer) == [NC_PUMP_OFF_TOO_LONG]


def test_nc_pump_back_on_within_the_limit_is_fine() -> None:
    observer = SafetyObserver({ZONE: NC})
    for at, pumps in ((0.0, ()), (500.0, ("pump_main",)), (550.0, ()), (1100.0, ()), (1200.0, ("pump_main",))):
        observer.observe_plant(ZONE, plant(pumps=pumps), at)
    assert observer.violations == []


def test_nc_pump_off_on_the_wire_when_there_is_no_plant() -> None:
    observer = SafetyObserver({ZONE: NC})
    wire = Wire(observer)
    wire.relay(IRR, "pump_main", False, 0.0)
    observer.check(500.0)
    assert observer.violations == []
    observer.check(601.0)
    assert rules_of(observer) == [NC_PUMP_OFF_TOO_LONG]


def test_nc_pump_switched_back_on_or_timed_off_on_the_wire_is_fine() -> None:
    observer = SafetyObserver({ZONE: NC})
    wire = Wire(observer)
    wire.relay(IRR, "pump_main", False, 0.0)
    wire.relay(IRR, "pump_main", True, 300.0)
    wire.relay(IRR, "pump_main", False, 400.0, duration_ms=300_000)  # off for 300 s, then on by itself
    observer.check(2000.0)
    assert observer.violations == []


def test_an_emergency_stop_suspends_the_nc_pump_limit_until_cleared() -> None:
    observer = SafetyObserver({ZONE: NC})
    wire = Wire(observer)
    wire.relay(IRR, "pump_main", False, 0.0)
    wire.event(IRR, "storage_state", "emergency_stop_activated", 100.0)
    observer.check(1000.0)
    assert observer.violations == []
    observer.mark(ZONE, "estop_cleared", 1000.0)
    observer.check(1500.0)
    assert observer.violations == []
    observer.check(1601.0)
    assert rules_of(observer) == [NC_PUMP_OFF_TOO_LONG]


# -- left_running_after_stop ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["workflow_failed", "workflow_cancelled", "emergency_stop"])
def test_left_running_after_a_stop_is_flagged(observer: SafetyObserver, kind: str) -> None:
    observer.mark(ZONE, kind, 100.0)
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 120.0)  # within the grace
    assert observer.violations == []
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 131.0)
    if kind != "emergency_stop":  # nothing lifts that one: its verdict is not deferred
        assert observer.violations == []  # a start that lifts it may still be on its way to the tap
    observer.check(134.0)
    assert rules_of(observer) == [LEFT_RUNNING_AFTER_STOP]
    assert observer.violations[0].at == 131.0
    assert "pump pump_main" in observer.violations[0].detail and kind in observer.violations[0].detail
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 200.0)
    assert len(observer.violations) == 1  # once per stop


def test_everything_stopped_within_the_grace_is_fine(observer: SafetyObserver) -> None:
    observer.mark(ZONE, "workflow_failed", 100.0)
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 110.0)
    observer.observe_plant(ZONE, plant(), 131.0)
    assert observer.violations == []


def test_a_new_start_after_a_failed_workflow_lifts_the_check(observer: SafetyObserver, wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    observer.mark(ZONE, "workflow_failed", 100.0)
    wire.relay(IRR, "pump_main", True, 110.0)  # the next workflow, legitimately
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 140.0)
    assert observer.violations == []


def test_a_start_the_node_acted_on_before_the_tap_heard_it_lifts_the_check(observer: SafetyObserver,
                                                                             wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    observer.mark(ZONE, "workflow_failed", 100.0)
    observer.observe_plant(ZONE, plant(valves=("valve_clean_fill",)), 130.0)  # the node opened it already
    wire.relay(IRR, "valve_clean_fill", True, 131.0)  # the tap hears the next workflow's start
    observer.check(140.0)
    assert observer.violations == []
    observer.mark(ZONE, "workflow_failed", 200.0)
    observer.observe_plant(ZONE, plant(valves=("valve_clean_fill",)), 230.0)
    wire.relay(IRR, "valve_clean_fill", True, 234.0)  # too late: it was left open
    assert rules_of(observer) == [LEFT_RUNNING_AFTER_STOP]


def test_the_single_tank_nc_pump_may_keep_running() -> None:
    observer = SafetyObserver({ZONE: NC})
    observer.mark(ZONE, "workflow_cancelled", 0.0)
    observer.observe_plant(ZONE, plant(pumps=("pump_main",)), 31.0)
    assert observer.violations == []
    observer.mark(ZONE, "workflow_cancelled", 100.0)
    observer.observe_plant(ZONE, plant(pumps=("pump_main", "pump_acid")), 131.0)
    observer.check(135.0)
    assert rules_of(observer) == [LEFT_RUNNING_AFTER_STOP]
    assert "pump_acid" in observer.violations[0].detail and "pump_main" not in observer.violations[0].detail


def test_an_emergency_stop_on_the_wire_is_a_stop_too(observer: SafetyObserver, wire: Wire) -> None:
    wire.event(IRR, "storage_state", "emergency_stop_activated", 0.0, reason="button", stopped_pumps=["pump_main"])
    observer.observe_plant(ZONE, plant(valves=("valve_irrigation",)), 31.0)  # a stuck valve
    assert rules_of(observer) == [LEFT_RUNNING_AFTER_STOP]


# -- start_during_estop ------------------------------------------------------------------------------------------

def test_any_start_during_an_emergency_stop_is_flagged(observer: SafetyObserver, wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    wire.event(IRR, "storage_state", "emergency_stop_activated", 10.0)
    wire.relay(IRR, "pump_main", False, 11.0)  # stops are always fine
    wire.relay(IRR, "pump_main", True, 12.0)
    wire.command(PH, "pump_acid", "dose", 13.0, {"ml": 0.5})
    assert [v.rule for v in observer.violations if v.rule == START_DURING_ESTOP] == [START_DURING_ESTOP] * 2
    # a start during the stop does not excuse what is left running either
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 50.0)
    assert observer.violations[-1].rule == LEFT_RUNNING_AFTER_STOP


def test_starts_after_the_stop_is_cleared_are_fine(observer: SafetyObserver, wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    observer.mark(ZONE, "emergency_stop", 10.0)
    observer.mark(ZONE, "estop_cleared", 20.0)
    wire.relay(IRR, "pump_main", True, 21.0)
    observer.observe_plant(ZONE, plant(pumps=("pump_main",), valves=RECIRC), 60.0)
    assert observer.violations == []


def test_estop_marked_and_reported_on_the_wire_is_one_stop(observer: SafetyObserver, wire: Wire) -> None:
    observer.mark(ZONE, "emergency_stop", 10.0)
    wire.event(IRR, "storage_state", "emergency_stop_activated", 10.5)
    observer.observe_plant(ZONE, plant(pumps=("pump_main",)), 50.0)
    assert rules_of(observer) == [LEFT_RUNNING_AFTER_STOP]


def test_other_zones_are_not_affected(observer: SafetyObserver) -> None:
    other = Wire(observer, zone="zn-2")
    other.open_path(RECIRC, 1.0)
    observer.mark(ZONE, "emergency_stop", 10.0)
    other.relay(IRR, "pump_main", True, 11.0)
    assert observer.violations == []


# -- API -------------------------------------------------------------------------------------------------------

def test_marks_are_checked_and_limits_validated(observer: SafetyObserver) -> None:
    with pytest.raises(ValueError, match="unknown mark"):
        observer.mark(ZONE, "workflow_failure", 1.0)
    with pytest.raises(ValueError, match="grace_s"):
        ZoneLimits(grace_s=-1.0)
    with pytest.raises(ValueError, match="nc_pump"):
        ZoneLimits(max_recirc_off_s=60.0)


def test_commands_are_tracked_and_counted(observer: SafetyObserver, wire: Wire) -> None:
    wire.open_path(RECIRC, 1.0)
    cmd_id = wire.relay(IRR, "pump_main", True, 2.0)
    seen = observer.command(cmd_id)
    assert seen is not None
    assert (seen.node_uid, seen.channel, seen.cmd, seen.action, seen.acked, seen.terminal) == (
        IRR, "pump_main", "set_relay", "start", True, "DONE")
    stats = observer.stats()
    assert (stats["commands"], stats["starts"], stats["responses"], stats["terminal.DONE"]) == (3, 3, 6, 3)
    assert observer.command("nope") is None
