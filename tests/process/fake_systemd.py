"""``FakeSystemd``: the receiving end of the notify protocol, for tests of ``Type=notify`` behaviour.

Binds an ``AF_UNIX`` datagram socket and records every notification with its arrival time, so a
test can pass :meth:`FakeSystemd.env` to a real ``hydrovisor run`` subprocess and then check that
``READY=1`` came, that ``WATCHDOG=1`` pings stopped during a stall and that ``STOPPING=1`` came::

    with FakeSystemd(watchdog_usec=2_000_000) as fake:
        proc = subprocess.Popen([...], env={**os.environ, **fake.env()})
        fake.wait_for("READY", "1", timeout=60)
        stall_began = time.monotonic()
        ...
        assert not fake.matching("WATCHDOG", since=stall_began + fake.watchdog_interval)
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

Message = tuple[float, dict[str, str]]


def parse_datagram(data: bytes) -> dict[str, str]:
    """``KEY=value`` lines of one datagram as a dict (a later duplicate key wins, as in systemd)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", errors="replace").split("\n"):
        if line:
            key, _, value = line.partition("=")
            fields[key] = value
    return fields


class FakeSystemd:
    """A notify socket with a background reader; use as a context manager or call :meth:`close`.

    ``directory``: where to bind (default: a fresh short temp dir, because ``sun_path`` holds only
    108 bytes and pytest's ``tmp_path`` can be longer). ``abstract=True`` binds in the Linux
    abstract namespace instead and :meth:`env` reports ``@name``.
    """

    def __init__(self, directory: Path | None = None, *, watchdog_usec: int = 2_000_000,
                 abstract: bool = False) -> None:
        self.watchdog_usec = watchdog_usec
        self._own_dir: Path | None = None
        if abstract:
            name = f"hydrovisor-test-{uuid.uuid4().hex}"
            self.address, bind_to = "@" + name, "\0" + name
        else:
            if directory is None:
                directory = self._own_dir = Path(tempfile.mkdtemp(prefix="sdn-"))
            self.address = bind_to = str(directory / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(bind_to)
        # the reader wakes up this often to notice close()
        self._sock.settimeout(0.05)
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._datagrams: list[bytes] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="fake-systemd", daemon=True)
        self._reader.start()

    @property
    def watchdog_interval(self) -> float:
        """The ping interval a well-behaved client derives from :attr:`watchdog_usec` (half of it)."""
        return self.watchdog_usec / 2 / 1e6

    def env(self) -> dict[str, str]:
        """Variables to add to a child's environment (no ``WATCHDOG_PID``: its pid is not known yet)."""
        return {"NOTIFY_SOCKET": self.address, "WATCHDOG_USEC": str(self.watchdog_usec)}

    @property
    def messages(self) -> list[Message]:
        """Snapshot of ``(time.monotonic(), fields)`` for every datagram received so far."""
        with self._cond:
            return list(self._messages)

    @property
    def datagrams(self) -> list[bytes]:
        """Snapshot of the raw datagrams, for exact byte-level checks."""
        with self._cond:
            return list(self._datagrams)

    def matching(self, key: str, value: str | None = None, since: float | None = None) -> list[Message]:
        """Messages carrying ``key`` (with ``value`` if given) received at or after ``since``."""
        return [(at, fields) for at, fields in self.messages
                if key in fields and (value is None or fields[key] == value) and (since is None or at >= since)]

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0,
                 since: float | None = None) -> Message:
        """The first message matching like :meth:`matching`, waiting up to ``timeout`` s for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.matching(key, value, since)
                if found:
                    return found[0]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    wanted = key if value is None else f"{key}={value}"
                    raise AssertionError(f"no {wanted} within {timeout}s; got {[m for _, m in self._messages]}")
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop the reader, close the socket, remove the temp dir this instance created."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._reader.join()
        self._sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> FakeSystemd:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            with self._cond:
                self._datagrams.append(data)
                self._messages.append((time.monotonic(), parse_datagram(data)))
                self._cond.notify_all()
