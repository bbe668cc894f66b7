"""The database health check runs on a dedicated connection, not through the work pool.

A saturated pool (every connection busy under load) is not an unreachable database: the ping must
still answer quickly. A stopped server must still be detected within the ping's budget, and the
dedicated connection must come back by itself once the server is up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from hydrovisor.store.database import HEALTH_APPLICATION_NAME, Database
from hydrovisor.store.embedded_pg import EmbeddedPostgres
from hydrovisor.store.errors import DatabaseUnavailable

POOL_MAX = 3
PING_TIMEOUT = 2.0


@contextlib.asynccontextmanager
async def saturated(db: Database, sleep_s: float) -> AsyncIterator[list[asyncpg.Connection]]:
    """Every pool connection acquired and held; all but one busy in ``pg_sleep`` (the rest held idle)."""
    held = [await db.pool.acquire(timeout=5) for _ in range(POOL_MAX)]
    sleeps = [asyncio.ensure_future(conn.execute(f"SELECT pg_sleep({sleep_s})")) for conn in held[1:]]
    try:
        await asyncio.sleep(0.1)  # the sleeps are running on the server
        with pytest.raises(TimeoutError):  # the pool really is exhausted
            await db.pool.acquire(timeout=0.2)
        yield held
    finally:
        await asyncio.gather(*sleeps, return_exceptions=True)
        for conn in held:
            await db.pool.release(conn)


async def _health_backends(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", HEALTH_APPLICATION_NAME)
    return [row["pid"] for row in rows]


def test_ping_succeeds_quickly_while_every_pool_connection_is_busy(pg_dsn: str) -> None:
    async def scenario() -> None:
        db = Database()
        await db.connect(pg_dsn, min_size=1, max_size=POOL_MAX)
        try:
            async with saturated(db, sleep_s=PING_TIMEOUT + 1.5) as held:
                for _ in range(3):
                    began = time.monotonic()
                    await db.ping(timeout=PING_TIMEOUT)
                    assert time.monotonic() - began < 0.5
                # one dedicated connection, reused by every ping
                assert len(await _health_backends(held[0])) == 1
        finally:
            await db.close()

    asyncio.run(scenario())


def test_the_health_connection_is_reused_and_closed_with_the_database(pg_dsn: str) -> None:
    async def scenario() -> None:
        db = Database()
        await db.connect(pg_dsn, min_size=1, max_size=2)
        admin = await asyncpg.connect(pg_dsn)
        try:
            assert await _health_backends(admin) == []  # opened lazily, by the first ping
            await db.ping()
            first = await _health_backends(admin)
            assert len(first) == 1
            for _ in range(3):
                await db.ping()
            assert await _health_backends(admin) == first
            health = db._health
            assert health is not None
            assert await health.fetchval("SHOW statement_timeout") == "2s"  # the server bounds the check too
            assert await db.pool.fetchval("SHOW statement_timeout") == "0"  # the work pool is not affected
            # the backend is killed (idle-session reaper, failover, pg_terminate_backend): the next ping
            # replaces the stale connection within its budget instead of reporting the server down
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first[0])
            await asyncio.sleep(0.2)
            await db.ping()
            second = await _health_backends(admin)
            assert len(second) == 1 and second != first
            await db.close()
            for _ in range(50):
                if await _health_backends(admin) == []:
                    break
                await asyncio.sleep(0.05)
            assert await _health_backends(admin) == []
        finally:
            await admin.close()
            await db.close()

    asyncio.run(scenario())


def test_ping_detects_a_stopped_server_and_reconnects_after_restart(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    db = Database()

    async def down() -> float:
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable) as info:
            await db.ping(timeout=PING_TIMEOUT)
        assert info.value.code == "db_unreachable" and info.value.reason
        return time.monotonic() - began

    async def scenario() -> None:
        dsn = server.start()
        await db.connect(dsn, min_size=1, max_size=POOL_MAX)
        async with db.pool.acquire() as conn:
            await db.ping()
            before = await _health_backends(conn)
        assert len(before) == 1
        await asyncio.to_thread(server.stop)
        assert await down() <= PING_TIMEOUT + 0.5  # detected within the ping's budget, as through the pool
        assert await down() <= PING_TIMEOUT + 0.5  # and on every ping while it lasts
        assert await asyncio.to_thread(server.start) == dsn
        await db.ping(timeout=PING_TIMEOUT)  # reconnected by itself
        async with db.pool.acquire() as conn:
            after = await _health_backends(conn)
        assert len(after) == 1 and after != before
        # a restart between two pings: the stale connection is replaced within the ping, no false "down"
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        await db.ping(timeout=PING_TIMEOUT)
        await db.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_ping_while_saturated_and_the_server_stopped_still_fails(tmp_path: Path) -> None:
    """Pool saturation neither hides nor fakes an outage: the dedicated connection sees the real state."""
    server = EmbeddedPostgres(tmp_path / "data")
    db = Database()

    async def scenario() -> None:
        await db.connect(server.start(), min_size=POOL_MAX, max_size=POOL_MAX)
        held = [await db.pool.acquire(timeout=5) for _ in range(POOL_MAX)]
        await db.ping()
        await asyncio.to_thread(server.stop)
        began = time.monotonic()
        with pytest.raises(DatabaseUnavailable):
            await db.ping(timeout=PING_TIMEOUT)
        assert time.monotonic() - began <= PING_TIMEOUT + 0.5
        for conn in held:
            await db.pool.release(conn)
        await db.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
