"""What workflow actors need from the process, as loop-side coroutines they pipe to themselves.

Every command goes through :class:`~hydrovisor.commands.submit.CommandSubmitter` (SAFE_MODE, the target
checks, the pump-safety gate, the durable row): a workflow has no back door. The command is written into
the workflow's row *before* it is submitted (write-ahead): after a crash the next incarnation knows every
``cmd_id`` that may have gone out, so it never reuses one for another command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from hydrovisor.commands.outage_stops import is_plain_stop
from hydrovisor.commands.plane import DEFAULT_TIMEOUT_S, default_timeout
from hydrovisor.commands.submit import CommandSubmitter, Submission, SubmitRefused, SubmitRequest
from hydrovisor.store.database import Database
from hydrovisor.store.errors import DB_DOWN
from hydrovisor.store.repos import events, workflows
from hydrovisor.store.repos.commands import CommandRecord
from hydrovisor.store.repos.workflows import Progress, WorkflowRecord
from hydrovisor.workflows.effects import Sent
from hydrovisor.zones.clock import Clock

CRITICAL_ALERTS = frozenset({"biz_stop_not_confirmed"})  # something may be left running: a person must look
REPLY_GRACE_S = 5.0  # real seconds past a command's own timeout before the workflow stops waiting for it
STORE_BEFORE_STOP_S = 0.1  # a stop not stored and submitted by then is published without its row first
DbCall = Callable[[asyncpg.Pool], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class WorkflowPlane:
    """Dependencies of workflow actors, built once by the app."""

    db: Database
    clock: Clock
    submitter: CommandSubmitter
    last_heard: Callable[[str], float | None]
    """Zone time of a node's latest traffic the router saw (None: nothing since this process started)."""
    hang_timeout: float | None = 30.0
    # cmd_id -> set once that command's submit is over (published, refused or failed): loop-side only
    _going_out: dict[str, asyncio.Event] = field(default_factory=dict, init=False, repr=False)

    async def load(self, wf_id: str) -> WorkflowRecord | None:
        """The workflow's row."""
        return await workflows.by_id(self.db.pool, wf_id)

    async def save(self, wf_id: str, progress: Progress) -> bool:
        """Write the workflow's progress; False when its row is terminal already."""
        return await workflows.save(self.db.pool, wf_id, progress)

    async def send(self, wf_id: str, progress: Progress, request: SubmitRequest, wait: bool) -> Sent:
        """Write-ahead the command into the workflow's row, submit it, and (``wait``) await its terminal.

        A stop that cannot be stored because the database is unreachable is published at once without its
        row (:class:`~hydrovisor.commands.outage_stops.OutageStops`), then the error is raised as before: the
        workflow keeps sending it through the durable path until it is confirmed. A stop whose storing takes
        longer than :data:`STORE_BEFORE_STOP_S` goes out the same way before its row is there: the database
        may be going down (a failing write can take seconds) and a pump must not wait for that."""
        assert request.cmd_id is not None
        going_out = self._going_out.setdefault(request.cmd_id, asyncio.Event())
        storing = asyncio.ensure_future(self._store_and_submit(wf_id, progress, request))
        try:
            if is_plain_stop(request.cmd, request.params):
                await asyncio.wait({storing}, timeout=STORE_BEFORE_STOP_S)
                if not storing.done():
                    await self._publish_unstored(request, f"its row took over {STORE_BEFORE_STOP_S:g} s")
            submitted = await storing
        except DB_DOWN as exc:
            await self._publish_unstored(request, str(exc))
            raise
        except SubmitRefused as exc:
            return Sent(cmd_id=request.cmd_id, status=None, refused=exc.code, reason_code=exc.extra.get("reason_code"),
                        message=exc.message)
        finally:
            storing.cancel()  # only when this send itself was cancelled: otherwise it is over already
            going_out.set()
            self._going_out.pop(request.cmd_id, None)
        row = submitted.row
        if wait and not row.terminal:
            row = await self.submitter.wait_terminal(request.cmd_id, _wait_s(row))
        return _sent(row)

    async def _store_and_submit(self, wf_id: str, progress: Progress, request: SubmitRequest) -> Submission:
        await workflows.save(self.db.pool, wf_id, progress)
        return await self.submitter.submit(request)

    async def _publish_unstored(self, request: SubmitRequest, reason: str) -> None:
        await self.submitter.outage_stops.publish(request.cmd, request.params, node_uid=request.node_uid,
                                                  channel=request.channel, reason=reason)

    async def send_after(self, pending: str, wf_id: str, progress: Progress, request: SubmitRequest) -> Sent:
        """:meth:`send` without waiting, once the command ``pending`` has gone out: a stop sent beside a
        pending start must not overtake it on its way to the node (the start would land after the stop)."""
        assert request.cmd_id is not None
        mine = self._going_out.setdefault(request.cmd_id, asyncio.Event())  # a settle of this stop waits for it
        going_out = self._going_out.get(pending)
        try:
            if going_out is not None:
                await going_out.wait()
        except BaseException:
            mine.set()
            self._going_out.pop(request.cmd_id, None)
            raise
        return await self.send(wf_id, progress, request, False)

    async def wait_terminal(self, cmd_id: str, params: dict[str, Any]) -> Sent:
        """The terminal of a command sent without waiting."""
        return _sent(await self.submitter.wait_terminal(cmd_id, default_timeout(params) + REPLY_GRACE_S))

    async def settle(self, cmd_ids: list[str]) -> dict[str, str]:
        """Until every command in ``cmd_ids`` has gone out and is terminal (each within its own timeout and a
        grace); the status of each one stored (a command never stored is left out)."""
        async def ended(cmd_id: str) -> CommandRecord:
            going_out = self._going_out.get(cmd_id)
            if going_out is not None:
                await going_out.wait()
            return await self.submitter.wait_terminal(cmd_id, DEFAULT_TIMEOUT_S + REPLY_GRACE_S)

        rows = await asyncio.gather(*(ended(cmd_id) for cmd_id in cmd_ids), return_exceptions=True)
        return {row.cmd_id: row.status for row in rows if isinstance(row, CommandRecord)}

    async def event(self, zone_uid: str, event_type: str, details: dict[str, Any], *, decision: str | None = None,
                    reason_code: str | None = None, cmd_id: str | None = None, node_uid: str | None = None) -> None:
        """A zone event (the timeline)."""
        await events.add_zone_event(self.db.pool, zone_uid, node_uid, event_type, details, cmd_id=cmd_id,
                                    correlation_id=details.get("workflow_id"), decision=decision,
                                    reason_code=reason_code)

    async def finish(self, record: WorkflowRecord, progress: Progress, water_state: str | None,
                     alert: str | None, block_corrections_s: float | None, *, solution_started: bool = False) -> bool:
        """Store the terminal status (once), the water state it leaves, its alert and its timeline entry."""
        async with self.db.pool.acquire() as conn, conn.transaction():
            stored = await workflows.save(conn, record.id, progress)
            if not stored:
                return False
            if water_state is not None:
                await workflows.set_water_state(conn, record.zone_uid, water_state, solution_started=solution_started)
            if block_corrections_s is not None:
                await workflows.block_corrections(conn, record.zone_uid, block_corrections_s)
            if alert is not None:
                await events.raise_alert(conn, zone_uid=record.zone_uid, node_uid=None, source="biz", code=alert,
                                         alert_type=alert, details={"workflow_id": record.id,
                                                                    "reason_code": progress.reason_code},
                                         dedupe_key=record.type,
                                         severity="critical" if alert in CRITICAL_ALERTS else "warning")
            await events.add_zone_event(conn, record.zone_uid, None, "WORKFLOW_ENDED", {
                "workflow_id": record.id, "type": record.type, "status": progress.status, "stage": progress.stage,
                "message": progress.message}, correlation_id=record.id,
                decision="fail" if progress.status == "failed" else progress.status, reason_code=progress.reason_code)
        return True


def _wait_s(row: CommandRecord) -> float:
    return (row.timeout_s or default_timeout(row.params)) + REPLY_GRACE_S


def _sent(row: CommandRecord) -> Sent:
    return Sent(cmd_id=row.cmd_id, status=str(row.status), error_code=row.error_code, details=row.details)
