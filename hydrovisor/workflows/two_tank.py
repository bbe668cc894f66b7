"""``two_tank_startup`` (DOMAIN §4): startup → clean fill → solution fill → prepare recirculation → ready.

Every stage begins with a probe that must find the plant stopped (``steps.expect_stopped``), so a stage
starts only on the confirmed stop of the one before, and a resumed stage starts from a known state.
Tank events end a stage early; the level switches end it too (events can be lost); a timeout is a
completion only once the stop is confirmed. A solution tank that runs low while preparing sends the
workflow back to startup (not a failure), at most ``MAX_RESTARTS`` times.
"""

from __future__ import annotations

from hydrovisor.workflows.context import WorkflowContext
from hydrovisor.workflows.correction import DOSED, IN_BAND, SKIPPED, SOLUTION_LOW, Corrector
from hydrovisor.workflows.effects import Decide, Fail, Finish, Script, Stage, Wait, Waited
from hydrovisor.workflows.steps import Steps, check_levels, expect_stopped, sensor_mode, start, stop, stop_or_fail
from hydrovisor.zones.roles import Role

STAGES = ("startup", "clean_fill", "solution_fill", "prepare_recirculation")
MAX_RESTARTS = 3
PREPARE_TOLERANCE = (0.15, 0.25)  # pH, EC: fractions of the target while preparing (DOMAIN §4)
SOLUTION_FILL_EVENTS = frozenset({"solution_fill_completed", "solution_fill_source_empty",
                                  "solution_fill_leak_detected", "solution_fill_timeout"})

CLEAN_FILL = (Role.VALVE_CLEAN_FILL,)
SOLUTION_FILL = (Role.VALVE_CLEAN_SUPPLY, Role.VALVE_SOLUTION_FILL, Role.PUMP_MAIN)
RECIRCULATION = (Role.VALVE_SOLUTION_SUPPLY, Role.VALVE_SOLUTION_FILL, Role.PUMP_MAIN)


def two_tank_startup(ctx: WorkflowContext, start_at: str | None = None) -> Script:
    """The script (see the module docstring); ``start_at``: a resumable stage to begin with."""
    first = STAGES.index(start_at) if start_at in STAGES else 0
    for _ in range(MAX_RESTARTS + 1):
        if first <= 0:
            yield Stage("startup", resumable=True)
            state = yield from expect_stopped("startup")
            check_levels(state)
        if first <= 1:
            yield from _clean_fill(ctx)
        if first <= 2:
            yield from _solution_fill(ctx)
        outcome = yield from _prepare(ctx)
        if outcome != SOLUTION_LOW:
            yield Stage("ready")
            return Finish("ready", water_state="ready")
        yield Decide("retry", "prepare_solution_low", {"detail": "solution tank below minimum while preparing"})
        first = 0
    raise Fail("prepare_solution_low", f"the solution tank ran low {MAX_RESTARTS + 1} times while preparing")


def _clean_fill(ctx: WorkflowContext) -> Steps:
    yield Stage("clean_fill", resumable=True)
    state = yield from expect_stopped("clean_fill")
    check_levels(state)
    if state.get(Role.LEVEL_CLEAN_MAX):
        yield Decide("skip", "clean_tank_full")
        return
    yield from start(CLEAN_FILL, "clean_fill")

    def full(c: WorkflowContext) -> str | None:
        if c.level(Role.LEVEL_CLEAN_MAX) and c.level(Role.LEVEL_CLEAN_MIN) is False:
            return "inconsistent"
        return "full" if c.level(Role.LEVEL_CLEAN_MAX) else None

    waited: Waited = yield Wait(ctx.settings.timeouts.clean_fill_s, until=full,
                                events=frozenset({"clean_fill_completed"}))
    yield from stop_or_fail(CLEAN_FILL, "clean_fill")
    if waited.reason == "inconsistent":
        raise Fail("sensor_state_inconsistent", "level_clean_max=1 while level_clean_min=0")
    if waited.reason == "timeout":  # a valid completion: the stop was confirmed
        yield Decide("run", "clean_fill_timeout", {"detail": "timeout; stop confirmed"})


def _solution_fill(ctx: WorkflowContext) -> Steps:
    yield Stage("solution_fill", resumable=True)
    state = yield from expect_stopped("solution_fill")
    check_levels(state)
    if not state.get(Role.LEVEL_CLEAN_MIN):
        raise Fail("solution_fill_source_empty", "the clean tank is below its minimum")
    if state.get(Role.LEVEL_SOLUTION_MAX):
        yield Decide("skip", "solution_tank_full")
        return
    yield from start(SOLUTION_FILL, "solution_fill")

    def progress(c: WorkflowContext) -> str | None:
        if c.level(Role.LEVEL_CLEAN_MIN) is False:
            return "source_empty"
        if c.level(Role.LEVEL_SOLUTION_MAX) and c.level(Role.LEVEL_SOLUTION_MIN) is False:
            return "inconsistent"
        return "full" if c.level(Role.LEVEL_SOLUTION_MAX) else None

    waited: Waited = yield Wait(ctx.settings.timeouts.solution_fill_s, until=progress, events=SOLUTION_FILL_EVENTS)
    yield from stop_or_fail(SOLUTION_FILL, "solution_fill")
    reason = waited.reason
    if reason in ("source_empty", "event:solution_fill_source_empty"):
        raise Fail("solution_fill_source_empty", "the clean tank ran dry while filling the solution tank")
    if reason == "event:solution_fill_leak_detected":
        raise Fail("solution_fill_leak_detected", "the node reported a leak")
    if reason == "inconsistent":
        raise Fail("sensor_state_inconsistent", "level_solution_max=1 while level_solution_min=0")
    if reason in ("timeout", "event:solution_fill_timeout"):
        yield Decide("run", "solution_fill_timeout", {"detail": "timeout; stop confirmed"})


def _prepare(ctx: WorkflowContext) -> Steps:
    stage = "prepare_recirculation"
    yield Stage(stage, resumable=True)
    deadline = ctx.now + ctx.settings.timeouts.prepare_recirculation_s
    state = yield from expect_stopped(stage)
    check_levels(state)
    if not state.get(Role.LEVEL_SOLUTION_MIN):
        return SOLUTION_LOW
    failed = yield from sensor_mode(ctx, True)
    if failed:
        raise Fail("sensor_mode_not_activated", f"sensor mode not activated on {', '.join(failed)}")
    yield from start(RECIRCULATION, stage)
    corrector = Corrector(ctx, *PREPARE_TOLERANCE)
    outcome = SKIPPED
    for _ in range(ctx.settings.correction.max_rounds * 10):
        left = deadline - ctx.now
        if left <= 0:
            break
        outcome = yield from corrector.round(left)
        if outcome not in (DOSED, SKIPPED):
            break
    unconfirmed = yield from stop(RECIRCULATION)
    yield from sensor_mode(ctx, False)
    if unconfirmed:
        raise Fail(f"{stage}_stop_not_confirmed", f"stop of {', '.join(r.value for r in unconfirmed)} not confirmed")
    if outcome == SOLUTION_LOW:
        return SOLUTION_LOW
    if outcome != IN_BAND:
        raise Fail("prepare_npk_ph_target_not_reached", f"pH/EC not within tolerance before the timeout ({outcome})")
    return IN_BAND
