"""A simulated two-tank irrigation node pre-registered in zone ``zn-1`` of a running instance (``Node``), as the
command tests drive it; ``node_factory`` (tests/app/conftest.py) makes them and stops them after the test."""

from __future__ import annotations

from typing import Any

from hydrovisor.sim import Faults, FieldConfig, NodeOptions, SimNode
from tests.app.conftest import Running
from tests.helpers import http, wait_until
from tests.plant import IRRIG_CHANNELS, PRIMED, wait_levels_fresh

SECRET = "irrigation-secret-0123456789"
# recirculating at boot: pump_main passes the node's interlock; full tanks pass the zone's gate
OPTIONS = NodeOptions(time_scale=0.01, heartbeat_interval_s=1.0, telemetry_interval_s=5.0,
                      trust_local_clock=True, reconnect_delay_s=0.1, plant=PRIMED)
TOPIC = "hydro/gh-1/zn-1/{uid}/pump_main/command"


def _seed(instance: Running, uid: str) -> None:
    for path, body in (("/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}),
                       ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"})):
        http("POST", instance.base_url + path, body=body)
    reply = http("POST", instance.base_url + "/api/v1/nodes", body={
        "uid": uid, "hardware_id": "esp32-" + uid[-12:].rjust(12, "0"), "type": "irrig", "zone_uid": "zn-1",
        "node_secret": SECRET, "channels": IRRIG_CHANNELS})
    assert reply.status == 201, reply.raw


class Node:
    """A simulated irrigation node of the running instance."""

    def __init__(self, instance: Running, uid: str, faults: Faults | None = None) -> None:
        self.instance = instance
        self.uid = uid
        _seed(instance, uid)
        self.sim = SimNode(f"mqtt://127.0.0.1:{instance.mqtt_port}", "esp32-" + uid[-12:].rjust(12, "0"), "irrig",
                           options=OPTIONS, faults=faults,
                           field_config=FieldConfig(gh_uid="gh-1", zone_uid="zn-1", node_uid=uid, node_secret=SECRET))

    def start(self) -> None:
        async def go() -> None:
            await self.sim.start()
            await self.sim.wait_connected(10)

        self.instance.loop.run(go())
        services = self.instance.app.services
        assert services is not None
        topic = TOPIC.format(uid=self.uid)
        wait_until(lambda: self.instance.loop.run(_subscribers(services, topic)) > 0, what="node subscribed")
        wait_levels_fresh(self.instance.base_url, self.uid)  # the pump-safety gate lets pump_main start

    def stop(self) -> None:
        self.instance.loop.run(self.sim.stop())

    def command(self, **body: Any) -> Any:
        payload = {"node_uid": self.uid, "channel": "pump_main", "cmd": "run_pump",
                   "params": {"duration_ms": 2500}, **body}
        return http("POST", self.instance.base_url + "/api/v1/commands", body=payload)

    def get(self, cmd_id: str, wait: int = 0) -> Any:
        return http("GET", self.instance.base_url + f"/api/v1/commands/{cmd_id}?wait={wait}").json()["data"]

    def timeline(self, cmd_id: str) -> list[tuple[str, bool]]:
        data = http("GET", self.instance.base_url + f"/api/v1/commands/{cmd_id}/events").json()["data"]
        return [(e["status"], e["applied"]) for e in data]


async def _subscribers(services: Any, topic: str) -> int:
    count: int = services.broker.subscriber_count(topic)
    return count
