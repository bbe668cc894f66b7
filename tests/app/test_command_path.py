"""Command path defects of issue 10 (items 7-9): resend deadlines, leaked waiters, a stuck unbound start; and a
reply left in a stopped command actor's mailbox (issue 12's campaign: it held the node's later messages)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from hydrovisor.actors.command import DeviceReply, ReplyLost
from hydrovisor.commands import replies
from hydrovisor.commands.replies import ReplyLanes, route_reply
from hydrovisor.commands.spawn import start_command_actor
from hydrovisor.protocol import CommandResponse, CommandStatus
from hydrovisor.runtime.bridge import LoopReply
from hydrovisor.services import Services
from hydrovisor.sim import Faults
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import NewCommand
from hydrovisor.supervisors.mailbox import Envelope, Mailbox
from tests.app.conftest import Running
from tests.app.irrig_node import Node
from tests.helpers import http, wait_until
from tests.plant import STATE_PROBE

S = CommandStatus


def _services(instance: Running) -> Services:
    assert instance.app.services is not None
    return instance.app.services


def test_an_accepted_resend_of_a_send_failed_command_gets_a_fresh_deadline(node_factory: Callable[..., Node]) -> None:
    # a state probe: a pump start to a node never heard from is refused by the zone's gate before any send
    node = node_factory(start=False, faults=Faults(delay_reply_s=0.5))
    failed = node.command(cmd_id="resend-1", timeout_s=3.0, **STATE_PROBE)
    assert (failed.status, failed.json()["error_code"]) == (502, "node_not_connected"), failed.raw
    time.sleep(max(0.0, node.get("resend-1")["deadline_at"] - time.time()) + 0.2)  # its deadline has passed
    node.start()
    resent_at = time.time()
    assert node.command(cmd_id="resend-1", timeout_s=3.0, **STATE_PROBE).status == 200
    done = node.get("resend-1", wait=10)
    assert done["status"] == "DONE", done  # not TIMEOUT at once while the node carries it out
    assert done["deadline_at"] >= resent_at + 2.5
    assert node.sim.stats.commands_answered == 1


def test_no_waiter_outlives_its_request(node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    waiters = _services(node.instance).commands.waiters
    assert node.command(cmd_id="leak-1").status == 202
    assert node.get("leak-1", wait=10)["status"] == "DONE"
    conflict = node.command(cmd_id="leak-1", params={"duration_ms": 1000})
    assert conflict.status == 409
    assert node.command(cmd_id="leak-1").status == 200  # terminal already: answered at once
    missing = http("GET", node.instance.base_url + "/api/v1/commands/nope-1?wait=5")
    assert missing.status == 404
    assert len(waiters) == 0


async def _execute(services: Services, statement: str) -> None:
    await services.db.pool.execute(statement)


REFUSE_SEND_FAILED = """
CREATE FUNCTION refuse_send_failed() RETURNS trigger AS $$
BEGIN
  IF NEW.status = 'SEND_FAILED' THEN RAISE EXCEPTION 'injected: SEND_FAILED cannot be stored'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_send_failed BEFORE UPDATE ON commands FOR EACH ROW EXECUTE FUNCTION refuse_send_failed();
"""


def test_an_unbound_start_whose_send_failed_write_fails_retries_it(instance: Running) -> None:
    services = _services(instance)
    new = NewCommand(cmd_id="unbound-1", zone_uid=None, node_uid="nd-gone-000000000001", channel="pump_main",
                     cmd="run_pump", params={}, source="api", trace_id=None, timeout_s=30.0)

    async def prepare() -> None:
        await commands.insert_queued(services.db.pool, new)
        await services.db.pool.execute(REFUSE_SEND_FAILED)
        await start_command_actor(services.system, services.commands, new.cmd_id)

    instance.loop.run(prepare())
    url = instance.base_url + "/api/v1/commands/unbound-1"
    time.sleep(1.5)  # the SEND_FAILED write has failed by now
    assert http("GET", url).json()["data"]["status"] == "QUEUED"
    instance.loop.run(_execute(services, "DROP TRIGGER refuse_send_failed ON commands"))
    wait_until(lambda: http("GET", url).json()["data"]["status"] == "SEND_FAILED", timeout=10,
               what="SEND_FAILED stored once the database takes it")
    assert http("GET", url).json()["data"]["error_code"] == "node_not_bound"
    actor = instance.base_url + "/api/v1/actors/commands/unbound-1"
    wait_until(lambda: http("GET", actor).status == 404, what="the actor gave its slot back")


# the reply path (item 13): route_reply returns once the reply is stored ------------------------------


def _reply_to(node: Node, response: CommandResponse) -> str:
    services = _services(node.instance)

    async def route_and_read() -> tuple[str, str | None]:
        lanes = ReplyLanes(services.system, services.commands)
        outcome = await route_reply(services.system, services.commands, lanes, response, node_uid=node.uid,
                                    zone_uid="zn-1", channel="pump_main")
        row = await commands.get(services.db.pool, response.cmd_id)  # at once: no waiting for the write
        return outcome, row.status if row is not None else None

    outcome, status = node.instance.loop.run(route_and_read())
    assert status == response.status, outcome
    return outcome


def test_route_reply_returns_once_the_reply_is_stored(node_factory: Callable[..., Node]) -> None:
    node = node_factory(faults=Faults(drop_reply=1.0))  # the test answers in the node's place
    assert node.command(cmd_id="durable-1").status == 202
    assert node.get("durable-1")["status"] == "SENT"
    _reply_to(node, CommandResponse(cmd_id="durable-1", status=S.ACK))
    _reply_to(node, CommandResponse(cmd_id="durable-1", status=S.DONE))
    assert node.timeline("durable-1") == [("QUEUED", True), ("SENT", True), ("ACK", True), ("DONE", True)]
    assert _reply_to(node, CommandResponse(cmd_id="ghost-2", status=S.ERROR)) == "stub"


REFUSE_STUBS = """
CREATE FUNCTION refuse_stubs() RETURNS trigger AS $$
BEGIN
  IF NEW.cmd = 'unknown' THEN RAISE EXCEPTION 'injected: stubs cannot be stored'; END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_stubs BEFORE INSERT ON commands FOR EACH ROW EXECUTE FUNCTION refuse_stubs();
