"""Safety detections from what a simulated two-tank node really does: a pump that moves no water, and a
relay welded on. Each raises its alert once (repeats count), locks the zone's pumps, and the operator's
reset resolves it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hydrovisor.sim import Faults
from tests.app.conftest import Running
from tests.app.irrig_node import Node
from tests.helpers import http, wait_until
from tests.plant import set_no_flow_window, zone_state

WINDOW_S = 2  # no_flow_window_s: how long a running pump may move no water (the minimum the settings allow: 1)


@pytest.fixture
def node(instance: Running) -> Iterator[Callable[[Faults], Node]]:
    made: list[Node] = []

    def make(faults: Faults) -> Node:
        made.append(Node(instance, "nd-irr-000000000005", faults))
        _tighten_no_flow_window(instance)
        made[-1].start()
        return made[-1]

    yield make
    for started in made:
        started.stop()


def _tighten_no_flow_window(instance: Running) -> None:
    set_no_flow_window(instance.base_url, WINDOW_S)


def _alerts(instance: Running, code: str, status: str = "ACTIVE") -> list[dict[str, Any]]:
    data = http("GET", instance.base_url + f"/api/v1/alerts?zone_uid=zn-1&status={status}").json()["data"]
    return [a for a in data if a["code"] == code]


def _done(node: Node, **body: Any) -> dict[str, Any]:
    reply = node.command(**body)
    assert reply.status in (200, 202), reply.raw
    result: dict[str, Any] = node.get(reply.json()["data"]["cmd_id"], wait=15)
    assert result["status"] == "DONE", result
    return result


def test_a_pump_that_moves_no_water_raises_no_flow_and_locks_the_zone(
    instance: Running, node: Callable[[Faults], Node],
) -> None:
    irrig = node(Faults(no_flow=True))
    # 300 s of node time (the node runs 100x faster: 3 s): DONE at the end; no water moved all along
    _done(irrig, params={"duration_ms": 300_000})
    wait_until(lambda: len(_alerts(instance, "biz_no_flow")) == 1, timeout=15, what="biz_no_flow")
    assert _alerts(instance, "biz_no_flow")[0]["details"]["role"] == "pump_main"
    refused = irrig.command()
    assert (refused.status, refused.json()["reason_code"]) == (409, "safety_lock_biz_no_flow")
    assert http("POST", instance.base_url + "/api/v1/zones/zn-1/safety/reset",
                body={"reason": "primed the pump"}).status == 200
    assert _alerts(instance, "biz_no_flow") == []
    assert len(_alerts(instance, "biz_no_flow", "RESOLVED")) == 1


def test_a_welded_relay_is_a_critical_pump_stuck_on(instance: Running, node: Callable[[Faults], Node]) -> None:
    irrig = node(Faults(stuck_relays=("pump_main",)))
    _done(irrig, cmd="set_relay", params={"state": 1})
    state = zone_state(instance.base_url)
    assert state is not None and state["actuators"]["pump_main"]["confirmed"] is True
    _done(irrig, cmd="set_relay", params={"state": 0})  # the node says DONE; current and flow go on
    wait_until(lambda: len(_alerts(instance, "biz_pump_stuck_on")) == 1, timeout=15, what="biz_pump_stuck_on")
    alert = _alerts(instance, "biz_pump_stuck_on")[0]
    assert alert["severity"] == "critical"
    final = zone_state(instance.base_url)
    assert final is not None
    assert {lock["reason_code"] for lock in final["safety_locks"]} == {"safety_lock_biz_pump_stuck_on"}
