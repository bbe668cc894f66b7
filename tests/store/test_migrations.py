"""Migrations: applied once, serialised across pools, checksums enforced, failures atomic."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import pytest

from hydrovisor.store.errors import MigrationError
from hydrovisor.store.migrations import apply_migrations, load_migrations

T = TypeVar("T")


def _with_pool(dsn: str, body: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def scenario() -> T:
        async with asyncpg.create_pool(dsn, min_size=1, max_size=2) as pool:
            return await body(pool)

    return asyncio.run(scenario())


def test_packaged_migrations_apply_once(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        packaged = load_migrations()
        assert await apply_migrations(pool) == [m.name for m in packaged]
        assert await apply_migrations(pool) == []
        event_id = await pool.fetchval("INSERT INTO system_events (kind) VALUES ('started') RETURNING id")
        row = await pool.fetchrow("SELECT kind, details, at FROM system_events WHERE id = $1", event_id)
        assert (row["kind"], row["details"], row["at"] is not None) == ("started", "{}", True)
        ledger = await pool.fetch("SELECT version, name, checksum FROM schema_migrations")
        assert sorted(tuple(r) for r in ledger) == [(m.version, m.name, m.checksum) for m in packaged]
        assert packaged[0].name == "0001_init.sql"

    _with_pool(pg_dsn, body)


def test_concurrent_callers_on_two_pools_apply_exactly_once(pg_dsn: str) -> None:
    # The first file sleeps while holding the lock, so the second caller really has to wait.
    source = [("0001_slow.sql", "SELECT pg_sleep(0.3); CREATE TABLE slow (id int)"),
              ("0002_next.sql", "CREATE TABLE next (id int)")]

    async def scenario() -> list[list[str]]:
        async with (asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) as one,
                    asyncpg.create_pool(pg_dsn, min_size=1, max_size=1) as two):
            return list(await asyncio.gather(apply_migrations(one, source=source),
                                             apply_migrations(two, source=source)))

    results = asyncio.run(scenario())
    assert sorted(results) == [[], ["0001_slow.sql", "0002_next.sql"]]


def test_changed_applied_file_is_a_checksum_mismatch(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> MigrationError:
        await apply_migrations(pool, source=[("0001_a.sql", "CREATE TABLE a (x int)")])
        with pytest.raises(MigrationError) as info:
            await apply_migrations(pool, source=[("0001_a.sql", "CREATE TABLE a (x bigint)"),
                                                 ("0002_b.sql", "CREATE TABLE b (x int)")])
        assert await pool.fetchval("SELECT to_regclass('b')") is None  # nothing applied after it
        return info.value

    error = _with_pool(pg_dsn, body)
    assert (error.code, error.migration) == ("migration_checksum_mismatch", "0001_a.sql")
    assert "0001_a.sql" in str(error)


def test_applied_version_unknown_to_this_release_is_refused(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> MigrationError:
        await apply_migrations(pool, source=[("0001_a.sql", "SELECT 1"), ("0002_b.sql", "SELECT 2")])
        with pytest.raises(MigrationError) as info:
            await apply_migrations(pool, source=[("0001_a.sql", "SELECT 1")])
        return info.value

    error = _with_pool(pg_dsn, body)
    assert (error.code, error.migration) == ("migration_unknown_version", "0002_b.sql")


def test_failing_file_is_rolled_back_and_earlier_ones_stay(pg_dsn: str) -> None:
    source = [("0001_ok.sql", "CREATE TABLE ok (id int)"),
              ("0002_bad.sql", "CREATE TABLE half (id int); SELECT no_such_function()")]

    async def body(pool: asyncpg.Pool) -> MigrationError:
        with pytest.raises(MigrationError) as info:
            await apply_migrations(pool, source=source)
        assert await pool.fetchval("SELECT to_regclass('half')") is None
        assert await pool.fetchval("SELECT array_agg(name) FROM schema_migrations") == ["0001_ok.sql"]
        # The lock was released: a fixed release can migrate on the same pool.
        fixed = [source[0], ("0002_bad.sql", "CREATE TABLE half (id int)")]
        assert await apply_migrations(pool, source=fixed) == ["0002_bad.sql"]
        return info.value

    error = _with_pool(pg_dsn, body)
    assert (error.code, error.migration) == ("migration_failed", "0002_bad.sql")


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ([("1_init.sql", "SELECT 1")], "migration_invalid_name"),
        ([("0001_Init.sql", "SELECT 1")], "migration_invalid_name"),
        ([("0001_a.sql", "SELECT 1"), ("0001_b.sql", "SELECT 2")], "migration_duplicate_version"),
    ],
)
def test_malformed_sources_are_rejected_before_touching_the_database(
    source: list[tuple[str, str]], code: str
) -> None:
    with pytest.raises(MigrationError) as info:
        load_migrations(source)
    assert info.value.code == code


def test_files_are_ordered_by_version_not_by_listing_order() -> None:
    migrations = load_migrations([("0010_late.sql", ""), ("0002_early.sql", "")])
    assert [(m.version, m.name) for m in migrations] == [(2, "0002_early.sql"), (10, "0010_late.sql")]
