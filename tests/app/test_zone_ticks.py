"""A zone actor ticks only while something time-based is pending in its state (``ZoneState.next_deadline``):
an idle zone gets no tick at all, and a pending condition is still raised on time, in real and in scaled
zone time. Real app: PostgreSQL, HTTP, the actor tree; the zone's command statuses are told to its actor."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from hydrovisor.actors.zone import ZoneActor, ZoneCommandStatus, _Tick
from hydrovisor.zoneplane.spawn import zone_actor_path
from tests.app.conftest import Running
from tests.helpers import http, wait_until
from tests.plant import set_no_flow_window

NODE = "nd-irr-1"
CHANNELS = [
    {"name": "pump_main", "type": "ACTUATOR", "actuator_type": "PUMP", "relay_type": "NC"},
    {"name": "flow", "type": "SENSOR", "metric": "FLOW_RATE"},  # a flow sensor: no_flow is watched
]
WINDOW_REAL_S = 3.0  # no_flow_window_s, in real seconds whatever the time scale


@pytest.fixture
def ticks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    """Every ``_Tick`` a zone actor handles: (zone uid, zone time)."""
    seen: list[tuple[str, float]] = []
    handle = ZoneActor._on_message

    def counting(self: ZoneActor, message: Any, now: float) -> Any:
        if isinstance(message, _Tick):
            seen.append((self.uid, now))
        return handle(self, message, now)

    monkeypatch.setattr(ZoneActor, "_on_message", counting)
    return seen


def _state(instance: Running) -> dict[str, Any]:
    reply = http("GET", instance.base_url + "/api/v1/zones/zn-1/state")
    assert reply.status == 200, reply.raw
    data: dict[str, Any] = reply.json()["data"]
    return data


def _zone(instance: Running, window_s: int) -> None:
    assert http("POST", instance.base_url + "/api/v1/greenhouses", body={"uid": "gh-1", "name": "Main"}).status == 201
    assert http("POST", instance.base_url + "/api/v1/zones",
                body={"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "zn-1"}).status == 201
    reply = http("POST", instance.base_url + "/api/v1/nodes", body={
        "uid": NODE, "hardware_id": "esp32-0000000000a1", "type": "irrig", "zone_uid": "zn-1",
        "node_secret": "s" * 32, "channels": CHANNELS})
    assert reply.status == 201, reply.raw
    version = set_no_flow_window(instance.base_url, window_s)
    # the latest load wins (the node's channels were bound before): flow and pump_main have their roles
    wait_until(lambda: http("GET", instance.base_url + "/api/v1/zones/zn-1/state").status == 200
               and _state(instance)["settings_version"] == version, what="the new settings")


def _relay(instance: Running, cmd_id: str, on: bool) -> None:
    """``set_relay`` on pump_main sent, then DONE (what the command plane tells the zone)."""
    assert instance.app.services is not None
    for status in ("SENT", "DONE"):
        instance.app.services.system.tell(zone_actor_path("zn-1"), ZoneCommandStatus(
            cmd_id, NODE, "pump_main", "set_relay", {"state": int(on)}, status, None, None))


def _no_flow(instance: Running) -> list[dict[str, Any]]:
    return [a for a in _state(instance)["state"]["alerts"] if a["code"] == "biz_no_flow"]


# a scaled clock: the deadline goes through real_seconds (scale 1 runs the same code, slower)
@pytest.mark.parametrize("scale", [20.0])
def test_an_idle_zone_is_not_ticked_and_a_pending_no_flow_is_raised_on_time(
    start_app: Callable[..., Running], ticks: list[tuple[str, float]], scale: float,
) -> None:
    instance = start_app(time_scale=scale)
    window = int(WINDOW_REAL_S * scale)  # zone seconds
    _zone(instance, window)

    # idle: the old design ticked every zone second here (3 times at scale 1, 60 times at scale 20)
    ticks.clear()
    time.sleep(WINDOW_REAL_S)
    assert ticks == []

    # a running pump with no flow: one tick, at the end of its window
    _relay(instance, "start-1", on=True)
    wait_until(lambda: _no_flow(instance) != [], timeout=WINDOW_REAL_S + 10, what="biz_no_flow")
    since = _state(instance)["state"]["actuators"]["pump_main"]["since"]
    late = _no_flow(instance)[0]["first_seen"] - (since + window)
    # never early; late by at most one tick of the old design (1 zone s) and a quarter second of timer lag
    assert 0 <= late <= 1.0 + 0.25 * scale, late
    assert 1 <= len(ticks) <= 2, ticks

    # the pump stops, then the operator resets (a reset while it still ran dry of flow would raise
    # biz_no_flow again at once): a stop settles for a window (pump_stuck_on), then nothing is due
    _relay(instance, "stop-1", on=False)
    wait_until(lambda: _state(instance)["state"]["actuators"]["pump_main"]["confirmed"] is False,
               what="the pump stopped")
    assert http("POST", instance.base_url + "/api/v1/zones/zn-1/safety/reset",
                body={"reason": "primed the pump"}).status == 200
    time.sleep(WINDOW_REAL_S + 0.5)
    ticks.clear()
    time.sleep(2.0)
    assert ticks == []
    assert _state(instance)["state"]["alerts"] == []  # no stuck-on: no current, no flow after the stop
