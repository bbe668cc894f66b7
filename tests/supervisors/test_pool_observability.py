"""What operators see of the worker pool: ``/metrics`` (pool and tree collectors), the execution
model in the tree snapshot, and task dumps that name the actor each worker runs.

Real systems on a real loop thread and real worker pools; the metrics are read back through the
Prometheus text format, as a scrape sees them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hydrovisor.process import task_dump
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorSystem,
    Backoff,
    ChildSpec,
    Execution,
    PoolCollector,
    PoolSettings,
    SupervisedActor,
    SupervisorFlags,
    TreeCollector,
    describe,
    supervisor_spec,
)
from hydrovisor.supervisors.pool import TURN_BUCKETS
from tests.helpers import wait_until

DYNAMIC = SupervisorFlags(dynamic=True, max_children=1000)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Echo(SupervisedActor):
    """Answers what it gets; ``("ask", path)`` asks ``path`` (a blocking call), ``("sleep", s)``
    blocks its worker in a way no future sees."""

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "ask":
            return self.ctx.system.ask(message[1], "ping")
        if isinstance(message, tuple) and message[0] == "sleep":
            sleep_in_handler(message[1])
        return message


def sleep_in_handler(seconds: float) -> None:
    """A frame with a name of its own, to find in stacks."""
    time.sleep(seconds)


def pooled(child_id: str, **spec: Any) -> ChildSpec:
    spec.setdefault("hang_timeout", 10.0)
    return ChildSpec(child_id, Echo.start, execution=Execution.POOL, **spec)


Build = Callable[[PoolSettings, Sequence[ChildSpec]], tuple[ActorSystem, CollectorRegistry]]


@pytest.fixture
def build(loop_thread: LoopThread) -> Iterator[Build]:
    """``build(pool, children)``: a started system whose registry has both collectors, as the app's."""
    systems: list[ActorSystem] = []

    def make(pool: PoolSettings, children: Sequence[ChildSpec]) -> tuple[ActorSystem, CollectorRegistry]:
        registry = CollectorRegistry()
        system = ActorSystem(bridge=loop_thread.bridge, timers=loop_thread.timers, registry=registry, pool=pool)
        registry.register(TreeCollector(system))
        registry.register(PoolCollector(system.pool))
        systems.append(system)
        system.start(SupervisorFlags(), children)
        return system, registry

    yield make
    for system in systems:
        assert system.stop(timeout=10)


def scrape(registry: CollectorRegistry) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def labels_of(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(key)[label] for (sample, key) in samples if sample == name}


def zones(n: int) -> ChildSpec:
    """``/zones/zn-<i>``: dynamic supervisors with one pooled child each, like the app's zones."""
    return supervisor_spec("zones", DYNAMIC, [supervisor_spec(f"zn-{i}", DYNAMIC, [pooled("zone")]) for i in range(n)])


