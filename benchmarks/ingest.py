"""Ingest bursts: does every acknowledged QoS 1 telemetry sample get stored, and how fast? (issue 9, item 5)

Publishers: N devices x M telemetry samples each (a unique ``ts`` per sample, one channel topic per
device, ``hydro/gh-ingest/zn-ingest/<node>/ph_sensor/telemetry``), QoS 1, up to ``--window`` (50) in
flight per connection, every device disconnecting right after its last PUBACK - a firmware flushing
its offline buffer on reconnect, a battery node publishing and leaving. Two publisher kinds:

- ``mosquitto_pub``: ``mosquitto_pub -l -q 1 -M 50 -d`` per device, the payloads on stdin (a file),
  PUBACKs counted from its debug output ("received PUBACK"). Only when ``mosquitto_pub`` is on PATH
  (Debian ``mosquitto-clients``); skipped with a note otherwise.
- ``python``: ``hydrovisor.sim.pipeline_client.PipelineClient`` (raw MQTT 3.1.1 on an asyncio socket:
  every slot freed by PUBACKs is refilled at once), all devices in one separate process, connected
  first, then all publishing at the same moment; records each message's send -> PUBACK latency.

Targets, in one run, one after the other for each scenario and publisher kind (the order alternates):

- ``amqtt``: a bare amqtt 0.12 broker (``amqtt.broker.Broker``, anonymous, no other plugins) in a
  subprocess; "stored" = messages delivered to a counting subscriber (``PipelineClient``, ``hydro/#``
  at QoS 1, in its own process), unique payloads.
- ``mosquitto``: Mosquitto (``mosquitto`` on PATH, Debian package ``mosquitto``; no persistence,
  unlimited queue for the subscriber), same counting subscriber. Skipped with a note when missing.
- ``hydrovisor``: ``python -m hydrovisor run`` in a subprocess (dev mode, embedded PostgreSQL in a
  temporary data dir, free ports on 127.0.0.1). A greenhouse, a zone and the nodes (uid
  ``nd-ingest-NNN``, hardware id = the client id ``esp32-<12 hex>``) are created over the HTTP API,
  bound to the zone, so their samples are accepted. "stored" = rows in ``telemetry_samples`` with the
  burst's ``ts`` range (read from PostgreSQL over its Unix socket), counted until stable. The
  devices connect anonymously (dev mode).

Per burst: acknowledged (PUBACKs the publishers received), stored, lost = acknowledged - stored
(target 0; samples stored without a PUBACK show as a negative loss), duplicates, rows/s = stored /
(first publish -> last sample stored), PUBACK latency p50/p99 (python publisher only). For
hydrovisor also the ``/metrics`` telemetry counters of the burst (accepted, dropped by reason).
Targets: 0 lost everywhere; hydrovisor rows/s >= 0.8x bare amqtt delivery (same scenario and
publisher); p99 PUBACK latency <= 250 ms at half load: 20 devices, python publisher paced at half
the bare amqtt broker's delivery rate in this run's 20-device python burst (the throughput hydrovisor
should reach 0.8x of; hydrovisor's own rates are no reference while it acknowledges what it then
loses; ``--half-rate`` overrides), for ~10 s (quick 2 s), against bare amqtt and hydrovisor.

"Stable": a target's count is final once it reached the acknowledged count, or did not change for
``SETTLE`` s after the publishers finished (at most ``STORE_TIMEOUT`` s).

Scenarios: 20 x 2,000 and 200 x 200 (``--scenarios``; quick 5 x 100 and 20 x 10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _instance import metric_sum, register, scrape
from _stats import Row, fmt_ms, fmt_rate, header, parse_args, print_table, ratio, summarize, upper_bound

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 50
TARGET_RATIO = 0.8
TARGET_P99 = 0.25  # seconds, at half load
GH, ZONE, CHANNEL = "gh-ingest", "zn-ingest", "ph_sensor"
SETTLE = 3.0  # seconds without a new row/delivery after the publishers finished = final
STORE_TIMEOUT = 300.0
POLL = 0.1
TS_STEP = 0.001  # seconds between the samples of one device
TS_GAP = 100.0  # seconds between the ts ranges of two bursts
HALF_SECONDS = 10.0
HALF_DEVICES = 20
RATE_FLOOR = 10.0  # half-load rate (msg/s) when the reference burst delivered nothing
PUBACK_RE = re.compile(rb"received PUBACK")


def client_id(index: int) -> str:
    """Client id (and hardware id) of device ``index``."""
    return f"esp32-{0xB0_0000_0000 + index:012x}"


def node_uid(index: int) -> str:
    return f"nd-ingest-{index:03d}"


def topic(index: int) -> str:
    return f"hydro/{GH}/{ZONE}/{node_uid(index)}/{CHANNEL}/telemetry"


def payloads(samples: int, ts_base: float, device: int) -> list[bytes]:
    """The telemetry payloads of one device: a unique ``ts`` per sample (ms apart)."""
    return [json.dumps({"metric_type": "PH", "value": round(5.5 + (i + device) % 100 / 100, 3), "unit": "pH",
                        "ts": round(ts_base + i * TS_STEP, 3)}, separators=(",", ":")).encode()
            for i in range(samples)]


def free_port() -> int:
    """A TCP port nobody listens on right now (small race; good enough here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _emit(**data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


# workers (this file run with --worker ...) ------------------------------------------------------


def amqtt_broker_worker(port: int) -> None:
    """A bare amqtt broker on ``port`` until stdin closes."""
    import logging  # noqa: PLC0415

    from amqtt.broker import Broker  # noqa: PLC0415

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)

    async def main() -> None:
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                  "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}}
        broker = Broker(config)
        await broker.start()
        _emit(event="ready")
        await asyncio.to_thread(sys.stdin.read)
        await broker.shutdown()

    asyncio.run(main())


def subscriber_worker(port: int) -> None:
    """Counting subscriber on ``hydro/#`` (QoS 1): answers ``report`` lines on stdin, ends on EOF."""
    from hydrovisor.sim.pipeline_client import Incoming, PipelineClient  # noqa: PLC0415

    seen: set[bytes] = set()
    state = {"received": 0, "last": math.nan}

    def count(message: Incoming) -> None:
        state["received"] += 1
        state["last"] = message.received
        seen.add(message.topic.encode() + b"\0" + message.payload)

    async def main() -> None:
        client = PipelineClient("bench-ingest-counter", keep_alive=60, on_message=count)
        await client.connect("127.0.0.1", port)
        granted = await client.subscribe([("hydro/#", 1)])
        _emit(event="ready", granted=granted)
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line != "report":
                break
            _emit(event="report", received=state["received"], unique=len(seen), last=state["last"],
                  closed=client.close_reason)
        await client.disconnect()

    asyncio.run(main())


def publish_worker(spec_path: str) -> None:
    """Python publishers: connect every device, then publish all bursts at once; report as JSON."""
    from hydrovisor.sim.pipeline_client import Message, PipelineClient  # noqa: PLC0415

    spec = json.loads(Path(spec_path).read_text())
    port, window, rate = int(spec["port"]), int(spec["window"]), spec["rate"]
    devices: list[int] = spec["devices"]
    clients = [PipelineClient(client_id(d), keep_alive=60) for d in devices]
    errors: list[str] = []

    async def one(client: PipelineClient, device: int) -> None:
        messages = [Message(topic(device), p) for p in payloads(int(spec["samples"]), float(spec["ts_base"]), device)]
        try:
            await client.publish_all(messages, window=window, rate=rate, ack_timeout=60.0)
            await client.disconnect()
        except Exception as exc:  # reported, the benchmark goes on
            errors.append(f"{client.client_id}: {type(exc).__name__}: {exc}")
            client.abort()

    async def main() -> dict[str, Any]:
        sem = asyncio.Semaphore(32)

        async def connect(client: PipelineClient) -> None:
            async with sem:
                await client.connect("127.0.0.1", port, connect_timeout=30.0)

        began = time.monotonic()
        await asyncio.gather(*(connect(c) for c in clients))
        t0 = time.monotonic()
        await asyncio.gather(*(one(c, d) for c, d in zip(clients, devices, strict=True)))
        t1 = time.monotonic()
        return {"t0": t0, "t1": t1, "connect_s": t0 - began}

    result = asyncio.run(main())
    result.update(acked=sum(len(c.acks) for c in clients), sent=sum(c.sent for c in clients), errors=errors[:5],
                  failed=len(errors), latencies=[round(a.latency, 6) for c in clients for a in c.acks])
    _emit(**result)


# targets ------------------------------------------------------------------------------------------


class Target:
    """Something to publish to and count what it kept."""

    name = "?"
    port = 0

    def baseline(self) -> Any:
        """Whatever ``count`` needs to count only this burst."""
        return None

    def count(self, base: Any, ts_range: tuple[float, float]) -> tuple[int, int, float]:
        """(stored, duplicates, monotonic time of the last one stored) since ``base``."""
        raise NotImplementedError

    def progress(self, base: Any) -> int:
        """A cheap count of what arrived since ``base`` (for the stability poll)."""
        return self.count(base, (0.0, math.inf))[0]

    def extra(self, base: Any) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class Subscriber:
    """The counting subscriber process."""

    def __init__(self, port: int, log: Path) -> None:
        self._log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "subscriber", "--port", str(port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     bufsize=1, cwd=ROOT)
        ready = self._read()
        if ready.get("granted") != [1]:
            raise RuntimeError(f"subscriber not granted QoS 1: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"subscriber ended (rc={self.proc.poll()}); see {self._log.name}")
        data: dict[str, Any] = json.loads(line)
        return data

    def report(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class BrokerTarget(Target):
    """A broker process plus the counting subscriber; "stored" = unique messages delivered."""

    proc: subprocess.Popen[Any]
    subscriber: Subscriber

    def baseline(self) -> Any:
        return self.subscriber.report()

    def count(self, base: Any, ts_range: tuple[float, float]) -> tuple[int, int, float]:
        now = self.subscriber.report()
        received, unique = now["received"] - base["received"], now["unique"] - base["unique"]
        return unique, received - unique, float(now["last"])

    def progress(self, base: Any) -> int:
        return int(self.subscriber.report()["received"] - base["received"])

    def close(self) -> None:
        self.subscriber.close()
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class AmqttTarget(BrokerTarget):
    name = "amqtt"

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self._log = (tmp / "amqtt.log").open("w")
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", "amqtt-broker", "--port", str(self.port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     cwd=ROOT)
        assert self.proc.stdout is not None
        if json.loads(self.proc.stdout.readline() or "{}").get("event") != "ready":
            raise RuntimeError(f"amqtt broker did not start; see {self._log.name}")
        self.subscriber = Subscriber(self.port, tmp / "amqtt-subscriber.log")


class MosquittoTarget(BrokerTarget):
    name = "mosquitto"

    def __init__(self, tmp: Path, binary: str) -> None:
        self.port = free_port()
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"max_queued_messages 0\nlog_dest file {tmp / 'mosquitto.log'}\nlog_type error\n"
                        "log_type warning\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.subscriber = Subscriber(self.port, tmp / "mosquitto-subscriber.log")


class HydrovisorTarget(Target):
    """``python -m hydrovisor run`` (dev mode, embedded PostgreSQL); counts rows in ``telemetry_samples``."""

    name = "hydrovisor"

    def __init__(self, tmp: Path, devices: int, src: Path = ROOT) -> None:
        self.port, http_port = free_port(), free_port()
        self.data_dir = tmp / "hydrovisor-data"
        self.base_url = f"http://127.0.0.1:{http_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HYDROVISOR_")}
        env.update({"HYDROVISOR_DATA_DIR": str(self.data_dir), "HYDROVISOR_DEV_MODE": "1",
                    "HYDROVISOR_HTTP_HOST": "127.0.0.1", "HYDROVISOR_HTTP_PORT": str(http_port),
                    "HYDROVISOR_MQTT_HOST": "127.0.0.1", "HYDROVISOR_MQTT_PORT": str(self.port)})
        if src != ROOT:
            env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
        self.log = tmp / "hydrovisor.log"
        self._log = self.log.open("wb")
        began = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "hydrovisor", "run"], cwd=src, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.loop = asyncio.new_event_loop()
        self.conn: Any = None
        try:
            while not self._ready():
                if self.proc.poll() is not None or time.monotonic() - began > 120:
                    raise RuntimeError(f"hydrovisor did not become ready (rc={self.proc.poll()}); see {self.log}")
                time.sleep(0.1)
            self.ready_s = time.monotonic() - began
            nodes = [{"uid": node_uid(i), "hardware_id": client_id(i), "type": "ph", "zone_uid": ZONE,
                      "node_secret": f"bench-ingest-secret-{i:04d}"} for i in range(devices)]
            self.register_s = register(self.base_url, GH, ZONE, nodes)
            self.conn = self.loop.run_until_complete(self._connect())
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/health/ready", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    async def _connect(self) -> Any:
        """asyncpg over the embedded PostgreSQL's Unix socket (from its ``postmaster.pid``)."""
        import asyncpg  # noqa: PLC0415

        lines = (self.data_dir / "pg" / "postmaster.pid").read_text().splitlines()
        return await asyncpg.connect(host=lines[4].strip(), port=int(lines[3]), user="postgres", database="postgres")

    def sql(self, query: str, *args: Any) -> Any:
        return self.loop.run_until_complete(self.conn.fetchrow(query, *args))

    def baseline(self) -> Any:
        return {"wall": time.time(), "metrics": scrape(self.base_url)}

    def count(self, base: Any, ts_range: tuple[float, float]) -> tuple[int, int, float]:
        row = self.sql("SELECT count(*) AS n, count(DISTINCT (node_uid, channel, ts)) AS u FROM telemetry_samples "
                       "WHERE zone_uid = $1 AND ts >= to_timestamp($2) AND ts < to_timestamp($3)",
                       ZONE, ts_range[0], ts_range[1])
        return int(row["u"]), int(row["n"]) - int(row["u"]), math.nan

    def progress(self, base: Any) -> int:
        # received_at (start of the writer's transaction) has a BRIN index: cheap to poll
        return int(self.sql("SELECT count(*) AS n FROM telemetry_samples WHERE received_at >= to_timestamp($1)",
                            base["wall"] - 1.0)["n"])

    def extra(self, base: Any) -> dict[str, Any]:
        before, after = base["metrics"], scrape(self.base_url)

        def delta(name: str, **labels: str) -> float:
            return metric_sum(after, name, **labels) - metric_sum(before, name, **labels)

        dropped: dict[str, float] = {}
        for key in after:
            if key.startswith("hydrovisor_telemetry_dropped_total{"):
                labels = dict(p.split("=", 1) for p in key.partition("{")[2].rstrip("}").split(",") if p)
                d = delta("hydrovisor_telemetry_dropped_total", **labels)
                if d:
                    dropped[labels.get("reason", "?")] = dropped.get(labels.get("reason", "?"), 0.0) + d
        return {"accepted": delta("hydrovisor_telemetry_accepted_total"),
                "stored_metric": delta("hydrovisor_telemetry_stored_total"), "dropped": dropped}

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.conn.close(timeout=5))
        self.loop.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# publishers ---------------------------------------------------------------------------------------


