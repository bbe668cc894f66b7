"""Guarded command status updates against real PostgreSQL, including a hypothesis state machine."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import TERMINAL, CommandStatus, can_transition, rank
from hydrovisor.store.migrations import apply_migrations
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import NewCommand, Report

S = CommandStatus


def new(cmd_id: str = "cmd-1") -> NewCommand:
    return NewCommand(cmd_id=cmd_id, zone_uid="zn-1", node_uid="nd-1", channel="pump_main", cmd="run_pump",
                      params={"duration_ms": 2500}, source="api", trace_id=None, timeout_s=32.5)


def run(dsn: str, body: Any) -> Any:
    async def main() -> Any:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            await apply_migrations(pool)
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def test_lifecycle_and_terminal_guard(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        row, created = await commands.insert_queued(pool, new())
        assert created
        assert (row.status, row.timeout_s) == ("QUEUED", 32.5)
        assert row.deadline_at - row.created_at == 32.5
        again, created = await commands.insert_queued(pool, new())
        assert not created
        assert again.cmd_id == row.cmd_id
        sent = await commands.transition(pool, "cmd-1", S.SENT, source="server")
        assert sent is not None and sent.sent_at is not None and sent.publish_attempts == 1
        assert await commands.transition(pool, "cmd-1", S.ACK, source="device") is not None
        done = await commands.transition(pool, "cmd-1", S.DONE, source="device", details={"ok": 1})
        assert done is not None and done.terminal_at is not None and done.failed_at is None
        assert await commands.transition(pool, "cmd-1", S.BUSY, source="device") is None  # contradicting late
        assert await commands.transition(pool, "cmd-1", S.ACK, source="device") is None
        final = await commands.get(pool, "cmd-1")
        assert final is not None and final.status == "DONE"
        timeline = [(e.status, e.applied) for e in await commands.events(pool, "cmd-1")]
        assert timeline == [("QUEUED", True), ("SENT", True), ("ACK", True), ("DONE", True), ("BUSY", False),
                            ("ACK", False)]

    run(pg_dsn, body)


def test_timeout_is_persisted_with_failed_at_and_code(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await commands.insert_queued(pool, new())
        await commands.transition(pool, "cmd-1", S.SENT, source="server")
        row = await commands.transition(pool, "cmd-1", S.TIMEOUT, source="server", error_code="command_timeout")
        assert row is not None and row.failed_at is not None and row.error_code == "command_timeout"
        assert await commands.transition(pool, "cmd-1", S.DONE, source="device") is None
        assert [c.cmd_id for c in await commands.open_commands(pool)] == []

    run(pg_dsn, body)


def test_unknown_cmd_id_stub_then_terminal(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        where = {"node_uid": "nd-1", "zone_uid": "zn-1", "channel": "pump_main"}
        assert await commands.apply_orphan_reply(pool, "dev-8", Report(S.ACK, "device"), **where) == (True, None)
        created, row = await commands.apply_orphan_reply(pool, "dev-9", Report(S.SEND_FAILED, "device"), **where)
        assert created
        assert row is not None and (row.cmd, row.source, row.status) == ("unknown", "device", "SEND_FAILED")
        assert await commands.apply_orphan_reply(pool, "dev-9", Report(S.DONE, "device"), **where) == (False, None)
        assert [(e.status, e.applied) for e in await commands.events(pool, "dev-9")] == [
            ("ACK", True), ("SEND_FAILED", True), ("DONE", False)]

    run(pg_dsn, body)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(list(S)), min_size=1, max_size=12))
def test_random_reports_never_break_rank_or_terminal_invariants(pg_dsn: str, reports: list[CommandStatus]) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await pool.execute("DELETE FROM commands; DELETE FROM command_events")
        await commands.insert_queued(pool, new())
        model = S.QUEUED
        for target in reports:
            applied = await commands.transition(pool, "cmd-1", target, source="test") is not None
            assert applied == can_transition(model, target)
            if applied:
                resend = model is S.SEND_FAILED and target is S.SENT  # the one way out of a terminal
                assert rank(target) > rank(model) or resend
                assert model not in TERMINAL or resend
                model = target
            stored = await commands.get(pool, "cmd-1")
            assert stored is not None and stored.status == model.value

    run(pg_dsn, body)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(list(S)), min_size=1, max_size=6), min_size=2, max_size=4))
def test_concurrent_writers_never_break_the_applied_history(pg_dsn: str, writers: list[list[CommandStatus]]) -> None:
    """Several incarnations / reply paths writing at once: the applied history stays a valid walk."""

    async def body(pool: asyncpg.Pool) -> None:
        await pool.execute("DELETE FROM commands; DELETE FROM command_events")
        await commands.insert_queued(pool, new())

        async def writer(reports: list[CommandStatus]) -> None:
            for target in reports:
                await commands.transition(pool, "cmd-1", target, source="test")

        await asyncio.gather(*(writer(w) for w in writers))
        applied = [S(e.status) for e in await commands.events(pool, "cmd-1") if e.applied]
        assert applied[0] is S.QUEUED
        for before, after in itertools.pairwise(applied):
            assert can_transition(before, after), (before, after, applied)
        stored = await commands.get(pool, "cmd-1")
        assert stored is not None
        assert stored.status == applied[-1].value

    run(pg_dsn, body)
