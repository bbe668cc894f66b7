"""The device roles of a zone (PROTOCOL §4, DOMAIN §4) and what kind of thing each one is."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    """A part of the zone's plant, bound to one node channel by the zone's settings."""

    PUMP_MAIN = "pump_main"
    PUMP_DRAIN = "pump_drain"
    VALVE_FILL = "valve_fill"
    VALVE_CLEAN_FILL = "valve_clean_fill"
    VALVE_CLEAN_SUPPLY = "valve_clean_supply"
    VALVE_SOLUTION_FILL = "valve_solution_fill"
    VALVE_SOLUTION_SUPPLY = "valve_solution_supply"
    VALVE_IRRIGATION = "valve_irrigation"
    LEVEL_CLEAN_MIN = "level_clean_min"
    LEVEL_CLEAN_MAX = "level_clean_max"
    LEVEL_SOLUTION_MIN = "level_solution_min"
    LEVEL_SOLUTION_MAX = "level_solution_max"
    STORAGE_STATE = "storage_state"
    PH_SENSOR = "ph_sensor"
    EC_SENSOR = "ec_sensor"
    PUMP_ACID = "pump_acid"
    PUMP_BASE = "pump_base"
    PUMP_A = "pump_a"
    PUMP_B = "pump_b"
    PUMP_C = "pump_c"
    PUMP_D = "pump_d"
    FLOW = "flow"
    PUMP_CURRENT = "pump_current"
    TEMPERATURE = "temperature"
    HUMIDITY = "humidity"
    LIGHT = "light"


PUMPS = frozenset({Role.PUMP_MAIN, Role.PUMP_DRAIN, Role.PUMP_ACID, Role.PUMP_BASE, Role.PUMP_A, Role.PUMP_B,
                   Role.PUMP_C, Role.PUMP_D})
"""Roles that move water or dose: every start passes ``safety.can_run_pump``."""

VALVES = frozenset({Role.VALVE_CLEAN_FILL, Role.VALVE_CLEAN_SUPPLY, Role.VALVE_SOLUTION_FILL,
                    Role.VALVE_SOLUTION_SUPPLY, Role.VALVE_IRRIGATION, Role.VALVE_FILL})
"""Roles that open a water path: every opening passes the gate too."""

LEVELS = frozenset({Role.LEVEL_CLEAN_MIN, Role.LEVEL_CLEAN_MAX, Role.LEVEL_SOLUTION_MIN, Role.LEVEL_SOLUTION_MAX})
"""Level switches (0/1)."""

ACTUATORS = PUMPS | VALVES | {Role.LIGHT}
"""Roles whose desired vs confirmed state the zone tracks."""
