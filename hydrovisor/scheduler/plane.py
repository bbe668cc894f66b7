"""What the scheduler's actors do on the loop: plan the zones' schedules into tasks, claim due tasks, run one
task to its outcome, and recover tasks nobody is running (DOMAIN §5).

Only the leader acts (:class:`~hydrovisor.tasks.leadership.Leadership`): every step reads the leadership's
epoch first and checks it again before each write that creates or claims work, so losing the database
connection stops planning and dispatch at once. A task claimed by a leader that then lost its lock, or by a
process that was killed, is found ``running`` by nobody and recovered: resumed when it has not expired (the
executor is idempotent by the task's correlation id: a workflow it started is found and waited for, a
command it sent is found by its ``cmd_id``, so resuming never actuates twice), else failed with
``task_recovered_after_restart``.

The scheduler's clock is real UTC time, whatever ``time_scale`` says: task times are instants clients send
and read back.
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from hydrovisor.scheduler.metrics import TaskMetrics
from hydrovisor.scheduler.planner import plan_zone
from hydrovisor.store.database import Database
from hydrovisor.store.repos import events, tasks
from hydrovisor.store.repos.tasks import IdempotencyMismatch, TaskRecord
from hydrovisor.tasks.executor import TaskExecutor, TaskOrder
from hydrovisor.tasks.leadership import Leadership
from hydrovisor.zones.settings import ZoneSettings, parse_settings

log = logging.getLogger(__name__)

CURSOR_KIND = "schedules"  # one cursor per zone covers all its schedule kinds
ORPHAN_AFTER = dt.timedelta(seconds=30)  # a running task nobody here owns, this old, was lost by its owner
SWEEP_EVERY = dt.timedelta(seconds=10)  # how often a term looks for such tasks after its first sweep


def _spread(zone_uid: str, lookahead: dt.timedelta) -> dt.timedelta:
    """A stable per-zone extra horizon in ``[0, lookahead / 2)``: zones created together would otherwise run out
    of plan together and be planned in one long step, on the loop the due tasks are dispatched from."""
    return lookahead / 2 * ((zlib.crc32(zone_uid.encode()) % 1000) / 1000)


def utcnow() -> dt.datetime:
    """The scheduler's clock."""
    return dt.datetime.now(dt.UTC)


@dataclass
class _Zone:
    version: int
    since: dt.datetime  # when this settings version came into force: nothing before it was missed
    settings: ZoneSettings | None  # None: invalid document (never stored by the API; skipped, not fatal)


