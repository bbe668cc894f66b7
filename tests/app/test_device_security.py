"""Device credentials issued over HTTP, enforced by the broker; node actors survive crashes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from amqtt.client import ConnectError, MQTTClient

from tests.app.conftest import Running
from tests.app.test_fleet_and_ingest import make_node, make_zone
from tests.helpers import http, wait_until

ADMIN = "admin-token-0123456789abc"
OPERATOR = "operator-token-0123456789"


@pytest.fixture
def secured(start_app: Callable[..., Running]) -> Running:
    """Production-like: tokens required, no anonymous devices."""
    return start_app(api_token=OPERATOR, admin_token=ADMIN, dev_mode=False)


def _connect_and_publish(instance: Running, username: str, password: str, topic: str, payload: dict[str, Any]) -> None:
    async def main() -> None:
        client = MQTTClient(client_id="esp32-00000000aa01", config={"auto_reconnect": False})
        await client.connect(f"mqtt://{username}:{password}@127.0.0.1:{instance.mqtt_port}/")
        await client.publish(topic, json.dumps(payload).encode(), qos=1)
        await asyncio.sleep(0.2)
        await client.disconnect()

    instance.loop.run(main())


def _seed(instance: Running) -> None:
    for path, body in (("/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}),
                       ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"}),
                       ("/api/v1/nodes", {"uid": "nd-ph-1", "hardware_id": "esp32-00000000aa01", "type": "ph",
                                          "zone_uid": "zn-1", "node_secret": "s" * 32}),
                       ("/api/v1/nodes", {"uid": "nd-ph-2", "hardware_id": "esp32-00000000aa02", "type": "ph",
                                          "zone_uid": "zn-1", "node_secret": "t" * 32})):
        assert http("POST", instance.base_url + path, body=body, token=OPERATOR).status == 201


def test_issued_credentials_connect_and_confine_the_node_to_its_namespace(secured: Running) -> None:
    _seed(secured)
    url = secured.base_url + "/api/v1/nodes/nd-ph-1/credentials"
    assert http("POST", url, token=OPERATOR).status == 403
    issued = http("POST", url, token=ADMIN)
    assert issued.status == 201
    creds = issued.json()["data"]
    assert creds["username"] == "nd-ph-1"
    with pytest.raises(ConnectError):
        _connect_and_publish(secured, "nd-ph-1", "wrong-password", "hydro/node_hello", {})
    with pytest.raises(ConnectError):  # anonymous outside dev mode
        secured.loop.run(MQTTClient(config={"auto_reconnect": False}).connect(
            f"mqtt://127.0.0.1:{secured.mqtt_port}/"))
    now = int(time.time())
    sample = {"metric_type": "PH", "value": 6.0, "ts": now}
    _connect_and_publish(secured, "nd-ph-1", creds["password"], "hydro/gh-1/zn-1/nd-ph-1/ph_sensor/telemetry", sample)
    # the same credentials cannot speak for another node: the broker drops it before the server sees it
    _connect_and_publish(secured, "nd-ph-1", creds["password"], "hydro/gh-1/zn-1/nd-ph-2/ph_sensor/telemetry",
                         {**sample, "value": 9.0})

    def stored() -> Any:
        return http("GET", secured.base_url + "/api/v1/telemetry/last?zone_uid=zn-1", token=OPERATOR).json()["data"]

    [last] = wait_until(stored)
    assert (last["node_uid"], last["value"]) == ("nd-ph-1", 6.0)
    time.sleep(0.3)
    assert len(stored()) == 1
    rotated = http("POST", url, token=ADMIN).json()["data"]["password"]
    assert rotated != creds["password"]
    with pytest.raises(ConnectError):
        _connect_and_publish(secured, "nd-ph-1", creds["password"], "hydro/node_hello", {})


def test_node_actor_crash_restarts_with_its_state(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    before = http("GET", instance.base_url + "/api/v1/nodes/nd-ph-1").json()["data"]
    assert http("POST", instance.base_url + "/api/v1/actors/nodes/nd-ph-1/restart").status == 202
    actor = http("GET", instance.base_url + "/api/v1/actors/nodes/nd-ph-1").json()["data"]
    assert (actor["state"], actor["restarts_total"]) == ("running", 1)
    after = http("GET", instance.base_url + "/api/v1/nodes/nd-ph-1").json()["data"]
    assert (after["zone_uid"], after["validated"]) == (before["zone_uid"], before["validated"])
    # still routed to: an unbind is handled by the new incarnation
    unbound = http("POST", instance.base_url + "/api/v1/nodes/nd-ph-1/unbind")
    assert unbound.status == 200, unbound.raw
    assert unbound.json()["data"]["zone_uid"] is None
