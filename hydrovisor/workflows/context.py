"""What a workflow script sees of its zone: the latest :class:`ZoneObserved` and the recent readings.

The driver feeds every ``ZoneObserved`` in (:meth:`WorkflowContext.observe`); scripts read through the
helpers, which all fail towards "unknown" (None) rather than guess: a level never heard from, or heard
longer ago than ``safety.level_stale_s``, is not a level.
"""

from __future__ import annotations

import collections
from typing import Any

import msgspec

from hydrovisor.actors.zone import ZoneObserved
from hydrovisor.zones.roles import Role
from hydrovisor.zones.settings import ResolvedDevice, ZoneSettings

HISTORY = 200  # readings kept per role: enough for any observation window at 1 sample/s
SENSOR_FLAGS = ("flow_active", "stable", "corrections_allowed")


class Sample(msgspec.Struct, frozen=True):
    """One reading of a role: device time ``ts``, zone time ``at`` it was seen, value, the node's flags."""

    ts: float
    at: float
    value: float
    flags: dict[str, Any] | None


class WorkflowContext:
    """See the module docstring. ``params``: the workflow's validated parameters."""

    def __init__(self, zone_uid: str, wf_id: str, params: Any) -> None:
        self.zone_uid = zone_uid
        self.wf_id = wf_id
        self.params = params
        self.observed: ZoneObserved | None = None
        self.history: dict[Role, collections.deque[Sample]] = {}

    def observe(self, observed: ZoneObserved) -> None:
        """A new view of the zone; new readings join the history."""
        self.observed = observed
        for name, reading in observed.state.readings.items():
            role = Role(name)
            samples = self.history.setdefault(role, collections.deque(maxlen=HISTORY))
            if not samples or reading.ts > samples[-1].ts:
                samples.append(Sample(reading.ts, observed.at, reading.value, reading.flags))

    @property
    def now(self) -> float:
        """Zone time of the latest view (0 before the first)."""
        return self.observed.at if self.observed is not None else 0.0

    @property
    def settings(self) -> ZoneSettings:
        """The zone's settings (defaults before the first view)."""
        return self.observed.settings if self.observed is not None else ZoneSettings()

    def device(self, role: Role) -> ResolvedDevice | None:
        """The node channel bound to ``role``."""
        return self.observed.devices.get(role) if self.observed is not None else None

    def level(self, role: Role) -> bool | None:
        """A level switch (wet = True) if reported within ``safety.level_stale_s``, else None."""
        if self.observed is None:
            return None
        level = self.observed.state.levels.get(role.value)
        if level is None or level.age_s > self.settings.safety.level_stale_s:
            return None
        return level.state

    def samples(self, role: Role, since: float) -> list[Sample]:
        """Readings of ``role`` seen at or after zone time ``since`` (device clocks may disagree with ours:
        windows are cut by when we saw a reading)."""
        return [s for s in self.history.get(role, ()) if s.at >= since]

    def reading_age(self, role: Role) -> float | None:
        """Age of ``role``'s latest reading by its device time, as the zone computed it."""
        if self.observed is None:
            return None
        reading = self.observed.state.readings.get(role.value)
        return None if reading is None else reading.age_s

    def pump_stopped_since(self, since: float) -> bool:
        """``pump_main`` was confirmed stopped (a DONE stop, a snapshot, a node failsafe) at or after zone time
        ``since``: a stop the workflow did not ask for. An older "stopped" is what the zone knew before the
        workflow's own start reached it."""
        if self.observed is None:
            return False
        actuator = self.observed.state.actuators.get(Role.PUMP_MAIN.value)
        return actuator is not None and actuator.confirmed is False and (actuator.since or 0.0) >= since

    def latest(self, role: Role) -> Sample | None:
        """The newest reading of ``role``."""
        samples = self.history.get(role)
        return samples[-1] if samples else None

    def estop(self) -> str | None:
        """The zone's latched emergency stop, if any."""
        return self.observed.estop if self.observed is not None else None


def flags_problem(flags: dict[str, Any] | None) -> str | None:
    """Why a pH/EC reading may not be corrected on (None: it may): ``missing_flags`` when the node sent
    none (sensor mode is off), else the first flag that is false.

    Firmware omits ``stable`` when the reading is stable (PROTOCOL §4), so an absent ``stable`` counts as
    true only next to ``flow_active`` and ``corrections_allowed`` both present and true: a node in sensor
    mode always sends those two.
    """
    if not flags or "flow_active" not in flags or "corrections_allowed" not in flags:
        return "missing_flags"
    for name, reason in (("flow_active", "flow_inactive"), ("stable", "not_stable"),
                         ("corrections_allowed", "corrections_not_allowed")):
        value = flags.get(name, True if name == "stable" else None)
        if not isinstance(value, bool):
            return "missing_flags"
        if not value:
            return reason
    return None
