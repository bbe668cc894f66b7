"""No poison pill (issue 9 item 6), end to end: a running instance, real MQTT clients, real HTTP.

What PostgreSQL cannot store (U+0000 in a sample's metric_type or channel, or in any field of an
event, error, node_hello or command_response; an error's timestamp beyond the year 9999) is answered
(PUBACK / 202) and counted with a reason; nothing is retried for ever and every valid message after it,
of the same node and of the fleet, is processed at once. /health/ready stays 200. Samples PostgreSQL
refuses all the same are quarantined and shown by ``GET /api/v1/telemetry/quarantine``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from hydrovisor.sim.pipeline_client import Message, PipelineClient
from hydrovisor.store.repos import telemetry
from hydrovisor.store.repos.telemetry import Sample
from tests.app.conftest import Running
from tests.app.test_fleet_and_ingest import make_node, make_zone
from tests.helpers import http, wait_until

NODE = "nd-ph-1"
HW = "esp32-00000000aa01"
NS = f"hydro/gh-1/zn-1/{NODE}"
BASE_TS = int(time.time()) - 3600


def metric(base_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    text = http("GET", base_url + "/metrics").raw.decode()
    wanted = set(labels.items())
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and wanted <= set(s.labels.items()))


def outcome(base_url: str, kind: str, result: str) -> float:
    return metric(base_url, "hydrovisor_device_messages_total", type=kind, outcome=result)


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """Clients on a loop of their own (the app has its own loop thread)."""
    async def main() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(main())


def db(dsn: str, sql: str, *args: Any) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(main())


def telemetry_msg(k: int, metric_type: str = "PH", channel: str = "ph_sensor") -> Message:
    payload = json.dumps({"metric_type": metric_type, "value": k, "ts": BASE_TS + k}).encode()
    return Message(f"{NS}/{channel}/telemetry", payload)


async def publish(messages: list[Message], client_id: str = HW) -> set[int]:
    """Publish on one connection (50 in flight), wait for every PUBACK, disconnect; the acked seqs."""
    client = PipelineClient(client_id, keep_alive=30)
    await client.connect("127.0.0.1", PORT[0])
    await client.publish_all(messages, window=50, ack_timeout=10)
    acked = client.acked_seqs
    await client.disconnect()
    return acked


PORT = [0]


def ready(instance: Running) -> int:
    return http("GET", instance.base_url + "/health/ready").status


def test_mqtt_nul_in_a_sample_is_acknowledged_counted_and_holds_nothing_back(instance: Running, pg_dsn: str) -> None:
    make_zone(instance)
    make_node(instance)
    PORT[0] = instance.mqtt_port
    stored_before = metric(instance.base_url, "hydrovisor_telemetry_stored_total")
    messages = [telemetry_msg(0, metric_type="PH\u0000"), *(telemetry_msg(k) for k in range(1, 41)),
                telemetry_msg(41, metric_type="TDS\u0000x"), *(telemetry_msg(k) for k in range(42, 51))]
    acked = run(lambda: publish(messages))
    assert acked == set(range(len(messages)))  # the bad ones are answered too: the device does not resend them
    # a PUBACK means committed: every valid sample is there already, none of the bad ones
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE node_uid = $1", NODE) == 49
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE value IN (0, 41)") == 0
    assert outcome(instance.base_url, "telemetry", "unstorable_text") == 2
    assert metric(instance.base_url, "hydrovisor_telemetry_dropped_total", reason="invalid_text", source="mqtt") == 2
    assert metric(instance.base_url, "hydrovisor_telemetry_stored_total") - stored_before == 49
    assert ready(instance) == 200
    # and it keeps moving afterwards
    assert run(lambda: publish([telemetry_msg(k) for k in range(100, 110)])) == set(range(10))
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE node_uid = $1", NODE) == 59
    assert ready(instance) == 200


def test_mqtt_nul_in_a_topic_closes_the_connection_and_the_device_carries_on(instance: Running, pg_dsn: str) -> None:
    """U+0000 in a topic name is a protocol violation (MQTT 3.1.1 §1.5.3): the connection is closed,
    nothing of it is acknowledged, nothing waits behind it; the device reconnects and is served."""
    make_zone(instance)
    make_node(instance)
    PORT[0] = instance.mqtt_port

    async def rude() -> set[int]:
        client = PipelineClient(HW, keep_alive=30)
        await client.connect("127.0.0.1", PORT[0])
        client.send_publishes([telemetry_msg(0, channel="ph\u0000sensor"), telemetry_msg(1)])
        async with asyncio.timeout(10):
            await client.wait_closed()
        return client.acked_seqs

    acked = run(rude)
    assert 0 not in acked
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE channel LIKE 'ph%sensor' AND value = 0") == 0
    assert run(lambda: publish([telemetry_msg(k) for k in range(1, 11)])) == set(range(10))
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE node_uid = $1", NODE) == 10
    assert ready(instance) == 200


def test_http_nul_in_a_sample_is_a_counted_drop(instance: Running, pg_dsn: str) -> None:
    make_zone(instance)
    make_node(instance)
    now = time.time()
    good = [{"node_uid": NODE, "channel": "ph_sensor", "metric_type": "PH", "value": k, "ts": now - 100 + k}
            for k in range(5)]
    bad = [
        {"node_uid": NODE, "channel": "ph\u0000", "metric_type": "PH", "value": 1, "ts": now},
        {"node_uid": NODE, "channel": "ph_sensor", "metric_type": "PH\u0000", "value": 1, "ts": now},
        {"node_uid": NODE, "channel": "c" * 10_000, "metric_type": "PH", "value": 1, "ts": now},
        {"node_uid": NODE, "channel": "ph_sensor", "metric_type": "PH", "value": 10**309, "ts": now},
    ]
    # a ts beyond float range (a JSON integer) is not a time: replaced by the server's, flagged, stored
    huge_ts = {"node_uid": NODE, "channel": "ph_sensor", "metric_type": "PH", "value": 7.5, "ts": 10**309}
    reply = http("POST", instance.base_url + "/api/v1/ingest/telemetry", body={"samples": [bad[0], *good, *bad[1:],
                                                                                          huge_ts]})
    assert reply.status == 202, reply.raw
    body = reply.json()["data"]
    assert (body["count"], body["dropped"], body["total"]) == (6, 4, 10)
    assert body["dropped_reasons"] == {"invalid_text": 3, "invalid_value": 1}
    # 202 means committed
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE node_uid = $1", NODE) == 6
    assert db(pg_dsn, "SELECT flags->>'ts_replaced' FROM telemetry_samples WHERE value = 7.5") == "true"
    assert metric(instance.base_url, "hydrovisor_telemetry_dropped_total", reason="invalid_text", source="http") == 3
    again = http("POST", instance.base_url + "/api/v1/ingest/telemetry", body={"samples": good})
    assert (again.status, again.json()["data"]["count"]) == (202, 5)
    assert ready(instance) == 200


def test_nul_in_other_device_messages_is_counted_and_the_node_carries_on(instance: Running, pg_dsn: str) -> None:
    make_zone(instance)
    make_node(instance)
    PORT[0] = instance.mqtt_port
    now_ms = int(time.time() * 1000)
    poisoned = [
        Message(f"{NS}/storage_state/event", json.dumps(
            {"event_code": "clean_fill_completed", "ts": BASE_TS, "details": {"note": "a\u0000b"}}).encode()),
        Message(f"{NS}/error", json.dumps(
            {"level": "ERROR", "component": "pump\u0000", "error_code": "e1", "message": "m", "ts": now_ms}).encode()),
        Message(f"{NS}/system/command_response", json.dumps(
            {"cmd_id": "cmd-1", "status": "DONE", "ts": now_ms, "details": {"x": "\u0000"}}).encode()),
        Message("hydro/node_hello", json.dumps(
            {"message_type": "node_hello", "hardware_id": "esp32-00000000bb01", "fw_version": "1.0\u0000"}).encode()),
    ]
    valid = [
        Message(f"{NS}/storage_state/event", json.dumps(
            {"event_code": "solution_fill_completed", "ts": BASE_TS, "details": {"note": "ok"}}).encode()),
        # an error report whose ts (ms) lies beyond the year 9999: stored without a ts, not retried for ever
        Message(f"{NS}/error", json.dumps(
            {"level": "ERROR", "component": "pump", "error_code": "e_huge_ts", "message": "m", "ts": 1e300}).encode()),
        Message(f"{NS}/error", json.dumps(
            {"level": "WARNING", "component": "pump", "error_code": "e2", "message": "m", "ts": now_ms}).encode()),
        Message(f"{NS}/system/command_response", json.dumps(
            {"cmd_id": "cmd-2", "status": "DONE", "ts": now_ms}).encode()),
        Message("hydro/node_hello", json.dumps(
            {"message_type": "node_hello", "hardware_id": "esp32-00000000bb02", "fw_version": "1.0"}).encode()),
        telemetry_msg(1),
    ]
    acked = run(lambda: publish([*poisoned, *valid]))
    assert acked == set(range(len(poisoned) + len(valid)))
    for kind in ("event", "error", "command_response", "node_hello"):
        assert outcome(instance.base_url, kind, "unstorable_text") == 1, kind
    # what came after is processed
    assert db(pg_dsn, "SELECT count(*) FROM telemetry_samples WHERE node_uid = $1", NODE) == 1

    def timeline() -> bool:
        events = http("GET", instance.base_url + "/api/v1/zones/zn-1/events").json()["data"]
        return any(e["type"] == "SOLUTION_FILL_COMPLETED" for e in events)

    wait_until(timeline, 10, what="the valid event in the zone timeline")
    wait_until(lambda: db(pg_dsn, "SELECT count(*) FROM node_errors WHERE node_uid = $1", NODE) == 2, 10,
               what="both valid error reports stored")
    assert db(pg_dsn, "SELECT ts FROM node_errors WHERE error_code = 'e_huge_ts'") is None
    assert db(pg_dsn, "SELECT count(*) FROM nodes WHERE hardware_id = 'esp32-00000000bb02'") == 1
    assert db(pg_dsn, "SELECT count(*) FROM nodes WHERE hardware_id = 'esp32-00000000bb01'") == 0
    assert outcome(instance.base_url, "any", "route_failed") == 0
    assert outcome(instance.base_url, "command_response", "not_stored") == 0
    # nothing is retried in the background: a moment later the node's writes are all done
    time.sleep(0.5)
    assert db(pg_dsn, "SELECT count(*) FROM node_errors WHERE node_uid = $1", NODE) == 2
    assert ready(instance) == 200


def test_quarantine_endpoint(instance: Running, pg_dsn: str) -> None:
    empty = http("GET", instance.base_url + "/api/v1/telemetry/quarantine")
    assert (empty.status, empty.json()["data"]) == (200, [])

    async def keep() -> None:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1)
        try:
            for i in range(3):
                sample = Sample(zone_uid="zn-1", node_uid=NODE, channel=f"bad\u0000{i}", metric="PH", value=i,
                                ts=BASE_TS + i, source="mqtt")
                await telemetry.quarantine(pool, sample, 'invalid byte sequence for encoding "UTF8": 0x00')
        finally:
            await pool.close()

    run(keep)
    listed = http("GET", instance.base_url + "/api/v1/telemetry/quarantine")
    assert listed.status == 200
    items = listed.json()["data"]
    assert [q["sample"]["channel"] for q in items] == ["bad\u00002", "bad\u00001", "bad\u00000"]  # newest first
    assert all(q["error"].startswith("invalid byte sequence") and q["quarantined_at"] > 0 for q in items)
    assert items[0]["id"] > items[1]["id"]
    one = http("GET", instance.base_url + "/api/v1/telemetry/quarantine?limit=1").json()["data"]
    assert [q["id"] for q in one] == [items[0]["id"]]
    for bad in ("0", "1001", "x", "-1", "1e3"):
        reply = http("GET", instance.base_url + f"/api/v1/telemetry/quarantine?limit={bad}")
        assert (reply.status, reply.json()["code"]) == (400, "invalid_parameter"), bad


def test_quarantine_endpoint_is_for_operators(start_app: Callable[..., Running]) -> None:
    running = start_app(api_token="operator-token-0123456789")
    url = running.base_url + "/api/v1/telemetry/quarantine"
    assert http("GET", url).status == 401
    assert http("GET", url, token="operator-token-0123456789").status == 200
