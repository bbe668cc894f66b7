"""Node, command and zone actors run pooled on a *strict* worker pool (a blocking call in a handler
raises ``BlockingCallInPool``) against real PostgreSQL, with a broker seam whose publishes can be held
open: an ask answered only after its writes (a bind) leaves the worker free meanwhile, and what arrives
while a continuation is pending is handled after it, in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.actors import node as node_module
from hydrovisor.actors.command import DeviceReply
from hydrovisor.actors.node import Bind, BindRefused, FromDevice, Unbind
from hydrovisor.commands.plane import CommandPlane, publish_counter
from hydrovisor.commands.spawn import COMMANDS, command_path, command_spec
from hydrovisor.commands.waiters import CommandWaiters
from hydrovisor.devices.plane import DevicePlane
from hydrovisor.devices.registry import NodeRegistry, NodeView
from hydrovisor.devices.spawn import NODES, ensure_node_actor, node_path
from hydrovisor.protocol import (
    ChannelConfig,
    CommandResponse,
    CommandStatus,
    ConfigReport,
    ParsedTopic,
    node_topic,
    parse_topic,
    temp_topic,
)
from hydrovisor.runtime.bridge import LoopReply, OutcomeUnknown
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.store.database import Database
from hydrovisor.store.migrations import apply_migrations
from hydrovisor.store.repos import commands, fleet, nodes
from hydrovisor.store.repos.commands import NewCommand
from hydrovisor.supervisors import (
    ActorSystem,
    ExitReason,
    PoolSettings,
    StartChild,
    SupervisorFlags,
    supervisor_spec,
)
from hydrovisor.zoneplane.plane import ZonePlane
from hydrovisor.zoneplane.spawn import ZONES, zone_actor_path, zone_spec
from hydrovisor.zones.clock import SystemClock
from hydrovisor.zones.state import ZoneStateView
from tests.helpers import wait_until

T = TypeVar("T")
UID = "nd-pool-1"
HW = "esp32-pool-000001"


class Gate:
    """Holds coroutines on the loop until opened (``waiting`` counts those held so far)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._opened = asyncio.Event()
        self.waiting = 0

    async def passage(self) -> None:
        self.waiting += 1
        await self._opened.wait()

    def open(self) -> None:
        self._loop.call_soon_threadsafe(self._opened.set)


class GatedDatabase(Database):
    """A real database whose calls through ``run`` (the actors' way in) can be held."""

    gate: Gate | None = None

    async def run(self, call: Callable[[Any], Awaitable[T]]) -> T:
        if self.gate is not None:
            await self.gate.passage()
        return await super().run(call)


@dataclass
class Broker:
    """The broker seam: records publishes; can hold them (``gate``) or refuse them (``refuse``)."""

    published: list[tuple[str, bytes]] = field(default_factory=list)
    gate: Gate | None = None
    refuse: Exception | None = None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if self.gate is not None:
            await self.gate.passage()
        if self.refuse is not None:
            raise self.refuse
        self.published.append((topic, payload))

    def subscriber_count(self, topic: str) -> int:
        return 1

    def connected_clients(self) -> list[str]:
        return []


