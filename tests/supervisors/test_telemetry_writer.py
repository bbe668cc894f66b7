"""The telemetry writer under supervision: a stuck store is a failing health check, a restart gives up
its predecessor's receipts, and a batch is retried until the store takes it.

A real actor system and loop; the store is a coroutine the test controls (failing like an
unreachable database, then working), so the writer's own decisions are what is tested here. The
real store against PostgreSQL is tested in tests/app and tests/store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry
from sup_support import MakeSystem

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.actors.telemetry_writer import StoreSample, TelemetryWriter, WriterMetrics
from hydrovisor.store.repos.telemetry import Sample
from hydrovisor.supervisors import ChildSpec, SupervisorFlags
from tests.helpers import wait_until

PATH = "/writer"


class Receipts:
    """What the writer gives back, recorded (the real one forwards to the loop's ReceiptBook)."""

    def __init__(self) -> None:
        self.failed: list[tuple[tuple[int, ...] | None, str]] = []  # None: all

    def fail(self, tokens: Iterable[int], reason: str) -> None:
        self.failed.append((tuple(tokens), reason))

    def fail_all(self, reason: str) -> None:
        self.failed.append((None, reason))


class Store:
    """What the writer's ``write`` reaches: fails while ``down`` is set, else records the batch."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.written: list[int] = []  # tokens, in commit order
        self.attempts = 0

    async def write(self, batch: Sequence[StoreSample]) -> int:
        self.attempts += 1
        if self.down.is_set():
            raise ConnectionRefusedError("database unreachable")
        self.written.extend(item.token for item in batch)
        return len(batch)


def _sample(n: int) -> StoreSample:
    return StoreSample(Sample("zn-1", "nd-1", "ch", "PH", 6.0, 1.7e9 + n, "mqtt"), token=n)


def test_a_store_that_makes_no_progress_fails_the_health_check_until_it_does(make_system: MakeSystem) -> None:
    store, health, receipts = Store(), HealthBoard(CollectorRegistry()), Receipts()
    spec = ChildSpec("writer", lambda ctx: TelemetryWriter.start(
        ctx, write=store.write, metrics=WriterMetrics(CollectorRegistry()),
        receipts=receipts, health=health, stall_after=0.3))
    system = make_system(SupervisorFlags(), [spec])
    wait_until(lambda: (health.get("telemetry") or _never).ok, timeout=5, what="a healthy idle writer")
    store.down.set()
    for n in range(1, 6):
        system.tell(PATH, _sample(n))
    wait_until(lambda: not (health.get("telemetry") or _never).ok, timeout=5, what="the stall to be reported")
    state = health.get("telemetry")
    assert state is not None
    assert "5 waiting" in state.reason
    store.down.clear()
    wait_until(lambda: store.written == [1, 2, 3, 4, 5], timeout=10, what="the retried batch, in order")
    wait_until(lambda: (health.get("telemetry") or _never).ok, timeout=5, what="health back")
    assert store.attempts > 1
    assert receipts.failed == [(None, "telemetry_writer_restarted")]  # one incarnation, nothing else failed


def test_every_incarnation_gives_up_its_predecessors_receipts_and_a_full_buffer_refuses(
    make_system: MakeSystem,
) -> None:
    store, receipts = Store(), Receipts()
    store.down.set()
    spec = ChildSpec("writer", lambda ctx: TelemetryWriter.start(
        ctx, write=store.write, metrics=WriterMetrics(CollectorRegistry()),
        receipts=receipts, health=HealthBoard(CollectorRegistry()), max_buffered=3))
    system = make_system(SupervisorFlags(), [spec])
    for n in range(1, 6):
        system.tell(PATH, _sample(n))
    restarted = (None, "telemetry_writer_restarted")
    wait_until(lambda: receipts.failed == [restarted, ((4,), "buffer_full"), ((5,), "buffer_full")], timeout=5,
               what="samples 4 and 5 refused")
    system.kill(PATH, "restart requested by the test")
    wait_until(lambda: receipts.failed[-1] == restarted and len(receipts.failed) == 4, timeout=5,
               what="the new incarnation to give up samples 1-3")


class _Never:
    ok = False


_never = _Never()
