"""SIGKILL with 100 commands in flight: after a restart every one reaches a terminal status in the
database, and none that was already SENT is published again."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from amqtt.client import MQTTClient

from tests.app.conftest import Process
from tests.helpers import http, wait_until
from tests.plant import IRRIG_CHANNELS, LEVEL_SWITCHES, wait_levels_fresh

COUNT = 100
TIMEOUT_S = 8.0


def _seed(base: str) -> None:
    for path, body in (("/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}),
                       ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"}),
                       ("/api/v1/nodes", {"uid": "nd-irr-1", "hardware_id": "esp32-0000000000a1", "type": "irrig",
                                          "zone_uid": "zn-1", "node_secret": "s" * 32,
                                          "channels": IRRIG_CHANNELS})):
        reply = http("POST", base + path, body=body)
        assert reply.status == 201, reply.raw


async def _silent_node(port: int, received: list[str], ready: asyncio.Event, stop: asyncio.Event) -> None:
    """A node that takes commands and never answers (so they stay in flight). It reports full tanks on
    connect, which the zone's pump-safety gate needs before it lets ``pump_main`` start."""
    client = MQTTClient(client_id="esp32-0000000000a1", config={"auto_reconnect": False})
    await client.connect(f"mqtt://127.0.0.1:{port}/")
    await client.subscribe([("hydro/gh-1/zn-1/nd-irr-1/+/command", 1)])
    for switch in LEVEL_SWITCHES:
        sample = {"metric_type": "WATER_LEVEL_SWITCH", "value": 1, "ts": int(time.time()), "unit": "bool"}
        await client.publish(f"hydro/gh-1/zn-1/nd-irr-1/{switch}/telemetry", json.dumps(sample).encode(), qos=1)
    ready.set()
    while not stop.is_set():
        try:
            message = await client.deliver_message(timeout_duration=0.2)
        except TimeoutError:
            continue
        except Exception:  # the broker went away with the killed process
            return
        if message is None:
            return
        received.append(json.loads(bytes(message.data))["cmd_id"])


def _publishes(base: str) -> float:
    text = http("GET", base + "/metrics").raw.decode()
    match = re.search(r'hydrovisor_command_publishes_total\{outcome="published"\} (\S+)', text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_sigkill_with_100_commands_in_flight(tmp_path: Path, pg_dsn: str, process: list[Process]) -> None:
    env = {"HYDROVISOR_DATABASE_URL": pg_dsn, "HYDROVISOR_DEV_MODE": "1"}
    first = Process(tmp_path / "data", env)
    process.append(first)
    wait_until(first.ready, timeout=60, interval=0.2)
    _seed(first.base_url)

    received: list[str] = []
    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), asyncio.Event()
    import threading  # noqa: PLC0415 - only this test needs a second loop

    node = threading.Thread(target=lambda: loop.run_until_complete(_silent_node(first.mqtt_port, received, ready,
                                                                                 stop)))
    node.start()
    wait_until(ready.is_set, timeout=10)
    wait_levels_fresh(first.base_url, "nd-irr-1")
    try:
        for i in range(COUNT):
            reply = http("POST", first.base_url + "/api/v1/commands", body={
                "cmd_id": f"c-{i}", "node_uid": "nd-irr-1", "channel": "pump_main", "cmd": "run_pump",
                "params": {"duration_ms": 1000}, "timeout_s": TIMEOUT_S})
            assert reply.status == 202, reply.raw
        wait_until(lambda: len(received) == COUNT, timeout=10, what="all commands delivered once")
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    finally:
        loop.call_soon_threadsafe(stop.set)
        node.join(10)
        loop.close()

    second = Process(tmp_path / "data", env, ports=(first.http_port, first.mqtt_port))
    process.append(second)
    wait_until(second.ready, timeout=60, interval=0.2)

    def statuses() -> dict[str, Any]:
        rows = http("GET", second.base_url + "/api/v1/commands?limit=1000").json()["data"]
        return {r["cmd_id"]: r["status"] for r in rows}

    wait_until(lambda: len(statuses()) == COUNT and all(s == "TIMEOUT" for s in statuses().values()),
               timeout=TIMEOUT_S + 30, interval=0.5, what="every command terminal after the restart")
    assert _publishes(second.base_url) == 0.0  # SENT commands are adopted, never published again
    assert sorted(received) == sorted(f"c-{i}" for i in range(COUNT))
    events = http("GET", second.base_url + "/api/v1/commands/c-7/events").json()["data"]
    assert [(e["status"], e["applied"]) for e in events] == [("QUEUED", True), ("SENT", True), ("TIMEOUT", True)]
