"""The command lifecycle end to end: HTTP -> command actor -> signed MQTT -> simulated node -> replies."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from amqtt.client import MQTTClient

from hydrovisor.commands import spawn
from hydrovisor.config.settings import SupervisionSettings
from hydrovisor.sim import Faults
from tests.app.conftest import Running
from tests.app.irrig_node import Node
from tests.helpers import http, wait_until
from tests.plant import STATE_PROBE


def test_queued_sent_ack_done(node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    reply = node.command(cmd_id="run-1", trace_id="t-1")
    assert reply.status == 202, reply.raw
    data = reply.json()["data"]
    assert data["command_id"] == "run-1"
    assert data["status"] in ("SENT", "ACK", "DONE")
    assert data["timeout_s"] == 32.5  # duration_ms + 30 s
    done = node.get("run-1", wait=10)
    assert done["status"] == "DONE"
    assert done["command_effect_confirmed"] is True
    assert done["terminal_at"] is not None
    assert node.timeline("run-1") == [("QUEUED", True), ("SENT", True), ("ACK", True), ("DONE", True)]
    again = node.command(cmd_id="run-1", trace_id="t-1")
    assert (again.status, again.json()["data"]["status"]) == (200, "DONE")  # no second publish
    assert node.sim.stats.commands_answered == 1
    listed = http("GET", node.instance.base_url + "/api/v1/commands?node_uid=" + node.uid).json()["data"]
    assert [c["cmd_id"] for c in listed] == ["run-1"]


def test_bad_requests_get_their_codes_and_store_nothing(node_factory: Callable[..., Node]) -> None:
    node = node_factory(start=False)
    base = node.instance.base_url + "/api/v1/commands"
    cases = [
        ({"type": "run_pump", "node_uid": node.uid, "channel": "pump_main"}, 400, "legacy_field_type"),
        ({"node_uid": node.uid, "channel": "pump_main"}, 400, "missing_cmd"),
        ({"cmd": "run_pump", "channel": "pump_main"}, 400, "missing_node_uid"),
        ({"cmd": "run_pump", "node_uid": node.uid}, 400, "missing_channel"),
        ({"cmd": "run_pump", "node_uid": node.uid, "channel": "pump_main", "params": {"duration_ms": 0}}, 400,
         "param_out_of_range"),
        ({"cmd": "run_pump", "node_uid": node.uid, "channel": "pump_main", "params": []}, 400, "invalid_body"),
        ({"cmd": "run_pump", "node_uid": node.uid, "channel": "flow"}, 400, "channel_not_actuator"),
        ({"cmd": "run_pump", "node_uid": "nd-404", "channel": "pump_main"}, 404, "node_not_found"),
        ({"cmd": "run_pump", "node_uid": node.uid, "channel": "pump_main", "zone_uid": "zn-2"}, 409,
         "node_zone_mismatch"),
    ]
    for body, status, code in cases:
        reply = http("POST", base, body=body)
        assert (reply.status, reply.json()["code"]) == (status, code), body
    assert http("GET", base).json()["data"] == []


def test_node_offline_fails_fast_then_the_same_cmd_id_succeeds(node_factory: Callable[..., Node]) -> None:
    # a state probe: a pump start to a node never heard from is refused by the zone's gate before any send
    node = node_factory(start=False)
    probe = STATE_PROBE
    failed = node.command(cmd_id="retry-1", **probe)
    assert (failed.status, failed.json()["code"], failed.json()["error_code"]) == (
        502, "command_send_failed", "node_not_connected")
    assert node.get("retry-1")["status"] == "SEND_FAILED"
    # the alert is written beside the SEND_FAILED status, not before the answer
    wait_until(lambda: "infra_command_send_failed" in {
        a["code"] for a in http("GET", node.instance.base_url + "/api/v1/alerts?status=ACTIVE").json()["data"]},
        timeout=5, what="the send-failed alert")
    conflict = node.command(cmd_id="retry-1", **(probe | {"params": {"duration_ms": 1000}}))
    assert (conflict.status, conflict.json()["code"]) == (409, "cmd_id_conflict")
    node.start()
    retried = node.command(cmd_id="retry-1", **probe)
    assert retried.status == 200, retried.raw
    assert node.get("retry-1", wait=10)["status"] == "DONE"


def test_dropped_reply_times_out_and_a_late_done_is_recorded_not_applied(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory(faults=Faults(delay_reply_s=2.0))
    reply = node.command(cmd_id="slow-1", timeout_s=1.0)
    assert reply.status == 202
    timed_out = node.get("slow-1", wait=10)
    assert (timed_out["status"], timed_out["error_code"]) == ("TIMEOUT", "command_timeout")
    assert timed_out["failed_at"] is not None
    wait_until(lambda: ("DONE", False) in node.timeline("slow-1"), timeout=10, what="late DONE recorded")
    assert node.get("slow-1")["status"] == "TIMEOUT"


def test_contradicting_second_terminal_keeps_the_first(node_factory: Callable[..., Node]) -> None:
    node = node_factory(faults=Faults(contradictory_terminal=1.0))
    assert node.command(cmd_id="twice-1").status == 202
    assert node.get("twice-1", wait=10)["status"] == "DONE"
    wait_until(lambda: ("BUSY", False) in node.timeline("twice-1"), timeout=10, what="contradiction recorded")
    assert node.get("twice-1")["status"] == "DONE"


def test_reply_for_an_unknown_cmd_id_gets_a_stub_and_its_terminal(node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    response = {"cmd_id": "ghost-1", "status": "ERROR", "ts": 1737355112000, "error_code": "pump_interlock_blocked"}

    async def send() -> None:
        client = MQTTClient(client_id="esp32-test-ghost", config={"auto_reconnect": False})
        await client.connect(f"mqtt://127.0.0.1:{node.instance.mqtt_port}/")
        await client.publish(f"hydro/gh-1/zn-1/{node.uid}/pump_main/command_response",
                             json.dumps(response).encode(), qos=1)
        await client.disconnect()

    node.instance.loop.run(send())
    def terminal() -> Any:
        reply = http("GET", node.instance.base_url + "/api/v1/commands/ghost-1")
        return reply.status == 200 and reply.json()["data"]["terminal_at"] is not None and reply.json()["data"]

    ghost = wait_until(terminal, what="stub row with its terminal")
    assert (ghost["cmd"], ghost["source"], ghost["status"], ghost["error_code"]) == (
        "unknown", "device", "ERROR", "pump_interlock_blocked")
    assert ghost["terminal_at"] is not None
    assert node.timeline("ghost-1") == [("ACK", True), ("ERROR", True)]


async def _sql(instance: Running, statement: str) -> None:
    assert instance.app.services is not None
    await instance.app.services.db.pool.execute(statement)


REFUSE_SENT = """
CREATE FUNCTION refuse_sent() RETURNS trigger AS $$
BEGIN
  IF NEW.status = 'SENT' THEN RAISE EXCEPTION 'injected: SENT cannot be stored'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_sent BEFORE UPDATE ON commands FOR EACH ROW EXECUTE FUNCTION refuse_sent();
