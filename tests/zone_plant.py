"""A two-tank zone of a running instance with its three simulated nodes (irrigation, pH, EC) sharing one plant.

The nodes and the plant run on the server's own (scaled) clock, so zone time, node time and the plant agree:
``time_scale`` 20 makes a 20-minute clean fill last a minute of real time. Node uids are derived from the
zone uid, so several zones can share one instance. Used by the workflow tests and the fault campaign.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from hydrovisor.sim import Faults, FieldConfig, NodeOptions, PlantOptions, SimNode
from hydrovisor.sim.nodeconfig import channel_wire
from hydrovisor.sim.physics import WaterPhysics
from hydrovisor.sim.profiles import profile_for
from tests.helpers import http, wait_until

SECRET = "zone-plant-secret-0123456789"
SMALL_PLANT = PlantOptions(clean_capacity_l=40.0, solution_capacity_l=20.0, clean_start_pct=0.0,
                           solution_start_pct=0.0, mains_fill_lpm=60.0, pump_flow_lpm=60.0)
"""Empty tanks that fill in seconds of zone time (a whole startup runs in a few real seconds at scale 20); the
clean tank holds twice the solution tank, so one clean fill is enough to fill the solution tank."""
FAST_SETTINGS: dict[str, Any] = {
    "correction": {"window_s": 20, "min_samples": 3, "cooldown_s": 20, "stale_s": 60},
    "timeouts": {"clean_fill_s": 600, "solution_fill_s": 600, "prepare_recirculation_s": 900, "irrigation_s": 600},
}
"""Settings for a fast plant: short correction windows (the nodes report every few zone seconds)."""
NODE_TYPES = ("irrig", "ph", "ec")
SINGLE_TANK_TYPES = ("recirculation", "ph", "ec")
SINGLE_TANK_PLANT = PlantOptions(topology="single_tank", solution_capacity_l=20.0, solution_start_pct=100.0,
                                 mains_fill_lpm=60.0, pump_flow_lpm=60.0, drain_lpm=60.0)
"""A full single tank that drains and refills in tens of zone seconds."""
SINGLE_TANK_SETTINGS: dict[str, Any] = {
    "topology": "single_tank",
    "timeouts": {"drain_s": 300, "fill_s": 300, "stabilize_s": 20},
    "correction": FAST_SETTINGS["correction"],
}
CHANNEL_FIELDS = ("name", "type", "metric", "unit", "actuator_type", "relay_type", "safe_limits", "ml_per_second")
"""What ``POST /api/v1/nodes`` takes of a channel."""
TERMINAL = ("completed", "failed", "cancelled")


def node_uid(zone_uid: str, node_type: str) -> str:
    """``nd-<type>-<12 hex of the zone uid>``: stable per zone."""
    digest = hashlib.sha1(zone_uid.encode()).hexdigest()[:12]
    return f"nd-{node_type[:3]}-{digest}"


def hardware_id(uid: str) -> str:
    """The node's hardware id (``esp32-`` + 12 hex)."""
    return "esp32-" + hashlib.sha1(uid.encode()).hexdigest()[:12]


