"""The asyncpg connection pool: connect, health check, close. Lives on the one event loop."""

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


class Database:
    """Owns one asyncpg pool; every method must be awaited on the loop that called ``connect``."""

    def __init__(self) -> None:
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

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
        log.info("database pool open",
                 extra={"event": "db_connected", "min_size": min_size, "max_size": max_size})

    async def close(self) -> None:
        """Close the pool gracefully; idempotent."""
        pool, self._pool = self._pool, None
        self._loop = None
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
        """Run ``SELECT 1`` within ``timeout`` seconds; raise ``DatabaseUnavailable`` with the reason."""
        pool = self.pool
        try:
            async with asyncio.timeout(timeout):
                await pool.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailable(_reason(exc)) from exc


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
