"""Failure modes of simulated nodes, observed through a real broker."""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager

import msgspec
import pytest

from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.protocol import (
    CommandResponse,
    DecodeError,
    Telemetry,
    TopicError,
    decode_device_message,
    parse_topic,
)
from hydrovisor.sim import Faults, SimNode
from tests.sim.support import HW_PH, Collector, bound, command, decoded, one_node, run

BOUND = "hydro/gh-1/zn-1/nd-ph-a1b2c3d4e5f6"
PUMP = f"{BOUND}/pump_acid/command"


def faulty(faults: Faults) -> AbstractAsyncContextManager[tuple[EmbeddedBroker, Collector, SimNode]]:
    """A bound, synced pH node with ``faults``."""
    return one_node(field_config=bound(), faults=faults, sync=True)


def test_contradictory_terminal_sends_done_then_busy() -> None:
    async def scenario() -> None:
        async with faulty(Faults(contradictory_terminal=1.0)) as (embedded, inbox, node):
            await embedded.publish(PUMP, command("run_pump", "twice", {"duration_ms": 500}))
            await inbox.wait_statuses("twice", ["ACK", "DONE", "ACK", "BUSY"])
            assert node.stats.contradictions_sent == 1

    run(scenario)


def test_offline_window_fires_the_lwt_and_the_node_comes_back() -> None:
    async def scenario() -> None:
        async with faulty(Faults(offline_every_s=0.2, offline_duration_s=0.2)) as (_, inbox, node):
            will = (await inbox.wait_topic(f"{BOUND}/lwt"))[0]
            assert (will.payload, will.retain, will.client_id) == (b"offline", True, HW_PH)
            await inbox.wait(lambda: node.stats.connects >= 2, within=5)
            await inbox.wait_topic(f"{BOUND}/status", count=2)
            assert node.stats.offline_windows >= 1

    run(scenario)


def test_overcurrent_ends_a_pump_start_in_error_with_the_current() -> None:
    async def scenario() -> None:
        async with faulty(Faults(overcurrent=1.0)) as (embedded, inbox, _):
            await embedded.publish(PUMP, command("run_pump", "trip", {"duration_ms": 5000}))
            await inbox.wait_statuses("trip", ["ACK", "ERROR"])
            error = inbox.responses("trip")[1]
            assert error["error_code"] == "overcurrent"
            assert error["details"]["current_ma"] > error["details"]["threshold_ma"]

    run(scenario)


def test_dropped_duplicated_delayed_replies_and_simulator_style_errors() -> None:
    async def scenario() -> None:
        async with faulty(Faults(drop_reply=1.0)) as (embedded, inbox, node):
            await embedded.publish(PUMP, command("run_pump", "lost", {"duration_ms": 100}))
            await inbox.wait(lambda: node.stats.replies_dropped == 2)
            assert not inbox.responses("lost") and node.stats.commands_answered == 1
        async with faulty(Faults(duplicate_reply=1.0, delay_reply_s=0.05)) as (embedded, inbox, _):
            await embedded.publish(PUMP, command("run_pump", "dup", {"duration_ms": 100}))
            await inbox.wait_statuses("dup", ["ACK", "ACK", "DONE", "DONE"])
        async with faulty(Faults(errors_in_details=True)) as (embedded, inbox, _):
            await embedded.publish(PUMP, command("dose", "inner", {"ml": 1.0}))
            await inbox.wait_statuses("inner", ["ERROR"])
            body = inbox.responses("inner")[0]
            assert "error_code" not in body and body["details"]["error_code"] == "node_not_activated"
            message = next(m for m in inbox.messages if m.topic.endswith("/command_response"))
            response = decoded(message)
            assert isinstance(response, CommandResponse) and response.error_code == "node_not_activated"

    run(scenario)


def test_bad_json_and_uptime_timestamps() -> None:
    async def scenario() -> None:
        async with faulty(Faults(bad_json=1.0)) as (_, inbox, _node):
            messages = await inbox.wait_topic(f"{BOUND}/ph_sensor/telemetry", count=2)
            for message in messages:
                with pytest.raises(msgspec.DecodeError):
                    msgspec.json.decode(message.payload)
                parsed = parse_topic(message.topic)
                assert not isinstance(parsed, TopicError)
                assert isinstance(decode_device_message(parsed, message.payload, now=0), DecodeError)
        async with faulty(Faults(uptime_timestamps=True)) as (_, inbox, _node):
            body = json.loads((await inbox.wait_topic(f"{BOUND}/ph_sensor/telemetry"))[0].payload)
            assert 0 <= body["ts"] < 1e9
            sample = decoded(inbox.on(f"{BOUND}/ph_sensor/telemetry")[0])
            assert isinstance(sample, Telemetry) and sample.ts_replaced

    run(scenario)
