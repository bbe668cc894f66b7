"""Timing and behaviour knobs of a simulated node, and the config of a node already set up in the field."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from hydrovisor.protocol import validate_segment

__all__ = ["PATHS", "PUMP_PATHS", "TOPOLOGIES", "FieldConfig", "NodeOptions", "PlantOptions", "Topology"]

PATHS: dict[str, frozenset[str]] = {
    "clean_fill": frozenset({"valve_clean_fill"}),
    "solution_fill": frozenset({"valve_clean_supply", "valve_solution_fill"}),
    "recirculation": frozenset({"valve_solution_supply", "valve_solution_fill"}),
    "irrigation": frozenset({"valve_solution_supply", "valve_irrigation"}),
}
"""The water paths of the two-tank irrigation node (DOMAIN §4 "Hydraulics"): the valves each one opens."""

PUMP_PATHS: tuple[str, ...] = ("solution_fill", "recirculation", "irrigation")
"""The paths ``pump_main`` may run on (the interlock); when several are open the first one is the one in use."""

Topology = Literal["two_tank", "single_tank"]
TOPOLOGIES: tuple[str, ...] = ("two_tank", "single_tank")
"""The plants the simulator models: the two-tank irrigation plant (clean + solution tank, node type ``irrig``)
and the single-tank recirculating plant of the water-change workflow (node type ``recirculation``)."""


class PlantOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The plant behind a simulated irrigation node (volumes in litres, times in simulated seconds).

    - ``clean_start_pct`` / ``solution_start_pct``: how full each tank is at boot (default full, so a fresh
      plant can pump; 0 starts it empty).
    - ``mains_fill_lpm``: mains water into the clean tank while ``valve_clean_fill`` is open (single tank: into
      the solution tank while ``valve_fill`` is open); ``pump_flow_lpm``: what ``pump_main`` moves on an open
      path (single tank: round the solution tank while it holds water).
    - ``min_switch_pct`` / ``max_switch_pct``: where ``level_*_min`` ("holds water") and ``level_*_max`` trip.
    - ``interlock``: the firmware refuses ``pump_main`` on unless a pump path is open (False: a bare relay
      board, for load tests that toggle relays in any order; its pump circulates the solution tank whatever
      the valves).
    - ``open_path``: one of ``PATHS`` whose valves are open at boot (a plant found mid-recirculation);
      a reboot closes every valve, as the real NO valves do.
    - ``topology``: ``two_tank`` (the default: clean tank + solution tank, DOMAIN §4 "Hydraulics") or
      ``single_tank`` (DOMAIN §4 "Water cycle": one solution tank with the NC recirculation pump ``pump_main``,
      a drain pump ``pump_drain`` and a mains fill valve ``valve_fill``, no paths and no interlock; the clean
      tank stays empty, its switches read 0 and ``clean_*`` options are ignored; ``open_path`` must stay None).
    - ``drain_lpm``: what ``pump_drain`` takes from the solution tank to waste (single tank only).
    """

    clean_capacity_l: float = 200.0
    solution_capacity_l: float = 200.0
    clean_start_pct: float = 100.0
    solution_start_pct: float = 100.0
    mains_fill_lpm: float = 20.0
    pump_flow_lpm: float = 12.0
    min_switch_pct: float = 5.0
    max_switch_pct: float = 90.0
    interlock: bool = True
    open_path: str | None = None
    topology: Topology = "two_tank"
    drain_lpm: float = 30.0

    def __post_init__(self) -> None:
        for name in ("clean_capacity_l", "solution_capacity_l", "mains_fill_lpm", "pump_flow_lpm", "drain_lpm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PlantOptions.{name} must be a positive number, not {value!r}")
        for name in ("clean_start_pct", "solution_start_pct", "min_switch_pct", "max_switch_pct"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 100):
                raise ValueError(f"PlantOptions.{name} must be a percentage in [0, 100], not {value!r}")
        if not 0 < self.min_switch_pct < self.max_switch_pct:
            raise ValueError("PlantOptions.min_switch_pct must be > 0 and below max_switch_pct")
        if self.open_path is not None and self.open_path not in PATHS:
            raise ValueError(f"PlantOptions.open_path must be one of {sorted(PATHS)} or None, "
                             f"not {self.open_path!r}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"PlantOptions.topology must be one of {TOPOLOGIES}, not {self.topology!r}")
        if self.topology == "single_tank" and self.open_path is not None:
            raise ValueError("PlantOptions.open_path names a two-tank path: a single-tank plant has none")


class NodeOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a simulated node behaves. Durations are real seconds unless said otherwise.

    - ``keep_alive_s``: MQTT keep-alive sent in CONNECT (firmware default 30).
    - ``heartbeat_interval_s`` (firmware 15), ``status_interval_s`` (retained ``ONLINE``, firmware 60),
      ``telemetry_interval_s``: the poll interval of every sensor channel (one message per channel each time).
    - ``time_request_retry_s``: re-ask the time this often until answered.
    - ``reconnect_delay_s``: wait before reconnecting after a lost connection or a refused CONNECT.
    - ``restart_delay_s``: how long a ``restart{}`` keeps the node away.
    - ``time_scale``: real seconds per simulated second for actuator runs and physics
      (``run_pump{duration_ms:2500}`` takes 2.5 s times ``time_scale``; 0.01 makes it 25 ms). The node then
      runs on ``hydrovisor.zones.clock.clock_for_scale(1 / time_scale)``; a node given a shared ``Clock``
      (``SimNode(clock=...)``) runs on that one instead and ``time_scale`` must stay 1.
    - ``plant``: the plant of an irrigation node (``PlantOptions``; two-tank by default). A ``recirculation``
      node left with the default ``PlantOptions()`` gets its own single-tank plant
      (``profiles.Profile.plant``).
    - ``plant_tick_s``: how often (real seconds) a plant with water moving is stepped to fire its events.
    - ``sensor_stabilize_s``: simulated seconds after ``activate_sensor_mode`` until pH/EC readings are stable.
    - ``trust_local_clock``: consider the clock synced at boot (real firmware never does; for load tests
      against a bare broker with nobody answering time requests).
    - ``omit_stable_when_true``: firmware omits ``stable`` when the reading is stable; False always sends it.
    - ``echo_secret``: ``config_report`` echoes ``node_secret`` like the firmware's full stored config.
    """

    keep_alive_s: int = 30
    heartbeat_interval_s: float = 15.0
    status_interval_s: float = 60.0
    telemetry_interval_s: float = 5.0
    time_request_retry_s: float = 10.0
    reconnect_delay_s: float = 2.0
    restart_delay_s: float = 1.0
    connect_timeout_s: float = 10.0
    time_scale: float = 1.0
    sensor_stabilize_s: float = 10.0
    trust_local_clock: bool = False
    omit_stable_when_true: bool = True
    echo_secret: bool = True
    fw_version: str = "sim-2.0.0"
    hardware_revision: str = "sim-rev-a"
    plant: PlantOptions = msgspec.field(default_factory=PlantOptions)
    plant_tick_s: float = 0.05

    def __post_init__(self) -> None:
        if isinstance(self.keep_alive_s, bool) or not isinstance(self.keep_alive_s, int) or not (
            0 <= self.keep_alive_s <= 65535
        ):
            raise ValueError("NodeOptions.keep_alive_s must be an integer in [0, 65535]")
        for name in ("heartbeat_interval_s", "status_interval_s", "telemetry_interval_s", "time_request_retry_s",
                     "connect_timeout_s", "time_scale", "plant_tick_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"NodeOptions.{name} must be a positive number, not {value!r}")
        for name in ("reconnect_delay_s", "restart_delay_s", "sensor_stabilize_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"NodeOptions.{name} must be a number >= 0, not {value!r}")


class FieldConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What a node already configured in the field has stored: it boots straight into its namespace.

    ``repr`` masks the secret.
    """

    gh_uid: str
    zone_uid: str
    node_uid: str
    node_secret: str

    def __post_init__(self) -> None:
        for what, value in (("gh_uid", self.gh_uid), ("zone_uid", self.zone_uid), ("node_uid", self.node_uid)):
            problem = validate_segment(value, what, strict=True)
            if problem is not None:
                raise ValueError(problem.detail)
        if not self.node_secret:
            raise ValueError("FieldConfig.node_secret must not be empty")

    def __repr__(self) -> str:
        return (f"FieldConfig(gh_uid={self.gh_uid!r}, zone_uid={self.zone_uid!r}, node_uid={self.node_uid!r}, "
                "node_secret=<redacted>)")
