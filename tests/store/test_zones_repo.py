"""Zone settings versions, zone deletion, the timeline cursor, alert notifications and the safety
reset against a real PostgreSQL with the real migrations (issue 11)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from hydrovisor.store.migrations import apply_migrations, load_migrations
from hydrovisor.store.repos import events, fleet, nodes, zones
from hydrovisor.store.repos.nodes import ChannelRecord
from hydrovisor.store.repos.zones import Deleted

Body = Callable[[asyncpg.Pool], Awaitable[Any]]
LOCKS = ("biz_overcurrent", "biz_no_flow", "biz_dry_run", "biz_pump_stuck_on")


def run(dsn: str, body: Body) -> Any:
    async def main() -> Any:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=6)
        try:
            await apply_migrations(pool)
            await fleet.create_greenhouse(pool, "gh-1", "Main")
            await fleet.create_zone(pool, "zn-1", "gh-1", "Lettuce", {"topology": "two_tank"}, created_by="admin")
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


async def notes(pool: asyncpg.Pool, kind: str = "alert") -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT payload FROM notifications_pending WHERE kind = $1 ORDER BY id", kind)
    return [json.loads(r["payload"]) for r in rows]


def test_migration_makes_existing_zone_settings_version_1(pg_dsn: str) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
        try:
            before = [(m.name, m.sql) for m in load_migrations() if m.version < 5]
            await apply_migrations(pool, source=before)
            await pool.execute("INSERT INTO greenhouses (uid, name) VALUES ('gh-1', 'Main')")
            await pool.execute("INSERT INTO zones (uid, greenhouse_uid, name, settings) "
                               "VALUES ('zn-old', 'gh-1', 'Old', '{\"irrigation\": {\"enabled\": true}}')")
            assert (await apply_migrations(pool))[0] == "0005_zones.sql"
            stored = await zones.get_settings(pool, "zn-old")
            assert stored is not None
            assert (stored.version, stored.document, stored.created_by) == (
                1, {"irrigation": {"enabled": True}}, "migration")
            zone = await fleet.get_zone(pool, "zn-old")
            assert zone is not None
            assert zone.settings == {"irrigation": {"enabled": True}}
            assert not await pool.fetchval("SELECT EXISTS (SELECT 1 FROM information_schema.columns "
                                           "WHERE table_name = 'zones' AND column_name = 'settings')")
        finally:
            await pool.close()

    asyncio.run(main())


def test_settings_versions_are_optimistic_and_all_kept(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        first = await zones.get_settings(pool, "zn-1")
        assert first is not None
        assert (first.version, first.document, first.created_by) == (1, {"topology": "two_tank"}, "admin")
        # ten writers all editing version 1: exactly one stores version 2
        outcomes = await asyncio.gather(*(zones.put_settings(pool, "zn-1", 1, {"n": i}, f"w{i}") for i in range(10)))
        winners = [o for o in outcomes if o is not None]
        assert len(winners) == 1
        assert winners[0].version == 2
        assert await zones.put_settings(pool, "zn-1", 1, {"late": True}, "late") is None
        assert await zones.put_settings(pool, "zn-1", 5, {"ahead": True}, "x") is None
        third = await zones.put_settings(pool, "zn-1", 2, {"n": "third"}, "operator")
        assert third is not None
        assert third.version == 3
        current = await zones.get_settings(pool, "zn-1")
        assert current == third
        zone = await fleet.get_zone(pool, "zn-1")
        assert zone is not None
        assert zone.settings == {"n": "third"}
        history = await zones.settings_history(pool, "zn-1")
        assert [v.version for v in history] == [3, 2, 1]
        assert [v.version for v in await zones.settings_history(pool, "zn-1", before=3, limit=1)] == [2]
        assert await zones.get_settings(pool, "zn-404") is None
        assert await zones.put_settings(pool, "zn-404", 1, {}, "x") is None

    run(pg_dsn, body)


def test_delete_zone_refused_while_nodes_bound_or_pending_keeps_timeline_and_alerts(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await nodes.preregister(pool, uid="nd-1", hardware_id="hw-1", node_type="ph", zone_uid="zn-1",
                                channels=[], node_secret=None)
        await events.add_zone_event(pool, "zn-1", "nd-1", "NODE_BOUND", {})
        await events.raise_alert(pool, zone_uid="zn-1", node_uid=None, source="biz", code="biz_no_flow",
                                 alert_type="No flow", details={})
        assert await zones.delete_zone(pool, "zn-1") is Deleted.HAS_NODES
        await nodes.unbind(pool, "nd-1")
        await nodes.set_pending_bind(pool, "nd-1", "zn-1")
        assert await zones.delete_zone(pool, "zn-1") is Deleted.HAS_NODES
        await nodes.clear_pending_bind(pool, "nd-1")
        assert await zones.zone_channels(pool, "zn-1") == []
        assert await zones.delete_zone(pool, "zn-1") is Deleted.DELETED
        assert await zones.delete_zone(pool, "zn-1") is Deleted.NOT_FOUND
        assert await fleet.get_zone(pool, "zn-1") is None
        assert await zones.get_settings(pool, "zn-1") is None
        assert await pool.fetchval("SELECT count(*) FROM zone_settings_versions") == 0
        assert [e.type for e in await events.list_zone_events(pool, "zn-1")] == ["NODE_BOUND"]
        assert [a.code for a in await events.list_alerts(pool, zone_uid="zn-1")] == ["biz_no_flow"]
        # the uid is free again, and its settings start over at version 1
        assert await fleet.create_zone(pool, "zn-1", "gh-1", "Again", {}) is not None
        again = await zones.get_settings(pool, "zn-1")
        assert again is not None
        assert again.version == 1

    run(pg_dsn, body)


def test_zone_channels_are_those_of_bound_nodes(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        chans = [ChannelRecord("pump_main", "ACTUATOR"), ChannelRecord("flow", "SENSOR")]
        await nodes.preregister(pool, uid="nd-b", hardware_id="hw-b", node_type="irrig", zone_uid="zn-1",
                                channels=chans, node_secret=None)
        await nodes.preregister(pool, uid="nd-free", hardware_id="hw-f", node_type="irrig", zone_uid=None,
                                channels=chans, node_secret=None)
        assert await zones.zone_channels(pool, "zn-1") == [("nd-b", "flow"), ("nd-b", "pump_main")]

    run(pg_dsn, body)


def test_timeline_cursor_in_created_at_id_order(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        ids = [await events.add_zone_event(pool, "zn-1", None, f"E{i}", {"i": i}, cmd_id=f"c{i}",
                                           correlation_id="corr", decision="skip", reason_code="missing_flags")
               for i in range(5)]
        other = await events.add_zone_event(pool, "zn-2", None, "OTHER", {})
        # an event whose transaction started earlier sorts by its created_at, before a later id
        late = await pool.fetchval("INSERT INTO zone_events (zone_uid, type, created_at) "
                                   "VALUES ('zn-1', 'BACKDATED', now() - interval '1 hour') RETURNING id")
        everything = await events.zone_events_after(pool, "zn-1", 0, 100)
        assert everything is not None
        assert [e.type for e in everything] == ["BACKDATED", "E0", "E1", "E2", "E3", "E4"]
        first = everything[1]
        assert (first.cmd_id, first.correlation_id, first.decision, first.reason_code) == (
            "c0", "corr", "skip", "missing_flags")
        page = await events.zone_events_after(pool, "zn-1", ids[1], 2)
        assert page is not None
        assert [e.id for e in page] == ids[2:4]
        assert await events.zone_events_after(pool, "zn-1", ids[4], 10) == []
        after_late = await events.zone_events_after(pool, "zn-1", late, 1)
        assert after_late is not None
        assert [e.id for e in after_late] == [ids[0]]
        assert await events.zone_events_after(pool, "zn-1", other, 10) is None  # another zone's event
        assert await events.zone_events_after(pool, "zn-1", 10**12, 10) is None
        newest = await events.list_zone_events(pool, "zn-1", limit=2)
        assert [e.type for e in newest] == ["E3", "E4"]

    run(pg_dsn, body)


def test_alert_changes_are_announced_opened_and_resolved_not_repeats(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        kwargs: dict[str, Any] = {"zone_uid": "zn-1", "node_uid": "nd-1", "source": "biz",
                                  "code": "biz_pump_stuck_on", "alert_type": "Pump stuck on", "dedupe_key": "pump_main"}
        opened = await events.raise_alert(pool, **kwargs, details={"n": 1}, severity="critical")
        again = await events.raise_alert(pool, **kwargs, details={"n": 2}, severity="critical")
        assert (opened.opened, opened.count, again.opened, again.count, again.id) == (True, 1, False, 2, opened.id)
        alert = await events.get_alert(pool, opened.id)
        assert alert is not None
        assert (alert.severity, alert.count, alert.details, alert.status) == ("critical", 2, {"n": 2}, "ACTIVE")
        assert [(n["id"], n["status"], n["code"]) for n in await notes(pool)] == [
            (opened.id, "ACTIVE", "biz_pump_stuck_on")]
        resolved = await events.resolve_alert_by_id(pool, opened.id, by="operator", reason="pump replaced")
        assert resolved is not None
        assert (resolved.status, resolved.resolved_by, resolved.resolved_reason) == (
            "RESOLVED", "operator", "pump replaced")
        assert resolved.resolved_at is not None
        assert await events.resolve_alert_by_id(pool, opened.id, by="operator", reason="again") is None
        announced = await notes(pool)
        assert [(n["status"], n["resolved_by"]) for n in announced] == [("ACTIVE", None), ("RESOLVED", "operator")]
        timeline = await events.list_zone_events(pool, "zn-1")
        assert [(e.type, e.reason_code, e.details["by"]) for e in timeline] == [
            ("ALERT_RESOLVED", "biz_pump_stuck_on", "operator")]
        # raised again after the resolve: a new alert
        reopened = await events.raise_alert(pool, **kwargs, details={})
        assert reopened.opened
        assert reopened.id != opened.id
        # the key-based resolve (a condition that cleared) is announced too, by "system"
        assert await events.resolve_alert(pool, zone_uid="zn-1", code="biz_pump_stuck_on", dedupe_key="pump_main")
        assert (await notes(pool))[-1]["resolved_by"] == "system"
        assert [a.source for a in await events.list_alerts(pool, source="biz")] == ["biz", "biz"]
        assert await events.list_alerts(pool, source="infra") == []

    run(pg_dsn, body)


def test_safety_reset_resolves_the_zones_lock_alerts_only_and_is_audited(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await fleet.create_zone(pool, "zn-2", "gh-1", "Other", {})

        async def alert(zone: str, code: str, key: str = "") -> int:
            raised = await events.raise_alert(pool, zone_uid=zone, node_uid=None, source="biz", code=code,
                                              alert_type=code, details={}, dedupe_key=key)
            return raised.id

        dry = await alert("zn-1", "biz_dry_run")
        no_flow = await alert("zn-1", "biz_no_flow", "pump_main")
        stuck = await alert("zn-1", "biz_pump_stuck_on", "pump_main")
        high_ph = await alert("zn-1", "biz_high_ph")
        elsewhere = await alert("zn-2", "biz_dry_run")
        reset = await zones.reset_safety(pool, "zn-1", LOCKS, by="operator", reason="tank refilled")
        assert sorted(reset.alert_ids) == sorted([dry, no_flow, stuck])
        assert {a.code for a in reset.resolved} == {"biz_dry_run", "biz_no_flow", "biz_pump_stuck_on"}
        assert all((a.resolved_by, a.resolved_reason) == ("operator", "tank refilled") for a in reset.resolved)
        active = {a.id for a in await events.list_alerts(pool, "ACTIVE")}
        assert active == {high_ph, elsewhere}
        event = (await events.list_zone_events(pool, "zn-1"))[-1]
        assert (event.type, event.decision, event.reason_code) == ("SAFETY_RESET", "reset", "operator_safety_reset")
        assert event.details["reset_id"] == reset.id
        assert event.details["codes"] == ["biz_dry_run", "biz_no_flow", "biz_pump_stuck_on"]
        # nothing left to resolve: still recorded
        empty = await zones.reset_safety(pool, "zn-1", LOCKS, by="admin", reason="just in case")
        assert empty.alert_ids == []
        audit = await zones.list_safety_resets(pool, "zn-1")
        assert [(r.by, r.reason, sorted(r.alert_ids)) for r in audit] == [
            ("admin", "just in case", []), ("operator", "tank refilled", sorted([dry, no_flow, stuck]))]

    run(pg_dsn, body)
