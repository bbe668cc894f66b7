"""Errors raised by the store; each carries a machine ``code``, ``str(exc)`` is the human message."""

from __future__ import annotations

import asyncpg


class StoreError(Exception):
    """Base class of every store error."""

    code = "store_error"


class DatabaseUnavailable(StoreError):
    """The database cannot be reached (not connected, refused, timed out, connection lost)."""

    code = "db_unreachable"

    def __init__(self, reason: str) -> None:
        super().__init__(f"database unreachable: {reason}")
        self.reason = reason


class EmbeddedPostgresError(StoreError):
    """The embedded PostgreSQL server could not be started, or is not running."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class MigrationError(StoreError):
    """The schema could not be brought up to date; ``migration`` names the offending file."""

    def __init__(self, code: str, message: str, *, migration: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.migration = migration


DB_DOWN: tuple[type[BaseException], ...] = (
    DatabaseUnavailable, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
    asyncpg.InternalClientError, OSError)
"""What a stopped, restarting or unreachable PostgreSQL looks like through asyncpg (a refused TCP connection is
a ``ConnectionError``, a vanished unix socket a ``FileNotFoundError``: both ``OSError``; a connection torn down in
the middle of a statement can leave asyncpg's protocol saying "cannot switch to state ..., another operation is in
progress", an ``InternalClientError``: seen as a 500 during the fault campaign's database outages)."""
