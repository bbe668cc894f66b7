"""pykka's public API keeps its meaning on supervised actors, on threads and on the pool alike.

The pooled dispatcher relies on pykka's actor hooks (``_create_actor_inbox``, ``_create_future``,
``_start_actor_loop``, ``_handle_receive``); pyproject pins pykka's minor version, and this module
fails first if a pykka release changes what those hooks mean.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pykka
import pytest
from sup_support import MakeSystem

from hydrovisor.supervisors import ActorContext, ChildSpec, Execution, SupervisedActor, SupervisorFlags
from tests.helpers import wait_until


class Greenhouse(SupervisedActor):
    """A plain pykka-style actor: a method, an attribute, a nested object and ``on_receive``."""

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.level = 1
        self.tank = _Tank()

    def fill(self, litres: int) -> int:
        self.level += litres
        return self.level

    def on_receive(self, message: Any) -> Any:
        if message == "level":
            return self.level
        if message == "broken":
            raise ValueError("sensor broken")
        return None


class _Tank:
    pykka_traversable = True  # pykka's marker for nested objects reachable through a proxy
    volume = 40

    def describe(self) -> str:
        return f"{self.volume} l"


@pytest.fixture(params=[Execution.THREAD, Execution.POOL], ids=["thread", "pool"])
def actor(request: pytest.FixtureRequest, make_system: MakeSystem) -> tuple[Any, pykka.ActorRef[Any]]:
    spec = ChildSpec("gh", Greenhouse.start, execution=request.param)
    system = make_system(SupervisorFlags(max_restarts=10), [spec])
    ctx = system.cell("/gh").ctx
    assert ctx is not None and ctx.actor is not None
    return system, ctx.actor.actor_ref


def test_pinned_pykka_still_has_the_hooks_we_replace() -> None:
    assert importlib.metadata.version("pykka").startswith("4.5.")
    for hook in ("_create_actor_inbox", "_create_future", "_start_actor_loop", "_handle_receive", "_actor_loop"):
        assert callable(getattr(pykka.Actor, hook)), hook


def test_tell_ask_and_proxies(actor: tuple[Any, pykka.ActorRef[Any]]) -> None:
    system, ref = actor
    ref.tell("noop")
    assert ref.ask("level") == 1
    proxy = ref.proxy()
    assert proxy.fill(2).get(timeout=5) == 3
    assert proxy.level.get(timeout=5) == 3
    assert proxy.tank.describe().get(timeout=5) == "40 l"
    proxy.level = 10  # a proxy attribute set is a blocking ask from this (non-actor) thread
    assert ref.ask("level") == 10
    assert system.ask("/gh", "level") == 10
    assert ref.is_alive()


def test_an_ask_failure_reaches_the_caller_and_the_actor_is_restarted(actor: tuple[Any, pykka.ActorRef[Any]]) -> None:
    system, ref = actor
    with pytest.raises(ValueError, match="sensor broken"):
        ref.ask("broken")
    wait_until(lambda: not ref.is_alive(), timeout=5, what="the failed incarnation to stop")
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("level")  # that incarnation is gone; its path lives on
    wait_until(lambda: system.cell("/gh").ctx is not None, timeout=5, what="the restart")
    assert system.ask("/gh", "level") == 1


def test_stop_through_the_ref_is_a_normal_exit(actor: tuple[Any, pykka.ActorRef[Any]]) -> None:
    system, ref = actor
    ref.stop(block=True, timeout=5)
    assert not ref.is_alive()
    wait_until(lambda: system.cell("/gh").ctx is not None, timeout=5, what="the permanent child to restart")
    assert system.cell("/gh").last_failure is None