def test_pool_and_tree_metrics_after_pooled_actors_ran(build: Build) -> None:
    system, registry = build(PoolSettings(workers=2, turn_messages=4, strict=True),
                             [supervisor_spec("nodes", DYNAMIC, [pooled(f"n{i}") for i in range(20)]), zones(5)])
    for i in range(20):
        for n in range(10):
            system.tell(f"/nodes/n{i}", n)
    assert [system.ask(f"/nodes/n{i}", "last") for i in range(20)] == ["last"] * 20  # each is behind its tells
    wait_until(lambda: value(scrape(registry), "hydrovisor_pool_busy_workers") == 0)
    samples = scrape(registry)

    assert value(samples, "hydrovisor_actors", kind="worker", state="running", execution="pool") == 25
    # the root, /nodes, /zones and the 5 zone supervisors: supervisors always have their own thread
    assert value(samples, "hydrovisor_actors", kind="supervisor", state="running", execution="thread") == 8
    assert labels_of(samples, "hydrovisor_actors", "execution") == {"thread", "pool"}

    assert value(samples, "hydrovisor_pool_workers", kind="core") == 2
    assert value(samples, "hydrovisor_pool_workers", kind="spare") == 0
    assert value(samples, "hydrovisor_pool_run_queue_depth") == 0
    messages = value(samples, "hydrovisor_pool_messages_total")
    turns = value(samples, "hydrovisor_pool_turns_total")
    assert messages >= 20 * 11  # 10 tells and an ask each
    assert turns >= max(25, messages / 4)  # a first turn (on_start) each, at most 4 messages a turn
    buckets = [value(samples, "hydrovisor_pool_turn_seconds_bucket", le=repr(b)) for b in TURN_BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert value(samples, "hydrovisor_pool_turn_seconds_bucket", le="+Inf") == turns
    for counter in ("blocking_compensated", "spare_cap_reached", "stuck_turns"):
        assert value(samples, f"hydrovisor_pool_{counter}_total") == 0
    # no label per actor: every pool series is unlabelled but the worker kind
    pool_labels = {key for (name, key) in samples if name.startswith("hydrovisor_pool_")}
    assert pool_labels <= {(), (("kind", "core"),), (("kind", "spare"),)} | {
        (("le", le),) for le in [*map(repr, TURN_BUCKETS), "+Inf"]}


def test_mailbox_depth_and_counters_have_one_series_per_dynamic_level(build: Build) -> None:
    system, registry = build(PoolSettings(workers=1, strict=True),
                             [supervisor_spec("nodes", DYNAMIC, [pooled(f"n{i}") for i in range(3)]), zones(4)])
    assert labels_of(scrape(registry), "hydrovisor_actor_mailbox_depth", "path") == {
        "/", "/nodes", "/nodes/*", "/zones", "/zones/*", "/zones/*/*"}  # not one series per zone
    assert system.series("/zones/zn-2/zone") == "/zones/*/*"
    assert system.series("/zones/zn-2") == "/zones/*"
    assert system.series("/nodes/n1") == "/nodes/*"
    assert system.series("/nodes") == "/nodes"
    assert system.series("/") == "/"
    # queued messages are summed over the zones
    system.tell("/nodes/n0", ("sleep", 0.5))  # the only worker is busy: what follows waits in mailboxes
    wait_until(lambda: value(scrape(registry), "hydrovisor_pool_busy_workers") == 1)
    for i in range(4):
        system.tell(f"/zones/zn-{i}/zone", "queued")
    samples = scrape(registry)
    assert value(samples, "hydrovisor_actor_mailbox_depth", path="/zones/*/*") == 4
    assert value(samples, "hydrovisor_pool_run_queue_depth") == 4
    wait_until(lambda: value(scrape(registry), "hydrovisor_actor_mailbox_depth", path="/zones/*/*") == 0)


def test_blocking_calls_stuck_turns_and_spare_workers_are_counted(build: Build) -> None:
    """Not strict (production): a blocking ask is covered by a spare worker, a turn sleeping past
    ``stuck_after`` is seen by the watchdog; a task dump taken meanwhile names the actor on the stuck worker."""
    system, registry = build(PoolSettings(workers=1, max_spare_workers=1, stuck_after=0.2, strict=False),
                             [supervisor_spec("nodes", DYNAMIC, [pooled("a"), pooled("b"), pooled("sleepy")])])
    assert system.ask("/nodes/a", ("ask", "/nodes/b")) == "ping"  # b ran on a spare worker while a waited
    assert value(scrape(registry), "hydrovisor_pool_blocking_compensated_total") == 1

    system.tell("/nodes/sleepy", ("sleep", 1.5))
    wait_until(lambda: system.pool.stuck_turns == 1, timeout=5)
    samples = scrape(registry)
    assert value(samples, "hydrovisor_pool_stuck_turns_total") == 1
    assert value(samples, "hydrovisor_pool_workers", kind="spare") == 1
    assert value(samples, "hydrovisor_pool_busy_workers") >= 1
    assert value(samples, "hydrovisor_pool_spare_cap_reached_total") == 0

    dump = task_dump.capture(None, "inc-pool", "test", pools=[system.pool])
    stuck = [t for t in dump.threads if t.actor is not None]
    assert [t.actor for t in stuck] == ["/nodes/sleepy"]
    assert stuck[0].turn_s is not None and stuck[0].turn_s >= 0.2
    assert stuck[0].name.startswith("actors-")  # a core or the spare worker
    assert "sleep_in_handler" in [frame.function for frame in stuck[0].stack]
    idle = [t for t in dump.threads if t.name.startswith("actors-") and t.actor is None]
    assert idle, "the other pool threads are listed without an actor"
    assert system.ask("/nodes/a", "after") == "after"  # the spare worker keeps the pool going meanwhile

    # the sleep ends, the spare worker retires
    wait_until(lambda: value(scrape(registry), "hydrovisor_pool_workers", kind="spare") == 0, timeout=10)
    assert value(scrape(registry), "hydrovisor_pool_workers", kind="core") == 1


def test_a_stuck_turn_without_a_spare_left_counts_the_cap(build: Build) -> None:
    system, registry = build(PoolSettings(workers=2, max_spare_workers=0, stuck_after=0.2, strict=False),
                             [supervisor_spec("nodes", DYNAMIC, [pooled("sleepy")])])
    system.tell("/nodes/sleepy", ("sleep", 0.8))
    wait_until(lambda: value(scrape(registry), "hydrovisor_pool_spare_cap_reached_total") == 1, timeout=5)
    assert value(scrape(registry), "hydrovisor_pool_workers", kind="spare") == 0


def test_watched_pools_are_attributed_in_every_dump(build: Build) -> None:
    system, _ = build(PoolSettings(workers=1, stuck_after=5.0, strict=True),
                      [supervisor_spec("nodes", DYNAMIC, [pooled("sleepy")])])
    task_dump.watch_pool(system.pool)
    system.tell("/nodes/sleepy", ("sleep", 0.5))
    wait_until(lambda: any(w.actor is not None for w in system.pool.workers()))
    dump = task_dump.capture(None, "inc-watched", "test")  # no pools given: the watched ones
    assert [t.actor for t in dump.threads if t.actor is not None] == ["/nodes/sleepy"]


def test_the_snapshot_shows_each_actors_execution_model_even_while_restarting(build: Build) -> None:
    system, _ = build(PoolSettings(workers=1, strict=True), [
        supervisor_spec("nodes", DYNAMIC, [pooled("n1", backoff=Backoff(initial=5.0, reset_after=60.0))])])
    tree = describe(system)
    assert tree.execution == "thread"
    nodes = tree.children[0]
    assert (nodes.path, nodes.execution) == ("/nodes", "thread")
    assert [(c.path, c.execution) for c in nodes.children] == [("/nodes/n1", "pool")]
    system.kill("/nodes/n1", "test")
    wait_until(lambda: system.cell("/nodes/n1").state.value == "restarting")
    restarting = describe(system, "/nodes/n1")
    assert (restarting.state, restarting.execution) == ("restarting", "pool")