@dataclass
class SchedulerPlane:
    """Loop-side state and steps of the scheduler (one per process)."""

    db: Database
    leadership: Leadership
    executor: TaskExecutor
    metrics: TaskMetrics
    timezone: str = "UTC"
    lookahead: dt.timedelta = dt.timedelta(seconds=60)
    grace: dt.timedelta = dt.timedelta(seconds=60)
    clock: Callable[[], dt.datetime] = utcnow
    owned: set[str] = field(default_factory=set)  # ids of the tasks this process runs now
    _zones: dict[str, _Zone] = field(default_factory=dict)
    _cursors: dict[str, dt.datetime] = field(default_factory=dict)
    _cursor_keys: dict[str, str] = field(default_factory=dict)  # a step cut inside an instant: after this key
    _planned_epoch: int = -1
    _recovered_epoch: int = -1
    _last_sweep: dt.datetime | None = None

    def leading(self, epoch: int) -> bool:
        """Still the leader of ``epoch`` (not lost, not lost and regained)."""
        return self.leadership.is_leader and self.leadership.epoch == epoch

    # planning -----------------------------------------------------------------------------------------

    async def plan(self) -> int:
        """One planning step over every zone whose plan runs out within half the lookahead; returns the tasks
        created. Zones cut short by the per-step dispatch limit are planned again in the next step."""
        epoch = self.leadership.epoch
        if not self.leading(epoch):
            return 0
        pool = self.db.pool
        if self._planned_epoch != epoch:  # a new term: another leader may have moved the cursors meanwhile
            rows = await pool.fetch("SELECT zone_uid, cursor FROM schedule_cursors WHERE kind = $1", CURSOR_KIND)
            self._cursors = {row["zone_uid"]: row["cursor"] for row in rows}
            self._cursor_keys = {}
            self._planned_epoch = epoch
        await self._refresh_settings()
        tz = ZoneInfo(self.timezone)
        created = 0
        for uid, zone in list(self._zones.items()):
            settings = zone.settings
            cursor = self._cursors.get(uid)
            now = self.clock()  # a step over many zones takes a while: each zone plans at its own now
            if settings is None or (cursor is not None and cursor - now > self.lookahead / 2):
                continue
            # never before the settings version in force: a new zone or schedule has no missed past
            after = max(cursor if cursor is not None else now - self.grace, zone.since)
            key = self._cursor_keys.pop(uid, None) if after == cursor else None
            plan = plan_zone(uid, settings, tz, after, now, lookahead=self.lookahead + _spread(uid, self.lookahead),
                             grace=self.grace, cursor_key=key)
            for request in plan.requests:
                if not self.leading(epoch):
                    return created
                try:
                    _, new = await tasks.enqueue(pool, request, now=now, created_by="scheduler")
                except IdempotencyMismatch:
                    continue  # planned before with another receipt time: that task is the occurrence's
                created += new
            if plan.skipped:
                await self._skipped_event(uid, plan.skipped)
            self._cursors[uid] = plan.cursor
            if plan.cursor_key is not None:
                self._cursor_keys[uid] = plan.cursor_key
            if not plan.requests and not plan.skipped:
                # nothing handled: the stored cursor may lag (a schedule enabled later starts from its
                # settings version, never from that old cursor), one write per zone per step is saved
                continue
            if not self.leading(epoch):
                return created
            await tasks.set_cursor(pool, uid, CURSOR_KIND, plan.stored_cursor)
        return created

    async def _refresh_settings(self) -> None:
        """Parse only the zones whose settings version changed since the last step."""
        pool = self.db.pool
        rows = await pool.fetch("SELECT DISTINCT ON (zone_uid) zone_uid, version, created_at "
                                "FROM zone_settings_versions ORDER BY zone_uid, version DESC")
        current = {row["zone_uid"]: row for row in rows}
        for uid in set(self._zones) - set(current):
            del self._zones[uid]
        stale = [uid for uid, row in current.items() if uid not in self._zones or
                 self._zones[uid].version != row["version"]]
        if not stale:
            return
        docs = await pool.fetch("SELECT zone_uid, version, document::text AS document FROM zone_settings_versions v "
                                "WHERE (zone_uid, version) IN (SELECT * FROM unnest($1::text[], $2::int[]))",
                                stale, [current[uid]["version"] for uid in stale])
        for doc in docs:
            uid = doc["zone_uid"]
            since = current[uid]["created_at"]
            if uid in self._zones:
                # planned ahead under the old settings: plan again from the change (occurrences of the new
                # schedule in that span would be lost; old ones already planned keep their tasks, the same
                # key names the same task)
                self._cursors[uid] = min(self._cursors.get(uid, since), since)
                self._cursor_keys.pop(uid, None)
            parsed = parse_settings(doc["document"])
            settings = parsed if isinstance(parsed, ZoneSettings) else None
            if settings is None:
                log.warning("zone %s: settings version %d does not parse; its schedules are not planned", uid,
                            doc["version"], extra={"event": "schedule_settings_invalid", "zone_id": uid})
            self._zones[uid] = _Zone(version=doc["version"], since=since, settings=settings)

    async def _skipped_event(self, zone_uid: str, skipped: list[Any]) -> None:
        """One zone event per step for what catch-up skipped (a long outage skips thousands: one line each
        would bury the timeline), with the first and last occurrence and the counts by reason."""
        reasons: dict[str, int] = {}
        for item in skipped:
            reasons[item.reason] = reasons.get(item.reason, 0) + 1
        try:
            await events.add_zone_event(self.db.pool, zone_uid, None, "SCHEDULE_SKIPPED", {
                "count": len(skipped), "by_reason": reasons, "first": skipped[0].occurrence.key,
                "last": skipped[-1].occurrence.key}, decision="skip", reason_code=skipped[0].reason)
        except Exception as exc:  # the event is a side effect: it never blocks planning
            log.warning("zone %s: SCHEDULE_SKIPPED not stored: %s", zone_uid, exc,
                        extra={"event": "schedule_event_failed", "zone_id": zone_uid})

    # dispatch -----------------------------------------------------------------------------------------

    async def dispatch(self, capacity: int) -> list[TaskRecord]:
        """Expire what can no longer run, recover what nobody runs, and claim up to ``capacity`` due tasks
        (the caller starts one actor per task returned)."""
        epoch = self.leadership.epoch
        if not self.leading(epoch) or capacity <= 0:
            return []
        pool = self.db.pool
        now = self.clock()
        for task in await tasks.expire_overdue(pool, now):
            self._terminal(task)
            self.metrics.deadline_violations.labels(task_type=task.task_type).inc()
        resumed = await self._recover(epoch, now)
        if not self.leading(epoch):
            return resumed
        claimed = await tasks.due_tasks(pool, now, max(0, capacity - len(resumed)))
        for task in claimed:
            self.metrics.dispatch_lag.observe(max(0.0, (now - task.due_at).total_seconds()))
        return resumed + claimed

    async def _recover(self, epoch: int, now: dt.datetime) -> list[TaskRecord]:
        """Running tasks this process does not run: all of them at the start of a term (a restart, or
        another leader's work), later (every ``SWEEP_EVERY``) only those running longer than ``ORPHAN_AFTER``
        (a claim that landed after this term's first sweep). Resumed if not expired, else failed."""
        first = self._recovered_epoch != epoch
        if not first and (self._last_sweep is not None and now - self._last_sweep < SWEEP_EVERY):
            return []
        self._recovered_epoch = epoch
        self._last_sweep = now
        found = [task for task in await tasks.running(self.db.pool)
                 if task.id not in self.owned
                 and (first or (task.started_at is not None and now - task.started_at > ORPHAN_AFTER))]
        resumed: list[TaskRecord] = []
        for task in found:
            fields = {"task_id": task.id, "zone_id": task.zone_uid, "correlation_id": task.correlation_id}
            if now < task.expires_at:
                self.metrics.recoveries.labels(outcome="resumed").inc()
                log.warning("task %s found running with no owner: resumed", task.id,
                            extra={**fields, "event": "task_resumed"})
                resumed.append(task)
            elif await tasks.fail_recovered(self.db.pool, task.id, now):
                self.metrics.recoveries.labels(outcome="failed").inc()
                self.metrics.deadline_violations.labels(task_type=task.task_type).inc()
                self._terminal(task)
                log.warning("task %s found running with no owner after it expired: failed", task.id,
                            extra={**fields, "event": "task_recovered_after_restart"})
        return resumed

    # one task -----------------------------------------------------------------------------------------

    async def run(self, task: TaskRecord) -> TaskRecord | None:
        """Execute ``task`` (claimed ``running``), store its outcome once, schedule its retry; returns the
        finished row (None: already finished elsewhere)."""
        self.owned.add(task.id)
        try:
            # the executor waits on real time: the deadline is handed over as what remains of it by our clock
            expires_at = utcnow() + (task.expires_at - self.clock())
            outcome = await self.executor.execute(TaskOrder(
                task_id=task.id, zone_uid=task.zone_uid, task_type=str(task.task_type), payload=task.payload,
                correlation_id=task.correlation_id, expires_at=expires_at))
            now = self.clock()
            finished = await tasks.finish(self.db.pool, task.id, outcome, now)
            if finished is None:
                return None
            self._terminal(finished)
            if outcome.command_submitted:
                self.metrics.effects.labels(confirmed=str(outcome.command_effect_confirmed).lower()).inc()
            if now > finished.expires_at:
                self.metrics.deadline_violations.labels(task_type=finished.task_type).inc()
            if outcome.decision == "retry":
                await tasks.create_retry(self.db.pool, finished, now=now)
            return finished
        finally:
            self.owned.discard(task.id)

    def _terminal(self, task: TaskRecord) -> None:
        self.metrics.terminals.labels(task_type=task.task_type, status=task.status).inc()
        end = task.finished_at or self.clock()
        self.metrics.accept_to_terminal.labels(task_type=task.task_type).observe(
            max(0.0, (end - task.accepted_at).total_seconds()))