class PlantZone:
    """See the module docstring. ``start()`` then drive it over HTTP; ``stop()`` after."""

    def __init__(self, instance: Any, zone_uid: str = "zn-1", *, gh_uid: str = "gh-1",
                 plant: PlantOptions = SMALL_PLANT, settings: dict[str, Any] | None = None, seed: int = 1,
                 telemetry_interval_s: float = 0.25, faults: dict[str, Faults] | None = None,
                 node_types: tuple[str, ...] = NODE_TYPES) -> None:
        self.instance = instance
        self.zone_uid = zone_uid
        self.gh_uid = gh_uid
        self.settings = settings if settings is not None else FAST_SETTINGS
        services = instance.app.services
        assert services is not None
        self.clock = services.zone_plane.clock
        self.physics = WaterPhysics(seed, clock=self.clock, plant=plant)
        self.uids = {node_type: node_uid(zone_uid, node_type) for node_type in node_types}
        options = NodeOptions(heartbeat_interval_s=1.0, telemetry_interval_s=telemetry_interval_s,
                              reconnect_delay_s=0.1, plant=plant, plant_tick_s=0.05)
        self.nodes = {
            node_type: SimNode(f"mqtt://127.0.0.1:{instance.mqtt_port}", hardware_id(uid), node_type,
                               options=options, faults=(faults or {}).get(node_type), seed=seed, clock=self.clock,
                               physics=self.physics,
                               field_config=FieldConfig(gh_uid=gh_uid, zone_uid=zone_uid, node_uid=uid,
                                                        node_secret=SECRET))
            for node_type, uid in self.uids.items()}

    @property
    def base_url(self) -> str:
        """The instance's HTTP base URL."""
        return str(self.instance.base_url)

    def start(self) -> None:
        """Create the greenhouse (if needed) and the zone, register the nodes, connect them, and wait until
        the zone hears them (online, fresh level switches)."""
        http("POST", self.base_url + "/api/v1/greenhouses", body={"uid": self.gh_uid, "name": self.gh_uid})
        reply = http("POST", self.base_url + "/api/v1/zones", body={
            "greenhouse_uid": self.gh_uid, "uid": self.zone_uid, "name": self.zone_uid, "settings": self.settings})
        assert reply.status == 201, reply.raw
        for node_type, uid in self.uids.items():
            channels = [{k: v for k, v in channel_wire(c).items() if k in CHANNEL_FIELDS and v is not None}
                        for c in profile_for(node_type).channels]
            reply = http("POST", self.base_url + "/api/v1/nodes", body={
                "uid": uid, "hardware_id": hardware_id(uid), "type": node_type, "zone_uid": self.zone_uid,
                "node_secret": SECRET, "channels": channels})
            assert reply.status == 201, reply.raw

        async def go() -> None:
            for node in self.nodes.values():
                await node.start()
            for node in self.nodes.values():
                await node.wait_connected(10)

        self.instance.loop.run(go())
        wait_until(self.heard, timeout=20, interval=0.05, what=f"zone {self.zone_uid} hearing its nodes")

    def heard(self) -> bool:
        """The zone has every node online and fresh level switches."""
        state = self.state()
        if state is None or not all(state["nodes_online"].get(uid) for uid in self.uids.values()):
            return False
        tanks = ("level_clean_min", "level_solution_min") if "irrig" in self.uids else ("level_solution_min",)
        return all(name in state["levels"] for name in tanks)

    def stop(self) -> None:
        """Disconnect the nodes."""
        async def go() -> None:
            for node in self.nodes.values():
                await node.stop()

        self.instance.loop.run(go())

    def state(self) -> dict[str, Any] | None:
        """The zone's live state, None while it is not ready."""
        reply = http("GET", f"{self.base_url}/api/v1/zones/{self.zone_uid}/state")
        if reply.status != 200:
            return None
        state: dict[str, Any] = reply.json()["data"]["state"]
        return state

    def start_workflow(self, wf_type: str, **params: Any) -> Any:
        """``POST .../workflows``; the raw reply."""
        return http("POST", f"{self.base_url}/api/v1/zones/{self.zone_uid}/workflows",
                    body={"type": wf_type, "params": params})

    def workflow(self, wf_id: str) -> dict[str, Any]:
        """``GET .../workflows/{id}``'s data."""
        reply = http("GET", f"{self.base_url}/api/v1/zones/{self.zone_uid}/workflows/{wf_id}")
        assert reply.status == 200, reply.raw
        data: dict[str, Any] = reply.json()["data"]
        return data

    def run(self, wf_type: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Start a workflow and wait for its end; returns the final record."""
        reply = self.start_workflow(wf_type, **params)
        assert reply.status == 202, reply.raw
        return self.wait_end(reply.json()["data"]["id"], timeout)

    def wait_end(self, wf_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the workflow is terminal."""
        def ended() -> dict[str, Any] | None:
            record = self.workflow(wf_id)
            return record if record["status"] in TERMINAL else None

        found: dict[str, Any] = wait_until(ended, timeout=timeout, interval=0.1, what=f"workflow {wf_id} to end")
        return found

    def wait_stage(self, wf_id: str, stage: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the workflow is in ``stage`` (or has ended)."""
        def there() -> dict[str, Any] | None:
            record = self.workflow(wf_id)
            return record if record["stage"] == stage or record["status"] in TERMINAL else None

        found: dict[str, Any] = wait_until(there, timeout=timeout, interval=0.05,
                                           what=f"workflow {wf_id} in stage {stage}")
        return found

    def events(self) -> list[dict[str, Any]]:
        """The zone's timeline."""
        reply = http("GET", f"{self.base_url}/api/v1/zones/{self.zone_uid}/events?limit=5000")
        assert reply.status == 200, reply.raw
        items: list[dict[str, Any]] = reply.json()["data"]
        return items

    def all_stopped(self) -> bool:
        """The plant, physically: no pump running, no valve open."""
        return not self.physics.pumps and not self.physics.valves

    def settle(self, seconds: float) -> None:
        """Let the plant run for ``seconds`` real seconds."""
        time.sleep(seconds)
