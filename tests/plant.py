"""A simulated two-tank irrigation node the way the zone's pump-safety gate wants it (shared by the test packages).

Every pump or valve start passes ``hydrovisor.zones.safety.can_run_pump``: the node must be online in its zone
and, for ``pump_main``, the source tank's ``level_*_min`` switch reading fresh and wet. The roles come from
the node's channel names, so a pre-registered node needs its level switch SENSOR channels too
(``IRRIG_CHANNELS``), and a test waits until the zone has heard them (``wait_levels_fresh``) before it
starts the pump. The simulated node publishes its first telemetry at once on connect; its tanks start full.

The node itself refuses ``pump_main`` on unless a pump path is open (``pump_interlock_blocked``): a node made
with ``PRIMED`` boots with the recirculation valves open, so a bare ``run_pump`` runs.
"""

from __future__ import annotations

from typing import Any

from hydrovisor.sim import PlantOptions
from tests.helpers import http, wait_until

VALVES = ("valve_clean_fill", "valve_clean_supply", "valve_solution_fill", "valve_solution_supply",
          "valve_irrigation")
LEVEL_SWITCHES = ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max")
IRRIG_CHANNELS: list[dict[str, Any]] = [
    {"name": "pump_main", "type": "ACTUATOR", "actuator_type": "PUMP", "relay_type": "NC"},
    *({"name": valve, "type": "ACTUATOR", "actuator_type": "VALVE", "relay_type": "NO"} for valve in VALVES),
    {"name": "storage_state", "type": "ACTUATOR", "actuator_type": "SYSTEM"},
    *({"name": switch, "type": "SENSOR", "metric": "WATER_LEVEL_SWITCH", "unit": "bool"} for switch in LEVEL_SWITCHES),
    {"name": "flow", "type": "SENSOR", "metric": "FLOW_RATE", "unit": "l/min"},
    {"name": "pump_current", "type": "SENSOR", "metric": "PUMP_CURRENT", "unit": "mA"},
]
"""The channels of a simulated ``irrig`` node, as it reports them (the roles of DOMAIN §4 by name)."""

STATE_PROBE: dict[str, Any] = {"channel": "storage_state", "cmd": "state", "params": {}}
"""A ``state{}`` probe of the irrigation node: a read, never gated (a start to a node the zone has not heard
from yet is refused as ``node_offline`` before anything is sent)."""

PRIMED = PlantOptions(open_path="recirculation")
"""A plant found recirculating: ``valve_solution_supply`` + ``valve_solution_fill`` open at boot."""


def set_no_flow_window(base_url: str, seconds: float, zone_uid: str = "zn-1") -> int:
    """PUT the zone's settings with ``safety.no_flow_window_s`` changed; returns the new version."""
    current = http("GET", base_url + f"/api/v1/zones/{zone_uid}/settings").json()["data"]
    settings = current["settings"]
    settings["safety"]["no_flow_window_s"] = seconds
    reply = http("PUT", base_url + f"/api/v1/zones/{zone_uid}/settings",
                 body={"version": current["version"], "settings": settings})
    assert reply.status == 200, reply.raw
    return int(current["version"]) + 1


def zone_state(base_url: str, zone_uid: str = "zn-1") -> dict[str, Any] | None:
    """``GET /api/v1/zones/{uid}/state``'s ``state``, or None while the zone is not ready."""
    reply = http("GET", f"{base_url}/api/v1/zones/{zone_uid}/state")
    if reply.status != 200:
        return None
    state: dict[str, Any] = reply.json()["data"]["state"]
    return state


def wait_levels_fresh(base_url: str, node_uid: str, zone_uid: str = "zn-1", timeout: float = 15.0) -> None:
    """Wait until the zone has ``node_uid`` online and fresh, wet ``level_clean_min``/``level_solution_min``
    readings: what ``can_run_pump`` needs to let ``pump_main`` start (whichever tank feeds it)."""
    def ready() -> bool:
        state = zone_state(base_url, zone_uid)
        if state is None or state["nodes_online"].get(node_uid) is not True:
            return False
        levels = state["levels"]
        return all(name in levels and levels[name]["state"] is True and levels[name]["age_s"] < 60
                   for name in ("level_clean_min", "level_solution_min"))

    wait_until(ready, timeout=timeout, interval=0.05,
               what=f"fresh wet level switches of {node_uid} in zone {zone_uid}")
