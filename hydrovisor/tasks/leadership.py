"""Scheduler leadership: exactly one hydrovisor process dispatches tasks, the one holding an advisory lock.

:class:`Leadership` lives on the one event loop. It keeps a dedicated asyncpg connection (never one of the
pool: a saturated pool must neither delay the lock nor fake its loss, the same reason the health check has
its own) and tries ``pg_try_advisory_lock(LEADER_LOCK_KEY)`` on it every ``retry_s`` until it gets the lock.
A session lock lives exactly as long as its session, so while it is held the session itself is watched:

- asyncpg's termination listener fires as soon as the socket closes (server restart, ``pg_terminate_backend``,
  an idle reaper), and a ``SELECT 1`` every ``check_s`` bounded by ``check_timeout_s`` (client side, and
  ``statement_timeout`` on the server) catches a silent network or a hung server;
- any doubt loses leadership **at once**: :attr:`is_leader` flips, the callbacks are told and the connection
  is terminated synchronously, before anything awaits, so no dispatch can slip in between. A process that
  cannot prove it holds the lock must not act as if it did; the server releases the lock when it sees the
  session gone, and another instance (or this one, later) acquires it.

:attr:`epoch` grows by one with every acquisition: a dispatcher that remembers the epoch it started under
sees that leadership was lost and regained in between, even if it never saw ``is_leader`` false.

What is not covered (and cannot be from one side): between a partition that silently breaks the session
and the next failing check (at most ``check_s + check_timeout_s``) this process still believes it leads,
while the server may already have ended the session and granted the lock to another instance. Dispatches
must therefore stay idempotent (tasks are, by correlation id) rather than rely on the lock alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

LEADER_LOCK_KEY = int.from_bytes(b"hvschedl", "big")
"""The advisory lock key every hydrovisor instance on one database contends for (b"hvschedl" as int64); distinct
from ``MIGRATION_LOCK_KEY``, else starting migrations would wait on the leader's session."""

LEADER_APPLICATION_NAME = "hydrovisor-leader"  # how the leadership connection shows in pg_stat_activity

# what a dead, unreachable or shutting-down server surfaces as through asyncpg (as in store.database)
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)

ChangeCallback = Callable[[bool, int], None]
"""Told ``(is_leader, epoch)`` on the loop at every change; must not block (and must not raise)."""


