"""``hydrovisor sim`` against an embedded broker running on another thread."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from hydrovisor import exitcodes
from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.cli import build_parser
from hydrovisor.runtime.loop_thread import LoopThread
from tests.helpers import wait_until
from tests.sim.support import Collector


@pytest.fixture
def broker_thread() -> Iterator[tuple[EmbeddedBroker, Collector, LoopThread]]:
    collector = Collector()
    with LoopThread() as loop:
        embedded = EmbeddedBroker("127.0.0.1", 0, dev_mode=True, on_message=collector)
        loop.run(embedded.start())
        try:
            yield embedded, collector, loop
        finally:
            loop.run(embedded.stop())


def _args(port: int, *extra: str) -> list[str]:
    return ["sim", "--nodes", "6", "--broker", f"mqtt://127.0.0.1:{port}", "--telemetry-interval", "0.2",
            "--status-every", "0.3", "--trust-local-clock", *extra]


def test_sim_runs_for_a_duration_and_prints_status(broker_thread: tuple[EmbeddedBroker, Collector, LoopThread],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    embedded, collector, loop = broker_thread
    args = build_parser().parse_args(_args(embedded.port, "--duration", "1.2", "--types", "ph,irrig",
                                           "--username", "{hardware_id}", "--password", "pw"))
    assert args.func(args) == exitcodes.OK
    out = capsys.readouterr().out
    assert "6/6 connected" in out and "stopped" in out and "pw" not in out
    senders = {m.client_id for m in list(collector.messages) if m.topic.endswith("/telemetry")}
    assert len(senders) == 6
    wait_until(lambda: loop.run(_count(embedded)) == 0, timeout=5, what="all sessions closed")
    assert not [m for m in collector.messages if m.topic.endswith("/lwt")]  # clean DISCONNECTs


async def _count(embedded: EmbeddedBroker) -> int:
    return embedded.session_count


def test_sim_stops_cleanly_on_sigint(broker_thread: tuple[EmbeddedBroker, Collector, LoopThread],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    embedded, collector, _ = broker_thread
    args = build_parser().parse_args(_args(embedded.port))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        assert args.func(args) == exitcodes.OK
    finally:
        timer.cancel()
    assert "stopped" in capsys.readouterr().out
    assert not [m for m in collector.messages if m.topic.endswith("/lwt")]


def test_sim_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--types", "ph,toaster"], ["--nodes", "0"], ["--broker", "http://x"],
                  ["--telemetry-interval", "-1"]):
        args = build_parser().parse_args(["sim", *extra])
        assert args.func(args) == exitcodes.CONFIG
    assert "hydrovisor sim:" in capsys.readouterr().err
