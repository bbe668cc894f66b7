"""Repositories against a real PostgreSQL with the real migrations."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from hydrovisor.store.migrations import apply_migrations
from hydrovisor.store.repos import events, fleet, nodes, telemetry
from hydrovisor.store.repos.nodes import ChannelRecord
from hydrovisor.store.repos.telemetry import Sample

Body = Callable[[asyncpg.Pool], Awaitable[Any]]


def run(dsn: str, body: Body) -> Any:
    async def main() -> Any:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            await apply_migrations(pool)
            await fleet.create_greenhouse(pool, "gh-1", "Main")
            await fleet.create_zone(pool, "zn-1", "gh-1", "Lettuce", {"water_cycle": {"mode": "recirc"}})
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def test_fleet_create_is_idempotent_and_lists(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        assert await fleet.create_greenhouse(pool, "gh-1", "again") is None
        assert [g.uid for g in await fleet.list_greenhouses(pool)] == ["gh-1"]
        zone = await fleet.get_zone(pool, "zn-1")
        assert zone is not None
        assert zone.settings == {"water_cycle": {"mode": "recirc"}}
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await fleet.create_zone(pool, "zn-2", "gh-404", "x", {})
        with pytest.raises(asyncpg.CheckViolationError):
            await fleet.create_greenhouse(pool, "Bad UID", "x")

    run(pg_dsn, body)


def test_node_lifecycle_register_bind_unbind(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        node, created = await nodes.register_from_hello(
            pool, uid="nd-ph-a1b2c3d4e5f6", hardware_id="esp32-a1b2c3d4e5f6", node_type="ph",
            fw_version="1.2", hardware_revision=None)
        assert created
        assert node.state == "REGISTERED"
        assert not node.validated
        assert len(node.node_secret) == 48
        again, created = await nodes.register_from_hello(
            pool, uid="nd-ph-a1b2c3d4e5f6", hardware_id="esp32-a1b2c3d4e5f6", node_type="ph",
            fw_version="1.3", hardware_revision="B")
        assert not created
        assert again.fw_version == "1.3"
        assert again.node_secret == node.node_secret
        await nodes.set_pending_bind(pool, node.uid, "zn-1")
        pending = await nodes.get_node(pool, node.uid)
        assert pending is not None
        assert pending.state == "ASSIGNED"
        assert pending.pending_zone_uid == "zn-1"
        await nodes.complete_bind(pool, node.uid, "zn-1")
        bound = await nodes.get_node(pool, node.uid)
        assert bound is not None
        assert bound.zone_uid == "zn-1"
        assert bound.validated
        assert bound.state == "ACTIVE"
        channels = [ChannelRecord("ph_sensor", "SENSOR", metric="PH", unit="pH"),
                    ChannelRecord("pump_acid", "ACTUATOR", actuator_type="PERISTALTIC_PUMP", relay_type="NO",
                                  safe_limits={"max_duration_ms": 5000}, ml_per_second=1.5)]
        await nodes.store_config_report(pool, node.uid, {"version": 3}, channels, "1.4")
        assert await nodes.list_channels(pool, node.uid) == sorted(channels, key=lambda c: c.name)
        await nodes.unbind(pool, node.uid)
        unbound = await nodes.get_node(pool, node.uid)
        assert unbound is not None
        assert unbound.zone_uid is None
        assert not unbound.validated

    run(pg_dsn, body)


def test_preregister_bound_node_and_conflicts(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        node = await nodes.preregister(pool, uid="nd-ec-1", hardware_id="esp32-000000000001", node_type="ec",
                                       zone_uid="zn-1", channels=[], node_secret="s" * 32)
        assert node is not None
        assert node.validated
        assert node.zone_uid == "zn-1"
        assert node.state == "ACTIVE"
        assert await nodes.preregister(pool, uid="nd-ec-1", hardware_id="esp32-000000000002", node_type="ec",
                                       zone_uid=None, channels=[], node_secret=None) is None

    run(pg_dsn, body)


def test_telemetry_batch_last_value_newest_wins_and_queries(pg_dsn: str) -> None:
    now = time.time()

    async def body(pool: asyncpg.Pool) -> None:
        def s(value: float, ts: float, metric: str = "PH") -> Sample:
            return Sample("zn-1", "nd-1", "ph_sensor", metric, value, ts, "mqtt", flags={"stable": True})

        await telemetry.write_batch(pool, [s(6.0, now - 60), s(6.2, now - 1), s(5.9, now - 30)])
        await telemetry.write_batch(pool, [s(7.0, now - 120)])  # older than what is stored: last keeps 6.2
        last = await telemetry.last_values(pool, "zn-1")
        assert [(v.metric, v.value) for v in last] == [("PH", 6.2)]
        assert last[0].flags == {"stable": True}
        assert await telemetry.count_samples(pool, "zn-1") == 4
        raw = await telemetry.query(pool, zone_uid="zn-1", node_uid=None, metric="PH", start=now - 3600,
                                    end=now + 1, bucket=None, limit=100)
        assert [p.value for p in raw] == [7.0, 6.0, 5.9, 6.2]
        hourly = await telemetry.query(pool, zone_uid="zn-1", node_uid="nd-1", metric=None, start=now - 7200,
                                       end=now + 1, bucket="1h", limit=100)
        assert sum(p.count for p in hourly) == 4
        assert min(p.min for p in hourly) == 5.9
        folded = await telemetry.advance_rollups(pool, "1m", grace_s=0)
        assert folded == 4
        assert await telemetry.advance_rollups(pool, "1m", grace_s=0) == 0
        await telemetry.write_batch(pool, [s(6.4, now)])
        assert await telemetry.advance_rollups(pool, "1m", grace_s=0) == 1
        rolled = await telemetry.rollups(pool, bucket="1m", zone_uid="zn-1")
        assert sum(r["count"] for r in rolled) == 5

    run(pg_dsn, body)


def test_alerts_deduplicate_and_resolve(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        for _ in range(3):
            await events.raise_alert(pool, zone_uid="zn-1", node_uid="nd-1", source="infra",
                                     code="infra_node_offline", alert_type="Node offline",
                                     details={"node_uid": "nd-1"}, dedupe_key="nd-1")
        active = await events.list_alerts(pool, "ACTIVE")
        assert [(a.code, a.count) for a in active] == [("infra_node_offline", 3)]
        key = {"zone_uid": "zn-1", "code": "infra_node_offline", "dedupe_key": "nd-1"}
        assert await events.resolve_alert(pool, **key)
        assert not await events.resolve_alert(pool, **key)
        await events.add_zone_event(pool, "zn-1", "nd-1", "NODE_OFFLINE", {"reason": "silence"})
        await events.add_zone_event(pool, "zn-1", "nd-1", "NODE_ONLINE", {})
        timeline = await events.list_zone_events(pool, "zn-1")
        assert [e.type for e in timeline] == ["NODE_OFFLINE", "NODE_ONLINE"]

    run(pg_dsn, body)
