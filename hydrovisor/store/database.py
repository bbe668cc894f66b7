"""The asyncpg connection pool: connect, health check, close. Lives on the one event loop.

The health check (:meth:`Database.ping`) does not go through the pool: under load every pool connection
is busy and a ping that queues for one times out while PostgreSQL is healthy and idle, a load-induced
"database unreachable". It runs on a dedicated connection of its own instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from hydrovisor.runtime.affinity import guard
from hydrovisor.store.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a dead, unreachable or shutting-down server surfaces as through asyncpg: socket errors,
# timeouts, lost connections (InterfaceError covers "connection is closed"), server-side
# "cannot connect now" / admin shutdown (PostgresError).
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError)

HEALTH_APPLICATION_NAME = "hydrovisor-health"  # how the health connection shows in pg_stat_activity


class Database:
    """Owns one asyncpg pool; every method must be awaited on the loop that called ``connect``."""

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dsn: str | None = None
        # the health check's own connection: opened by the first ping, reused, dropped on any failure
        self._health: asyncpg.Connection | None = None
        self._health_lock = asyncio.Lock()  # one ping at a time on it

    @property
    def pool(self) -> asyncpg.Pool:
        """The connected pool; raises ``DatabaseUnavailable`` before ``connect`` or after ``close``."""
        guard(self._loop, "Database.pool")
        if self._pool is None:
            raise DatabaseUnavailable("not connected")
        return self._pool

    async def connect(
        self, dsn: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 5.0
    ) -> None:
        """Open the pool (``min_size`` connections up front); raise ``DatabaseUnavailable`` on failure.

        The DSN is never logged: it may carry a password.
        """
        if self._pool is not None:
            raise RuntimeError("Database.connect called twice without close")
        self._loop = asyncio.get_running_loop()
        try:
            self._pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, timeout=connect_timeout, reset=_keep_session
            )
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(_reason(exc)) from exc
        self._dsn = dsn
        self._health_lock = asyncio.Lock()
        log.info("database pool open",
                 extra={"event": "db_connected", "min_size": min_size, "max_size": max_size})

    async def close(self) -> None:
        """Close the health connection and the pool gracefully; idempotent."""
        pool, self._pool = self._pool, None
        self._loop = self._dsn = None
        health, self._health = self._health, None
        if health is not None:
            try:
                await health.close(timeout=2.0)
            except _UNAVAILABLE:  # the server is gone or slow: just drop the socket
                health.terminate()
            except BaseException:
                health.terminate()
                raise
        if pool is not None:
            await pool.close()
            log.info("database pool closed", extra={"event": "db_closed"})

    async def run(self, call: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """Await ``call(pool)`` on the loop: how actors (which never touch the pool) reach the database.

        An actor builds ``db.run(lambda pool: repo.f(pool, ...))`` on its own thread — creating the
        coroutine touches nothing — and hands it to the bridge.
        """
        return await call(self.pool)

    async def ping(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a health check owns its budget
        """Run ``SELECT 1`` within ``timeout`` seconds; raise ``DatabaseUnavailable`` with the reason.

        Runs on the dedicated health connection, never on the pool: a saturated pool is not an
        unreachable database. The connection is opened by the first ping (within its budget), reused,
        and dropped on any failure so that the next ping reconnects. A reused connection that turns
        out to be dead (the server restarted, the backend was terminated) is replaced once within
        the same budget, so a stale socket alone never reports a healthy server as down.
        """
        _ = self.pool  # not connected / closed: unavailable, as before
        try:
            async with asyncio.timeout(timeout), self._health_lock:
                conn, fresh = await self._health_connection(timeout)
                try:
                    await conn.fetchval("SELECT 1")
                except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                    self._drop_health()
                    if fresh:
                        raise
                    conn, _fresh = await self._health_connection(timeout)  # the old one was stale
                    await conn.fetchval("SELECT 1")
        except BaseException as exc:  # a timeout or cancel mid-query leaves the connection in doubt
            self._drop_health()
            if isinstance(exc, _UNAVAILABLE):
                raise DatabaseUnavailable(_reason(exc)) from exc
            raise

    async def _health_connection(self, timeout: float) -> tuple[asyncpg.Connection, bool]:  # noqa: ASYNC109
        """The health connection, opened if there is none; ``True`` when it was just opened."""
        conn = self._health
        if conn is not None and not conn.is_closed():
            return conn, False
        self._drop_health()
        dsn = self._dsn
        if dsn is None:
            raise DatabaseUnavailable("not connected")
        conn = await asyncpg.connect(
            dsn, timeout=timeout, statement_cache_size=0,
            server_settings={"application_name": HEALTH_APPLICATION_NAME,
                             # the server gives up on its own too, not only the client
                             "statement_timeout": str(max(1, round(timeout * 1000)))},
        )
        self._health = conn
        return conn, True

    def _drop_health(self) -> None:
        """Forget the health connection (closing its socket at once: the server may be gone)."""
        conn, self._health = self._health, None
        if conn is not None and not conn.is_closed():
            conn.terminate()


async def _keep_session(_: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query (advisory unlock, ``CLOSE ALL``,
    ``UNLISTEN *``, ``RESET ALL``): a round trip on *every* release, i.e. on every query through the
    pool. Nothing here leaves session state behind: no ``SET``/``LISTEN``, cursors only inside
    transactions, and the migrations release their advisory lock themselves. asyncpg still rolls
    back an open transaction before calling this.
    """


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
