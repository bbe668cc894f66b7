"""Fixtures of the task tests: one running instance per module (real PostgreSQL, real HTTP) with zones
``zn-1`` and ``zn-2``, and a migrated database of its own per test for the repository tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from hydrovisor.app import Hydrovisor
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.store.embedded_pg import EmbeddedPostgres
from hydrovisor.store.migrations import apply_migrations
from tests.app.conftest import Running, settings_for
from tests.conftest import _admin, _with_database
from tests.helpers import Reply, http

ZONES = ("zn-1", "zn-2")


@pytest.fixture(scope="module")
def running(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One instance for a whole module (starting one per test would dominate the run time); tests keep
    apart by their own correlation ids."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server.dsn, f'CREATE DATABASE "{name}"'))
    app = Hydrovisor(settings_for(_with_database(pg_server.dsn, name), tmp_path_factory.mktemp("tasks") / "data"))
    with LoopThread() as loop:
        loop.run(app.start())
        instance = Running(app, loop, f"http://127.0.0.1:{app.http_port}")
        try:
            instance.wait_ready()
            assert call(instance, "POST", "/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}).status == 201
            for zone in ZONES:
                reply = call(instance, "POST", "/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": zone, "name": zone})
                assert reply.status == 201, reply.raw
            yield instance
        finally:
            loop.run(app.stop())
    asyncio.run(_admin(pg_server.dsn, f'DROP DATABASE "{name}" WITH (FORCE)'))


def call(instance: Running, method: str, path: str, body: dict[str, Any] | bytes | None = None) -> Reply:
    """One real HTTP request to ``instance``."""
    return http(method, instance.base_url + path, body=body)


def in_db(instance: Running, work: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    """Run ``work(pool)`` on the instance's loop with its pool."""
    services = instance.app.services
    assert services is not None

    async def go() -> Any:
        return await work(services.db.pool)

    return instance.loop.run(go())


def iso(value: dt.datetime) -> str:
    """RFC 3339 with an offset."""
    return value.isoformat()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_cid(prefix: str = "cid") -> str:
    """A fresh correlation id."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def task_body(**overrides: Any) -> dict[str, Any]:
    """A valid request: irrigation of zn-1, due in an hour, expiring an hour later."""
    now = utcnow()
    body: dict[str, Any] = {
        "zone_uid": "zn-1", "task_type": "irrigation", "payload": {"duration_s": 60},
        "due_at": iso(now + dt.timedelta(hours=1)), "expires_at": iso(now + dt.timedelta(hours=2)),
        "correlation_id": new_cid(),
    }
    body.update(overrides)
    return body


@pytest.fixture
def repo_pool_run(pg_dsn: str) -> Callable[[Callable[[asyncpg.Pool], Awaitable[Any]]], Any]:
    """``run(body)``: ``body(pool)`` against a fresh migrated database of this test (no instance: nothing
    else dispatches its tasks)."""

    def run(body: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=8)
            try:
                await apply_migrations(pool)
                return await body(pool)
            finally:
                await pool.close()

        return asyncio.run(main())

    return run
