"""The task store against real PostgreSQL: dispatch order and claim atomicity, the terminal guard, expiry,
restart recovery, retries, the idempotency window, timelines and schedule cursors. Each test has a database
of its own and an explicit clock (``T0``)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from hydrovisor.store.repos import tasks
from hydrovisor.store.repos.tasks import IdempotencyMismatch, Outcome
from hydrovisor.tasks.contract import ContractError, Decision, TaskRequest, TaskStatus, TaskType

T0 = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)
Run = Callable[[Callable[[asyncpg.Pool], Awaitable[Any]]], Any]


def s(seconds: float) -> dt.timedelta:
    return dt.timedelta(seconds=seconds)


def request(cid: str, *, due: float = 60, expires: float = 3600, zone: str = "zn-1",
            payload: dict[str, Any] | None = None) -> TaskRequest:
    """An irrigation request due ``due`` s after T0, expiring ``expires`` s after T0."""
    return TaskRequest(zone_uid=zone, task_type=TaskType.IRRIGATION, payload=payload or {"duration_s": 30},
                       due_at=T0 + s(due), expires_at=T0 + s(expires), correlation_id=cid)


async def add(pool: asyncpg.Pool, cid: str, **kwargs: Any) -> tasks.TaskRecord:
    task, created = await tasks.enqueue(pool, request(cid, **kwargs), now=T0)
    assert created
    return task


DONE = Outcome(status=TaskStatus.COMPLETED, decision=Decision.RUN, command_submitted=True,
               command_effect_confirmed=True, cmd_id="cmd-1")
RETRY = Outcome(status=TaskStatus.FAILED, decision=Decision.RETRY, error_code="command_send_failed")


def test_due_tasks_claims_by_due_time_only_what_is_due(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        late = await add(pool, "cid-late-0001", due=30)
        early = await add(pool, "cid-early-001", due=10)
        middle = await add(pool, "cid-middle-01", due=20)
        await add(pool, "cid-future-01", due=600)  # not due yet
        await add(pool, "cid-expired-1", due=5, expires=40)  # expired by T0+50
        await tasks.enqueue(pool, request("cid-rejected1", due=-1), now=T0)  # rejected on receipt
        now = T0 + s(50)
        first = await tasks.due_tasks(pool, now, 2)
        assert [t.id for t in first] == [early.id, middle.id]
        assert all(t.status == TaskStatus.RUNNING and t.started_at == now for t in first)
        assert [t.id for t in await tasks.due_tasks(pool, now, 10)] == [late.id]
        assert await tasks.due_tasks(pool, now, 10) == []

    repo_pool_run(body)


def test_concurrent_dispatchers_never_claim_one_task_twice(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        ids = {(await add(pool, f"cid-many-{i:04d}", due=i % 7)).id for i in range(60)}
        now = T0 + s(10)
        batches = await asyncio.gather(*(tasks.due_tasks(pool, now, 7) for _ in range(8)))
        claimed = [t.id for batch in batches for t in batch]
        claimed += [t.id for t in await tasks.due_tasks(pool, now, 100)]
        assert sorted(claimed) == sorted(ids)  # each exactly once
        one = await add(pool, "cid-single-01", due=0)
        wins = await asyncio.gather(*(tasks.claim(pool, one.id, now) for _ in range(8)))
        assert sorted(wins) == [False] * 7 + [True]

    repo_pool_run(body)


def test_claim_refuses_expired_and_non_accepted_tasks(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        task = await add(pool, "cid-claim-001", due=0, expires=10)
        assert not await tasks.claim(pool, task.id, T0 + s(10))  # expired
        assert await tasks.claim(pool, task.id, T0 + s(1))
        assert not await tasks.claim(pool, task.id, T0 + s(2))  # running already
        assert not await tasks.claim(pool, "tk-" + "0" * 20, T0)

    repo_pool_run(body)


def test_finish_only_from_running_and_terminal_never_changes(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        task = await add(pool, "cid-finish-01", due=0)
        assert await tasks.finish(pool, task.id, DONE) is None  # accepted: not running
        assert await tasks.claim(pool, task.id, T0)
        assert await tasks.record_dispatch(pool, task.id, cmd_id="cmd-1")
        done = await tasks.finish(pool, task.id, DONE, T0 + s(5))
        assert done is not None and done.status == TaskStatus.COMPLETED and done.finished_at == T0 + s(5)
        assert done.command_submitted and done.command_effect_confirmed and done.cmd_id == "cmd-1"
        assert await tasks.finish(pool, task.id, RETRY) is None
        assert not await tasks.fail_recovered(pool, task.id)
        assert not await tasks.record_dispatch(pool, task.id, cmd_id="cmd-2")
        assert await tasks.expire_overdue(pool, T0 + s(10**6)) == []
        assert await tasks.get(pool, task.id) == done
        timeline = await tasks.timeline(pool, task.id)
        assert [(e.type, e.status) for e in timeline] == [("accepted", "accepted"), ("running", "running"),
                                                          ("dispatched", "running"), ("completed", "completed")]

    repo_pool_run(body)


@pytest.mark.parametrize("kwargs", [
    {"status": TaskStatus.RUNNING, "decision": Decision.RUN},
    {"status": TaskStatus.COMPLETED, "decision": Decision.RETRY},
    {"status": TaskStatus.FAILED, "decision": Decision.SKIP},
    {"status": TaskStatus.FAILED, "decision": Decision.RUN, "command_submitted": True,
     "command_effect_confirmed": True},
    {"status": TaskStatus.COMPLETED, "decision": Decision.RUN, "command_effect_confirmed": True},
])
def test_an_outcome_that_breaks_the_contract_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"decision|finishes|command_effect_confirmed"):
        Outcome(**kwargs)


def test_nothing_to_do_is_completed_with_skip(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        task = await add(pool, "cid-skip-0001", due=0)
        await tasks.claim(pool, task.id, T0)
        skipped = await tasks.finish(pool, task.id, Outcome(status=TaskStatus.COMPLETED, decision=Decision.SKIP,
                                                            reason_code="already_in_state"))
        assert skipped is not None and skipped.decision == Decision.SKIP and not skipped.command_submitted

    repo_pool_run(body)


def test_expire_overdue_and_restart_recovery(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        overdue = await add(pool, "cid-overdue-1", due=0, expires=30)
        running = await add(pool, "cid-running-1", due=0)
        waiting = await add(pool, "cid-waiting-1", due=100)
        assert await tasks.claim(pool, running.id, T0)
        expired = await tasks.expire_overdue(pool, T0 + s(30))
        assert [t.id for t in expired] == [overdue.id]
        assert expired[0].status == TaskStatus.EXPIRED and expired[0].reason_code == "task_expired_before_dispatch"
        assert expired[0].action_required and expired[0].decision == Decision.FAIL
        assert [t.id for t in await tasks.running(pool)] == [running.id]  # the sweep's view: not the accepted one
        assert await tasks.fail_recovered(pool, running.id)
        assert not await tasks.fail_recovered(pool, running.id)  # a terminal status never changes
        assert await tasks.running(pool) == []
        still = await tasks.get(pool, waiting.id)
        assert still is not None and still.status == TaskStatus.ACCEPTED  # due tomorrow stays due tomorrow
        recovered = await tasks.get(pool, running.id)
        assert recovered is not None and recovered.status == TaskStatus.FAILED
        assert recovered.reason_code == "task_recovered_after_restart" and recovered.action_required

    repo_pool_run(body)


def test_retries_get_new_ids_back_off_and_stop_after_three_attempts(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        first = await add(pool, "root-cid-0001", due=0)
        with pytest.raises(ValueError, match="only a failed task"):
            await tasks.create_retry(pool, first, now=T0)
        now = T0
        current = first
        assert await tasks.claim(pool, current.id, now)
        for n in (1, 2):  # each retry is claimed by due_tasks once its backoff is over
            failed = await tasks.finish(pool, current.id, RETRY, now)
            assert failed is not None
            made = await tasks.create_retry(pool, failed, now=now)
            assert made is not None
            retry, created = made
            assert created and retry.correlation_id == f"root-cid-0001:retry{n}"
            assert retry.parent_correlation_id == "root-cid-0001" and retry.attempt == n + 1
            assert retry.status == TaskStatus.ACCEPTED and retry.next_attempt_at == now + s(10 * 2 ** (n - 1))
            assert retry.due_at == first.due_at and retry.payload == first.payload
            again = await tasks.create_retry(pool, failed, now=now + s(1))  # idempotent by the retry's id
            assert again == (retry, False)
            assert await tasks.due_tasks(pool, retry.next_attempt_at - s(0.001), 10) == []  # backing off
            now = retry.next_attempt_at
            assert [t.id for t in await tasks.due_tasks(pool, now, 10)] == [retry.id]
            current = retry
        failed = await tasks.finish(pool, current.id, RETRY, now)
        assert failed is not None and failed.attempt == 3
        assert await tasks.create_retry(pool, failed, now=now) is None  # three attempts made
        parent_events = [e.type for e in await tasks.timeline(pool, first.id)]
        assert parent_events[-1] == "retry_scheduled"

    repo_pool_run(body)


def test_no_retry_when_the_backoff_reaches_expiry(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        task = await add(pool, "cid-short-001", due=0, expires=15)
        await tasks.claim(pool, task.id, T0)
        failed = await tasks.finish(pool, task.id, RETRY, T0 + s(5))
        assert failed is not None
        assert await tasks.create_retry(pool, failed, now=T0 + s(5)) is None  # 5 + 10 >= 15

    repo_pool_run(body)


def test_idempotency_window_is_24h_or_until_the_task_expires(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        first = await add(pool, "cid-window-01")
        same, created = await tasks.enqueue(pool, request("cid-window-01"), now=T0 + dt.timedelta(hours=23))
        assert same == first and not created
        with pytest.raises(IdempotencyMismatch) as caught:
            await tasks.enqueue(pool, request("cid-window-01", due=61), now=T0 + dt.timedelta(hours=23))
        assert caught.value.task_id == first.id
        # the key lapsed: the id names a new task; the old one keeps its row
        later = T0 + dt.timedelta(hours=24)
        reused, created = await tasks.enqueue(
            pool, request("cid-window-01", due=24 * 3600 + 60, expires=24 * 3600 + 600), now=later)
        assert created and reused.id != first.id
        assert await tasks.get(pool, first.id) == first
        # a task expiring after 24 h keeps its id until it expires
        long = await add(pool, "cid-long-0001", expires=48 * 3600)
        with pytest.raises(IdempotencyMismatch):
            await tasks.enqueue(pool, request("cid-long-0001", due=61, expires=48 * 3600),
                                now=T0 + dt.timedelta(hours=30))
        again, created = await tasks.enqueue(pool, request("cid-long-0001", expires=48 * 3600),
                                             now=T0 + dt.timedelta(hours=47))
        assert again == long and not created

    repo_pool_run(body)


def test_concurrent_enqueues_of_one_id_create_one_task(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        results = await asyncio.gather(*(tasks.enqueue(pool, request("cid-race-0001"), now=T0) for _ in range(20)))
        assert sum(created for _, created in results) == 1
        assert len({task.id for task, _ in results}) == 1
        assert await pool.fetchval("SELECT count(*) FROM tasks WHERE correlation_id = 'cid-race-0001'") == 1

    repo_pool_run(body)


def test_enqueue_checks_the_contract(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        with pytest.raises(ContractError) as caught:
            await tasks.enqueue(pool, request("cid-bad-00001", due=60, expires=60), now=T0)
        assert caught.value.field == "expires_at"
        with pytest.raises(ContractError) as caught:
            await tasks.enqueue(pool, request("cid-bad-00002", payload={"duration_s": 0}), now=T0)
        assert caught.value.field == "payload.duration_s"
        naive = TaskRequest(zone_uid="zn-1", task_type=TaskType.MIST, payload={"duration_s": 5},
                            due_at=dt.datetime(2026, 12, 3, 7), expires_at=T0 + s(7200), correlation_id="cid-naive-01")
        with pytest.raises(ContractError) as caught:
            await tasks.enqueue(pool, naive, now=T0)
        assert caught.value.field == "due_at"
        assert await pool.fetchval("SELECT count(*) FROM tasks") == 0

    repo_pool_run(body)


def test_list_tasks_filters(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        a = await add(pool, "cid-list-0001", zone="zn-1")
        b, _ = await tasks.enqueue(pool, request("cid-list-0002", zone="zn-2"), now=T0 + s(1))
        c, _ = await tasks.enqueue(pool, request("cid-list-0003", zone="zn-2", due=-5), now=T0 + s(2))
        assert [t.id for t in await tasks.list_tasks(pool)] == [c.id, b.id, a.id]
        assert [t.id for t in await tasks.list_tasks(pool, zone_uid="zn-2")] == [c.id, b.id]
        assert [t.id for t in await tasks.list_tasks(pool, status=TaskStatus.REJECTED)] == [c.id]
        assert [t.id for t in await tasks.list_tasks(pool, since=T0 + s(1))] == [c.id, b.id]
        assert [t.id for t in await tasks.list_tasks(pool, limit=1)] == [c.id]

    repo_pool_run(body)


def test_task_events_also_reach_the_zone_timeline(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        task = await add(pool, "cid-zone-ev01", due=0)
        rows = await pool.fetch("SELECT type, correlation_id, details->>'task_id' AS task_id, "
                                "details->>'event' AS event FROM zone_events WHERE zone_uid = 'zn-1'")
        assert [tuple(r) for r in rows] == [("task", "cid-zone-ev01", task.id, "accepted")]

    repo_pool_run(body)


def test_schedule_cursors_only_move_forward(repo_pool_run: Run) -> None:
    async def body(pool: asyncpg.Pool) -> None:
        assert await tasks.get_cursor(pool, "zn-1", "irrigation") is None
        assert await tasks.set_cursor(pool, "zn-1", "irrigation", T0 + s(60)) == T0 + s(60)
        assert await tasks.set_cursor(pool, "zn-1", "irrigation", T0) == T0 + s(60)  # stale write
        assert await tasks.set_cursor(pool, "zn-1", "irrigation", T0 + s(120)) == T0 + s(120)
        assert await tasks.get_cursor(pool, "zn-1", "irrigation") == T0 + s(120)
        assert await tasks.get_cursor(pool, "zn-1", "lighting") is None
        assert await tasks.get_cursor(pool, "zn-2", "irrigation") is None
        with pytest.raises(ValueError, match="aware"):
            await tasks.set_cursor(pool, "zn-1", "lighting", dt.datetime(2026, 12, 3))

    repo_pool_run(body)
