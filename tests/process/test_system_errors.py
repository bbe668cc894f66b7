"""Which actor exits the system state machine counts as errors (DOMAIN §6).

Supervision exists to isolate failures: a crash its supervisor handles within intensity, or an
operator's restart, is not a system error and must not move the process towards SAFE_MODE. An
escalation that reaches a top-level subtree is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.config import Settings
from hydrovisor.process.control import SystemControl
from hydrovisor.process.sd_notify import SdNotifier
from hydrovisor.process.state_actor import SystemStateActor
from hydrovisor.process.states import SystemState
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorContext,
    ActorSystem,
    ChildSpec,
    SupervisedActor,
    SupervisorFlags,
    supervisor_spec,
)
from tests.helpers import wait_until


class Crasher(SupervisedActor):
    """``"crash"`` raises; ``"ping"`` answers its generation."""

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("crash on command")
        return self.ctx.generation


def crasher(child_id: str) -> ChildSpec:
    return ChildSpec(child_id, Crasher.start)


class Tree:
    """A real actor system wired to a real :class:`SystemControl`, as the app wires them."""

    def __init__(self, lt: LoopThread, tmp_path: Path) -> None:
        registry = CollectorRegistry()
        self.system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=registry)
        self.control = SystemControl(
            Settings(data_dir=str(tmp_path)), loop=lt.loop, registry=registry, system=self.system,
            health=HealthBoard(registry), notifier=SdNotifier(None), on_fatal=lambda: None)
        self.system.on_failure(self.control.child_failed)

    def start(self, *subtrees: ChildSpec) -> None:
        control = self.control
        state = ChildSpec("state", lambda ctx: SystemStateActor.start(ctx, control.machine, list, control.apply))
        self.system.start(SupervisorFlags(max_restarts=10, period=60.0),
                          [supervisor_spec("system", SupervisorFlags(), (state,)), *subtrees])

    def errors(self) -> int:
        # a barrier: the state actor handled every report sent before this ask
        self.system.ask("/system/state", "unhandled-ping-is-ignored")
        return self.control.snapshot().counters.errors_total


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Tree]:
    with LoopThread() as lt:
        t = Tree(lt, tmp_path)
        yield t
        assert t.system.stop(timeout=10)


def test_crashes_within_intensity_and_operator_restarts_are_not_system_errors(tree: Tree) -> None:
    tree.start(supervisor_spec("zones", SupervisorFlags(max_restarts=10, period=60.0), (crasher("z"),)))
    for n in range(5):
        tree.system.tell("/zones/z", "crash")
        wait_until(lambda n=n: tree.system.cell("/zones/z").restarts_total == n + 1)  # type: ignore[misc]
    tree.system.kill("/zones/z", "operator restart over HTTP")
    tree.system.kill("/zones", "operator restart over HTTP")
    wait_until(lambda: tree.system.ask("/zones/z", "ping") == 1)
    assert tree.errors() == 0
    assert tree.control.state is SystemState.RUNNING


def test_an_escalation_reaching_a_top_level_subtree_is_one_system_error(tree: Tree) -> None:
    tree.start(supervisor_spec("store", SupervisorFlags(max_restarts=0), (crasher("w"),)))
    tree.system.tell("/store/w", "crash")  # /store gives up; the root restarts it
    wait_until(lambda: tree.system.cell("/store").restarts_total == 1)
    assert tree.errors() == 1
    reason = tree.control.snapshot().last_error
    assert reason is not None
    assert "/store" in reason
    assert "reached_max_restart_intensity" in reason


def test_an_escalation_handled_inside_a_subtree_is_not_a_system_error(tree: Tree) -> None:
    inner = supervisor_spec("inner", SupervisorFlags(max_restarts=0), (crasher("w"),))
    tree.start(supervisor_spec("zones", SupervisorFlags(max_restarts=5, period=60.0), (inner,)))
    tree.system.tell("/zones/inner/w", "crash")
    wait_until(lambda: tree.system.cell("/zones/inner").restarts_total == 1)
    assert tree.errors() == 0
