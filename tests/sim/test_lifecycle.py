"""A simulated node's lifecycle against a real broker: time sync, hello, config push, LWT."""

from __future__ import annotations

import asyncio
import json
import time

from hydrovisor.protocol import (
    NODE_HELLO,
    TIME_REQUEST,
    TIME_RESPONSE,
    ChannelConfig,
    ConfigPush,
    ConfigReport,
    NodeHello,
    Telemetry,
    encode_config_push,
    node_uid_from_hello,
)
from hydrovisor.sim import SimNode
from tests.helpers import free_port
from tests.sim.support import FAST, HW_PH, SECRET, bound, decoded, one_node, run, time_response

TEMP = f"hydro/gh-temp/zn-temp/{HW_PH}"
BOUND = "hydro/gh-1/zn-1/nd-ph-a1b2c3d4e5f6"


def _push(gh: str = "gh-1", zone: str = "zn-1", node_id: str = "nd-ph-a1b2c3d4e5f6") -> bytes:
    channels = (ChannelConfig(name="ph_sensor", type="SENSOR", metric="PH", unit="pH", poll_interval_ms=5000),
                ChannelConfig(name="pump_acid", type="ACTUATOR", actuator_type="PERISTALTIC_PUMP", ml_per_second=1.0))
    return encode_config_push(ConfigPush(node_id=node_id, gh_uid=gh, zone_uid=zone, type="ph", channels=channels,
                                         node_secret=SECRET))


def test_fresh_node_registers_from_the_temp_namespace_and_streams_only_after_the_time() -> None:
    async def scenario() -> None:
        async with one_node() as (embedded, inbox, node):
            request = (await inbox.wait_topic(TIME_REQUEST))[0]
            assert request.client_id == HW_PH
            assert json.loads(request.payload)["message_type"] == "time_request"
            hello = decoded((await inbox.wait_topic(NODE_HELLO))[0])
            assert isinstance(hello, NodeHello)
            assert (hello.hardware_id, hello.node_type) == (HW_PH, "ph")
            assert node_uid_from_hello(hello) == "nd-ph-a1b2c3d4e5f6"
            report = decoded((await inbox.wait_topic(f"{TEMP}/config_report"))[0])
            assert isinstance(report, ConfigReport)
            assert (report.gh_uid, report.zone_uid, report.node_id) == ("gh-temp", "zn-temp", HW_PH)
            assert {c.name for c in report.channels} >= {"ph_sensor", "pump_acid", "pump_base", "system"}
            status = (await inbox.wait_topic(f"{TEMP}/status"))[0]
            assert status.retain
            assert json.loads(status.payload)["status"] == "ONLINE"
            await inbox.wait_topic(f"{TEMP}/heartbeat")

            await asyncio.sleep(0.6)  # several telemetry intervals: nothing without the time
            assert not [m for m in inbox.messages if m.topic.endswith("/telemetry")]
            assert len(inbox.on(TIME_REQUEST)) >= 2  # asks again until answered

            await embedded.publish(TIME_RESPONSE, time_response())
            await node.wait_synced(2)
            ph = (await inbox.wait_topic(f"{TEMP}/ph_sensor/telemetry"))[0]
            body = json.loads(ph.payload)
            assert body["metric_type"] == "PH" and body["unit"] == "pH"
            assert isinstance(body["raw"], int)
            # sensor mode is off: the firmware sends no stable/flow_active/corrections_allowed at all
            assert not {"stable", "flow_active", "corrections_allowed"} & set(body)
            assert abs(body["ts"] - time.time()) < 5
            sample = decoded(ph)
            assert isinstance(sample, Telemetry) and not sample.ts_replaced
            await inbox.wait_topic(f"{TEMP}/solution_temp/telemetry")

    run(scenario)


