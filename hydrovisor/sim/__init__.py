"""ESP32 node simulator speaking Protocol 2.0 over real MQTT connections (amqtt clients).

- ``node``: ``SimNode`` — one node: connection lifecycle, time sync, hello/config report, heartbeats,
  status, telemetry, config pushes (bind/unbind), signed commands with the firmware's ``cmd_id`` cache.
- ``fleet``: ``SimFleet`` — many nodes on one event loop with bounded connect concurrency and counters.
- ``faults``: ``Faults`` — per-node failure modes (dropped/delayed/duplicated/contradictory replies,
  overcurrent, no flow, stuck relays, frozen sensors, inconsistent level switches, offline windows, bad JSON,
  uptime timestamps).
- ``physics``: ``WaterPhysics`` — the seeded plant behind the sensors: the two-tank hydraulics of DOMAIN §4
  (volumes, valves, ``pump_main``, level switches, the node's fill stages and tank events) or, with
  ``PlantOptions(topology="single_tank")``, the single tank of the water cycle (NC recirculation pump, drain
  pump, fill valve; node type ``recirculation``), and the water chemistry; several nodes of a zone may share one.
- ``options``: ``NodeOptions`` (timings, ``time_scale``, ``PlantOptions``) and ``FieldConfig`` (a node
  already bound).
- ``commands`` (admission, ``cmd_id`` cache), ``actions`` (execution), ``responder`` (ACK/terminal replies
  and reply faults); ``profiles``: the hardware of each node type; ``wire``: payload shapes;
  ``transport``: the amqtt client (no auto-reconnect, LWT, abort without DISCONNECT); ``stats``: counters.
- ``runner``: the ``hydrovisor sim`` command.
"""

from hydrovisor.sim.actions import Outcome
from hydrovisor.sim.commands import CommandCache, Rejection, check_command
from hydrovisor.sim.faults import Faults
from hydrovisor.sim.fleet import FleetStats, SimFleet, hardware_id_for
from hydrovisor.sim.node import SimNode
from hydrovisor.sim.nodeconfig import StoredConfig
from hydrovisor.sim.options import PATHS, FieldConfig, NodeOptions, PlantOptions
from hydrovisor.sim.physics import PlantEvent, WaterPhysics
from hydrovisor.sim.profiles import ALL_SIM_NODE_TYPES, SIM_NODE_TYPES, Profile, Sensor, profile_for
from hydrovisor.sim.stats import NodeStats

__all__ = [
    "ALL_SIM_NODE_TYPES",
    "PATHS",
    "SIM_NODE_TYPES",
    "CommandCache",
    "Faults",
    "FieldConfig",
    "FleetStats",
    "NodeOptions",
    "NodeStats",
    "Outcome",
    "PlantEvent",
    "PlantOptions",
    "Profile",
    "Rejection",
    "Sensor",
    "SimFleet",
    "SimNode",
    "StoredConfig",
    "WaterPhysics",
    "check_command",
    "hardware_id_for",
    "profile_for",
]
