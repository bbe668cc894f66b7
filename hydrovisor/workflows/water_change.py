"""``water_change`` (topology ``single_tank``, DOMAIN §4 "Water cycle"): NORMAL_RECIRC → DRAIN → FILL →
STABILIZE → NORMAL_RECIRC.

The recirculation pump is on a normally-closed relay: stopping it (DRAIN) is the unusual state and
STABILIZE turns it back on. DRAIN runs the drain pump until the minimum switch reads empty; FILL opens
the mains valve until the maximum switch trips; STABILIZE recirculates for ``timeouts.stabilize_s``,
records pH/EC/temperature (``WATER_CHANGE_COMPLETED``) and starts a new solution (``solution_started_at``).
Each stage starts on a probe and ends on a confirmed stop; any error fails the workflow with an alert
(``biz_water_change_failed``) and never retries by itself. After a failure the driver's compensating stop
stops the drain pump and closes the valve, then puts the recirculation pump back on (its fail-safe state)
if the gate lets it (not on an empty tank).
"""

from __future__ import annotations

from hydrovisor.workflows.context import WorkflowContext
from hydrovisor.workflows.effects import Decide, Fail, Finish, Script, Stage, Wait, Waited
from hydrovisor.workflows.steps import check_levels, expect_stopped, start, stop_or_fail
from hydrovisor.zones.roles import Role

TANKS = ("solution",)
STAGES = ("normal_recirc", "drain", "fill", "stabilize")


def water_change(ctx: WorkflowContext, start_at: str | None = None) -> Script:
    """The script; only its check stage is resumable (a half-drained tank needs an operator's look)."""
    del start_at
    timeouts = ctx.settings.timeouts
    yield Stage("normal_recirc", resumable=True)
    state = yield from expect_stopped("water_change", keep_on=(Role.PUMP_MAIN,))
    check_levels(state, TANKS)
    if not state.get(Role.LEVEL_SOLUTION_MIN):
        raise Fail("water_change_tank_empty", "the tank is already below its minimum: refill it first")

    yield Stage("drain")
    yield from stop_or_fail((Role.PUMP_MAIN,), "drain")  # recirculation off while the tank empties
    yield from start((Role.PUMP_DRAIN,), "drain")

    def empty(c: WorkflowContext) -> str | None:
        if c.level(Role.LEVEL_SOLUTION_MAX) and c.level(Role.LEVEL_SOLUTION_MIN) is False:
            return "inconsistent"
        return "empty" if c.level(Role.LEVEL_SOLUTION_MIN) is False else _pump_alarm(c)

    waited: Waited = yield Wait(timeouts.drain_s, until=empty)
    yield from stop_or_fail((Role.PUMP_DRAIN,), "drain")
    _check(waited, "drain", "empty")

    yield Stage("fill")
    yield from start((Role.VALVE_FILL,), "fill")

    def full(c: WorkflowContext) -> str | None:
        if c.level(Role.LEVEL_SOLUTION_MAX) and c.level(Role.LEVEL_SOLUTION_MIN) is False:
            return "inconsistent"
        return "full" if c.level(Role.LEVEL_SOLUTION_MAX) else None

    waited = yield Wait(timeouts.fill_s, until=full)
    yield from stop_or_fail((Role.VALVE_FILL,), "fill")
    _check(waited, "fill", "full")

    yield Stage("stabilize")
    yield from start((Role.PUMP_MAIN,), "stabilize")
    yield Wait(timeouts.stabilize_s)  # recirculating: the new solution mixes and the sensors settle
    readings = {role.value: sample.value for role in (Role.PH_SENSOR, Role.EC_SENSOR, Role.TEMPERATURE)
                if (sample := ctx.latest(role)) is not None}
    yield Decide("run", "water_change_completed", {"readings": readings})
    return Finish("water_change_completed", water_state="normal_recirc", solution_started=True)


def _pump_alarm(ctx: WorkflowContext) -> str | None:
    """A no-flow or overcurrent alert raised while draining ends the stage (the zone's detections)."""
    if ctx.observed is None:
        return None
    for alert in ctx.observed.state.alerts:
        if alert.code in ("biz_no_flow", "biz_overcurrent", "biz_dry_run"):
            return f"alert:{alert.code}"
    return None


def _check(waited: Waited, stage: str, goal: str) -> None:
    if waited.reason == goal:
        return
    if waited.reason == "inconsistent":
        raise Fail("sensor_state_inconsistent", "level_solution_max=1 while level_solution_min=0")
    if waited.reason.startswith("alert:"):
        raise Fail(f"water_change_{stage}_{waited.reason.removeprefix('alert:')}", f"{stage} stopped: {waited.reason}")
    raise Fail(f"water_change_{stage}_timeout", f"the tank did not get {goal} in time; stop confirmed")
