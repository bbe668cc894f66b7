"""The hardware of each simulated node type: its channels (as reported in ``config_report``) and sensors.

A profile is fixed hardware: a config push may rename or re-describe channels in the stored config the
node echoes, but the simulator keeps serving the channels listed here.
"""

from __future__ import annotations

import msgspec

from hydrovisor.protocol import ChannelConfig, SafeLimits
from hydrovisor.sim.options import PlantOptions

__all__ = ["ALL_SIM_NODE_TYPES", "LEVEL_SWITCH_CHANNELS", "SIM_NODE_TYPES", "Profile", "Sensor", "profile_for"]

SIM_NODE_TYPES: tuple[str, ...] = ("ph", "ec", "irrig", "climate", "light", "water_sensor")
"""Node types the simulator can play, and the default round-robin mix of a fleet (``SimFleet.create``, the
benchmarks): kept as it is so that existing fleets do not change; see ``ALL_SIM_NODE_TYPES``."""
ALL_SIM_NODE_TYPES: tuple[str, ...] = (*SIM_NODE_TYPES, "recirculation")
"""Every node type the simulator can play: ``SIM_NODE_TYPES`` plus ``recirculation`` (the single-tank plant's
node, which needs a single-tank plant and so is not in the default fleet mix)."""


class Sensor(msgspec.Struct, frozen=True, kw_only=True):
    """One sensor channel: which physics quantity it reads and how it reports it.

    ``raw_scale``: when set, telemetry carries ``raw = round(value * raw_scale)`` (ADC-style);
    ``gated``: pH/EC readings that carry ``stable``/``flow_active``/``corrections_allowed`` (only while the
    node's sensor mode is active).
    """

    channel: str
    metric: str
    unit: str
    source: str
    decimals: int = 2
    raw_scale: float | None = None
    gated: bool = False


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """A node type's hardware. ``dose_kinds`` maps dosing pumps to their chemistry (acid, base, nutrient).

    - ``topology``: the plant topology the node needs (``PlantOptions.topology``), None for any.
    - ``plant``: the plant a node of this type gets when its ``NodeOptions.plant`` is left at the default
      ``PlantOptions()`` and it is given no shared physics (None: ``NodeOptions.plant`` as it is).
    - ``unpowered_on``: loads on normally-closed relays that the simulator runs while the node does not
      drive them: at power-on, after a reboot and once the node stops (the ``recirculation`` node's
      ``pump_main``; the two-tank node's NC ``pump_main`` is modelled as off until switched on).
    """

    node_type: str
    sensors: tuple[Sensor, ...]
    channels: tuple[ChannelConfig, ...]
    capabilities: tuple[str, ...]
    dose_kinds: dict[str, str] = {}
    topology: str | None = None
    plant: PlantOptions | None = None
    unpowered_on: tuple[str, ...] = ()

    def channel(self, name: str) -> ChannelConfig | None:
        """The channel called ``name``, or None."""
        return next((channel for channel in self.channels if channel.name == name), None)

    def sensor(self, name: str) -> Sensor | None:
        """The sensor on channel ``name``, or None."""
        return next((sensor for sensor in self.sensors if sensor.channel == name), None)


def _sensor_channel(sensor: Sensor, poll_interval_ms: int = 5000) -> ChannelConfig:
    return ChannelConfig(name=sensor.channel, type="SENSOR", metric=sensor.metric, unit=sensor.unit,
                         poll_interval_ms=poll_interval_ms)


def _actuator(name: str, actuator_type: str, *, relay_type: str | None = None, ml_per_second: float | None = None,
              max_duration_ms: int | None = None) -> ChannelConfig:
    # a normally-closed relay runs its load when the controller is gone: its fail-safe state is ON
    fail_safe = "ON" if relay_type == "NC" else "OFF"
    limits = SafeLimits(max_duration_ms=max_duration_ms, min_off_ms=1000, fail_safe_mode=fail_safe) \
        if max_duration_ms is not None else None
    return ChannelConfig(name=name, type="ACTUATOR", actuator_type=actuator_type, relay_type=relay_type,
                         ml_per_second=ml_per_second, safe_limits=limits)


_SYSTEM = _actuator("system", "SYSTEM")


def _profile(node_type: str, sensors: list[Sensor], actuators: list[ChannelConfig], capabilities: list[str],
             dose_kinds: dict[str, str] | None = None, *, topology: str | None = None,
             plant: PlantOptions | None = None, unpowered_on: tuple[str, ...] = ()) -> Profile:
    channels = (*(_sensor_channel(sensor) for sensor in sensors), *actuators, _SYSTEM)
    return Profile(node_type=node_type, sensors=tuple(sensors), channels=channels, capabilities=tuple(capabilities),
                   dose_kinds=dose_kinds or {}, topology=topology, plant=plant, unpowered_on=unpowered_on)