def test_config_push_moves_the_node_and_its_will_and_an_unbind_brings_it_back() -> None:
    async def scenario() -> None:
        async with one_node(sync=True) as (embedded, inbox, node):
            await inbox.wait_topic(f"{TEMP}/config_report")
            assert node.lwt_topic == f"{TEMP}/lwt"

            await embedded.publish(f"{TEMP}/config", _push())
            report = decoded((await inbox.wait_topic(f"{BOUND}/config_report"))[0])
            assert isinstance(report, ConfigReport)
            assert (report.gh_uid, report.zone_uid, report.node_id) == ("gh-1", "zn-1", "nd-ph-a1b2c3d4e5f6")
            assert [c.name for c in report.channels] == ["ph_sensor", "pump_acid"]  # the pushed channels
            assert report.has_node_secret
            assert node.is_bound and node.lwt_topic == f"{BOUND}/lwt"
            await inbox.wait_topic(f"{BOUND}/status")
            await inbox.wait_topic(f"{BOUND}/ph_sensor/telemetry")  # the clock survived the reconnect
            assert not inbox.on(f"{TEMP}/lwt")  # a clean reconnect: no will in the old namespace

            assert await node.go_offline(0.2)
            will = (await inbox.wait_topic(f"{BOUND}/lwt"))[0]
            assert (will.payload, will.retain) == (b"offline", True)
            await node.wait_connected(3)
            await inbox.wait_topic(f"{BOUND}/status", count=2)

            hellos = len(inbox.on(NODE_HELLO))
            await embedded.publish(f"{BOUND}/config", _push("gh-temp", "zn-temp", HW_PH))
            await inbox.wait_topic(f"{TEMP}/config_report", count=2)
            await inbox.wait(lambda: len(inbox.on(NODE_HELLO)) > hellos)
            assert not node.is_bound and node.lwt_topic == f"{TEMP}/lwt"

    run(scenario)


def test_config_update_in_the_same_namespace_reports_without_reconnecting() -> None:
    async def scenario() -> None:
        async with one_node(field_config=bound()) as (embedded, inbox, node):
            await inbox.wait_topic(f"{BOUND}/config_report")
            await embedded.publish(f"{BOUND}/config", _push())
            await inbox.wait_topic(f"{BOUND}/config_report", count=2)
            assert node.stats.connects == 1

    run(scenario)


def test_preconfigured_node_boots_bound_without_hello() -> None:
    async def scenario() -> None:
        async with one_node(field_config=bound()) as (_, inbox, _node):
            report = json.loads((await inbox.wait_topic(f"{BOUND}/config_report"))[0].payload)
            assert (report["gh_uid"], report["zone_uid"], report["node_id"]) == ("gh-1", "zn-1",
                                                                                  "nd-ph-a1b2c3d4e5f6")
            await inbox.wait_topic(f"{BOUND}/status")
            assert not inbox.on(NODE_HELLO)
            assert inbox.on(TIME_REQUEST)

    run(scenario)


def test_rejected_config_pushes_are_ignored_silently() -> None:
    async def scenario() -> None:
        async with one_node() as (embedded, inbox, node):
            await inbox.wait_topic(f"{TEMP}/config_report")
            for payload in (b"{not json", b"[]", json.dumps({"gh_uid": "gh-1", "zone_uid": "zn-1",
                                                              "node_id": "nd-x"}).encode(),  # no secret
                            json.dumps({"gh_uid": "GH 1", "zone_uid": "zn-1", "node_id": "nd-x",
                                        "node_secret": "s"}).encode(),
                            json.dumps({"gh_uid": "gh-temp", "zone_uid": "zn-1", "node_id": "nd-x",
                                        "node_secret": "s"}).encode()):
                await embedded.publish(f"{TEMP}/config", payload)
            await inbox.wait(lambda: node.stats.config_rejected == 5)
            await asyncio.sleep(0.1)
            assert len(inbox.on(f"{TEMP}/config_report")) == 1
            assert not node.is_bound and node.stats.connects == 1

    run(scenario)


def test_a_node_dropped_by_the_broker_reconnects() -> None:
    async def scenario() -> None:
        async with one_node(field_config=bound(), sync=True) as (embedded, inbox, node):
            assert await embedded.disconnect(HW_PH)
            await inbox.wait_topic(f"{BOUND}/lwt")
            await inbox.wait(lambda: node.stats.connects == 2 and node.is_connected)
            await inbox.wait_topic(f"{BOUND}/status", count=2)

    run(scenario)


def test_a_node_without_broker_keeps_retrying_and_stops_promptly() -> None:
    async def scenario() -> None:
        node = SimNode(f"mqtt://127.0.0.1:{free_port()}", HW_PH, "ph", options=FAST)
        await node.start()
        deadline = asyncio.get_running_loop().time() + 5
        while node.stats.connect_failures < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        started_at = time.monotonic()
        await node.stop()
        assert time.monotonic() - started_at < 1 and not node.is_connected

    run(scenario)
