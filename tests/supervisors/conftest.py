"""Fixtures of the supervision tests: a real loop thread, systems stopped at teardown, reports."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry
from sup_support import Journal, MakeSystem, Reports

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import ActorSystem, ChildSpec, ExitReason, SupervisorFlags
from tests.helpers import wait_until


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    with LoopThread() as lt:
        yield lt


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def exits() -> list[ExitReason]:
    """Reasons passed to ``on_root_exit`` (list.append is atomic)."""
    return []


@pytest.fixture
def make_system(loop_thread: LoopThread, exits: list[ExitReason]) -> Iterator[MakeSystem]:
    """``make_system(flags, children, start=True)``: a system with its own metrics registry.

    Every system is stopped at teardown; teardown also checks that no actor thread it started is
    still running, except threads the test deliberately leaves blocked (and released itself).
    """
    systems: list[ActorSystem] = []
    before = set(threading.enumerate())

    def make(
        flags: SupervisorFlags | None = None,
        children: Sequence[ChildSpec] = (),
        *,
        start: bool = True,
    ) -> ActorSystem:
        system = ActorSystem(
            bridge=loop_thread.bridge,
            timers=loop_thread.timers,
            registry=CollectorRegistry(),
            on_root_exit=exits.append,
        )
        systems.append(system)
        if start:
            system.start(flags or SupervisorFlags(), children)
        return system

    yield make
    for system in systems:
        assert system.stop(timeout=10), "system.stop timed out"
    wait_until(
        lambda: not [t for t in threading.enumerate() if t not in before and t.name != "event-loop"],
        timeout=5,
        what="actor threads to end after system.stop",
    )


@pytest.fixture
def reports() -> Iterator[Reports]:
    logger = logging.getLogger("hydrovisor.supervisor")
    handler = Reports()
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
