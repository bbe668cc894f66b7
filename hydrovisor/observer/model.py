"""The observer's vocabulary: rule codes, per-zone limits, the plant reading and the violation record."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

__all__ = [
    "DOSE_WITHOUT_FLAGS",
    "INTERLOCK_VIOLATION",
    "LEFT_RUNNING_AFTER_STOP",
    "MARK_KINDS",
    "NC_PUMP_OFF_TOO_LONG",
    "PUMP_ON_SOURCE_BELOW_MIN",
    "RULES",
    "START_DURING_ESTOP",
    "START_WITHOUT_CONFIRMED_STOP",
    "MarkKind",
    "PlantReading",
    "Tank",
    "Violation",
    "ZoneLimits",
]

PUMP_ON_SOURCE_BELOW_MIN = "pump_on_source_below_min"
DOSE_WITHOUT_FLAGS = "dose_without_flags"
START_WITHOUT_CONFIRMED_STOP = "start_without_confirmed_stop"
INTERLOCK_VIOLATION = "interlock_violation"
NC_PUMP_OFF_TOO_LONG = "nc_pump_off_too_long"
LEFT_RUNNING_AFTER_STOP = "left_running_after_stop"
START_DURING_ESTOP = "start_during_estop"

RULES: tuple[str, ...] = (
    PUMP_ON_SOURCE_BELOW_MIN, DOSE_WITHOUT_FLAGS, START_WITHOUT_CONFIRMED_STOP, INTERLOCK_VIOLATION,
    NC_PUMP_OFF_TOO_LONG, LEFT_RUNNING_AFTER_STOP, START_DURING_ESTOP,
)
"""Every rule code the observer can report."""

MarkKind = Literal["workflow_failed", "workflow_cancelled", "emergency_stop", "estop_cleared"]
MARK_KINDS: frozenset[str] = frozenset({"workflow_failed", "workflow_cancelled", "emergency_stop", "estop_cleared"})
"""Facts a campaign learns over HTTP and tells the observer with ``SafetyObserver.mark``."""

Tank = Literal["clean", "solution"]


class ZoneLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What the observer needs to know about a zone (times in zone-clock seconds).

    - ``topology``: ``two_tank`` (the main pump's source is the tank whose supply valve is open) or
      ``single_tank`` (the main pump always draws from the solution tank).
    - ``nc_pump``: ``(node_uid, channel)`` of the normally-closed recirculation pump, if the zone has one;
      ``max_recirc_off_s``: the longest it may be off (``water_cycle.recirc.max_recirc_off_minutes`` x 60).
    - ``flags_fresh_s``: how old the pH/EC reading a ``dose`` relies on may be.
    - ``grace_s``: how long the automation has to react before a physical state counts (a pump drawing
      from an empty tank; something left running after a stop). A campaign running the plant much faster
      than real time should allow a few real command round trips: ``grace_s >= scale x ~0.5 s``.
    """

    topology: Literal["two_tank", "single_tank"] = "two_tank"
    nc_pump: tuple[str, str] | None = None
    max_recirc_off_s: float | None = None
    flags_fresh_s: float = 60.0
    grace_s: float = 30.0

    def __post_init__(self) -> None:
        """Reject limits that would silently disable a rule (negative, NaN)."""
        for name in ("flags_fresh_s", "grace_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ZoneLimits.{name} must be a finite number >= 0, not {value!r}")
        if self.max_recirc_off_s is not None and not (
                math.isfinite(self.max_recirc_off_s) and self.max_recirc_off_s > 0):
            raise ValueError(f"ZoneLimits.max_recirc_off_s must be > 0, not {self.max_recirc_off_s!r}")
        if self.max_recirc_off_s is not None and self.nc_pump is None:
            raise ValueError("ZoneLimits.max_recirc_off_s needs nc_pump")


class PlantReading(msgspec.Struct, frozen=True, kw_only=True):
    """The physical truth of one zone's plant at one moment (sampled from the simulator).

    ``pumps``/``valves`` are what physically runs / is open; ``commanded`` is what the nodes believe (they
    differ for a stuck relay). ``switches`` are the level switches as they read (they may lie under an
    ``inconsistent`` fault); ``below_min`` uses the true levels.
    """

    clean_level_pct: float
    solution_level_pct: float
    min_switch_pct: float
    switches: dict[str, bool] = {}
    pumps: frozenset[str] = frozenset()
    valves: frozenset[str] = frozenset()
    commanded: frozenset[str] = frozenset()

    def level_pct(self, tank: Tank) -> float:
        """How full ``tank`` is, in %."""
        return self.clean_level_pct if tank == "clean" else self.solution_level_pct

    def below_min(self, tank: Tank) -> bool:
        """True when ``tank`` really holds less than its min switch's trip level."""
        return self.level_pct(tank) < self.min_switch_pct


class Violation(msgspec.Struct, frozen=True, kw_only=True):
    """One unsafe actuation: which rule, where, when (zone-clock seconds) and why."""

    rule: str
    zone_uid: str
    node_uid: str | None
    at: float
    detail: str
    cmd_id: str | None = None
