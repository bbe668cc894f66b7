"""Acknowledged means kept (issue 9, ARCHITECTURE §6): fast and rude MQTT clients against the real thing.

Real PostgreSQL, the real embedded broker on an ephemeral port, real TCP clients
(``hydrovisor.sim.pipeline_client``: many QoS 1 PUBLISH in flight, several per write, RST on abort).
Each sample has a unique device timestamp and value, its identity. The reconciliation is exact:
every sample the broker PUBACKed is a row of ``telemetry_samples`` exactly once - checked right
after the PUBACK, without waiting, since a PUBACK is only sent after the commit - and for QoS 0,
rows + counted drops = sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydrovisor.config.settings import MqttSettings
from hydrovisor.sim.pipeline_client import ConnectionClosed, Message, PipelineClient
from tests.app.conftest import Process, Running
from tests.helpers import http, wait_until

BASE_TS = int(time.time()) - 7 * 86400  # device time of sample 0 (a week ago: a flushed offline buffer)
ZONE_TOPIC = "hydro/gh-1/zn-1"

Key = tuple[str, int, float]  # (node uid, device ts in seconds, value): a sample's identity


# -- fleet, samples, clients -----------------------------------------------------------------------


def node_uid(device: int) -> str:
    return f"nd-ph-{device}"


def register_fleet(base_url: str, devices: int) -> None:
    """Greenhouse gh-1, zone zn-1 and ``devices`` bound, validated pH nodes nd-ph-0..."""
    assert http("POST", base_url + "/api/v1/greenhouses", body={"uid": "gh-1", "name": "Main"}).status == 201
    zone = {"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "Lettuce"}
    assert http("POST", base_url + "/api/v1/zones", body=zone).status == 201
    for device in range(devices):
        body = {"uid": node_uid(device), "hardware_id": f"esp32-0000000000{device:02x}", "type": "ph",
                "node_secret": "s" * 32, "zone_uid": "zn-1",
                "channels": [{"name": "ph_sensor", "type": "SENSOR", "metric": "PH", "unit": "pH"}]}
        reply = http("POST", base_url + "/api/v1/nodes", body=body)
        assert reply.status == 201, reply.raw


def sample(device: int, k: int, *, qos: int = 1) -> Message:
    """Sample ``k`` of ``device``: device ts BASE_TS + k, value k (unique per device)."""
    payload = json.dumps({"metric_type": "PH", "value": k, "ts": BASE_TS + k, "unit": "pH"}).encode()
    return Message(f"{ZONE_TOPIC}/{node_uid(device)}/ph_sensor/telemetry", payload, qos=qos)


def key(device: int, k: int) -> Key:
    return (node_uid(device), BASE_TS + k, float(k))


class Device:
    """A device's samples ``0..count-1`` across connections: which of them were PUBACKed, on any connection."""

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count
        self.acked: set[int] = set()
        self.client: PipelineClient | None = None
        self._sent_on_client: list[int] = []  # seq on the current connection -> sample k

    @property
    def client_id(self) -> str:
        return f"esp32-0000000000{self.index:02x}"

    def unacked(self) -> list[int]:
        return [k for k in range(self.count) if k not in self.acked]

    async def connect(self, port: int) -> PipelineClient:
        self.harvest()
        self.client = PipelineClient(self.client_id, keep_alive=30)
        self._sent_on_client = []
        await self.client.connect("127.0.0.1", port)
        return self.client

    def messages(self, ks: Sequence[int]) -> Iterable[Message]:
        """``ks`` as messages, recording which sample each seq of this connection is."""
        for k in ks:
            self._sent_on_client.append(k)
            yield sample(self.index, k)

    def send_all_at_once(self, ks: Sequence[int]) -> None:
        assert self.client is not None
        self.client.send_publishes(list(self.messages(ks)))

    def harvest(self) -> set[int]:
        """Move the current connection's PUBACKs into ``acked``; returns the samples acknowledged so far."""
        if self.client is not None:
            self.acked |= {self._sent_on_client[seq] for seq in self.client.acked_seqs}
        return self.acked

    def acked_keys(self) -> set[Key]:
        return {key(self.index, k) for k in self.harvest()}


