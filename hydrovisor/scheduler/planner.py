"""One zone's planning step (pure): which task requests its schedules make now, and where its cursor moves.

The cursor is an instant: every occurrence due at or before it has been handled (enqueued or skipped). A
step looks at the occurrences after the cursor up to ``now + lookahead``:

- those due by ``now`` are past: the catch-up policy (:func:`~hydrovisor.scheduler.catchup.select_due`)
  decides which run (after downtime) and which are skipped; they are requested with ``scheduled_for`` = the
  occurrence's time and ``due_at`` = ``now`` (a request received after its ``due_at`` is ``rejected`` by the
  task contract, and a late dispatch is still a dispatch);
- those due later are requested ahead with their own ``due_at``: the dispatcher claims them by due time in SQL
  the moment they are due, so dispatch lag does not depend on how often zones are planned.

Every request's correlation id is the occurrence's key: enqueueing one twice (a step repeated after a
crash, two leaders for a moment) names the same task, so nothing runs twice. When the per-step dispatch
limit cuts the past short, nothing ahead is requested yet and the cursor stops at the last occurrence handled
(its instant and key: the next step continues right after it, even inside one instant); it is stored just
before that instant, so a restarted planner requests the instant's handled occurrences again and finds them
by their keys.

Water changes are not planned here: the zone's water cycle (``hydrovisor.workflows.water_cycle``) triggers
them from the age of the solution, which a fixed calendar cannot know; planning them here too would start
two.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import msgspec

from hydrovisor.scheduler.catchup import Cursor, Skipped, query_after, select_due
from hydrovisor.scheduler.occurrences import Occurrence, occurrences
from hydrovisor.tasks.contract import TaskRequest, TaskType
from hydrovisor.zones.settings import ZoneSettings

UNPLANNED_KINDS = frozenset({"water_change"})
_JUST_BEFORE = dt.timedelta(microseconds=1)


class ZonePlan(msgspec.Struct, frozen=True, kw_only=True):
    """What one step decided for a zone. ``cursor_key``: set when the limit cut the step inside an instant (the
    last occurrence handled at ``cursor``): the next step continues after it, not at the instant's start."""

    requests: list[TaskRequest]
    skipped: list[Skipped]
    cursor: dt.datetime
    cursor_key: str | None = None
    caught_up: bool  # False: the dispatch limit cut the past short, plan again at once

    @property
    def stored_cursor(self) -> dt.datetime:
        """The cursor as stored (an instant only): just before a cut instant, whose handled occurrences a restarted
        planner requests again and finds by their keys."""
        return self.cursor - _JUST_BEFORE if self.cursor_key is not None else self.cursor


def plan_zone(zone_uid: str, settings: ZoneSettings, tz: ZoneInfo, cursor: dt.datetime | None, now: dt.datetime,
              *, lookahead: dt.timedelta, grace: dt.timedelta, cursor_key: str | None = None) -> ZonePlan:
    """The step for ``zone_uid`` at ``now`` (aware UTC) after ``cursor`` (and, within its instant, after
    ``cursor_key``). A zone never planned (``cursor`` None) starts ``grace`` before now: there is nothing to
    catch up for a schedule that did not exist."""
    after = cursor if cursor is not None else now - grace
    within = Cursor(due_at=after, key=cursor_key) if cursor_key is not None else None
    horizon = now + lookahead
    found = [item for item in occurrences(zone_uid, settings, tz, query_after(within) if within else after, horizon)
             if item.kind not in UNPLANNED_KINDS]
    past = [item for item in found if item.due_at <= now and (within is None or _after(item, within))]
    ahead = [item for item in found if item.due_at > now]
    limits = settings.scheduler
    chosen = select_due(past, now, limits.catch_up, grace.total_seconds(), limits.max_dispatch_per_cycle)
    requests = [_late(zone_uid, item, now) for item in chosen.dispatch]
    handled = len(chosen.dispatch) + len(chosen.skipped)
    if handled < len(past):
        assert chosen.cursor is not None  # a limit was hit, so something was handled
        return ZonePlan(requests=requests, skipped=chosen.skipped, cursor=chosen.cursor.due_at,
                        cursor_key=chosen.cursor.key, caught_up=False)
    requests += [_ahead(zone_uid, item) for item in ahead]
    return ZonePlan(requests=requests, skipped=chosen.skipped, cursor=horizon, caught_up=True)


def _after(item: Occurrence, cursor: Cursor) -> bool:
    return (item.due_at, item.key) > (cursor.due_at, cursor.key)


def _late(zone_uid: str, item: Occurrence, now: dt.datetime) -> TaskRequest:
    return TaskRequest(zone_uid=zone_uid, task_type=TaskType(item.task_type), payload=item.payload,
                       scheduled_for=item.due_at, due_at=now, expires_at=item.expires_at, correlation_id=item.key)


def _ahead(zone_uid: str, item: Occurrence) -> TaskRequest:
    return TaskRequest(zone_uid=zone_uid, task_type=TaskType(item.task_type), payload=item.payload,
                       due_at=item.due_at, expires_at=item.expires_at, correlation_id=item.key)
