"""The notification queue and DLQ against real PostgreSQL: one place per record, leases, atomic moves."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import CommandStatus
from hydrovisor.store.migrations import apply_migrations
from hydrovisor.store.repos import commands
from hydrovisor.store.repos import notifications as repo
from hydrovisor.store.repos.commands import NewCommand

LEASE = 60.0


def run(dsn: str, body: Any, *, max_size: int = 4) -> Any:
    async def main() -> Any:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
        try:
            await apply_migrations(pool)
            return await body(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


async def places(pool: asyncpg.Pool, notification_id: int) -> list[str]:
    """Where a record is: 'pending', 'dlq' (possibly both, which must never happen) or nowhere (delivered)."""
    found = []
    if await pool.fetchval("SELECT count(*) FROM notifications_pending WHERE id = $1", notification_id):
        found.append("pending")
    found.extend(["dlq"] * await pool.fetchval("SELECT count(*) FROM notifications_dlq WHERE pending_id = $1",
                                               notification_id))
    return found


async def dlq_id_of(pool: asyncpg.Pool, notification_id: int) -> int | None:
    value: int | None = await pool.fetchval("SELECT id FROM notifications_dlq WHERE pending_id = $1", notification_id)
    return value


async def make_due(pool: asyncpg.Pool) -> None:
    """Every lease and backoff ends now (what time does, without waiting)."""
    await pool.execute("UPDATE notifications_pending SET next_attempt_at = now() - interval '1 second'")


def test_status_change_queues_a_notification_in_its_transaction(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await commands.insert_queued(pool, NewCommand(
            cmd_id="cmd-1", zone_uid="zn-1", node_uid="nd-1", channel="pump_main", cmd="run_pump", params={},
            source="api", trace_id=None, timeout_s=30))
        await commands.transition(pool, "cmd-1", CommandStatus.SENT, source="server")
        assert await commands.transition(pool, "cmd-1", CommandStatus.QUEUED, source="late") is None  # not applied
        claimed = await repo.claim_due(pool, 10, LEASE)
        assert [(n.kind, n.payload["cmd_id"], n.payload["status"], n.attempts) for n in claimed] == [
            ("command_status", "cmd-1", "SENT", 0)]

    run(pg_dsn, body)


def test_claim_leases_rows_and_delivered_deletes_them(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        ids = [await repo.enqueue(pool, "test", {"n": n}) for n in range(5)]
        first = await repo.claim_due(pool, 3, LEASE)
        assert [n.id for n in first] == ids[:3]
        assert [n.payload for n in first] == [{"n": 0}, {"n": 1}, {"n": 2}]
        # leased: invisible to the next claim until the lease ends
        second = await repo.claim_due(pool, 10, LEASE)
        assert [n.id for n in second] == ids[3:]
        assert await repo.claim_due(pool, 10, LEASE) == []
        assert await repo.counts(pool) == repo.QueueCounts(pending=5, dlq=0)
        for note in first:
            assert await repo.delivered(pool, note.id)
            assert await places(pool, note.id) == []
        assert not await repo.delivered(pool, first[0].id)  # already gone
        assert await repo.counts(pool) == repo.QueueCounts(pending=2, dlq=0)

    run(pg_dsn, body)


def test_discard_due_deletes_due_rows_in_one_go_and_skips_leased_ones(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        ids = [await repo.enqueue(pool, "test", {"n": n}) for n in range(6)]
        leased = await repo.claim_due(pool, 2, LEASE)  # another claimer's: not due for anyone else
        assert await repo.discard_due(pool, 3) == 3
        assert await repo.discard_due(pool, 3) == 1
        assert await repo.discard_due(pool, 3) == 0
        assert [n["id"] for n in await repo.pending(pool)] == [n.id for n in leased] == ids[:2]

    run(pg_dsn, body)


def test_failed_attempt_backs_off_and_is_fenced_by_the_lease(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        nid = await repo.enqueue(pool, "test", {})
        [note] = await repo.claim_due(pool, 10, LEASE)
        assert await repo.failed(pool, nid, note.lease_until, "HTTP 500", retry_in=3600)
        rows = await repo.pending(pool)
        assert (rows[0]["attempts"], rows[0]["last_error"]) == (1, "HTTP 500")
        assert rows[0]["next_attempt_at"] > dt.datetime.now(dt.UTC).timestamp() + 3000
        assert await repo.claim_due(pool, 10, LEASE) == []  # backing off
        # the same (now stale) lease cannot record another outcome
        assert not await repo.failed(pool, nid, note.lease_until, "again", retry_in=0)
        assert await repo.move_to_dlq(pool, nid, "again", note.lease_until) is None
        # the lease expired and someone else claimed it: the first claimer's outcome is refused
        await make_due(pool)
        [stale] = await repo.claim_due(pool, 10, LEASE)
        await make_due(pool)
        [fresh] = await repo.claim_due(pool, 10, LEASE)
        assert fresh.lease_until != stale.lease_until
        assert not await repo.failed(pool, nid, stale.lease_until, "late", retry_in=0)
        assert await repo.move_to_dlq(pool, nid, "late", stale.lease_until) is None
        assert await places(pool, nid) == ["pending"]
        assert await repo.failed(pool, nid, fresh.lease_until, "HTTP 503", retry_in=0)
        assert (await repo.pending(pool))[0]["attempts"] == 2

    run(pg_dsn, body)


def test_dead_letter_replay_purge_keep_exactly_one_place(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        nid = await repo.enqueue(pool, "command_status", {"cmd_id": "c-1", "status": "DONE"})
        [note] = await repo.claim_due(pool, 10, LEASE)
        assert await repo.failed(pool, nid, note.lease_until, "HTTP 500", retry_in=0)
        [note] = await repo.claim_due(pool, 10, LEASE)
        dlq_id = await repo.move_to_dlq(pool, nid, "HTTP 502", note.lease_until)
        assert dlq_id is not None
        assert await places(pool, nid) == ["dlq"]
        [letter] = await repo.list_dlq(pool)
        assert (letter.id, letter.pending_id, letter.kind, letter.attempts, letter.last_error) == (
            dlq_id, nid, "command_status", 2, "HTTP 502")
        assert letter.payload == {"cmd_id": "c-1", "status": "DONE"}
        assert await repo.counts(pool) == repo.QueueCounts(pending=0, dlq=1)

        assert await repo.replay(pool, dlq_id) == nid  # same id: consumers dedupe by it
        assert await repo.replay(pool, dlq_id) is None
        assert await places(pool, nid) == ["pending"]
        [again] = await repo.claim_due(pool, 10, LEASE)  # due at once, attempts reset, history kept
        assert (again.id, again.attempts, again.last_error, again.created_at) == (nid, 0, "HTTP 502",
                                                                                  letter.created_at)
        second_dlq = await repo.move_to_dlq(pool, nid, "HTTP 500", again.lease_until)
        assert second_dlq is not None and second_dlq != dlq_id  # a replayed record can be dead-lettered again
        assert await places(pool, nid) == ["dlq"]
        assert await repo.purge(pool, second_dlq)
        assert not await repo.purge(pool, second_dlq)
        assert await places(pool, nid) == []
        assert await repo.counts(pool) == repo.QueueCounts(pending=0, dlq=0)

    run(pg_dsn, body)


def test_dlq_listing_is_keyset_paged_newest_first(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        for n in range(5):
            nid = await repo.enqueue(pool, "test", {"n": n})
            assert await repo.move_to_dlq(pool, nid, f"e{n}") is not None
        page = await repo.list_dlq(pool, limit=2)
        assert [d.payload["n"] for d in page] == [4, 3]
        page = await repo.list_dlq(pool, before_id=page[-1].id, limit=2)
        assert [d.payload["n"] for d in page] == [2, 1]
        page = await repo.list_dlq(pool, before_id=page[-1].id, limit=2)
        assert [d.payload["n"] for d in page] == [0]

    run(pg_dsn, body)


def test_concurrent_claimers_never_get_the_same_row(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await pool.execute("INSERT INTO notifications_pending (kind, payload) "
                           "SELECT 'test', jsonb_build_object('n', n) FROM generate_series(1, 400) AS n")
        claimed: list[int] = []

        async def claimer() -> None:
            while batch := await repo.claim_due(pool, 7, LEASE):
                claimed.extend(n.id for n in batch)
                await asyncio.sleep(0)

        await asyncio.gather(*(claimer() for _ in range(8)))
        assert len(claimed) == 400
        assert len(set(claimed)) == 400

    run(pg_dsn, body, max_size=8)


def test_claim_skips_rows_locked_elsewhere_without_waiting(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        ids = [await repo.enqueue(pool, "test", {"n": n}) for n in range(3)]
        async with pool.acquire() as other, other.transaction():
            # another instance is in the middle of claiming ids[0]
            await other.execute("SELECT id FROM notifications_pending WHERE id = $1 FOR UPDATE", ids[0])
            claimed = await asyncio.wait_for(repo.claim_due(pool, 10, LEASE), 5)
            assert [n.id for n in claimed] == ids[1:]
        [late] = await repo.claim_due(pool, 10, LEASE)  # the lock ended without a lease: still due
        assert late.id == ids[0]

    run(pg_dsn, body)


def test_dlq_move_is_atomic_when_the_insert_fails(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        nid = await repo.enqueue(pool, "test", {"x": 1})
        # a stray DLQ row already holds this pending_id: the insert violates the unique constraint
        await pool.execute("INSERT INTO notifications_dlq (pending_id, kind, payload, attempts, created_at) "
                           "VALUES ($1, 'stray', '{}', 0, now())", nid)
        with pytest.raises(asyncpg.UniqueViolationError):
            await repo.move_to_dlq(pool, nid, "HTTP 500")
        rows = await repo.pending(pool)
        assert [(r["id"], r["payload"], r["attempts"]) for r in rows] == [(nid, {"x": 1}, 0)]
        assert await pool.fetchval("SELECT count(*) FROM notifications_dlq") == 1

    run(pg_dsn, body)


def test_dlq_move_is_atomic_when_the_delete_fails_after_the_insert(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        nid = await repo.enqueue(pool, "test", {"x": 1})
        await pool.execute("""
            CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'injected failure after the DLQ insert'; END $$;
            CREATE TRIGGER refuse_delete BEFORE DELETE ON notifications_pending
            FOR EACH ROW EXECUTE FUNCTION refuse_delete();""")
        with pytest.raises(asyncpg.RaiseError, match="injected failure"):
            await repo.move_to_dlq(pool, nid, "HTTP 500")
        assert await places(pool, nid) == ["pending"]  # the DLQ insert was rolled back with it
        assert await pool.fetchval("SELECT count(*) FROM notifications_dlq") == 0
        await pool.execute("DROP TRIGGER refuse_delete ON notifications_pending")
        assert await repo.move_to_dlq(pool, nid, "HTTP 500") is not None
        assert await places(pool, nid) == ["dlq"]

    run(pg_dsn, body)


def test_replay_is_atomic_and_a_record_is_never_in_two_places(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        nid = await repo.enqueue(pool, "test", {})
        dlq_id = await repo.move_to_dlq(pool, nid, "HTTP 500")
        assert dlq_id is not None
        await pool.execute("""
            CREATE FUNCTION refuse_insert() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'injected failure on the pending insert'; END $$;
            CREATE TRIGGER refuse_insert BEFORE INSERT ON notifications_pending
            FOR EACH ROW EXECUTE FUNCTION refuse_insert();""")
        with pytest.raises(asyncpg.RaiseError):
            await repo.replay(pool, dlq_id)
        assert await places(pool, nid) == ["dlq"]  # the DLQ delete was rolled back
        await pool.execute("DROP TRIGGER refuse_insert ON notifications_pending")
        results = await asyncio.gather(repo.replay(pool, dlq_id), repo.replay(pool, dlq_id), repo.purge(pool, dlq_id))
        assert sum(1 for r in results if r) == 1  # exactly one of them found the entry
        assert await places(pool, nid) in ([], ["pending"])

    run(pg_dsn, body)


def test_concurrent_delivery_and_dead_lettering_leave_one_place(pg_dsn: str) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        ids = [await repo.enqueue(pool, "test", {"n": n}) for n in range(40)]
        for nid in ids:
            moved, deleted = await asyncio.gather(repo.move_to_dlq(pool, nid, "x"), repo.delivered(pool, nid))
            assert (moved is not None) != deleted  # exactly one of them took the row
            assert await places(pool, nid) == (["dlq"] if moved is not None else [])

    run(pg_dsn, body, max_size=4)


OPS = st.lists(st.tuples(st.sampled_from(["claim", "deliver", "fail", "dlq", "replay", "purge", "expire"]),
                         st.integers(0, 2)), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_random_operations_keep_every_record_in_exactly_one_place(pg_dsn: str, ops: list[tuple[str, int]]) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        await pool.execute("DELETE FROM notifications_pending; DELETE FROM notifications_dlq")
        ids = [await repo.enqueue(pool, "test", {"n": n}) for n in range(3)]
        model = dict.fromkeys(ids, "pending")  # pending | dlq | delivered | purged
        attempts = dict.fromkeys(ids, 0)
        leases: dict[int, dt.datetime] = {}
        for op, index in ops:
            nid = ids[index]
            if op == "claim":
                for note in await repo.claim_due(pool, 2, LEASE):
                    assert model[note.id] == "pending" and note.attempts == attempts[note.id]
                    leases[note.id] = note.lease_until
            elif op == "expire":
                await make_due(pool)
                leases.clear()
            elif op == "deliver":
                assert await repo.delivered(pool, nid) == (model[nid] == "pending")
                if model[nid] == "pending":
                    model[nid] = "delivered"
            elif op == "fail":
                held = nid in leases and model[nid] == "pending"
                assert await repo.failed(pool, nid, leases.get(nid, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
                                         "e", retry_in=0) == held
                if held:
                    attempts[nid] += 1
                    leases.pop(nid)
            elif op == "dlq":
                moved = await repo.move_to_dlq(pool, nid, "e")
                assert (moved is not None) == (model[nid] == "pending")
                if moved is not None:
                    model[nid] = "dlq"
                    leases.pop(nid, None)
            elif op in ("replay", "purge"):
                dlq_id = await dlq_id_of(pool, nid)
                assert (dlq_id is not None) == (model[nid] == "dlq")
                if dlq_id is not None:
                    if op == "replay":
                        assert await repo.replay(pool, dlq_id) == nid
                        model[nid], attempts[nid] = "pending", 0
                    else:
                        assert await repo.purge(pool, dlq_id)
                        model[nid] = "purged"
            for each in ids:
                expected = {"pending": ["pending"], "dlq": ["dlq"]}.get(model[each], [])
                assert await places(pool, each) == expected, (op, each, model)
        counts = await repo.counts(pool)
        assert counts.pending == sum(1 for p in model.values() if p == "pending")
        assert counts.dlq == sum(1 for p in model.values() if p == "dlq")

    run(pg_dsn, body)