def run_clients(scenario: Callable[[], Awaitable[Any]], timeout: float = 90) -> Any:
    """Run the clients on a loop of their own (the app has its own loop thread)."""
    async def main() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(main())


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` on the clients' loop (bound it with ``asyncio.timeout``)."""
    while not condition():  # noqa: ASYNC110 - the clients offer no event to wait on for "n PUBACKs"
        await asyncio.sleep(0.001)


def run_each(devices: Sequence[Device], body: Callable[[Device], Awaitable[None]], timeout: float = 90) -> None:
    """``body`` for every device at once, on the clients' loop."""
    async def all_of_them() -> None:
        await asyncio.gather(*(body(d) for d in devices))

    run_clients(all_of_them, timeout)


# -- what is stored, what is counted ----------------------------------------------------------------


async def _stored(dsn: str) -> collections.Counter[Key]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT node_uid, date_part('epoch', ts) AS ts, value FROM telemetry_samples")
    finally:
        await conn.close()
    return collections.Counter((r["node_uid"], round(r["ts"]), r["value"]) for r in rows)


def stored(dsn: str) -> collections.Counter[Key]:
    """Every row of telemetry_samples as its identity, with how often it is there."""
    return asyncio.run(_stored(dsn))


def assert_kept_exactly_once(dsn: str, acked: set[Key], sent: set[Key] | None = None) -> collections.Counter[Key]:
    """Every acknowledged sample is stored, nothing is stored twice, nothing stored was not sent."""
    rows = stored(dsn)
    twice = {k: n for k, n in rows.items() if n > 1}
    assert not twice, f"{len(twice)} samples stored more than once, e.g. {sorted(twice.items())[:5]}"
    missing = acked - rows.keys()
    assert not missing, f"{len(missing)} of {len(acked)} PUBACKed samples are not stored, e.g. {sorted(missing)[:5]}"
    if sent is not None:
        assert rows.keys() <= sent, f"stored samples nobody sent: {sorted(rows.keys() - sent)[:5]}"
    return rows


def metrics(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = http("GET", base_url + "/metrics")
    assert reply.status == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(reply.raw.decode()) for s in family.samples}


def metric(base_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in metrics(base_url).items() if n == name and wanted <= lbls)


def dropped(base_url: str) -> dict[str, float]:
    """hydrovisor_telemetry_dropped_total{source="mqtt"} by reason (zeros left out)."""
    out: dict[str, float] = {}
    for (name, labels), value in metrics(base_url).items():
        lbls = dict(labels)
        if name == "hydrovisor_telemetry_dropped_total" and lbls.get("source") == "mqtt" and value:
            out[lbls["reason"]] = value
    return out


def assert_all_accounted(base_url: str, within: float = 10.0) -> None:
    """Quiescent: nothing unsettled, every accepted sample stored or a counted duplicate."""
    def settled() -> bool:
        accepted = metric(base_url, "hydrovisor_telemetry_accepted_total", source="mqtt")
        done = (metric(base_url, "hydrovisor_telemetry_stored_total")
                + metric(base_url, "hydrovisor_telemetry_dropped_total", reason="duplicate", source="mqtt")
                + metric(base_url, "hydrovisor_telemetry_dropped_total", reason="quarantined", source="mqtt"))
        return accepted == done and metric(base_url, "hydrovisor_mqtt_unsettled_messages") == 0

    wait_until(settled, within, interval=0.05, what="every accepted sample stored or counted")


# -- 1. pipelining, disconnect right after the last PUBACK ------------------------------------------


def test_pipelined_devices_leaving_right_after_their_last_puback_lose_nothing(
    start_app: Callable[..., Running], pg_dsn: str,
) -> None:
    instance = start_app()
    register_fleet(instance.base_url, 5)
    devices = [Device(i, 2000) for i in range(5)]

    async def scenario() -> None:
        async def flush(device: Device) -> None:
            client = await device.connect(instance.mqtt_port)
            await client.publish_all(device.messages(range(device.count)), window=50)
            await client.disconnect()  # what mosquitto_pub -M 50 does after its last PUBACK

        await asyncio.gather(*(flush(d) for d in devices))

    run_clients(scenario)
    acked = set().union(*(d.acked_keys() for d in devices))
    assert len(acked) == 10_000
    # no waiting: a PUBACK is only sent once the sample is committed
    rows = assert_kept_exactly_once(pg_dsn, acked)
    assert len(rows) == 10_000
    assert_all_accounted(instance.base_url)
    assert dropped(instance.base_url) == {}


# -- 2. socket closed mid-burst (RST), then resend ---------------------------------------------------


def test_reset_mid_burst_keeps_every_acked_sample_and_resends_are_not_duplicated(
    start_app: Callable[..., Running], pg_dsn: str,
) -> None:
    instance = start_app()
    register_fleet(instance.base_url, 3)
    devices = [Device(i, 2000) for i in range(3)]

    async def burst_and_vanish(device: Device) -> None:
        client = await device.connect(instance.mqtt_port)
        sending = asyncio.create_task(client.publish_all(device.messages(range(device.count)), window=100))
        async with asyncio.timeout(30):
            await until(lambda: len(client.acks) >= 300 + 200 * device.index)
        client.abort(reset=True)  # power lost: RST, no DISCONNECT, PUBACKs on their way are never read
        with contextlib.suppress(ConnectionClosed):
            await sending

    run_each(devices, burst_and_vanish)
    acked_before = set().union(*(d.acked_keys() for d in devices))
    assert all(300 <= len(d.acked) < d.count for d in devices), [len(d.acked) for d in devices]
    assert_kept_exactly_once(pg_dsn, acked_before)  # at once: acknowledged means committed

    async def reconnect_and_resend(device: Device) -> None:
        client = await device.connect(instance.mqtt_port)
        await client.publish_all(device.messages(device.unacked()), window=100)
        await client.disconnect()

    run_each(devices, reconnect_and_resend)
    everything = {key(d.index, k) for d in devices for k in range(d.count)}
    assert set().union(*(d.acked_keys() for d in devices)) == everything
    rows = assert_kept_exactly_once(pg_dsn, everything, everything)
    assert len(rows) == 6000
    assert_all_accounted(instance.base_url)
    # resends of samples that were stored but whose PUBACK never arrived are counted, not stored again
    assert set(dropped(instance.base_url)) <= {"duplicate"}


# -- 3. many PUBLISH in one TCP write ----------------------------------------------------------------


def test_thousands_of_publishes_in_one_write_are_paced_not_lost(
    start_app: Callable[..., Running], pg_dsn: str,
) -> None:
    instance = start_app()
    register_fleet(instance.base_url, 2)
    devices = [Device(i, 3000) for i in range(2)]
    pauses_before = metric(instance.base_url, "hydrovisor_mqtt_backpressure_pauses_total", scope="connection")

    async def scenario() -> None:
        async def one_write(device: Device) -> None:
            client = await device.connect(instance.mqtt_port)
            device.send_all_at_once(range(device.count))  # 3,000 PUBLISH, one write, 30x the window
            await client.wait_acked(ack_timeout=30)
            await client.disconnect()

        await asyncio.gather(*(one_write(d) for d in devices))

    run_clients(scenario)
    acked = set().union(*(d.acked_keys() for d in devices))
    assert len(acked) == 6000
    rows = assert_kept_exactly_once(pg_dsn, acked)
    assert len(rows) == 6000
    pauses = metric(instance.base_url, "hydrovisor_mqtt_backpressure_pauses_total", scope="connection")
    assert pauses > pauses_before, "the broker read 3,000 packets without ever waiting for storage"
    assert_all_accounted(instance.base_url)
    assert dropped(instance.base_url) == {}


# -- 4. a burst larger than every internal queue ----------------------------------------------------


def test_burst_larger_than_every_queue_is_slowed_down_never_dropped(
    start_app: Callable[..., Running], pg_dsn: str,
) -> None:
    limits = MqttSettings(host="127.0.0.1", port=0, inflight_total=200, inflight_per_client=20)
    instance = start_app(mqtt=limits)
    register_fleet(instance.base_url, 20)
    devices = [Device(i, 500) for i in range(20)]

    async def scenario() -> None:
        async def burst(device: Device) -> None:
            client = await device.connect(instance.mqtt_port)
            if device.index % 2:
                device.send_all_at_once(range(device.count))  # 25x its window in one write
                await client.wait_acked(ack_timeout=30)
            else:
                await client.publish_all(device.messages(range(device.count)), window=100)
            await client.disconnect()

        await asyncio.gather(*(burst(d) for d in devices))

    run_clients(scenario)
    acked = set().union(*(d.acked_keys() for d in devices))
    assert len(acked) == 10_000
    rows = assert_kept_exactly_once(pg_dsn, acked)
    assert len(rows) == 10_000
    assert metric(instance.base_url, "hydrovisor_mqtt_backpressure_pauses_total", scope="connection") > 0
    assert metric(instance.base_url, "hydrovisor_mqtt_backpressure_pauses_total", scope="broker") > 0
    assert metric(instance.base_url, "hydrovisor_mqtt_receipts_failed_total") == 0
    assert_all_accounted(instance.base_url)
    assert dropped(instance.base_url) == {}
    assert metric(instance.base_url, "hydrovisor_telemetry_buffer_refused_total") == 0


# -- 5. kill -9 mid-burst, restart, resend, reconcile ----------------------------------------------


def _postgres_of(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info.get("name") == "postgres" and any(str(pgdata) in p for p in proc.info.get("cmdline") or []):
                found.append(proc)
    return found


def _pg_dsn_of(pgdata: Path) -> str:
    """The DSN of the postmaster running in ``pgdata`` (from its postmaster.pid)."""
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"


@pytest.mark.parametrize("postgres_too", [False, True], ids=["hydrovisor", "hydrovisor_and_postgres"])
def test_kill_9_mid_burst_then_restart_every_acked_sample_is_stored_exactly_once(
    tmp_path: Path, process: list[Process], postgres_too: bool,
) -> None:
    """``kill -9`` of ``hydrovisor run`` mid-burst (and, like the OOM killer taking the whole group, of
    its embedded PostgreSQL too: a stale postmaster.pid), restart on the same data dir, resend."""
    data_dir = tmp_path / "data"
    pgdata = data_dir / "pg"
    env = {"HYDROVISOR_DEV_MODE": "1"}
    try:
        first = Process(data_dir, env)
        process.append(first)
        wait_until(first.ready, timeout=60, interval=0.2, what="hydrovisor run ready")
        register_fleet(first.base_url, 4)
        devices = [Device(i, 1500) for i in range(4)]

        in_flight: list[int] = []  # QoS 1 publishes written and not acknowledged when the kill came

        async def burst_until_killed() -> None:
            async def flush(device: Device) -> None:
                client = await device.connect(first.mqtt_port)
                with contextlib.suppress(ConnectionClosed, ConnectionError, asyncio.IncompleteReadError):
                    await client.publish_all(device.messages(range(device.count)), window=50, ack_timeout=10)

            async def killer() -> None:
                await until(lambda: sum(len(d.client.acks) for d in devices if d.client) >= 1500)
                os.kill(first.proc.pid, signal.SIGKILL)
                in_flight.append(sum(d.client.in_flight for d in devices if d.client))

            await asyncio.gather(killer(), *(flush(d) for d in devices))
            for d in devices:
                assert d.client is not None
                await asyncio.wait_for(d.client.wait_closed(), 10)

        run_clients(burst_until_killed)
        assert first.proc.wait(10) == -signal.SIGKILL
        acked_before = set().union(*(d.acked_keys() for d in devices))
        assert 1500 <= len(acked_before) < 6000, len(acked_before)
        assert in_flight[0] > 0, "nothing was in flight: not mid-burst"
        survivors = _postgres_of(pgdata)  # the postmaster is a daemon: it outlives its hydrovisor
        if postgres_too:
            family = [c for p in survivors for c in p.children(recursive=True)] + survivors
            for proc in family:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(family, timeout=10)
            assert (pgdata / "postmaster.pid").exists()
            survivors = []

        second = Process(data_dir, env, ports=(first.http_port, first.mqtt_port))
        process.append(second)
        wait_until(second.ready, timeout=60, interval=0.2, what="hydrovisor run ready after kill -9")
        dsn = _pg_dsn_of(pgdata)
        postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
        if survivors:  # adopted, not a second server on the same pgdata
            assert postmaster in {p.pid for p in survivors}
        assert_kept_exactly_once(dsn, acked_before)  # what was PUBACKed before the kill survived it

        async def reconnect_and_resend(device: Device) -> None:
            client = await device.connect(second.mqtt_port)
            await client.publish_all(device.messages(device.unacked()), window=50)
            await client.disconnect()

        run_each(devices, reconnect_and_resend)
        everything = {key(d.index, k) for d in devices for k in range(d.count)}
        assert set().union(*(d.acked_keys() for d in devices)) == everything
        rows = assert_kept_exactly_once(dsn, everything, everything)
        assert len(rows) == 6000

        second.proc.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        wait_until(lambda: not _postgres_of(pgdata), timeout=30, interval=0.2,
                   what="embedded postgres stopped with the restarted process")
    finally:
        for p in process:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
        for leftover in _postgres_of(pgdata):
            with contextlib.suppress(psutil.Error):
                leftover.kill()


# -- 6. QoS 0: stored + counted drops = sent ---------------------------------------------------------


def test_qos0_bursts_stored_plus_counted_drops_equal_sent(start_app: Callable[..., Running], pg_dsn: str) -> None:
    instance = start_app()
    register_fleet(instance.base_url, 2)
    now = int(time.time())

    def bad(device: int, i: int) -> list[tuple[str, Message]]:
        """One sample of every way to be dropped, each with the reason it must be counted under."""
        own = f"{ZONE_TOPIC}/{node_uid(device)}/ph_sensor/telemetry"
        return [
            ("malformed", Message(own, b"{not json", qos=0)),
            ("malformed", Message(own, json.dumps({"metric_type": "PH", "ts": now}).encode(), qos=0)),
            ("malformed", Message(own, json.dumps({"metric_type": "PH", "value": "high", "ts": now}).encode(), qos=0)),
            ("invalid_text", Message(own, json.dumps({"metric_type": "P\u0000H", "value": i, "ts": now}).encode(),
                                     qos=0)),
            ("unknown_node", Message(f"{ZONE_TOPIC}/nd-ph-404/ph_sensor/telemetry",
                                     json.dumps({"metric_type": "PH", "value": i, "ts": now}).encode(), qos=0)),
            ("temp_namespace", Message(f"hydro/gh-temp/zn-temp/esp32-0000000000{device:02x}/ph_sensor/telemetry",
                                       json.dumps({"metric_type": "PH", "value": i, "ts": now}).encode(), qos=0)),
            ("node_zone_mismatch", Message(f"hydro/gh-1/zn-9/{node_uid(device)}/ph_sensor/telemetry",
                                           json.dumps({"metric_type": "PH", "value": i, "ts": now}).encode(), qos=0)),
        ]

    expected_drops: collections.Counter[str] = collections.Counter()
    bursts: list[list[Message]] = []
    for device in range(2):
        burst: list[Message] = []
        for k in range(3000):
            burst.append(sample(device, k, qos=0))
            if k % 100 == 0:
                for reason, message in bad(device, k):
                    expected_drops[reason] += 1
                    burst.append(message)
        bursts.append(burst)
    sent = sum(len(b) for b in bursts)
    good = {key(d, k) for d in range(2) for k in range(3000)}

    async def scenario() -> None:
        async def leave_at_once(device: int) -> None:  # the whole burst in one write, DISCONNECT right behind it
            client = PipelineClient(f"esp32-0000000000{device:02x}", keep_alive=30)
            await client.connect("127.0.0.1", instance.mqtt_port)
            client.send_publishes(bursts[device])
            await client.disconnect()

        async def stay(device: int) -> None:  # in chunks of 200, connected until everything is counted
            client = PipelineClient(f"esp32-0000000000{device:02x}", keep_alive=30)
            await client.connect("127.0.0.1", instance.mqtt_port)
            for at in range(0, len(bursts[device]), 200):
                client.send_publishes(bursts[device][at:at + 200])
                await client._drain()
            await asyncio.to_thread(wait_until, lambda: counted() == sent, 30, 0.05)
            await client.disconnect()

        await asyncio.gather(leave_at_once(0), stay(1))

    def counted() -> float:
        return metric(instance.base_url, "hydrovisor_telemetry_stored_total") + sum(dropped(instance.base_url).values())

    run_clients(scenario)
    assert metric(instance.base_url, "hydrovisor_mqtt_publishes_total", qos="0", outcome="accepted") == sent
    time.sleep(0.3)  # nothing is counted twice, later
    rows = assert_kept_exactly_once(pg_dsn, good, good)
    assert len(rows) == 6000
    assert dropped(instance.base_url) == expected_drops
    assert len(rows) + sum(expected_drops.values()) == sent
    assert counted() == sent
