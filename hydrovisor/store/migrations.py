"""Numbered SQL migrations (``migrations/NNNN_name.sql``) applied at start under an advisory lock.

Each file runs in its own transaction together with its ``schema_migrations`` row, so it must
not contain transaction control (nor statements that refuse to run in a transaction, such as
``CREATE INDEX CONCURRENTLY``). An applied file must never change: its checksum is verified on
every start.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from hydrovisor.store.errors import MigrationError

log = logging.getLogger(__name__)

# pg_advisory_lock key shared by every hydrovisor instance on one database: b"hydrovis" as int64.
MIGRATION_LOCK_KEY = 0x687964726F766973

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    int         PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``version`` comes from its ``NNNN_`` prefix."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text, recorded when applied and compared on every later start."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: Iterable[tuple[str, str]] | None = None) -> list[Migration]:
    """Parse ``(file name, sql)`` pairs (default: the packaged files) into migrations sorted by version."""
    pairs = _packaged() if source is None else source
    by_version: dict[int, Migration] = {}
    for name, sql in pairs:
        match = _NAME.match(name)
        if match is None:
            raise MigrationError(
                "migration_invalid_name", f"migration file {name} is not named NNNN_lowercase_name.sql",
                migration=name,
            )
        version = int(match.group(1))
        if version in by_version:
            raise MigrationError(
                "migration_duplicate_version",
                f"migrations {by_version[version].name} and {name} share version {version}",
                migration=name,
            )
        by_version[version] = Migration(version, name, sql)
    return [by_version[v] for v in sorted(by_version)]


async def apply_migrations(
    pool: asyncpg.Pool, *, source: Iterable[tuple[str, str]] | None = None
) -> list[str]:
    """Apply every migration not yet recorded in ``schema_migrations``; return their file names.

    Holds ``pg_advisory_lock(MIGRATION_LOCK_KEY)`` for the whole run, so concurrent callers
    (several instances starting at once) apply each file exactly once. Raises ``MigrationError``
    (``migration_checksum_mismatch``, ``migration_unknown_version``, ``migration_failed``, ...)
    naming the file; files applied before the failing one stay applied.
    """
    migrations = load_migrations(source)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            return await _apply_locked(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _apply_locked(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute(_CREATE_LEDGER)
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    recorded = {row["version"]: (row["name"], row["checksum"]) for row in rows}
    _verify(recorded, migrations)
    applied: list[str] = []
    for migration in migrations:
        if migration.version not in recorded:
            await _apply_one(conn, migration)
            applied.append(migration.name)
    log.info("schema up to date", extra={"event": "migrations_done", "applied": applied,
                                         "already_applied": len(recorded)})
    return applied


def _verify(recorded: dict[int, tuple[str, str]], migrations: list[Migration]) -> None:
    known = {m.version: m for m in migrations}
    for version, (name, checksum) in sorted(recorded.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                "migration_unknown_version",
                f"the database has migration {name} applied, which this hydrovisor does not know "
                "(is the database from a newer release?)",
                migration=name,
            )
        if migration.checksum != checksum:
            raise MigrationError(
                "migration_checksum_mismatch",
                f"migration {migration.name} changed after it was applied (checksum differs)",
                migration=migration.name,
            )


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    began = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationError(
            "migration_failed", f"migration {migration.name} failed: {exc}", migration=migration.name
        ) from exc
    log.info("migration applied", extra={
        "event": "migration_applied", "migration": migration.name,
        "duration_ms": round((time.monotonic() - began) * 1000),
    })


def _packaged() -> list[tuple[str, str]]:
    folder = importlib.resources.files("hydrovisor.store").joinpath("migrations")
    return [
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
