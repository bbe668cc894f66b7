"""The loop guard against a real loop blocked for real, with a fake systemd listening."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from hydrovisor.process.incidents import IncidentKind, IncidentStore
from hydrovisor.process.loop_guard import LoopGuard
from hydrovisor.process.sd_notify import SdNotifier
from hydrovisor.runtime.loop_thread import LoopThread
from tests.helpers import wait_until
from tests.process.fake_systemd import FakeSystemd


class Recorder:
    def __init__(self) -> None:
        self.stalls: list[tuple[str, float]] = []
        self.cycles = 0
        self.exits: list[int] = []

    def stall(self, incident_id: str, age: float) -> None:
        self.stalls.append((incident_id, age))

    def cycle(self) -> None:
        self.cycles += 1


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    with LoopThread() as lt:
        yield lt


def make_guard(loop: LoopThread, recorder: Recorder, notifier: SdNotifier, store: IncidentStore) -> LoopGuard:
    guard = LoopGuard(loop.loop, threshold=0.3, interval=0.02, cycle_interval=0.1, incidents=store,
                      registry=CollectorRegistry(), notifier=notifier, on_stall=recorder.stall,
                      on_cycle=recorder.cycle, related=lambda: ["chaos-00000001"], hard_exit=recorder.exits.append)

    async def start() -> None:
        guard.start()

    loop.run(start())
    return guard


def block_loop_in_a_known_function(loop: LoopThread, seconds: float) -> None:
    def stuck_in_the_loop() -> None:
        threading.Event().wait(seconds)  # a blocking wait on the loop thread: exactly the bug being caught

    loop.loop.call_soon_threadsafe(stuck_in_the_loop)


def test_a_stall_opens_one_incident_with_a_dump_showing_the_culprit_then_closes_it(loop: LoopThread) -> None:
    recorder, store = Recorder(), IncidentStore(None)
    guard = make_guard(loop, recorder, SdNotifier(None), store)
    try:
        wait_until(lambda: recorder.cycles >= 2, 5)  # cycles run on the guard's thread
        assert guard.healthy and recorder.stalls == []
        block_loop_in_a_known_function(loop, 1.0)
        wait_until(lambda: recorder.stalls, 5)
        assert not guard.healthy
        (incident_id, age), = recorder.stalls
        assert age > 0.3 and guard.stall_incident == incident_id
        stall = store.get(incident_id)
        assert stall is not None and stall.kind is IncidentKind.LOOP_STALL and stall.is_open
        assert stall.related == ["chaos-00000001"]
        assert stall.dump is not None
        loop_thread = next(t for t in stall.dump.threads if t.is_loop_thread)
        assert "stuck_in_the_loop" in [f.function.rsplit(".", 1)[-1] for f in loop_thread.stack]
        cycles_during = recorder.cycles
        wait_until(lambda: recorder.cycles > cycles_during + 2, 5)  # the cycle keeps going during the stall
        wait_until(lambda: guard.stall_incident is None, 5)
        closed = store.get(incident_id)
        assert closed is not None and not closed.is_open
        assert float(closed.attributes["blocked_s"]) >= 0.9
        assert len(recorder.stalls) == 1  # one stall, one incident
        assert guard.healthy
    finally:
        guard.stop()


def test_watchdog_pings_only_while_the_loop_is_healthy(loop: LoopThread) -> None:
    with FakeSystemd(watchdog_usec=200_000) as systemd:
        notifier = SdNotifier.from_env(systemd.env())
        assert notifier.watchdog_interval == 0.1
        recorder = Recorder()
        guard = make_guard(loop, recorder, notifier, IncidentStore(None))
        try:
            systemd.wait_for("WATCHDOG", "1", timeout=5)
            block_loop_in_a_known_function(loop, 1.5)
            wait_until(lambda: recorder.stalls, 5)
            detected = time.monotonic()
            wait_until(lambda: guard.stall_incident is None, 5)
            resumed = time.monotonic()
            pings = [at for at, msg in systemd.messages if msg.get("WATCHDOG") == "1"]
            assert [at for at in pings if detected < at < resumed - 0.05] == []
            systemd.wait_for("WATCHDOG", "1", timeout=5, since=resumed)
        finally:
            guard.stop()


def test_fatal_with_a_stuck_loop_exits_hard_with_code_10(loop: LoopThread) -> None:
    recorder = Recorder()
    guard = make_guard(loop, recorder, SdNotifier(None), IncidentStore(None))
    try:
        block_loop_in_a_known_function(loop, 2.0)
        wait_until(lambda: recorder.stalls, 5)
        guard.arm_fatal_exit(grace=0.3, deadline=30)
        wait_until(lambda: recorder.exits, 5)
        assert recorder.exits[0] == 10
    finally:
        guard.stop()


def test_fatal_with_a_healthy_loop_waits_for_the_graceful_exit_until_the_deadline(loop: LoopThread) -> None:
    recorder = Recorder()
    guard = make_guard(loop, recorder, SdNotifier(None), IncidentStore(None))
    try:
        guard.arm_fatal_exit(grace=0.2, deadline=0.8)
        time.sleep(0.5)
        assert recorder.exits == []  # the loop is fine: the graceful stop has its chance
        wait_until(lambda: recorder.exits, 5)
        assert recorder.exits[0] == 10
    finally:
        guard.stop()


def test_a_closed_loop_ends_the_guard() -> None:
    lt = LoopThread()
    lt.__enter__()
    recorder = Recorder()
    guard = make_guard(lt, recorder, SdNotifier(None), IncidentStore(None))
    lt.close()
    thread = guard._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()
