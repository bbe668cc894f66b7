"""Command path defects of issue 10 (items 7-9): resend deadlines, leaked waiters, a stuck unbound start."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from hydrovisor.commands.spawn import start_command_actor
from hydrovisor.services import Services
from hydrovisor.sim import Faults
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import NewCommand
from tests.app.conftest import Running
from tests.app.test_commands_e2e import Node
from tests.helpers import http, wait_until


@pytest.fixture
def make_node(instance: Running) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(uid: str = "nd-irr-000000000007", faults: Faults | None = None, start: bool = True) -> Node:
        node = Node(instance, uid, faults)
        if start:
            node.start()
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def _services(instance: Running) -> Services:
    assert instance.app.services is not None
    return instance.app.services


def test_an_accepted_resend_of_a_send_failed_command_gets_a_fresh_deadline(make_node: Callable[..., Node]) -> None:
    node = make_node(start=False, faults=Faults(delay_reply_s=0.5))
    failed = node.command(cmd_id="resend-1", timeout_s=3.0)
    assert (failed.status, failed.json()["error_code"]) == (502, "node_not_connected"), failed.raw
    time.sleep(max(0.0, node.get("resend-1")["deadline_at"] - time.time()) + 0.2)  # its deadline has passed
    node.start()
    resent_at = time.time()
    assert node.command(cmd_id="resend-1", timeout_s=3.0).status == 200
    done = node.get("resend-1", wait=10)
    assert done["status"] == "DONE", done  # not TIMEOUT at once while the node carries it out
    assert done["deadline_at"] >= resent_at + 2.5
    assert node.sim.stats.commands_answered == 1


def test_no_waiter_outlives_its_request(make_node: Callable[..., Node]) -> None:
    node = make_node()
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
