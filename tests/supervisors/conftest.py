"""Fixtures of the supervision tests: a real loop thread, systems stopped at teardown, reports.

Every test of this directory that runs actors runs against both execution models (``[thread]``
and ``[pool]``): the children built by ``sup_support`` (``worker``, ``child``) run on their own
thread or on the system's worker pool (supervisors always have their own thread). Modules listed in
:data:`ONE_MODEL_MODULES` choose their actors' execution themselves and run once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry
from sup_support import TEST_POOL, Journal, MakeSystem, Reports, use_execution

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import ActorSystem, ChildSpec, ExitReason, SupervisorFlags
from hydrovisor.supervisors.pool import PoolSettings
from hydrovisor.supervisors.spec import Execution
from tests.helpers import wait_until

ONE_MODEL_MODULES = frozenset({
    "test_node_start",  # real application actors, whose specs pick their own execution
    "test_telemetry_writer",  # idem
    "test_pykka_compat",  # parametrizes its own actor over both models
    "test_pool",  # the pool's own guarantees: each test names the models it applies to
})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that run actors (they use ``make_system``, or ask for ``execution`` by name) run twice."""
    if metafunc.module.__name__.rsplit(".", 1)[-1] in ONE_MODEL_MODULES:
        return
    runs_actors = "make_system" in metafunc.fixturenames or "execution" in metafunc.definition._fixtureinfo.argnames
    if runs_actors:  # pure unit tests (the intensity model) run once
        metafunc.parametrize("execution", list(Execution), ids=[e.value for e in Execution], indirect=True)


@pytest.fixture(autouse=True)
def execution(request: pytest.FixtureRequest) -> Iterator[Execution]:
    """The execution model of the test's children (parametrized by ``pytest_generate_tests``)."""
    model: Execution = getattr(request, "param", Execution.THREAD)
    use_execution(model)
    yield model
    use_execution(Execution.THREAD)


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
    """``make_system(flags, children, start=True, pool=TEST_POOL)``: a system with its own metrics
    registry and its own worker pool (strict: a blocking call in a pooled handler raises).

    Every system is stopped at teardown; teardown also checks that no thread it started (actor
    threads, pool workers, the pool's watchdog) is still running, except threads the test
    deliberately leaves blocked (and released itself).
    """
    systems: list[ActorSystem] = []
    before = set(threading.enumerate())

    def make(
        flags: SupervisorFlags | None = None,
        children: Sequence[ChildSpec] = (),
        *,
        start: bool = True,
        pool: PoolSettings = TEST_POOL,
    ) -> ActorSystem:
        system = ActorSystem(
            bridge=loop_thread.bridge,
            timers=loop_thread.timers,
            registry=CollectorRegistry(),
            on_root_exit=exits.append,
            pool=pool,
        )
        systems.append(system)
        if start:
            system.start(flags or SupervisorFlags(), children)
        return system

    yield make
    for system in systems:
        assert system.stop(timeout=10), "system.stop timed out"
        # ActorSystem.stop() returns early when no root runs (a failed start) and then leaves the
        # pool it started for the children running; stop it here (idempotent)
        if system._pool.started:
            system._pool.stop()
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