"""


def test_sent_not_stored_after_publish_is_a_500_and_the_row_heals(node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    node.instance.loop.run(_sql(node.instance, REFUSE_SENT))
    reply = node.command(cmd_id="sync-1")
    assert (reply.status, reply.json()["code"]) == (500, "command_state_sync_failed")
    assert reply.json()["command_id"] == "sync-1"
    assert node.get("sync-1")["status"] == "QUEUED"  # the truth as far as the database knows
    node.instance.loop.run(_sql(node.instance, "DROP TRIGGER refuse_sent ON commands"))
    healed = node.get("sync-1", wait=15)
    assert healed["status"] == "DONE"
    assert [s for s, applied in node.timeline("sync-1") if applied] == ["QUEUED", "SENT", "ACK", "DONE"]


def _reply_routes(instance: Running) -> dict[str, float]:
    prefix = 'hydrovisor_device_messages_total{outcome="'
    return {line[len(prefix):].partition('"')[0]: float(line.split()[-1])
            for line in http("GET", instance.base_url + "/metrics").raw.decode().splitlines()
            if line.startswith(prefix) and 'type="command_response"' in line}


def test_replies_after_sent_are_stored_on_the_loop_and_the_actor_still_stops(
    node_factory: Callable[..., Node],
) -> None:
    node = node_factory(faults=Faults(delay_reply_s=0.2))  # SENT is stored long before the ACK
    assert node.command(cmd_id="loop-1").status == 202
    assert node.get("loop-1", wait=10)["status"] == "DONE"
    assert node.timeline("loop-1") == [("QUEUED", True), ("SENT", True), ("ACK", True), ("DONE", True)]
    assert _reply_routes(node.instance) == {"stored_on_loop": 2}
    actor = node.instance.base_url + "/api/v1/actors/commands/loop-1"
    wait_until(lambda: http("GET", actor).status == 404, what="the terminal command's actor stopped")


REFUSE_REPLIES = """
CREATE FUNCTION refuse_replies() RETURNS trigger AS $$
BEGIN
  IF NEW.status IN ('ACK', 'DONE') THEN RAISE EXCEPTION 'injected: replies cannot be stored'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_replies BEFORE UPDATE ON commands FOR EACH ROW EXECUTE FUNCTION refuse_replies();
