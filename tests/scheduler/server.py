"""A real ``hydrovisor run`` subprocess (embedded PostgreSQL in its data dir) with one zone and a simulated light
node driven from the test process, for the scheduler's fault tests.

The server is the fault campaign's :class:`benchmarks._campaign.Server` (fixed ports and one data dir, so a
restart after ``kill -9`` is the same instance and the node reconnects to it). :class:`LightZone` records, per
``cmd_id``, every command payload that reached the node (``delivered``) and every one the node acted on
(``executed``: admitted and not answered from its ``cmd_id`` cache), so a test can tell a command that reached
the node twice from one that was executed twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks._campaign import Server
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.sim import Faults, FieldConfig, NodeOptions, SimNode
from hydrovisor.sim.nodeconfig import channel_wire
from hydrovisor.sim.profiles import profile_for
from hydrovisor.zones.clock import clock_for_scale
from tests.helpers import http, wait_until
from tests.zone_plant import CHANNEL_FIELDS, FAST_SETTINGS, SECRET, hardware_id, node_uid

__all__ = ["LightZone", "Server", "db_dsn", "post_task", "spawn_ready"]


def spawn_ready(server: Server, timeout: float = 120.0) -> float:
    """Start ``server`` and wait until ``/health/ready``; returns the seconds it took."""
    began = time.monotonic()
    server.spawn()

    def ready() -> bool:
        if not server.alive:
            raise AssertionError(f"hydrovisor exited early; see {server.log_path}:\n{tail(server)}")
        try:
            return http("GET", server.base_url + "/health/ready", timeout=2).status == 200
        except OSError:
            return False

    wait_until(ready, timeout=timeout, interval=0.1, what="hydrovisor ready")
    return time.monotonic() - began


def tail(server: Server, lines: int = 60) -> str:
    """The end of the server's log."""
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


def db_dsn(data_dir: Path) -> str:
    """The DSN of the embedded PostgreSQL of ``data_dir`` (from its ``postmaster.pid``: port, socket dir)."""
    lines = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres@/postgres?host={urllib.parse.quote(socket_dir, safe='')}&port={port}"


async def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """One query on a fresh connection (the server may have been restarted since the last one)."""
    conn = await asyncpg.connect(dsn)
    try:
        return [dict(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def post_task(base_url: str, zone_uid: str, task_type: str, payload: dict[str, Any], *, due_in: float,
              expires_in: float, correlation_id: str | None = None) -> dict[str, Any]:
    """``POST /api/v1/tasks`` (201 asserted); the task."""
    now = dt.datetime.now(dt.UTC)
    reply = http("POST", base_url + "/api/v1/tasks", body={
        "zone_uid": zone_uid, "task_type": task_type, "payload": payload,
        "due_at": (now + dt.timedelta(seconds=due_in)).isoformat(),
        "expires_at": (now + dt.timedelta(seconds=expires_in)).isoformat(),
        "correlation_id": correlation_id or f"fault-{uuid.uuid4().hex}"})
    assert reply.status == 201, reply.raw
    task: dict[str, Any] = reply.json()["data"]
    return task


class LightZone:
    """A zone with one simulated ``light`` node on a server reached over HTTP and MQTT (see the module
    docstring). ``start()``, then post lighting tasks; ``stop()`` after."""

    def __init__(self, loop: LoopThread, base_url: str, mqtt_port: int, zone_uid: str = "zn-f1", *,
                 gh_uid: str = "gh-f1", faults: Faults | None = None) -> None:
        self.loop = loop
        self.base_url = base_url
        self.zone_uid = zone_uid
        self.gh_uid = gh_uid
        self.uid = node_uid(zone_uid, "light")
        self.delivered: Counter[str] = Counter()  # cmd_id -> command payloads that reached the node
        self.executed: Counter[str] = Counter()  # cmd_id -> times the node acted on it
        options = NodeOptions(heartbeat_interval_s=1.0, telemetry_interval_s=1.0, reconnect_delay_s=0.1)
        self.node = SimNode(f"mqtt://127.0.0.1:{mqtt_port}", hardware_id(self.uid), "light", options=options,
                            faults=faults, seed=1, clock=clock_for_scale(1.0),
                            field_config=FieldConfig(gh_uid=gh_uid, zone_uid=zone_uid, node_uid=self.uid,
                                                     node_secret=SECRET))
        self._instrument()

    def _instrument(self) -> None:
        responder = self.node._responder
        handle, plan = responder.handle, responder._actions.plan

        async def counted_handle(channel: str, data: bytes, *, secret: str | None) -> None:
            try:
                cmd_id = json.loads(data).get("cmd_id")
            except ValueError:
                cmd_id = None
            if isinstance(cmd_id, str):
                self.delivered[cmd_id] += 1
            await handle(channel, data, secret=secret)

        def counted_plan(channel: str, command: Any) -> Any:
            self.executed[command.cmd_id] += 1
            return plan(channel, command)

        responder.handle = counted_handle  # type: ignore[method-assign]
        responder._actions.plan = counted_plan  # type: ignore[method-assign]

    def start(self) -> None:
        """Create the greenhouse, the zone and the node over HTTP, connect the node, wait until the zone
        sees it online."""
        http("POST", self.base_url + "/api/v1/greenhouses", body={"uid": self.gh_uid, "name": self.gh_uid})
        reply = http("POST", self.base_url + "/api/v1/zones", body={
            "greenhouse_uid": self.gh_uid, "uid": self.zone_uid, "name": self.zone_uid, "settings": FAST_SETTINGS})
        assert reply.status == 201, reply.raw
        channels = [{k: v for k, v in channel_wire(c).items() if k in CHANNEL_FIELDS and v is not None}
                    for c in profile_for("light").channels]
        reply = http("POST", self.base_url + "/api/v1/nodes", body={
            "uid": self.uid, "hardware_id": hardware_id(self.uid), "type": "light", "zone_uid": self.zone_uid,
            "node_secret": SECRET, "channels": channels})
        assert reply.status == 201, reply.raw

        async def go() -> None:
            await self.node.start()
            await self.node.wait_connected(10)

        self.loop.run(go())
        wait_until(self.online, timeout=20, interval=0.05, what=f"zone {self.zone_uid} seeing its light node")

    def online(self) -> bool:
        """The zone sees the node online."""
        reply = http("GET", f"{self.base_url}/api/v1/zones/{self.zone_uid}/state")
        if reply.status != 200:
            return False
        return bool(reply.json()["data"]["state"]["nodes_online"].get(self.uid))

    def stop(self) -> None:
        """Disconnect the node."""
        self.loop.run(asyncio.wait_for(self.node.stop(), 15))
