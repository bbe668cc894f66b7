"""A saturated work pool is not a database outage: the db probe keeps passing while every pool connection
is busy, so load alone never takes the system to DEGRADED / SAFE_MODE."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from hydrovisor.config.settings import DatabaseSettings
from tests.app.conftest import Running
from tests.helpers import wait_until

POOL_MAX = 2
HOLD_S = 3.5  # longer than the ping's 2 s budget and the readiness age (3 * 0.3 + 2 s)


def test_the_db_probe_stays_up_while_the_pool_is_exhausted(start_app: Callable[..., Running], pg_dsn: str) -> None:
    instance = start_app(database=DatabaseSettings(url=pg_dsn, pool_min=1, pool_max=POOL_MAX, health_interval=0.3))
    services = instance.app.services
    assert services is not None
    state_before = services.control.state
    holding = threading.Event()

    async def hold() -> None:
        pool = services.db.pool
        held = [await pool.acquire(timeout=5) for _ in range(POOL_MAX)]
        try:
            busy = [asyncio.ensure_future(conn.execute(f"SELECT pg_sleep({HOLD_S})")) for conn in held]
            holding.set()
            await asyncio.gather(*busy, return_exceptions=True)
        finally:
            for conn in held:
                await pool.release(conn)

    holder = threading.Thread(target=lambda: instance.loop.run(hold(), timeout=HOLD_S + 10))
    holder.start()
    try:
        assert holding.wait(10)
        began = time.monotonic()
        samples = 0
        while time.monotonic() - began < HOLD_S - 0.3:
            health = services.health.get("db")
            assert health is not None and health.ok, health
            readiness = services.control.readiness()["db"]
            assert readiness.ok, readiness
            samples += 1
            time.sleep(0.1)
        assert samples > 10
        latest = services.health.get("db")
        assert latest is not None and latest.ok and time.monotonic() - latest.checked_at < 1.0  # fresh, not stale
        assert services.control.state == state_before, services.control.state
    finally:
        holder.join(HOLD_S + 15)
    wait_until(lambda: services.health.get("db") is not None and services.health.get("db").ok, timeout=5)  # type: ignore[union-attr]