"""


def test_route_reply_raises_when_the_reply_is_not_stored(node_factory: Callable[..., Node]) -> None:
    node = node_factory()
    services = _services(node.instance)
    node.instance.loop.run(_execute(services, REFUSE_STUBS))

    async def route() -> str:
        lanes = ReplyLanes(services.system, services.commands)
        return await route_reply(services.system, services.commands, lanes,
                                 CommandResponse(cmd_id="ghost-3", status=S.DONE), node_uid=node.uid,
                                 zone_uid="zn-1", channel="pump_main")

    with pytest.raises(replies.ReplyNotStored):
        node.instance.loop.run(route())


def test_a_reply_left_in_a_stopped_command_actors_mailbox_fails_its_waiter_at_once() -> None:
    """A reply told to a command actor that then stops without handling it (it reached its terminal) fails
    the router's wait at once: it is not acknowledged, and the node's later messages are not held
    ``STORE_WAIT_S`` behind it."""
    async def close_with_reply_queued() -> BaseException | None:
        stored: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        mailbox = Mailbox("/commands/cmd-late")
        mailbox.put(Envelope(DeviceReply(CommandResponse(cmd_id="cmd-late", status=S.DONE),
                                         LoopReply(asyncio.get_running_loop(), stored))))
        mailbox.close("stopped after its terminal")
        try:
            await asyncio.wait_for(stored, 1.0)
        except (ReplyLost, TimeoutError) as exc:
            return exc
        return None

    error = asyncio.run(close_with_reply_queued())
    assert isinstance(error, ReplyLost), error
    assert "stopped after its terminal" in str(error)


def test_an_unanswered_stop_is_published_again_and_nothing_else_is(node_factory: Callable[..., Node]) -> None:
    # the node acts but never answers (as when a stop went out before a reconnecting node had subscribed,
    # or its reply is lost): a stop is sent again, re-signed, within its deadline; a probe is not
    node = node_factory(faults=Faults(drop_reply=1.0))
    assert node.command(cmd_id="probe-1", timeout_s=4.0, **STATE_PROBE).status == 202
    assert node.command(cmd_id="stop-1", timeout_s=4.0, channel="pump_main", cmd="set_relay",
                        params={"state": 0}).status == 202
    assert node.get("stop-1", wait=10)["status"] == "TIMEOUT"
    assert node.get("probe-1", wait=10)["status"] == "TIMEOUT"
    assert node.sim.stats.commands_received == 1 + 1 + 3, node.sim.stats  # the probe once, the stop 1 + 3 times


def test_a_node_refusing_a_command_for_its_clock_is_resynced_before_the_refusal_is_stored(
        node_factory: Callable[..., Node]) -> None:
    # the node's clock is two minutes behind (it synced once, at connect, and drifted): every command is
    # refused timestamp_expired until it syncs again; the server broadcasts the time as the first refusal
    # comes in, so the retry that follows that refusal is accepted
    node = node_factory()

    async def drift() -> None:
        node.sim.skew_clock(-120)

    node.instance.loop.run(drift())
    assert node.command(cmd_id="skewed-1", channel="pump_main", cmd="set_relay", params={"state": 0}).status == 202
    refused = node.get("skewed-1", wait=10)
    assert (refused["status"], refused["error_code"]) == ("ERROR", "timestamp_expired"), refused
    assert node.command(cmd_id="skewed-2", channel="pump_main", cmd="set_relay", params={"state": 0}).status == 202
    assert node.get("skewed-2", wait=10)["status"] in ("DONE", "NO_EFFECT")
