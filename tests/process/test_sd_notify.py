"""``SdNotifier`` against a real ``AF_UNIX`` datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydrovisor.process.sd_notify import SdNotifier
from tests.helpers import wait_until
from tests.process.fake_systemd import FakeSystemd


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSystemd]:
    with FakeSystemd(tmp_path, watchdog_usec=30_000_000) as receiver:
        yield receiver


def test_sends_exactly_the_expected_datagrams(fake: FakeSystemd) -> None:
    notifier = SdNotifier.from_env(fake.env())
    assert notifier.enabled
    assert notifier.watchdog_interval == 15.0

    notifier.ready("serving")
    notifier.watchdog()
    notifier.status("3 nodes online")
    notifier.stopping()
    fake.wait_for("STOPPING", "1")

    assert fake.datagrams == [b"READY=1\nSTATUS=serving\n", b"WATCHDOG=1\n", b"STATUS=3 nodes online\n",
                              b"STOPPING=1\n"]
    assert [fields for _, fields in fake.messages] == [
        {"READY": "1", "STATUS": "serving"}, {"WATCHDOG": "1"}, {"STATUS": "3 nodes online"}, {"STOPPING": "1"}]
    assert notifier.send_failures == 0
    notifier.close()


def test_notify_packs_fields_into_one_datagram_and_reports_sending(fake: FakeSystemd) -> None:
    notifier = SdNotifier.from_env(fake.env())
    assert notifier.notify(STATUS="draining", ERRNO="0") is True
    assert notifier.notify() is False  # nothing to say: nothing sent
    notifier.stopping("bye")
    fake.wait_for("STOPPING", "1")
    assert fake.datagrams == [b"STATUS=draining\nERRNO=0\n", b"STOPPING=1\nSTATUS=bye\n"]


def test_newlines_in_values_cannot_forge_extra_fields(fake: FakeSystemd) -> None:
    notifier = SdNotifier.from_env(fake.env())
    notifier.status("db down\nREADY=1\r\nretrying")
    _, fields = fake.wait_for("STATUS")
    assert fields == {"STATUS": "db down READY=1 retrying"}
    assert fake.datagrams == [b"STATUS=db down READY=1 retrying\n"]


def test_abstract_namespace_socket() -> None:
    with FakeSystemd(abstract=True) as fake:
        assert fake.env()["NOTIFY_SOCKET"].startswith("@")
        notifier = SdNotifier.from_env(fake.env())
        notifier.ready()
        notifier.watchdog()
        fake.wait_for("WATCHDOG", "1")
        assert fake.datagrams == [b"READY=1\n", b"WATCHDOG=1\n"]


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "30000000"}])
def test_disabled_without_notify_socket(environ: dict[str, str]) -> None:
    notifier = SdNotifier.from_env(environ)
    assert not notifier.enabled
    assert notifier.watchdog_interval is None  # nobody to ping
    notifier.ready("x")
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping()
    assert notifier.notify(STATUS="x") is False
    assert notifier.send_failures == 0


@pytest.mark.parametrize(("extra", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getppid())}, None),  # meant for our parent
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "30s"}, None),
    ({}, None),
])
def test_watchdog_interval_from_env(extra: dict[str, str], interval: float | None) -> None:
    notifier = SdNotifier.from_env({"NOTIFY_SOCKET": "/run/unused.sock", **extra})
    assert notifier.enabled
    assert notifier.watchdog_interval == interval


def test_receiver_going_away_does_not_raise(fake: FakeSystemd, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SdNotifier.from_env(fake.env())
    notifier.ready()
    fake.wait_for("READY", "1")
    fake.close()  # the socket file is gone too

    with caplog.at_level(logging.WARNING, logger="hydrovisor.process.sd_notify"):
        notifier.watchdog()
        notifier.status("still here")
        assert notifier.notify(WATCHDOG="1") is False
    assert notifier.send_failures == 3
    warnings = [r for r in caplog.records if getattr(r, "event", None) == "sd_notify_failed"]
    assert len(warnings) == 1  # once per streak, not once per ping


def test_closed_receiver_then_a_new_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "notify.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: ECONNREFUSED
    notifier = SdNotifier(str(path), 15.0)
    with caplog.at_level(logging.WARNING, logger="hydrovisor.process.sd_notify"):
        assert notifier.notify(WATCHDOG="1") is False
        path.unlink()
        with FakeSystemd(tmp_path) as fake:
            assert notifier.notify(WATCHDOG="1") is True
            fake.wait_for("WATCHDOG", "1")
        assert notifier.notify(WATCHDOG="1") is False  # a new streak of failures is reported again
    assert notifier.send_failures == 2
    assert sum(getattr(r, "event", None) == "sd_notify_failed" for r in caplog.records) == 2


def test_a_receiver_that_stops_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    path = tmp_path / "deaf.sock"
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(str(path))
    try:
        notifier = SdNotifier(str(path))
        started = time.monotonic()
        sent = [notifier.notify(STATUS="x" * 1000) for _ in range(5_000)]
        assert time.monotonic() - started < 10
        assert sent[0] is True
        assert sent[-1] is False  # the queue filled up: a failed send, not a hang
        assert notifier.send_failures == sent.count(False)
    finally:
        deaf.close()


def test_concurrent_senders_share_one_socket(fake: FakeSystemd) -> None:
    notifier = SdNotifier.from_env(fake.env())
    threads, per_thread = 8, 40

    def send(worker: int) -> None:
        for n in range(per_thread):
            notifier.notify(STATUS=f"{worker}-{n}", WATCHDOG="1")

    workers = [threading.Thread(target=send, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    # a full receive queue is a counted failure, never a torn or lost-without-trace datagram
    wait_until(lambda: len(fake.datagrams) + notifier.send_failures == total, what="all datagrams accounted for")
    expected = {f"STATUS={w}-{n}\nWATCHDOG=1\n".encode() for w in range(threads) for n in range(per_thread)}
    assert set(fake.datagrams) <= expected
    assert len(set(fake.datagrams)) == len(fake.datagrams)
    notifier.close()
