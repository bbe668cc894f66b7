"""The HTTP error middleware answers every way asyncpg shows a database going away with 503 ``db_unreachable``
(``Retry-After``), never a 500: a real aiohttp server whose handlers raise what a dying connection raises."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hydrovisor.http.errors import error_middleware
from hydrovisor.http.keys import MAX_BODY_BYTES
from hydrovisor.store.errors import DatabaseUnavailable

RAISED = {
    "unavailable": DatabaseUnavailable("pool closed"),
    "connection": asyncpg.PostgresConnectionError("connection lost"),
    "interface": asyncpg.InterfaceError("connection was closed in the middle of operation"),
    "shutting_down": asyncpg.CannotConnectNowError("the database system is shutting down"),
    "state": asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    "socket_gone": FileNotFoundError(2, "No such file or directory"),
}


@pytest.mark.parametrize("kind", sorted(RAISED))
def test_a_database_going_away_is_503_with_retry_after(kind: str) -> None:
    async def fail(_: web.Request) -> web.Response:
        raise RAISED[kind]

    async def call() -> tuple[int, str | None, dict[str, str]]:
        app = web.Application(middlewares=[error_middleware])
        app[MAX_BODY_BYTES] = 1024
        app.router.add_get("/fail", fail)
        async with TestClient(TestServer(app)) as client:
            reply = await client.get("/fail")
            return reply.status, reply.headers.get("Retry-After"), await reply.json()

    status, retry_after, body = asyncio.run(call())
    assert (status, retry_after, body["code"]) == (503, "2", "db_unreachable"), body
