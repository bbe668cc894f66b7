"""``irrigation`` ``{duration_s}`` (DOMAIN §4) and ``correction`` as workflows of a ready zone.

Irrigation: only from ``ready`` (checked when it is started); a probe must find the plant stopped and
the solution tank above its minimum; supply and irrigation valves open (DONE), then the pump (DONE), for
the duration, then a confirmed stop. The solution level is watched for the whole run:
``irrigation_solution_low`` (the node's event or the switch) stops the pump and closes the valves,
confirmed, and leaves the zone ``solution_low``.

Correction: recirculate, correct pH then EC with the recovery tolerances until both are in band (or
``max_rounds``), stop confirmed, sensor mode off.
"""

from __future__ import annotations

from hydrovisor.workflows.context import WorkflowContext
from hydrovisor.workflows.correction import DOSED, FLOW_STOPPED, IN_BAND, SKIPPED, SOLUTION_LOW, Corrector
from hydrovisor.workflows.effects import Fail, Finish, Script, Stage, Wait, Waited
from hydrovisor.workflows.steps import check_levels, expect_stopped, sensor_mode, start, stop, stop_or_fail
from hydrovisor.workflows.two_tank import RECIRCULATION
from hydrovisor.zones.roles import Role

IRRIGATION_VALVES = (Role.VALVE_SOLUTION_SUPPLY, Role.VALVE_IRRIGATION)
RECOVERY_TOLERANCE = (0.05, 0.10)  # pH, EC while the zone is in production (DOMAIN §4)


def irrigation(ctx: WorkflowContext, start_at: str | None = None) -> Script:
    """The irrigation script; only its check stage is resumable (a resumed run would water twice)."""
    del start_at  # the check stage is the only one to begin with
    duration_s: int = ctx.params.duration_s
    yield Stage("irrigation_check", resumable=True)
    state = yield from expect_stopped("irrigation")
    check_levels(state)
    if not state.get(Role.LEVEL_SOLUTION_MIN):
        raise Fail("irrigation_solution_low", "the solution tank is below its minimum", water_state="solution_low")
    yield Stage("irrigation")
    # set_relay with our own clock and a confirmed stop, not run_pump: a node busy with a timed run answers a
    # stop BUSY, and a solution running low must stop the pump at once (a dead controller is the node's
    # link-loss failsafe's business)
    yield from start((*IRRIGATION_VALVES, Role.PUMP_MAIN), "irrigation")

    def low(c: WorkflowContext) -> str | None:
        return "solution_low" if c.level(Role.LEVEL_SOLUTION_MIN) is False else None

    waited: Waited = yield Wait(duration_s, until=low, events=frozenset({"irrigation_solution_low"}))
    yield from stop_or_fail((Role.PUMP_MAIN, *IRRIGATION_VALVES), "irrigation")
    if waited.reason in ("solution_low", "event:irrigation_solution_low"):
        raise Fail("irrigation_solution_low", "the solution tank ran low during irrigation", water_state="solution_low")
    return Finish("irrigation_completed", water_state="ready")


def correction(ctx: WorkflowContext, start_at: str | None = None) -> Script:
    """The correction script; its check stage is resumable, a dosing stage is not (a dose may have run)."""
    del start_at
    yield Stage("correction_check", resumable=True)
    state = yield from expect_stopped("correction")
    check_levels(state)
    if not state.get(Role.LEVEL_SOLUTION_MIN):
        raise Fail("correction_solution_low", "the solution tank is below its minimum", water_state="solution_low")
    yield Stage("correction")
    failed = yield from sensor_mode(ctx, True)
    if failed:
        raise Fail("sensor_mode_not_activated", f"sensor mode not activated on {', '.join(failed)}")
    yield from start(RECIRCULATION, "correction")
    corrector = Corrector(ctx, *RECOVERY_TOLERANCE)
    outcome = SKIPPED
    budget = ctx.settings.correction.window_s * 4 + ctx.settings.correction.cooldown_s
    for _ in range(ctx.settings.correction.max_rounds):
        outcome = yield from corrector.round(budget)
        if outcome not in (DOSED, SKIPPED):
            break
    unconfirmed = yield from stop(RECIRCULATION)
    yield from sensor_mode(ctx, False)
    if unconfirmed:
        raise Fail("correction_stop_not_confirmed", f"stop of {', '.join(r.value for r in unconfirmed)} not confirmed")
    if outcome == SOLUTION_LOW:
        raise Fail("correction_solution_low", "the solution tank ran low", water_state="solution_low")
    if outcome == FLOW_STOPPED:
        raise Fail("correction_flow_stopped", "recirculation stopped during the correction")
    if outcome != IN_BAND:
        return Finish("correction_rounds_exhausted")
    return Finish("correction_in_band")