_PH = Sensor(channel="ph_sensor", metric="PH", unit="pH", source="ph", decimals=3, raw_scale=1000, gated=True)
_EC = Sensor(channel="ec_sensor", metric="EC", unit="mS/cm", source="ec", decimals=3, raw_scale=1000, gated=True)
_EC_PUMPS = ("pump_a", "pump_b", "pump_c", "pump_d")
LEVEL_SWITCH_CHANNELS = ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max")
SOLUTION_SWITCH_CHANNELS = ("level_solution_min", "level_solution_max")
_VALVES = ("valve_clean_fill", "valve_clean_supply", "valve_solution_fill", "valve_solution_supply",
           "valve_irrigation")

PROFILES: dict[str, Profile] = {
    "ph": _profile(
        "ph", [_PH, Sensor(channel="solution_temp", metric="TEMPERATURE", unit="°C", source="water_temp")],
        [_actuator("pump_acid", "PERISTALTIC_PUMP", ml_per_second=1.0, max_duration_ms=60_000),
         _actuator("pump_base", "PERISTALTIC_PUMP", ml_per_second=1.0, max_duration_ms=60_000)],
        ["ph", "dosing", "sensor_mode"], {"pump_acid": "acid", "pump_base": "base"}),
    "ec": _profile(
        "ec", [_EC, Sensor(channel="solution_temp", metric="TEMPERATURE", unit="°C", source="water_temp")],
        [_actuator(pump, "PERISTALTIC_PUMP", ml_per_second=2.0, max_duration_ms=60_000) for pump in _EC_PUMPS],
        ["ec", "dosing", "sensor_mode"], dict.fromkeys(_EC_PUMPS, "nutrient")),
    "irrig": _profile(
        "irrig",
        [Sensor(channel="flow", metric="FLOW_RATE", unit="l/min", source="flow_lpm"),
         Sensor(channel="pump_current", metric="PUMP_CURRENT", unit="mA", source="pump_current_ma", decimals=0),
         *(Sensor(channel=switch, metric="WATER_LEVEL_SWITCH", unit="bool", source=switch, decimals=0)
           for switch in LEVEL_SWITCH_CHANNELS)],
        [_actuator("pump_main", "PUMP", relay_type="NC", max_duration_ms=300_000),
         *(_actuator(valve, "VALVE", relay_type="NO") for valve in _VALVES),
         _actuator("storage_state", "SYSTEM")],
        ["irrigation", "two_tank", "flow", "current"], topology="two_tank"),
    "recirculation": _profile(
        "recirculation",
        [Sensor(channel="flow", metric="FLOW_RATE", unit="l/min", source="flow_lpm"),
         Sensor(channel="pump_current", metric="PUMP_CURRENT", unit="mA", source="pump_current_ma", decimals=0),
         *(Sensor(channel=switch, metric="WATER_LEVEL_SWITCH", unit="bool", source=switch, decimals=0)
           for switch in SOLUTION_SWITCH_CHANNELS),
         Sensor(channel="solution_temp", metric="TEMPERATURE", unit="°C", source="water_temp")],
        [_actuator("pump_main", "PUMP", relay_type="NC", max_duration_ms=300_000),
         _actuator("pump_drain", "PUMP", relay_type="NO", max_duration_ms=300_000),
         _actuator("valve_fill", "VALVE", relay_type="NO"),
         _actuator("storage_state", "SYSTEM")],
        ["recirculation", "single_tank", "water_change", "flow", "current"],
        topology="single_tank", plant=PlantOptions(topology="single_tank"), unpowered_on=("pump_main",)),
    "climate": _profile(
        "climate",
        [Sensor(channel="air_temp", metric="TEMPERATURE", unit="°C", source="air_temp"),
         Sensor(channel="air_humidity", metric="HUMIDITY", unit="%", source="humidity", decimals=1),
         Sensor(channel="co2", metric="CO2", unit="ppm", source="co2", decimals=0)],
        [_actuator("fan", "FAN", relay_type="NO"), _actuator("heater", "HEATER", relay_type="NO")],
        ["climate"]),
    "light": _profile(
        "light", [Sensor(channel="light_sensor", metric="LIGHT_INTENSITY", unit="lux", source="lux", decimals=0)],
        [_actuator("light", "LED")], ["light", "pwm"]),
    "water_sensor": _profile(
        "water_sensor",
        [Sensor(channel="water_level", metric="WATER_LEVEL", unit="%", source="clean_level_pct", decimals=1),
         Sensor(channel="water_temp", metric="TEMPERATURE", unit="°C", source="water_temp"),
         # not named level_clean_min: that is the irrigation node's switch, and a zone's roles are filled
         # from channel names (two channels of one name in a zone are an ambiguity)
         Sensor(channel="level_switch", metric="WATER_LEVEL_SWITCH", unit="bool", source="clean_level_min",
                decimals=0)],
        [], ["water_level"]),
}


def profile_for(node_type: str) -> Profile:
    """The profile of ``node_type`` (one of ``ALL_SIM_NODE_TYPES``); raises ``ValueError`` otherwise."""
    try:
        return PROFILES[node_type]
    except KeyError:
        raise ValueError(f"unknown simulated node type {node_type!r}; expected one of {ALL_SIM_NODE_TYPES}") from None