class Leadership:
    """See the module docstring. Create, :meth:`on_change`, :meth:`start`; :meth:`stop` releases the lock."""

    def __init__(self, dsn: str | Callable[[], str], registry: CollectorRegistry, *, retry_s: float = 2.0,
                 check_s: float = 1.0,
                 check_timeout_s: float = 1.0, connect_timeout_s: float = 5.0,
                 key: int = LEADER_LOCK_KEY) -> None:
        if min(retry_s, check_s, check_timeout_s, connect_timeout_s) <= 0:
            raise ValueError("leadership intervals and timeouts must be positive")
        # never logged: it may carry a password; a callable is read at each connect (the embedded server's DSN
        # is known only once it runs)
        self._dsn = dsn
        self._retry_s = retry_s
        self._check_s = check_s
        self._check_timeout_s = check_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._key = key
        self._conn: asyncpg.Connection | None = None
        self._leader = False
        self._epoch = 0
        self._callbacks: list[ChangeCallback] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set on loss: the loop goes straight back to acquiring
        self._gauge = Gauge("hydrovisor_scheduler_leader", "1 while this process holds the scheduler lock.",
                            registry=registry)
        self._changes = Counter("hydrovisor_scheduler_leadership_changes_total",
                                "Scheduler leadership acquired or lost by this process.", ["change"],
                                registry=registry)
        for change in ("acquired", "lost"):
            self._changes.labels(change=change)  # both series exist from the start (rate() over a gap)

    @property
    def is_leader(self) -> bool:
        """True while this process holds the lock (as far as the last check proves)."""
        return self._leader

    @property
    def epoch(self) -> int:
        """How many times this process acquired the lock (0: never)."""
        return self._epoch

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(is_leader, epoch)`` on every acquisition and loss (on the loop)."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Start contending for the lock in the background (the first attempt runs right away)."""
        if self._task is not None:
            raise RuntimeError("Leadership.start called twice")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler-leadership")

    async def stop(self) -> None:
        """Stop contending; release the lock if held (the session ends either way). Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if self._leader:
            self._change(False, "stopped")
        if conn is None or conn.is_closed():
            return
        try:  # an orderly release lets another instance take over without waiting for the session's end
            async with asyncio.timeout(self._check_timeout_s):
                await conn.fetchval("SELECT pg_advisory_unlock($1)", self._key)
                await conn.close()
        except _UNAVAILABLE:
            conn.terminate()  # the server drops the lock with the session

    # internals -------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                if not self._leader:
                    await self._try_acquire()
                if self._leader:
                    await self._check()
            except Exception:  # a bug here must not leave a leader nobody watches, nor end the contention
                log.exception("scheduler leadership round failed", extra={"event": "leadership_round_failed"})
                self._lose("internal_error")
            delay = self._check_s if self._leader else self._retry_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _try_acquire(self) -> None:
        """One attempt: (re)connect if needed, then ``pg_try_advisory_lock``."""
        try:
            conn = await self._connection()
            async with asyncio.timeout(self._check_timeout_s):
                got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
        except _UNAVAILABLE as exc:
            self._drop()
            log.debug("scheduler lock not tried: %s", _reason(exc),
                      extra={"event": "leadership_attempt_failed", "reason": _reason(exc)})
            return
        alive = not conn.is_closed()
        if got and alive and conn is self._conn:  # not lost while the answer was on its way
            self._epoch += 1
            self._change(True, "lock_acquired")

    async def _connection(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        self._drop()
        conn = await asyncpg.connect(
            self._dsn() if callable(self._dsn) else self._dsn, timeout=self._connect_timeout_s, statement_cache_size=0,
            server_settings={"application_name": LEADER_APPLICATION_NAME,
                             # the server bounds the check too, not only the client
                             "statement_timeout": str(max(1, round(self._check_timeout_s * 1000)))})
        conn.add_termination_listener(self._terminated)
        self._conn = conn
        return conn

    async def _check(self) -> None:
        """``SELECT 1`` on the lock's session within ``check_timeout_s``; any failure loses leadership."""
        conn = self._conn
        if conn is None or conn.is_closed():
            self._lose("connection_closed")
            return
        try:
            async with asyncio.timeout(self._check_timeout_s):
                await conn.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            self._lose(f"check_failed: {_reason(exc)}")

    def _terminated(self, conn: asyncpg.Connection) -> None:
        """asyncpg's termination listener: the session is gone, and the lock with it."""
        if conn is self._conn:
            self._lose("connection_lost")

    def _lose(self, reason: str) -> None:
        """Synchronous on purpose: leadership is gone before the caller can await anything."""
        self._drop()
        if self._leader:
            self._change(False, reason)
        self._wake.set()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.remove_termination_listener(self._terminated)
            if not conn.is_closed():
                conn.terminate()

    def _change(self, leader: bool, reason: str) -> None:
        self._leader = leader
        self._gauge.set(1 if leader else 0)
        self._changes.labels(change="acquired" if leader else "lost").inc()
        fields = {"event": "leadership_acquired" if leader else "leadership_lost", "epoch": self._epoch,
                  "reason": reason, "lock_key": self._key}
        if leader:
            log.info("scheduler leadership acquired (epoch %d)", self._epoch, extra=fields)
        else:
            log.warning("scheduler leadership lost (epoch %d): %s", self._epoch, reason, extra=fields)
        for callback in list(self._callbacks):
            try:
                callback(leader, self._epoch)
            except Exception:
                # one broken listener must not keep the others (the dispatcher) from hearing of a loss
                log.exception("leadership callback failed", extra={"event": "leadership_callback_failed"})


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