@dataclass
class Rig:
    lt: LoopThread
    db: GatedDatabase
    broker: Broker
    system: ActorSystem
    registry: NodeRegistry
    failures: list[tuple[str, ExitReason]]
    views: list[NodeView]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.lt.run(coro)

    def ask_later(self, path: str, message: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(self.system.bridge.ask(path, message, within=15.0), self.lt.loop)

    def sql(self, call: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Straight to the database (past any gate), from the test's thread."""
        return self.run(Database.run(self.db, call))

    def node(self) -> Any:
        return self.sql(lambda pool: nodes.get_node(pool, UID))

    def start_node(self) -> DevicePlane:
        """The node's actor, started as at boot: on the row read with the whole fleet's."""
        plane = DevicePlane(db=self.db, registry=self.registry, transport=self.broker,  # type: ignore[arg-type]
                            on_binding_changed=self.views.append)
        plane.boot_rows.fill([self.node()])
        self.run(ensure_node_actor(self.system, plane, UID))
        return plane


@pytest.fixture
def rig(pg_dsn: str) -> Iterator[Rig]:
    with LoopThread() as lt:
        db = GatedDatabase()
        lt.run(db.connect(pg_dsn))
        lt.run(db.run(apply_migrations))
        lt.run(db.run(lambda pool: fleet.create_greenhouse(pool, "gh-1", "Main")))
        lt.run(db.run(lambda pool: fleet.create_zone(pool, "zn-1", "gh-1", "Lettuce", {})))
        registry = NodeRegistry()
        registry.put_zone("zn-1", "gh-1")
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry(),
                             pool=PoolSettings(workers=2, strict=True))
        failures: list[tuple[str, ExitReason]] = []
        system.on_failure(lambda path, reason: failures.append((path, reason)))
        dynamic = SupervisorFlags(dynamic=True, max_restarts=10, liveness_interval=0.1)
        system.start(SupervisorFlags(), [supervisor_spec(p.strip("/"), dynamic) for p in (NODES, COMMANDS, ZONES)])
        try:
            yield Rig(lt, db, Broker(), system, registry, failures, [])
        finally:
            system.stop()
            lt.run(db.close())


def _preregister(rig: Rig, zone_uid: str | None) -> None:
    channels = [nodes.ChannelRecord(name="pump_main", type="ACTUATOR", actuator_type="PUMP")]
    node = rig.sql(lambda pool: nodes.preregister(pool, uid=UID, hardware_id=HW, node_type="irrig",
                                                  zone_uid=zone_uid, channels=channels, node_secret="s" * 32))
    assert node is not None
    rig.registry.put(NodeView(uid=UID, hardware_id=HW, zone_uid=zone_uid, gh_uid="gh-1" if zone_uid else None,
                              validated=zone_uid is not None))


def _config_report_topic() -> ParsedTopic:
    topic = parse_topic(node_topic("gh-1", "zn-1", UID, "config_report"))
    assert isinstance(topic, ParsedTopic)
    return topic


def test_a_bind_is_answered_after_its_writes_and_what_came_meanwhile_is_handled_after_it(rig: Rig) -> None:
    _preregister(rig, None)
    rig.start_node()
    assert rig.system.cell(node_path(UID)).ctx.actor.execution == "pool"  # type: ignore[union-attr]
    rig.broker.gate = gate = Gate(rig.lt.loop)
    bind = rig.ask_later(node_path(UID), Bind(zone_uid="zn-1", gh_uid="gh-1"))
    wait_until(lambda: gate.waiting == 1, 10, what="the config push under way (pending bind stored)")
    # the node's answer from its new namespace overtakes the bind's continuation: it must wait for it
    report = ConfigReport(node_id=UID, zone_uid="zn-1", gh_uid="gh-1",
                          channels=(ChannelConfig(name="ph", type="SENSOR", metric="PH"),))
    rig.system.tell(node_path(UID), FromDevice(report, _config_report_topic(), time.time()))
    time.sleep(0.3)
    assert not bind.done()  # nothing answers before the push is out...
    assert rig.node().zone_uid is None  # ...and the report has not been taken for a plain one
    gate.open()
    view = bind.result(10)
    assert (view.pending_zone_uid, view.zone_uid) == ("zn-1", None)
    assert [topic for topic, _ in rig.broker.published] == [temp_topic(HW, "config")]
    wait_until(lambda: rig.node().validated and rig.node().zone_uid == "zn-1", 10, what="bind completed")
    wait_until(lambda: bool(rig.views) and rig.views[-1].zone_uid == "zn-1" and rig.views[-1].validated, 10)
    channels = rig.sql(lambda pool: nodes.list_channels(pool, UID))
    assert "ph" in {c.name for c in channels}
    # a bind that cannot be is refused at once, and the actor goes on
    with pytest.raises(BindRefused) as refused:
        rig.ask_later(node_path(UID), Bind(zone_uid="zn-1", gh_uid="gh-1")).result(10)
    assert refused.value.code == "node_already_bound"
    assert rig.failures == []
    assert rig.system.cell(node_path(UID)).restarts_total == 0


def test_a_failed_bind_reaches_the_asker_and_the_node_restarts_from_its_row(rig: Rig) -> None:
    _preregister(rig, None)
    rig.start_node()
    rig.broker.refuse = ConnectionError("broker down")
    with pytest.raises(ConnectionError, match="broker down"):
        rig.ask_later(node_path(UID), Bind(zone_uid="zn-1", gh_uid="gh-1")).result(10)
    wait_until(lambda: rig.system.cell(node_path(UID)).restarts_total == 1, 10, what="the node restarted")
    assert [(path, reason.kind.value) for path, reason in rig.failures] == [(node_path(UID), "crash")]
    assert "ConnectionError" in str(rig.failures[0][1])  # not BlockingCallInPool
    rig.broker.refuse = None
    # the new incarnation loaded its row (the pending bind was stored): binding again works
    wait_until(lambda: _bind_again(rig), 10, what="a bind after the restart")


def _bind_again(rig: Rig) -> bool:
    try:
        view = rig.ask_later(node_path(UID), Bind(zone_uid="zn-1", gh_uid="gh-1")).result(10)
    except BindRefused as exc:
        if exc.code == "node_not_loaded":  # the row is on its way
            return False
        raise
    return bool(view.pending_zone_uid == "zn-1")


def test_a_restarted_command_loads_its_row_first_and_a_reply_meanwhile_waits_for_it(rig: Rig) -> None:
    _preregister(rig, "zn-1")
    cmd = NewCommand(cmd_id="cmd-pool-1", zone_uid="zn-1", node_uid=UID, channel="pump_main", cmd="run_pump",
                     params={"duration_ms": 1000}, source="api", trace_id=None, timeout_s=30.0)
    rig.sql(lambda pool: commands.insert_queued(pool, cmd))
    plane = CommandPlane(db=rig.db, registry=rig.registry, transport=rig.broker,  # type: ignore[arg-type]
                         waiters=CommandWaiters(rig.lt.loop), publishes=publish_counter(CollectorRegistry()))
    rig.db.gate = gate = Gate(rig.lt.loop)
    # no preload: the incarnation a restart or an adoption makes; it starts at once and loads its row
    rig.run(rig.system.bridge.ask(COMMANDS, StartChild(command_spec(cmd.cmd_id, plane)), within=10))
    assert rig.system.cell(command_path(cmd.cmd_id)).ctx.actor.execution == "pool"  # type: ignore[union-attr]
    wait_until(lambda: gate.waiting == 1, 10, what="the row being loaded")

    async def reply_slot() -> tuple[asyncio.Future[Any], LoopReply]:
        future = asyncio.get_running_loop().create_future()
        return future, LoopReply(asyncio.get_running_loop(), future)

    stored, slot = rig.run(reply_slot())
    done = CommandResponse(cmd_id=cmd.cmd_id, status=CommandStatus.DONE, details={"ok": True})
    rig.system.tell(command_path(cmd.cmd_id), DeviceReply(done, slot))
    time.sleep(0.3)
    assert rig.broker.published == []  # nothing happens before the row is in
    gate.open()
    assert rig.run(asyncio.wait_for(asyncio.shield(stored), 10)) is None  # stored by the actor
    row = rig.sql(lambda pool: commands.get(pool, cmd.cmd_id))
    assert row is not None and row.status == "DONE"
    timeline = [e.status for e in rig.sql(lambda pool: commands.events(pool, cmd.cmd_id))]
    assert timeline == ["QUEUED", "SENT", "DONE"]
    assert len(rig.broker.published) == 1
    wait_until(lambda: command_path(cmd.cmd_id) not in rig.system.paths(), 10, what="the actor done")
    assert rig.failures == []


def test_a_zone_actor_loads_and_answers_on_a_strict_pool(rig: Rig) -> None:
    plane = ZonePlane(db=rig.db, registry=rig.registry, clock=SystemClock(), liveness_interval=0.1)
    rig.run(rig.system.bridge.ask(ZONES, StartChild(zone_spec("zn-1", plane)), within=10))
    path = zone_actor_path("zn-1")
    assert rig.system.cell(path).ctx.actor.execution == "pool"  # type: ignore[union-attr]
    assert rig.system.cell("/zones/zn-1").ctx.actor.execution == "thread"  # type: ignore[union-attr]
    from hydrovisor.actors.zone import GetZoneState, ZoneStateReply  # noqa: PLC0415

    def ready() -> bool:
        return isinstance(rig.run(rig.system.bridge.ask(path, GetZoneState(), within=10)), ZoneStateReply)

    wait_until(ready, 10, what="the zone's snapshot loaded")
    reply = rig.run(rig.system.bridge.ask(path, GetZoneState(), within=10))
    assert isinstance(reply.state, ZoneStateView)
    assert rig.failures == []


def test_a_bind_outstanding_past_its_deadline_is_an_unknown_outcome_and_a_restart(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "CONTINUATION_WITHIN_S", 0.5)
    _preregister(rig, None)
    rig.start_node()
    rig.broker.gate = gate = Gate(rig.lt.loop)
    with pytest.raises(OutcomeUnknown, match=r"bind not finished within 0\.5 s"):
        rig.ask_later(node_path(UID), Bind(zone_uid="zn-1", gh_uid="gh-1")).result(10)
    wait_until(lambda: rig.system.cell(node_path(UID)).restarts_total == 1, 10, what="the node restarted")
    gate.open()
    assert [(path, reason.kind.value) for path, reason in rig.failures] == [(node_path(UID), "crash")]


def test_a_node_killed_with_a_bind_outstanding_fails_the_ask_and_hands_on_what_it_stashed(rig: Rig) -> None:
    _preregister(rig, None)
    rig.start_node()
    rig.broker.gate = gate = Gate(rig.lt.loop)
    bind = rig.ask_later(node_path(UID), Bind(zone_uid="zn-1", gh_uid="gh-1"))
    wait_until(lambda: gate.waiting == 1, 10, what="the config push under way")
    unbind = rig.ask_later(node_path(UID), Unbind())  # stashed behind the bind
    time.sleep(0.2)
    rig.system.kill(node_path(UID), "test")
    with pytest.raises(OutcomeUnknown, match="stopped before the outcome of its bind arrived"):
        bind.result(10)
    gate.open()
    # the stashed unbind went back to the path's mailbox: the next incarnation answers it, at once (a
    # restarted node answers before its row is in, as it always did)
    with pytest.raises(BindRefused) as refused:
        unbind.result(10)
    assert refused.value.code == "node_not_loaded"
    assert rig.system.cell(node_path(UID)).restarts_total == 1
    # once its row is in (the pending bind was stored), it unbinds
    wait_until(lambda: _unbind_again(rig), 10, what="an unbind after the restart")
    assert rig.node().pending_zone_uid is None


def _unbind_again(rig: Rig) -> bool:
    try:
        view = rig.ask_later(node_path(UID), Unbind()).result(10)
    except BindRefused as exc:
        if exc.code == "node_not_loaded":
            return False
        raise
    return (view.zone_uid, view.pending_zone_uid) == (None, None)