"""


def test_replies_not_stored_on_the_loop_go_to_the_actor_which_retries(node_factory: Callable[..., Node]) -> None:
    node = node_factory(faults=Faults(delay_reply_s=0.2))
    node.instance.loop.run(_sql(node.instance, REFUSE_REPLIES))
    assert node.command(cmd_id="retry-loop-1").status == 202
    wait_until(lambda: node.sim.stats.commands_answered == 1, what="the node answered")
    assert node.get("retry-loop-1", wait=1)["status"] == "SENT"  # nothing lost: the actor keeps retrying
    node.instance.loop.run(_sql(node.instance, "DROP TRIGGER refuse_replies ON commands"))
    assert node.get("retry-loop-1", wait=15)["status"] == "DONE"
    assert [s for s, applied in node.timeline("retry-loop-1") if applied] == ["QUEUED", "SENT", "ACK", "DONE"]


def test_commands_beyond_the_cap_get_429_and_can_be_retried(start_app: Callable[..., Running]) -> None:
    instance = start_app(supervision=SupervisionSettings(liveness_interval=0.1, max_commands=2))
    node = Node(instance, "nd-irr-000000000002", Faults(delay_reply_s=3.0))
    node.start()
    try:
        assert node.command(cmd_id="cap-1").status == 202
        assert node.command(cmd_id="cap-2").status == 202
        refused = node.command(cmd_id="cap-3")
        assert (refused.status, refused.json()["code"]) == (429, "too_many_commands")
        assert refused.headers["Retry-After"] == "1"
        assert (node.get("cap-3")["status"], node.get("cap-3")["error_code"]) == ("SEND_FAILED", "capacity_exceeded")
        wait_until(lambda: node.get("cap-1")["status"] == "DONE", timeout=15)
        wait_until(lambda: node.command(cmd_id="cap-3").status == 200, timeout=15, interval=0.2,
                   what="a free slot for the retried cmd_id")
        assert node.get("cap-3", wait=15)["status"] == "DONE"
    finally:
        node.stop()


def test_a_start_queued_past_the_wait_answers_202_and_still_runs_once(
        node_factory: Callable[..., Node], monkeypatch: pytest.MonkeyPatch) -> None:
    node = node_factory()
    monkeypatch.setattr(spawn, "START_WAIT_S", 0.0)  # the supervisor "did not answer in time", deterministically
    reply = node.command(cmd_id="slow-start-1")
    assert reply.status == 202, reply.raw  # never a 5xx for a command that is stored and will run
    assert reply.json()["data"]["command_id"] == "slow-start-1"
    assert node.get("slow-start-1", wait=15)["status"] == "DONE"
    assert [s for s, applied in node.timeline("slow-start-1") if applied] == ["QUEUED", "SENT", "ACK", "DONE"]
    assert node.sim.stats.commands_received == 1


def test_a_queued_start_refused_at_the_cap_becomes_send_failed_and_can_be_retried(
        start_app: Callable[..., Running], monkeypatch: pytest.MonkeyPatch) -> None:
    instance = start_app(supervision=SupervisionSettings(liveness_interval=0.1, max_commands=1))
    node = Node(instance, "nd-irr-000000000003", Faults(delay_reply_s=2.0))
    node.start()
    try:
        assert node.command(cmd_id="busy-1").status == 202
        monkeypatch.setattr(spawn, "START_WAIT_S", 0.0)
        queued = node.command(cmd_id="late-1")
        assert queued.status == 202, queued.raw
        wait_until(lambda: node.get("late-1")["status"] == "SEND_FAILED", timeout=10, what="the late refusal stored")
        assert node.get("late-1")["error_code"] == "capacity_exceeded"
        assert node.get("busy-1", wait=15)["status"] == "DONE"
        monkeypatch.setattr(spawn, "START_WAIT_S", 15.0)
        wait_until(lambda: node.command(cmd_id="late-1").status == 200, timeout=15, interval=0.2,
                   what="a free slot for the retried cmd_id")
        assert node.get("late-1", wait=15)["status"] == "DONE"
        assert [s for s, applied in node.timeline("late-1") if applied] == [
            "QUEUED", "SEND_FAILED", "SENT", "ACK", "DONE"]
    finally:
        node.stop()
