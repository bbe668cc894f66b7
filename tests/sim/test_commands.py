"""Signed commands against a simulated node: admission, ACK/terminal, the cmd_id cache, node behaviours."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import AbstractAsyncContextManager

from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.protocol import CommandResponse, CommandStatus
from hydrovisor.sim import SimNode
from tests.sim.support import (
    FAST,
    HW_IRRIG,
    HW_PH,
    Collector,
    bound,
    broker,
    command,
    decoded,
    one_node,
    run,
    started,
    url,
)

BOUND = "hydro/gh-1/zn-1/nd-ph-a1b2c3d4e5f6"
IRRIG = "hydro/gh-1/zn-1/nd-irr-0badc0ffee01"


def ph_node() -> AbstractAsyncContextManager[tuple[EmbeddedBroker, Collector, SimNode]]:
    """A bound, synced pH node."""
    return one_node(field_config=bound(), sync=True)


def test_run_pump_is_acknowledged_then_done_with_millisecond_timestamps() -> None:
    async def scenario() -> None:
        async with ph_node() as (embedded, inbox, _):
            before = time.time()
            await embedded.publish(f"{BOUND}/pump_acid/command", command("run_pump", "c-1", {"duration_ms": 2500}))
            await inbox.wait_statuses("c-1", ["ACK", "DONE"])
            responses = inbox.responses("c-1")
            for body in responses:
                assert body["ts"] > 1e12 and abs(body["ts"] / 1000 - before) < 5
            assert responses[1]["details"]["duration_ms"] == 2500
            message = inbox.on(f"{BOUND}/pump_acid/command_response")[-1]
            response = decoded(message)
            assert isinstance(response, CommandResponse) and response.status is CommandStatus.DONE

    run(scenario)


def test_admission_failures_get_a_single_terminal_and_no_ack() -> None:
    async def scenario() -> None:
        async with ph_node() as (embedded, inbox, _):
            topic = f"{BOUND}/pump_acid/command"
            await embedded.publish(topic, command("run_pump", "bad-sig", {"duration_ms": 100}, secret="wrong"))
            extra = json.loads(command("run_pump", "extra-key", {"duration_ms": 100}))
            extra["note"] = "x"
            await embedded.publish(topic, json.dumps(extra).encode())
            await embedded.publish(topic, b"\x00garbage")
            await embedded.publish(topic, command("run_pump", "stale", {"duration_ms": 100},
                                                  ts=int(time.time()) - 60))
            await embedded.publish(topic, command("fly", "unknown-cmd"))
            await embedded.publish(f"{BOUND}/no_such_channel/command", command("run_pump", "no-chan",
                                                                               {"duration_ms": 100}))
            await embedded.publish(topic, command("run_pump", "no-duration"))
            await inbox.wait_statuses("bad-sig", ["ERROR"])
            await inbox.wait_statuses("extra-key", ["INVALID"])
            await inbox.wait_statuses("unknown", ["INVALID"])
            await inbox.wait_statuses("stale", ["ERROR"])
            await inbox.wait_statuses("unknown-cmd", ["ERROR"])
            await inbox.wait_statuses("no-chan", ["ERROR"])
            await inbox.wait_statuses("no-duration", ["INVALID"])
            codes = {cmd_id: inbox.responses(cmd_id)[0]["error_code"] for cmd_id in (
                "bad-sig", "extra-key", "unknown", "stale", "unknown-cmd", "no-chan", "no-duration")}
            assert codes == {
                "bad-sig": "invalid_signature", "extra-key": "invalid_command_format",
                "unknown": "invalid_command_format", "stale": "timestamp_expired", "unknown-cmd": "unknown_command",
                "no-chan": "unsupported_channel_cmd", "no-duration": "invalid_params",
            }
            # the garbage answer is addressed to the channel of the topic it came in on
            assert inbox.on(f"{BOUND}/no_such_channel/command_response")

    run(scenario)


def test_missing_secret_and_unsynced_clock_are_refused() -> None:
    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            fresh = SimNode(url(embedded), HW_PH, "ph", options=FAST)  # no secret yet
            async with started(fresh, synced_by=embedded):
                await embedded.publish(f"hydro/gh-temp/zn-temp/{HW_PH}/system/command",
                                       command("activate_sensor_mode", "no-secret"))
                await inbox.wait_statuses("no-secret", ["ERROR"])
                assert inbox.responses("no-secret")[0]["error_code"] == "missing_node_secret"
            unsynced = SimNode(url(embedded), HW_IRRIG, "irrig", options=FAST,
                               field_config=bound("nd-irr-0badc0ffee01"))
            async with started(unsynced):
                await embedded.publish(f"{IRRIG}/storage_state/command", command("state", "early"))
                await inbox.wait_statuses("early", ["ERROR"])
                assert inbox.responses("early")[0]["error_code"] == "time_not_synced"

    run(scenario)


def test_cmd_id_cache_repeats_ack_while_running_done_after_done_and_refuses_after_error() -> None:
    async def scenario() -> None:
        async with ph_node() as (embedded, inbox, _):
            topic = f"{BOUND}/pump_acid/command"
            long_run = command("run_pump", "long", {"duration_ms": 60_000})  # 0.6 s at time_scale 0.01
            await embedded.publish(topic, long_run)
            await inbox.wait(lambda: inbox.statuses("long") == ["ACK"])
            await embedded.publish(topic, long_run)
            await inbox.wait_statuses("long", ["ACK", "ACK", "DONE"])
            await embedded.publish(topic, long_run)
            await inbox.wait_statuses("long", ["ACK", "ACK", "DONE", "DONE"])

            failing = command("dose", "no-mode", {"ml": 1.5})
            await embedded.publish(topic, failing)
            await inbox.wait_statuses("no-mode", ["ERROR"])
            assert inbox.responses("no-mode")[0]["error_code"] == "node_not_activated"
            await embedded.publish(topic, failing)
            await inbox.wait_statuses("no-mode", ["ERROR", "ERROR"])
            assert inbox.responses("no-mode")[1]["error_code"] == "command_already_failed"

            # a different cmd_id is a new command; a second run while the pump runs is BUSY
            await embedded.publish(topic, command("run_pump", "first", {"duration_ms": 30_000}))
            await inbox.wait(lambda: inbox.statuses("first") == ["ACK"])
            await embedded.publish(topic, command("run_pump", "second", {"duration_ms": 100}))
            await inbox.wait_statuses("second", ["BUSY"])
            await inbox.wait_statuses("first", ["ACK", "DONE"])

    run(scenario)


def test_dose_needs_sensor_mode_which_also_gates_the_ph_flags() -> None:
    async def scenario() -> None:
        async with ph_node() as (embedded, inbox, node):
            await embedded.publish(f"{BOUND}/pump_acid/command", command("dose", "d-1", {"ml": 2.0}))
            await inbox.wait_statuses("d-1", ["ERROR"])
            assert inbox.responses("d-1")[0]["error_code"] == "node_not_activated"

            await embedded.publish(f"{BOUND}/system/command", command("activate_sensor_mode", "act"))
            await inbox.wait_statuses("act", ["ACK", "DONE"])
            ph_before = node.physics.ph
            await embedded.publish(f"{BOUND}/pump_acid/command", command("dose", "d-2", {"ml": 20.0}))
            await inbox.wait_statuses("d-2", ["ACK", "DONE"])
            assert inbox.responses("d-2")[1]["details"] == {"ml": 20.0, "duration_ms": 20_000}
            assert node.physics.ph < ph_before - 0.1

            def corrections_allowed() -> bool:
                bodies = inbox.bodies(f"{BOUND}/ph_sensor/telemetry")
                return bool(bodies) and bodies[-1]["corrections_allowed"] is True
            await inbox.wait(corrections_allowed, within=3)
            latest = inbox.bodies(f"{BOUND}/ph_sensor/telemetry")[-1]
            assert latest["flow_active"] is True and "stable" not in latest  # firmware omits stable when stable

            await embedded.publish(f"{BOUND}/system/command", command("deactivate_sensor_mode", "deact"))
            await inbox.wait_statuses("deact", ["ACK", "DONE"])
            await embedded.publish(f"{BOUND}/pump_acid/command", command("dose", "d-3", {"ml": 1.0}))
            await inbox.wait_statuses("d-3", ["ERROR"])

    run(scenario)


def test_irrigation_node_state_snapshot_relays_and_pump_physics() -> None:
    async def scenario() -> None:
        async with broker() as (embedded, inbox):
            node = SimNode(url(embedded), HW_IRRIG, "irrig", options=FAST, field_config=bound("nd-irr-0badc0ffee01"))
            async with started(node, synced_by=embedded):
                await embedded.publish(f"{IRRIG}/valve_irrigation/command",
                                       command("set_relay", "v-on", {"state": True}))
                await inbox.wait_statuses("v-on", ["ACK", "DONE"])
                await embedded.publish(f"{IRRIG}/valve_irrigation/command",
                                       command("set_relay", "v-again", {"state": True}))
                await inbox.wait_statuses("v-again", ["NO_EFFECT"])
                # the interlock: no pump path is open yet (irrigation also needs the solution supply)
                await embedded.publish(f"{IRRIG}/pump_main/command",
                                       command("run_pump", "blocked", {"duration_ms": 60_000}))
                await inbox.wait_statuses("blocked", ["ERROR"])
                assert inbox.responses("blocked")[0]["error_code"] == "pump_interlock_blocked"
                await embedded.publish(f"{IRRIG}/valve_solution_supply/command",
                                       command("set_relay", "supply", {"state": 1}))
                await inbox.wait_statuses("supply", ["ACK", "DONE"])
                level = node.physics.solution_level_pct
                await embedded.publish(f"{IRRIG}/pump_main/command",
                                       command("run_pump", "drain", {"duration_ms": 60_000}))
                await inbox.wait(lambda: inbox.statuses("drain") == ["ACK"])
                await inbox.wait(lambda: any(b["value"] > 10 for b in inbox.bodies(f"{IRRIG}/flow/telemetry")))
                await inbox.wait(lambda: any(b["value"] > 1000 for b in
                                             inbox.bodies(f"{IRRIG}/pump_current/telemetry")))
                await inbox.wait_statuses("drain", ["ACK", "DONE"])
                assert level - node.physics.solution_level_pct > 5  # 12 l/min for 60 s out of 200 l

                await embedded.publish(f"{IRRIG}/storage_state/command", command("state", "snap"))
                await inbox.wait_statuses("snap", ["ACK", "DONE"])
                snapshot = inbox.responses("snap")[1]["details"]["snapshot"]
                assert snapshot["valve_irrigation"] is True and snapshot["pump_main"] is False
                assert set(snapshot) == {"clean_level_max", "clean_level_min", "solution_level_max",
                                         "solution_level_min", "valve_clean_fill", "valve_clean_supply",
                                         "valve_solution_fill", "valve_solution_supply", "valve_irrigation",
                                         "pump_main"}
                await embedded.publish(f"{IRRIG}/system/command", command("report_config", "rc"))
                await inbox.wait_statuses("rc", ["ACK", "DONE"])
                assert len(inbox.on(f"{IRRIG}/config_report")) == 2

    run(scenario)


def test_restart_command_reboots_the_node_losing_its_clock_until_answered() -> None:
    async def scenario() -> None:
        async with one_node(field_config=bound(), answer_time=True) as (embedded, inbox, node):
            await node.wait_synced(3)
            await embedded.publish(f"{BOUND}/system/command", command("restart", "boot"))
            await inbox.wait_statuses("boot", ["ACK", "DONE"])
            await inbox.wait_topic(f"{BOUND}/lwt")  # a reboot drops the connection without DISCONNECT
            await inbox.wait(lambda: node.stats.connects == 2)
            await node.wait_synced(3)
            statuses = [json.loads(m.payload)["status"] for m in inbox.on(f"{BOUND}/status")]
            assert "RESTARTING" in statuses and statuses[-1] == "ONLINE"
            await asyncio.sleep(0)

    run(scenario)
