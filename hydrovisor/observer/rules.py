"""The safety rules as small pure predicates; ``SafetyObserver`` keeps the state and calls them.

The plant facts here (paths, supply valves, the two tanks) restate DOMAIN §4 "Hydraulics of the two-tank
irrigation node" on purpose rather than importing them from the simulator or the zone logic: an observer
that read its hydraulics from the code under test would inherit that code's mistakes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hydrovisor.observer.model import PlantReading, Tank, ZoneLimits
from hydrovisor.observer.wire import UNSET

__all__ = [
    "MAIN_PUMP",
    "PUMP_PATHS",
    "SUPPLY_VALVES",
    "VALVES",
    "flags_problem",
    "left_running",
    "open_pump_path",
    "source_tanks",
]

MAIN_PUMP = "pump_main"
VALVES: tuple[str, ...] = ("valve_clean_fill", "valve_clean_supply", "valve_solution_fill",
                           "valve_solution_supply", "valve_irrigation")
PUMP_PATHS: dict[str, frozenset[str]] = {
    # valve_clean_fill alone (mains into the clean tank) is a path for water, not for the pump
    "solution_fill": frozenset({"valve_clean_supply", "valve_solution_fill"}),
    "recirculation": frozenset({"valve_solution_supply", "valve_solution_fill"}),
    "irrigation": frozenset({"valve_solution_supply", "valve_irrigation"}),
}
"""The paths ``pump_main`` may run on: the valves each one needs open."""
SUPPLY_VALVES: dict[str, Tank] = {"valve_clean_supply": "clean", "valve_solution_supply": "solution"}
"""The valve that connects each tank to the pump's suction side."""


def open_pump_path(open_valves: Iterable[str]) -> str | None:
    """The first pump path fully open among ``open_valves``, or None."""
    valves = frozenset(open_valves)
    return next((name for name, needed in PUMP_PATHS.items() if needed <= valves), None)


def source_tanks(limits: ZoneLimits, open_valves: Iterable[str]) -> tuple[Tank, ...]:
    """The tanks the main pump draws from with ``open_valves`` open: the solution tank on a single tank;
    on two tanks each tank whose supply valve is open (none: the pump moves no water)."""
    if limits.topology == "single_tank":
        return ("solution",)
    valves = frozenset(open_valves)
    return tuple(tank for valve, tank in SUPPLY_VALVES.items() if valve in valves)


def flags_problem(flags: tuple[Any, Any, Any] | None, age_s: float | None, fresh_s: float) -> str | None:
    """Why a ``dose`` may not rely on the node's latest pH/EC reading, or None when it may.

    ``flags`` is ``(flow_active, corrections_allowed, stable)`` as received (``UNSET`` when absent).
    DOMAIN §4 wants all three present and true; PROTOCOL §4 says the firmware omits ``stable`` when the
    reading is stable, so an absent ``stable`` counts as true, but only next to ``flow_active`` and
    ``corrections_allowed`` both present and true (a reading that carries no flags at all comes from a
    node whose sensor mode is off, and proves nothing). Anything but the JSON ``true`` is not true.
    """
    if flags is None or age_s is None:
        return "no pH/EC reading from the node"
    if age_s > fresh_s:
        return f"latest pH/EC reading is {age_s:.1f} s old (limit {fresh_s:g} s)"
    flow_active, corrections_allowed, stable = flags
    missing = [name for name, value in (("flow_active", flow_active), ("corrections_allowed", corrections_allowed))
               if value is UNSET]
    if missing:
        return f"latest pH/EC reading lacks {', '.join(missing)}"
    not_true = [name for name, value in (("flow_active", flow_active), ("corrections_allowed", corrections_allowed),
                                         ("stable", stable)) if value is not UNSET and value is not True]
    if not_true:
        return f"latest pH/EC reading has {', '.join(f'{name}!=true' for name in not_true)}"
    return None


def left_running(limits: ZoneLimits, reading: PlantReading) -> list[str]:
    """What physically still runs or is open in ``reading`` that should not after a stop: every pump and
    valve, except the NC recirculation pump of a single-tank zone (running is its safe state)."""
    exempt = limits.nc_pump[1] if limits.nc_pump is not None and limits.topology == "single_tank" else None
    running = [f"pump {name}" for name in sorted(reading.pumps) if name != exempt]
    return running + [f"valve {name}" for name in sorted(reading.valves)]
