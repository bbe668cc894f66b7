"""One embedded PostgreSQL for the whole test session, and a fresh database per test."""

from __future__ import annotations

import asyncio
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from hydrovisor.store.embedded_pg import EmbeddedPostgres

# Every hydrovisor a test starts (a `hydrovisor run` subprocess, an app from load_settings()) is strict: a
# blocking call in a pooled actor's handler raises instead of being compensated. In-process apps built from
# Settings(...) are strict anyway unless their env is production (actors.strict_blocking unset).
os.environ.setdefault("HYDROVISOR_STRICT_BLOCKING", "1")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The session's embedded server (started once, stopped at the end)."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg-session"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """DSN of a database created for this test only (migrations leave state behind)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server.dsn, f'CREATE DATABASE "{name}"'))
    yield _with_database(pg_server.dsn, name)
    asyncio.run(_admin(pg_server.dsn, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory for tests that need a server of their own."""
    return tmp_path / "data"


def _with_database(dsn: str, database: str) -> str:
    """The same server DSN, pointing at another database."""
    return urllib.parse.urlsplit(dsn)._replace(path=f"/{database}").geturl()


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
