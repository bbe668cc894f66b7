"""pH/EC correction (DOMAIN §4): decide from an observation window, dose, wait the cooldown, repeat.

Used inside ``two_tank_startup``'s preparation (wide tolerances) and as the ``correction`` workflow of a
zone that is ready (narrow ones). Every decision is a zone event: ``skip`` with ``missing_flags`` (and a
request to activate sensor mode), ``flow_inactive``, ``not_stable``, ``corrections_not_allowed``,
``readings_stale``, ``insufficient_samples``; ``run`` with the dose. pH is corrected first; EC only once
pH is within its band. The cooldown is anchored on the last DONE; a dose that moves nothing (or a
``NO_EFFECT`` reply) counts towards ``max_no_effect``, which fails the run closed
(``correction_no_effect``: an alert, and corrections stay off for ``fail_closed_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

from hydrovisor.workflows.context import WorkflowContext, flags_problem
from hydrovisor.workflows.effects import Condition, Decide, Fail, Send, Sent, Wait, Waited
from hydrovisor.workflows.steps import SENSOR_CHANNEL, Steps
from hydrovisor.zones.roles import Role
from hydrovisor.zones.settings import Band

IN_BAND = "in_band"
DOSED = "dosed"
SKIPPED = "skipped"
FLOW_STOPPED = "flow_stopped"
SOLUTION_LOW = "solution_low"
NO_EFFECT_FRACTION = 0.2  # a dose must move the mean at least this share of what it was sized for
NO_EFFECT_ALERT = "biz_correction_no_effect"


@dataclass
class _Dose:
    role: Role
    sensor: Role
    before: float
    expected: float  # signed change it was sized for


class Corrector:
    """One correction loop's memory across rounds: the last dose, its DONE time, the no-effect streak."""

    def __init__(self, ctx: WorkflowContext, ph_tolerance: float, ec_tolerance: float) -> None:
        self.ctx = ctx
        self.started_at = ctx.now  # the recirculation runs from here: a pump stop after it ends the loop
        self.tolerance = {Role.PH_SENSOR: ph_tolerance, Role.EC_SENSOR: ec_tolerance}
        self.last_dose_at: float | None = None
        self.no_effect = 0
        self.pending: _Dose | None = None

    def round(self, time_left: float, *, watch_solution: bool = True) -> Steps:
        """One observation window and at most one dose; returns ``in_band``, ``dosed``, ``skipped``,
        ``flow_stopped`` or ``solution_low``."""
        ctx = self.ctx
        cfg = ctx.settings.correction
        sensors = [r for r in (Role.PH_SENSOR, Role.EC_SENSOR) if ctx.device(r) is not None]
        if not sensors:
            yield Decide("skip", "no_sensors", {"detail": "no ph_sensor/ec_sensor bound in the zone"})
            return IN_BAND
        if self.last_dose_at is not None:  # cooldown, anchored on the last DONE
            remaining = self.last_dose_at + cfg.cooldown_s - ctx.now
            if remaining > 0:
                waited: Waited = yield Wait(timeout_s=min(remaining, max(time_left, 0.0)),
                                            until=self._interrupt(watch_solution))
                if waited.reason != "timeout":
                    return waited.reason
        start = ctx.now
        waited = yield Wait(timeout_s=min(cfg.window_s, max(time_left, 0.0)), until=self._interrupt(watch_solution))
        if waited.reason != "timeout":
            return waited.reason
        means: dict[Role, float] = {}
        for sensor in sensors:
            samples = ctx.samples(sensor, start)
            age = ctx.reading_age(sensor)
            if age is None or age > cfg.stale_s:
                yield Decide("skip", "readings_stale", {"sensor": sensor.value, "age_s": age})
                return SKIPPED
            if len(samples) < cfg.min_samples:
                yield Decide("skip", "insufficient_samples", {"sensor": sensor.value, "samples": len(samples),
                                                              "needed": cfg.min_samples})
                return SKIPPED
            for sample in samples:
                problem = flags_problem(sample.flags)
                if problem is not None:
                    yield Decide("skip", problem, {"sensor": sensor.value, "flags": sample.flags})
                    if problem == "missing_flags":
                        yield Send(sensor, "activate_sensor_mode", channel=SENSOR_CHANNEL)
                    return SKIPPED
            means[sensor] = sum(s.value for s in samples) / len(samples)
        self._judge_last_dose(means)
        if self.no_effect >= cfg.max_no_effect:
            raise Fail("correction_no_effect", f"{self.no_effect} doses in a row had no effect")
        for sensor in sensors:
            band = ctx.settings.targets.ph if sensor is Role.PH_SENSOR else ctx.settings.targets.ec
            error = means[sensor] - band.target
            if abs(error) <= self.tolerance[sensor] * band.target:
                continue
            outcome: str = yield from self._dose(sensor, band, means[sensor], error)
            return outcome
        yield Decide("skip", "within_tolerance", {s.value: round(m, 3) for s, m in means.items()})
        return IN_BAND

    def _dose(self, sensor: Role, band: Band, mean: float, error: float) -> Steps:
        ctx = self.ctx
        cfg = ctx.settings.correction
        if sensor is Role.PH_SENSOR:
            pump = Role.PUMP_ACID if error > 0 else Role.PUMP_BASE
            per_unit = cfg.ph_ml_per_unit
        else:
            if error > 0:  # too strong: only fresh water dilutes it, which is a water change, not a dose
                yield Decide("skip", "ec_above_target", {"ec": round(mean, 3), "target": band.target})
                return IN_BAND
            pump, per_unit = Role.PUMP_A, cfg.ec_ml_per_unit
        if ctx.device(pump) is None:
            yield Decide("skip", "dosing_pump_not_configured", {"pump": pump.value})
            return IN_BAND
        ml = round(min(cfg.max_dose_ml, max(0.1, abs(error) * per_unit)), 1)
        yield Decide("run", f"dose_{sensor.value.removesuffix('_sensor')}",
                     {"pump": pump.value, "ml": ml, "mean": round(mean, 3), "target": band.target})
        sent: Sent = yield Send(pump, "dose", {"ml": ml})
        if sent.done:
            self.last_dose_at = ctx.now
            self.pending = _Dose(pump, sensor, mean, -ml / per_unit if error > 0 else ml / per_unit)
        elif sent.status == "NO_EFFECT":
            self.no_effect += 1
        else:
            raise Fail("dose_failed", f"dose on {pump.value} failed: {sent.why}")
        return DOSED

    def _judge_last_dose(self, means: dict[Role, float]) -> None:
        dose, self.pending = self.pending, None
        if dose is None or dose.sensor not in means:
            return
        moved = means[dose.sensor] - dose.before
        if moved * dose.expected > 0 and abs(moved) >= NO_EFFECT_FRACTION * abs(dose.expected):
            self.no_effect = 0
        else:
            self.no_effect += 1

    def _interrupt(self, watch_solution: bool) -> Condition:
        def check(ctx: WorkflowContext) -> str | None:
            if watch_solution and ctx.level(Role.LEVEL_SOLUTION_MIN) is False:
                return SOLUTION_LOW
            if ctx.pump_stopped_since(self.started_at):
                return FLOW_STOPPED
            return None
        return check
