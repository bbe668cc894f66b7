"""Shared pieces of the fault-injection suite: instances with a fast state machine and chaos enabled,
and small HTTP helpers to inject faults and read the system state and incidents."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hydrovisor.config.settings import SupervisionSettings, SystemSettings
from hydrovisor.protocol import statuses as protocol_statuses
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.sim import FieldConfig, NodeOptions, SimNode
from hydrovisor.store.repos import telemetry
from tests.app.conftest import (  # noqa: F401 - fixtures re-exported for this package
    HYDROVISOR,
    Process,
    Running,
    hydrovisor_env,
    instance,
    process,
    settings_for,
    start_app,
)
from tests.helpers import Reply, http, wait_until
from tests.plant import IRRIG_CHANNELS, wait_levels_fresh

# Stalls are detected after 0.5 s; recovery is 3 + 3 good cycles of 0.2 s.
FAST_SYSTEM = SystemSettings(cycle_interval=0.2, loop_stall_threshold=0.5, guard_interval=0.05,
                             fatal_exit_grace=1.0)
FAST_SUPERVISION = SupervisionSettings(liveness_interval=0.1, hang_timeout=0.5)

# The function each stall kind blocks the loop in, as a task dump names it.
STALL_FUNCTION = {
    "cpu_bound_loop": "_cpu_bound_loop",
    "sync_io_block": "_sync_io_block",
    "cross_lock_deadlock": "_CrossLock.deadlock",
    "recursive_await": "_recursive_await",
}


@pytest.fixture
def chaos_app(start_app: Callable[..., Running]) -> Callable[..., Running]:  # noqa: F811
    """Factory: an in-process instance with the fast system settings and chaos enabled."""

    def start(**overrides: Any) -> Running:
        settings: dict[str, Any] = {"system": FAST_SYSTEM, "supervision": FAST_SUPERVISION, "chaos_enabled": True}
        settings.update(overrides)
        return start_app(**settings)

    return start


@pytest.fixture
def app(chaos_app: Callable[..., Running]) -> Running:
    """One instance with the fast system settings."""
    return chaos_app()


# -- HTTP helpers ---------------------------------------------------------------------------------


def inject(base_url: str, type_: str, duration: float, **extra: Any) -> str:
    """Start one fault over HTTP; returns the chaos incident id."""
    reply = http("POST", base_url + "/admin/chaos/inject", body={"type": type_, "duration": duration, **extra})
    assert reply.status == 202, reply.raw
    incident_id: str = reply.json()["data"]["incident_id"]
    return incident_id


def system(base_url: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /api/v1/system`` data."""
    data: dict[str, Any] = http("GET", base_url + "/api/v1/system", timeout=timeout).json()["data"]
    return data


def state(base_url: str) -> str:
    """The system state right now."""
    value: str = system(base_url)["state"]
    return value


