"""Database: pool lifecycle and the ping health check against a real server."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import pytest

from hydrovisor.store.database import Database
from hydrovisor.store.embedded_pg import EmbeddedPostgres
from hydrovisor.store.errors import DatabaseUnavailable


def test_ping_succeeds_on_a_running_server(pg_dsn: str) -> None:
    async def scenario() -> None:
        db = Database()
        await db.connect(pg_dsn, min_size=1, max_size=2)
        try:
            await db.ping()
            database = urllib.parse.urlsplit(pg_dsn).path[1:]
            assert await db.pool.fetchval("SELECT current_database()") == database
        finally:
            await db.close()

    asyncio.run(scenario())


def test_pool_before_connect_and_after_close_is_unavailable(pg_dsn: str) -> None:
    async def scenario() -> None:
        db = Database()
        with pytest.raises(DatabaseUnavailable):
            _ = db.pool
        await db.connect(pg_dsn)
        await db.close()
        await db.close()  # idempotent
        with pytest.raises(DatabaseUnavailable) as info:
            await db.ping()
        assert info.value.code == "db_unreachable"

    asyncio.run(scenario())


def test_connect_to_an_absent_server_raises_unavailable(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@/postgres?host={tmp_path}&port=5432"

    async def scenario() -> None:
        with pytest.raises(DatabaseUnavailable) as info:
            await Database().connect(dsn, connect_timeout=1.0)
        assert info.value.code == "db_unreachable"
        assert "FileNotFoundError" in info.value.reason

    asyncio.run(scenario())


def test_ping_after_the_server_stopped_raises_unavailable(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    db = Database()

    async def scenario() -> None:
        await db.connect(server.start(), min_size=2, max_size=2)
        await db.ping()
        await asyncio.to_thread(server.stop)
        with pytest.raises(DatabaseUnavailable) as info:
            await db.ping(timeout=2.0)
        assert info.value.code == "db_unreachable"
        assert info.value.reason
        await db.close()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()