@dataclass
class Published:
    """What the publishers saw."""

    acked: int
    sent: int
    t0: float  # monotonic: publishing starts
    t1: float  # monotonic: the last publisher finished
    latencies: list[float] = field(default_factory=list)
    failed: int = 0  # publishers that did not finish cleanly
    errors: list[str] = field(default_factory=list)
    connect_s: float = math.nan


@dataclass(frozen=True)
class Load:
    """What the publishers send: ``devices`` x ``samples`` from ``ts_base`` on, ``window`` in flight,
    ``rate`` msg/s per device (None: as fast as the PUBACKs allow)."""

    port: int
    devices: int
    samples: int
    ts_base: float
    window: int
    rate: float | None = None


def publish_python(load: Load, tmp: Path) -> Published:
    """The python publishers in their own process (``publish_worker``)."""
    devices = load.devices
    spec = tmp / "publish-spec.json"
    spec.write_text(json.dumps({"port": load.port, "devices": list(range(devices)), "samples": load.samples,
                                "ts_base": load.ts_base, "window": load.window, "rate": load.rate}))
    with (tmp / "publishers.log").open("a") as log:
        proc = subprocess.run([sys.executable, __file__, "--worker", "publish", "--spec", str(spec)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=log, text=True, timeout=STORE_TIMEOUT * 2, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return Published(0, 0, time.monotonic(), time.monotonic(), failed=devices,
                         errors=[f"publisher process failed (rc={proc.returncode}); see {tmp / 'publishers.log'}"])
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return Published(acked=data["acked"], sent=data["sent"], t0=data["t0"], t1=data["t1"],
                     latencies=data["latencies"], failed=data["failed"], errors=data["errors"],
                     connect_s=data["connect_s"])


def publish_mosquitto(binary: str, load: Load, tmp: Path) -> Published:
    """One ``mosquitto_pub -l`` per device, all started at once; PUBACKs counted in its ``-d`` output."""
    port, devices, samples, ts_base, window = load.port, load.devices, load.samples, load.ts_base, load.window
    work = tmp / "mosquitto_pub"
    work.mkdir(exist_ok=True)
    inputs = []
    for d in range(devices):
        path = work / f"in-{d}.txt"
        path.write_bytes(b"\n".join(payloads(samples, ts_base, d)) + b"\n")
        inputs.append(path)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    t0 = time.monotonic()
    for d, path in enumerate(inputs):
        out = work / f"out-{d}.txt"
        with path.open("rb") as stdin, out.open("wb") as stdout:
            procs.append((subprocess.Popen(
                [binary, "-h", "127.0.0.1", "-p", str(port), "-i", client_id(d), "-t", topic(d), "-q", "1",
                 "-M", str(window), "-l", "-d"], stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT), out))
    failed = 0
    errors: list[str] = []
    for proc, out in procs:
        try:
            rc = proc.wait(STORE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        if rc != 0:
            failed += 1
            if len(errors) < 5:
                tail = out.read_bytes().decode(errors="replace").strip().splitlines()[-1:]
                errors.append(f"mosquitto_pub rc={rc}: {' '.join(tail)}")
    t1 = time.monotonic()
    acked = sum(len(PUBACK_RE.findall(out.read_bytes())) for _, out in procs)
    shutil.rmtree(work, ignore_errors=True)
    return Published(acked=acked, sent=devices * samples, t0=t0, t1=t1, failed=failed, errors=errors)


# one burst -----------------------------------------------------------------------------------------


@dataclass
class Burst:
    """One scenario x publisher x target."""

    target: str
    publisher: str
    devices: int
    samples: int
    pub: Published
    stored: int
    duplicates: int
    last_stored: float  # monotonic
    extra: dict[str, Any] = field(default_factory=dict)
    rate: float | None = None  # paced (half load): offered msg/s in total

    @property
    def lost(self) -> int:
        return self.pub.acked - self.stored

    @property
    def store_s(self) -> float:
        return self.last_stored - self.pub.t0 if self.stored else math.nan

    @property
    def rows_per_s(self) -> float:
        return self.stored / self.store_s if self.stored and self.store_s > 0 else math.nan

    @property
    def acked_per_s(self) -> float:
        span = self.pub.t1 - self.pub.t0
        return self.pub.acked / span if span > 0 else math.nan


class Bench:
    """The run: its targets, the ts allocator, the results."""

    def __init__(self, tmp: Path, window: int, mosquitto_pub: str | None) -> None:
        self.tmp = tmp
        self.window = window
        self.mosquitto_pub = mosquitto_pub
        self.targets: dict[str, Target] = {}
        self.bursts: list[Burst] = []
        self._ts = math.floor(time.time()) - 86_400.0  # a day ago: never "in the future", never ms

    def next_ts_range(self, samples: int) -> tuple[float, float]:
        base = self._ts
        self._ts += max(TS_GAP, math.ceil(samples * TS_STEP) + TS_GAP)
        return base, base + samples * TS_STEP + 0.5

    def run(self, target: Target, publisher: str, devices: int, samples: int, rate: float | None = None) -> Burst:
        ts_range = self.next_ts_range(samples)
        base = target.baseline()
        load = Load(target.port, devices, samples, ts_range[0], self.window, rate / devices if rate else None)
        if publisher == "mosquitto_pub":
            assert self.mosquitto_pub is not None
            pub = publish_mosquitto(self.mosquitto_pub, load, self.tmp)
        else:
            pub = publish_python(load, self.tmp)
        last_change, _ = _settle(lambda: target.progress(base), pub.acked)
        stored, duplicates, last = target.count(base, ts_range)
        if math.isnan(last):
            last = last_change
        burst = Burst(target.name, publisher, devices, samples, pub, stored, duplicates, last,
                      extra=target.extra(base), rate=rate)
        self.bursts.append(burst)
        _progress_line(burst)
        return burst


def _settle(progress: Callable[[], int], acked: int) -> tuple[float, int]:
    """Poll ``progress`` until it reached ``acked`` or stopped changing for ``SETTLE`` s; (time of the last
    change, count)."""
    began = time.monotonic()
    count, changed = progress(), began
    while time.monotonic() - began < STORE_TIMEOUT:
        if count >= acked > 0:
            break
        if time.monotonic() - changed >= SETTLE:
            break
        time.sleep(POLL)
        now = progress()
        if now != count:
            count, changed = now, time.monotonic()
    return changed, count


def _progress_line(b: Burst) -> None:
    lat = summarize(b.pub.latencies)
    extra = ""
    if b.extra:
        dropped = ", ".join(f"{k} {v:.0f}" for k, v in b.extra["dropped"].items()) or "none"
        extra = f" | /metrics: accepted {b.extra['accepted']:.0f}, stored {b.extra['stored_metric']:.0f}, " \
                f"dropped {dropped}"
    paced = f" paced {b.rate:.0f}/s" if b.rate else ""
    print(f"   {b.devices:3d} x {b.samples:<5d} {b.publisher:>13} -> {b.target:<10}{paced} acked {b.pub.acked:>6} "
          f"stored {b.stored:>6} lost {b.lost:>6} dup {b.duplicates} | {fmt_rate(b.rows_per_s, 'rows/s')} | "
          f"puback p50/p99 {fmt_ms(lat.p50)} / {fmt_ms(lat.p99)}"
          f"{f' | {b.pub.failed} publishers failed: {b.pub.errors[0]}' if b.pub.failed else ''}{extra}")
    sys.stdout.flush()


# report --------------------------------------------------------------------------------------------


def _burst_rows(b: Burst) -> list[Row]:
    name = f"{b.publisher} -> {b.target}"
    lat = summarize(b.pub.latencies)
    lost_note = "" if b.pub.failed == 0 else f" ({b.pub.failed} publishers failed)"
    rows = [
        Row(f"{name}: acked / stored / lost", f"{b.pub.acked:,} / {b.stored:,} / {b.lost:,}{lost_note}", "lost 0",
            None, b.lost == 0 and b.pub.acked > 0),
        Row(f"{name}: rows/s (first publish -> last stored)", fmt_rate(b.rows_per_s, "rows/s") +
            f" in {b.store_s:.2f} s; acked {fmt_rate(b.acked_per_s)}"),
    ]
    if b.duplicates:
        rows.append(Row(f"{name}: duplicates", f"{b.duplicates:,}"))
    if b.pub.latencies:
        rows.append(Row(f"{name}: PUBACK latency p50 / p99", f"{fmt_ms(lat.p50)} / {fmt_ms(lat.p99)}"))
    if b.extra:
        dropped = ", ".join(f"{k} {v:.0f}" for k, v in b.extra["dropped"].items()) or "none"
        unexplained = b.pub.acked - b.stored - sum(b.extra["dropped"].values())
        rows.append(Row(f"{name}: /metrics accepted / dropped", f"{b.extra['accepted']:.0f} / {dropped}; "
                        f"acked - stored - counted drops = {unexplained:,.0f}"))
    return rows


def report(bench: Bench, scenarios: list[tuple[int, int]], half: list[Burst], half_basis: str,
           notes: list[str]) -> None:
    for devices, samples in scenarios:
        rows: list[Row] = []
        mine = [b for b in bench.bursts if (b.devices, b.samples) == (devices, samples) and b.rate is None]
        for b in mine:
            rows.extend(_burst_rows(b))
        for publisher in dict.fromkeys(b.publisher for b in mine):
            hv = next((b for b in mine if b.publisher == publisher and b.target == "hydrovisor"), None)
            raw = next((b for b in mine if b.publisher == publisher and b.target == "amqtt"), None)
            if hv is None or raw is None:
                continue
            r = ratio(hv.rows_per_s if hv.stored else 0.0, raw.rows_per_s)
            rows.append(Row(f"{publisher}: hydrovisor rows/s / amqtt delivered/s",
                            f"{fmt_rate(hv.rows_per_s, 'rows/s')} / {fmt_rate(raw.rows_per_s)}",
                            f">= {TARGET_RATIO}x", r, (not math.isnan(r)) and r >= TARGET_RATIO))
        print_table(f"{devices} devices x {samples:,} samples, QoS 1, {bench.window} in flight, disconnect after "
                    "the last PUBACK", rows)
    if half:
        rows = []
        for b in half:
            lat = summarize(b.pub.latencies)
            rows.extend(_burst_rows(b))
            if b.target == "hydrovisor":
                r, ok = upper_bound(lat.p99, TARGET_P99)
                rows.append(Row("hydrovisor PUBACK p99 at half load", fmt_ms(lat.p99), f"<= {fmt_ms(TARGET_P99)}",
                                r, ok))
        print_table(f"half load: {half[0].devices} devices paced at {half[0].rate:,.0f} msg/s in total "
                    f"({half[0].samples} samples each; {half_basis}), python publisher", rows)
    for note in notes:
        print(f"note: {note}")
    sys.stdout.flush()


# the run -------------------------------------------------------------------------------------------


def _scenarios(text: str) -> list[tuple[int, int]]:
    """``20x2000,200x200`` -> [(20, 2000), (200, 200)]."""
    out = []
    for part in text.split(","):
        devices, _, samples = part.strip().lower().partition("x")
        out.append((int(devices), int(samples)))
    return out


def _describe(src: Path) -> str:
    """``src`` and, when it is a git checkout, its commit and whether ``hydrovisor/`` has uncommitted changes."""
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0 or Path(head.stdout.strip()).exists():
        return str(src)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "hydrovisor"], capture_output=True, text=True,
                           check=False).stdout.strip()
    return f"{src} @ {head.stdout.strip()}{' + uncommitted changes under hydrovisor/' if dirty else ''}"


@contextlib.contextmanager
def _targets(bench: Bench, mosquitto: str | None, devices: int, notes: list[str], src: Path) -> Iterator[None]:
    try:
        bench.targets["amqtt"] = AmqttTarget(bench.tmp)
        if mosquitto:
            bench.targets["mosquitto"] = MosquittoTarget(bench.tmp, mosquitto)
        hv = HydrovisorTarget(bench.tmp, devices, src)
        bench.targets["hydrovisor"] = hv
        print(f"   hydrovisor ready in {hv.ready_s:.1f} s, {devices} nodes registered in {hv.register_s:.1f} s; "
              f"brokers: {', '.join(f'{t.name} :{t.port}' for t in bench.targets.values())}")
        sys.stdout.flush()
        yield
    finally:
        for target in reversed(bench.targets.values()):
            try:
                target.close()
            except Exception as exc:  # keep closing the others
                notes.append(f"closing {target.name} failed: {exc}")


def run(args: argparse.Namespace, scenarios: list[tuple[int, int]]) -> None:
    global SETTLE  # noqa: PLW0603 - quick mode settles sooner
    quick, window, no_mosquitto = args.quick, args.window, args.no_mosquitto
    if quick:
        SETTLE = 2.0
    mosquitto_pub = None if no_mosquitto else shutil.which("mosquitto_pub")
    mosquitto = None if no_mosquitto else (shutil.which("mosquitto") or
                                           next((p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None))
    header(f"ingest bursts: {', '.join(f'{d} x {s:,}' for d, s in scenarios)} samples, QoS 1, "
           f"{window} in flight, disconnect after the last PUBACK", quick)
    notes: list[str] = []
    if mosquitto_pub is None:
        notes.append("mosquitto_pub not found (Debian: apt-get install mosquitto-clients): "
                     "only the python pipelining publisher ran")
    if mosquitto is None:
        notes.append("mosquitto not found (Debian: apt-get install mosquitto): no Mosquitto baseline")
    for note in notes:
        print(f"   {note}")
    print(f"   hydrovisor from {_describe(args.hydrovisor_src.resolve())}")
    publishers = (["mosquitto_pub"] if mosquitto_pub else []) + ["python"]
    tmp = Path(tempfile.mkdtemp(prefix="hv-ingest-"))
    bench = Bench(tmp, window, mosquitto_pub)
    half: list[Burst] = []
    half_basis = ""
    try:
        with _targets(bench, mosquitto, max(20, *(d for d, _ in scenarios)), notes, args.hydrovisor_src.resolve()):
            order = list(bench.targets.values())
            for devices, samples in scenarios:
                for publisher in publishers:
                    for target in order:
                        bench.run(target, publisher, devices, samples)
                    order.reverse()
            python_raw = [b for b in bench.bursts if b.target == "amqtt" and b.publisher == "python" and b.stored]
            reference = next((b for b in python_raw if b.devices == HALF_DEVICES), None)
            reference = reference or (python_raw[0] if python_raw else None)
            rate = args.half_rate or max(RATE_FLOOR, (reference.rows_per_s if reference else RATE_FLOOR) / 2)
            half_basis = ("--half-rate" if args.half_rate else
                          f"half of {fmt_rate(reference.rows_per_s)} delivered by amqtt in the {reference.devices} x "
                          f"{reference.samples:,} python burst" if reference else "floor rate: amqtt delivered nothing")
            seconds = 2.0 if quick else HALF_SECONDS
            per_device = max(1, math.ceil(rate * seconds / HALF_DEVICES))
            for name in ("amqtt", "hydrovisor"):
                half.append(bench.run(bench.targets[name], "python", HALF_DEVICES, per_device, rate=rate))
    finally:
        if args.keep:
            print(f"   kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(bench, scenarios, half, half_basis, notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", type=_scenarios, default=None,
                        help="devices x samples per device (default 20x2000,200x200; quick 5x100,20x10)")
    parser.add_argument("--window", type=int, default=WINDOW, help="QoS 1 publishes in flight per device (50)")
    parser.add_argument("--half-rate", type=float, default=None,
                        help="total msg/s of the half-load run (default: half the bare amqtt delivery rate)")
    parser.add_argument("--no-mosquitto", action="store_true",
                        help="act as if mosquitto / mosquitto_pub were not installed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir (logs, data)")
    parser.add_argument("--hydrovisor-src", type=Path, default=ROOT,
                        help="run `hydrovisor run` from this source tree, e.g. a `git archive` of another commit "
                             "(default: this checkout)")
    parser.add_argument("--worker", choices=["amqtt-broker", "subscriber", "publish"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parse_args(__doc__ or "", parser)
    if args.worker == "amqtt-broker":
        amqtt_broker_worker(args.port)
        return
    if args.worker == "subscriber":
        subscriber_worker(args.port)
        return
    if args.worker == "publish":
        publish_worker(args.spec)
        return
    scenarios = args.scenarios or ([(5, 100), (20, 10)] if args.quick else [(20, 2000), (200, 200)])
    run(args, scenarios)
    sys.exit(0)


if __name__ == "__main__":
    main()
