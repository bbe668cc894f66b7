"""Task dumps and worker pools: a dump taken while a pooled turn is stuck attributes the worker's
stack to its actor; incident files written before dumps knew about pools still load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.process import task_dump
from hydrovisor.process.incidents import Incident, IncidentKind, IncidentStore
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorSystem,
    ChildSpec,
    Execution,
    PoolSettings,
    SupervisedActor,
    SupervisorFlags,
    supervisor_spec,
)
from tests.helpers import wait_until


class Gated(SupervisedActor):
    """A pooled actor whose handler waits on the gate it is sent (a real turn on a real worker)."""

    def on_receive(self, message: Any) -> Any:
        message.wait(5)


@pytest.fixture
def system() -> Iterator[ActorSystem]:
    with LoopThread() as lt:
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry(),
                             pool=PoolSettings(workers=2, stuck_after=10.0, strict=True))
        system.start(SupervisorFlags(), [supervisor_spec("zones", SupervisorFlags(dynamic=True), [
            ChildSpec("zn-1", Gated.start, execution=Execution.POOL)])])
        yield system
        assert system.stop(timeout=10)


def test_a_worker_running_a_turn_names_its_actor_and_the_turns_age(system: ActorSystem) -> None:
    gate = threading.Event()
    system.tell("/zones/zn-1", gate)
    try:
        wait_until(system.pool.running_on)
        time.sleep(0.05)
        dump = task_dump.capture(None, "inc-p1", "test", pools=[system.pool])
    finally:
        gate.set()
    workers = [t for t in dump.threads if t.name.startswith("actors-worker-")]
    assert len(workers) == 2
    [busy] = [t for t in workers if t.actor is not None]
    assert busy.actor == "/zones/zn-1"
    assert busy.turn_s is not None and busy.turn_s >= 0.05
    assert "Gated.on_receive" in [frame.function for frame in busy.stack]
    assert all(t.actor is None and t.turn_s is None for t in dump.threads if t is not busy)


def test_a_failing_pool_does_not_fail_the_dump() -> None:
    class Broken:
        def workers(self) -> list[Any]:
            raise RuntimeError("gone")

    dump = task_dump.capture(None, "inc-p2", "test", pools=[Broken()])
    assert dump.total_threads >= 1
    assert all(t.actor is None for t in dump.threads)


def test_incident_files_from_before_pool_attribution_still_load(tmp_path: Any) -> None:
    dump = task_dump.capture(None, "stall-00000001", "test")
    old = msgspec.json.decode(task_dump.to_json(dump))
    for thread in old["threads"]:  # a dump as an older version wrote it
        del thread["actor"], thread["turn_s"]
    incident = Incident(incident_id="stall-00000001", kind=IncidentKind.LOOP_STALL, title="t", reason="r",
                        owner="loop_guard", opened_at=time.time(), closed_at=time.time())
    raw = msgspec.json.decode(msgspec.json.encode(incident))
    raw["dump"] = old
    (tmp_path / "000000000000001-stall-00000001.json").write_bytes(msgspec.json.encode(raw))
    loaded = IncidentStore(tmp_path).get("stall-00000001")
    assert loaded is not None and loaded.dump is not None
    assert all(t.actor is None and t.turn_s is None for t in loaded.dump.threads)