def incidents(base_url: str, kind: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
    """``GET /api/v1/system/incidents``, newest first."""
    query = [f"kind={kind}"] if kind else []
    if open_only:
        query.append("open=1")
    suffix = ("?" + "&".join([*query, "limit=500"])) if query else "?limit=500"
    reply = http("GET", base_url + "/api/v1/system/incidents" + suffix)
    assert reply.status == 200, reply.raw
    found: list[dict[str, Any]] = reply.json()["data"]
    return found


def incident(base_url: str, incident_id: str) -> dict[str, Any]:
    """One incident with its dump."""
    reply = http("GET", base_url + f"/api/v1/system/incidents/{incident_id}")
    assert reply.status == 200, reply.raw
    found: dict[str, Any] = reply.json()["data"]
    return found


def transitions(base_url: str) -> list[tuple[str, str]]:
    """Every state transition so far as ``(from, to)``, oldest first."""
    found = incidents(base_url, kind="state_transition")
    return [tuple(i["title"].split(" -> ")) for i in reversed(found)]  # type: ignore[misc]


def wait_state(base_url: str, wanted: str, timeout: float = 20.0) -> None:
    """Wait until the system is in ``wanted``."""
    wait_until(lambda: state(base_url) == wanted, timeout=timeout, interval=0.05, what=f"system state {wanted}")


def wait_chaos_over(base_url: str, incident_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the chaos incident is closed; returns it."""
    closed: dict[str, Any] = wait_until(
        lambda: (found := incident(base_url, incident_id))["closed_at"] is not None and found,
        timeout=timeout, interval=0.05, what=f"chaos {incident_id} over")
    return closed


def metric(base_url: str, name: str, labels: str = "") -> float:
    """One sample of ``/metrics`` (0 when the series does not exist yet); ``labels`` like
    ``a="x",b="y"`` in any order."""
    wanted = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    text = http("GET", base_url + "/metrics").raw.decode()
    for match in re.finditer(r"^" + re.escape(name) + r"(?:\{(.*)\})? (\S+)$", text, re.MULTILINE):
        if dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")) == wanted:
            return float(match.group(2))
    return 0.0


def loop_frames(dump: dict[str, Any]) -> list[str]:
    """Function names on the loop thread's stack in a task dump."""
    loop_threads = [t for t in dump["threads"] if t["is_loop_thread"]]
    assert len(loop_threads) == 1, [t["name"] for t in dump["threads"]]
    return [frame["function"] for frame in loop_threads[0]["stack"]]


def task_frames(dump: dict[str, Any]) -> list[str]:
    """Function names on every task's coroutine stack."""
    return [frame["function"] for task in dump["tasks"] for frame in task["stack"]]


# -- seeding and data ------------------------------------------------------------------------------


def seed_zone(base_url: str, gh: str = "gh-1", zone: str = "zn-1") -> None:
    """A greenhouse and a zone."""
    for path, body in (("/api/v1/greenhouses", {"uid": gh, "name": "Main"}),
                       ("/api/v1/zones", {"greenhouse_uid": gh, "uid": zone, "name": "Lettuce"})):
        reply = http("POST", base_url + path, body=body)
        assert reply.status == 201, reply.raw


def seed_node(base_url: str, uid: str, hardware_id: str, secret: str, channels: list[dict[str, Any]], *,
              node_type: str = "irrig", zone: str = "zn-1") -> None:
    """A pre-registered, validated node."""
    reply = http("POST", base_url + "/api/v1/nodes", body={
        "uid": uid, "hardware_id": hardware_id, "type": node_type, "zone_uid": zone, "node_secret": secret,
        "channels": channels})
    assert reply.status == 201, reply.raw


def stored_samples(app: Running) -> int:
    """Telemetry rows in the database."""
    services = app.app.services
    assert services is not None

    async def count() -> int:
        return await telemetry.count_samples(services.db.pool)

    result: int = app.loop.run(count())
    return result


class Ingest:
    """Posts telemetry batches over HTTP from a thread and counts what the API accepted (202).

    During a loop stall a request just waits for the loop; nothing accepted may be lost.
    """

    def __init__(self, base_url: str, node_uid: str, channel: str, metric_type: str, batch: int = 20) -> None:
        self.base_url = base_url
        self.node_uid = node_uid
        self.channel = channel
        self.metric_type = metric_type
        self.batch = batch
        self.accepted = 0
        self.requests = 0
        self.refused: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-ingest", daemon=True)
        self._n = 0

    def __enter__(self) -> Ingest:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            samples = [{"node_uid": self.node_uid, "channel": self.channel, "metric_type": self.metric_type,
                        "value": 6.0 + (self._n + i) / 1e6, "ts": time.time()} for i in range(self.batch)]
            self._n += self.batch
            try:
                reply: Reply = http("POST", self.base_url + "/api/v1/ingest/telemetry", body={"samples": samples},
                                    timeout=30)
            except OSError:
                self.refused.append(-1)
                continue
            self.requests += 1
            if reply.status == 202:
                self.accepted += reply.json()["data"]["count"]
            else:
                self.refused.append(reply.status)
            time.sleep(0.07)  # under the per-client rate limit


def wait_all_stored(app: Running, accepted: int, timeout: float = 30.0) -> None:
    """Every accepted sample reaches the database, exactly once."""
    wait_until(lambda: stored_samples(app) >= accepted, timeout=timeout, interval=0.1,
               what=f"{accepted} samples stored")
    # the writer flushes in batches: a short settle shows there is no duplicate write behind
    time.sleep(0.3)
    assert stored_samples(app) == accepted


@pytest.fixture
def device_loop() -> Iterator[LoopThread]:
    """A loop of its own for simulated devices: they are outside the process whose loop stalls."""
    with LoopThread() as lt:
        yield lt


IRRIG_SECRET = "irrigation-secret-0123456789"
PH_CHANNELS = [{"name": "ph_sensor", "type": "SENSOR", "metric": "PH", "unit": "pH"}]


class Device:
    """A simulated irrigation node, pre-registered over HTTP, running on its own loop (``device_loop``):
    a real MQTT client of the instance's broker that answers commands and sends telemetry."""

    def __init__(self, app: Running, device_loop: LoopThread, uid: str = "nd-irr-000000000001", *,
                 time_scale: float = 0.01, telemetry_interval_s: float = 0.2, seed: bool = True) -> None:
        self.app = app
        self.uid = uid
        self.hardware_id = "esp32-" + uid[-12:].rjust(12, "0")
        self._loop = device_loop
        if seed:
            seed_node(app.base_url, uid, self.hardware_id, IRRIG_SECRET, IRRIG_CHANNELS)
        options = NodeOptions(time_scale=time_scale, heartbeat_interval_s=0.5,
                              telemetry_interval_s=telemetry_interval_s, trust_local_clock=True,
                              reconnect_delay_s=0.1, keep_alive_s=10)

        async def make() -> SimNode:  # the node's asyncio objects belong to the device loop
            return SimNode(f"mqtt://127.0.0.1:{app.mqtt_port}", self.hardware_id, "irrig", options=options,
                           field_config=FieldConfig(gh_uid="gh-1", zone_uid="zn-1", node_uid=uid,
                                                    node_secret=IRRIG_SECRET))

        self.sim = device_loop.run(make())

    def start(self) -> None:
        async def go() -> None:
            await self.sim.start()
            await self.sim.wait_connected(10)

        self._loop.run(go())
        services = self.app.app.services
        assert services is not None
        topic = f"hydro/gh-1/zn-1/{self.uid}/pump_main/command"

        async def subscribers() -> int:
            count: int = services.broker.subscriber_count(topic)
            return count

        wait_until(lambda: self.app.loop.run(subscribers()) > 0, what="node subscribed")

    def wait_levels(self) -> None:
        """Wait until the zone's pump-safety gate has this node online with fresh, wet tank levels (what
        a ``pump_main`` start needs; the node must be the zone's only irrigation node, or its roles are
        ambiguous and unbound)."""
        wait_levels_fresh(self.app.base_url, self.uid)

    def stop(self) -> None:
        self._loop.run(self.sim.stop())

    @property
    def connected(self) -> bool:
        return bool(self.sim.is_connected)

    def command(self, channel: str, cmd: str, params: dict[str, Any], cmd_id: str | None = None) -> Reply:
        body: dict[str, Any] = {"node_uid": self.uid, "channel": channel, "cmd": cmd, "params": params}
        if cmd_id:
            body["cmd_id"] = cmd_id
        return http("POST", self.app.base_url + "/api/v1/commands", body=body)


def command_status(base_url: str, cmd_id: str) -> str:
    """The stored status of one command."""
    status: str = http("GET", base_url + f"/api/v1/commands/{cmd_id}").json()["data"]["status"]
    return status


TERMINAL = frozenset(status.value for status in protocol_statuses.TERMINAL)


@pytest.fixture
def devices(device_loop: LoopThread) -> Iterator[list[Device]]:
    """Devices made by a test, stopped after it."""
    made: list[Device] = []
    yield made
    for device in made:
        device.stop()


def stop_devices_then_check_stored(app: Running, devices: list[Device], also_accepted: int = 0) -> None:
    """Stop every device, then every sample the router accepted (plus ``also_accepted``) is stored once.

    A device sample equal to one already stored (same channel, device ``ts`` in whole seconds, value) is a
    QoS 1 repeat to the writer and is counted as a ``duplicate`` drop instead: a level switch or an idle flow
    sensor polled several times a second repeats itself exactly. Those count as accounted for."""
    while devices:
        devices.pop().stop()
    accepted = int(metric(app.base_url, "hydrovisor_telemetry_accepted_total", 'source="mqtt"')) + also_accepted
    assert accepted > 0

    def accounted() -> int:
        duplicates = metric(app.base_url, "hydrovisor_telemetry_dropped_total", 'reason="duplicate",source="mqtt"')
        return stored_samples(app) + int(duplicates)

    wait_until(lambda: accounted() >= accepted, timeout=30, interval=0.1, what=f"{accepted} samples accounted for")
    time.sleep(0.3)  # the writer flushes in batches: a short settle shows there is no duplicate write behind
    assert accounted() == accepted
