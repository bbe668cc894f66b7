"""PostgreSQL access: the embedded server, the connection pool and the schema migrations."""

from hydrovisor.store.database import Database
from hydrovisor.store.embedded_pg import EmbeddedPostgres
from hydrovisor.store.errors import DatabaseUnavailable, EmbeddedPostgresError, MigrationError, StoreError
from hydrovisor.store.migrations import MIGRATION_LOCK_KEY, Migration, apply_migrations, load_migrations

__all__ = [
    "MIGRATION_LOCK_KEY",
    "Database",
    "DatabaseUnavailable",
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "Migration",
    "MigrationError",
    "StoreError",
    "apply_migrations",
    "load_migrations",
]
