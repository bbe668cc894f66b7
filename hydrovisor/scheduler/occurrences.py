"""What a zone's schedules make due, and when (DOMAIN §5, issue 13): pure, no clock, no I/O.

:func:`occurrences` lists every scheduled occurrence due in ``(after, until]``. The dispatcher walks time
with a persisted cursor, so the same occurrence must come out identical whatever interval it is computed
in: same due time, same expiry, same :attr:`Occurrence.key` (the root of the task's correlation id).

Schedules are wall-clock times in the greenhouse's IANA zone; :mod:`.wallclock` maps them to instants (a
wall time in a spring-forward gap runs once at the end of the gap, one in a repeated hour runs once, at its
first pass). Several wall times of one kind landing on the same instant (a gap) run once, keyed by the
earliest of them.

- **irrigation** at each of ``irrigation.times`` and every ``interval_minutes`` of wall-clock time from the
  window's start (``window_start + k x interval`` while before its end; midnight to midnight without a
  window), every day. The grid is in wall-clock minutes, not elapsed time, so a DST day keeps the same
  times of day as any other. Valid until the next irrigation, at most :data:`IRRIGATION_VALIDITY`: a run
  later than that is a different run.
- **lighting** / **ventilation** on at each window's ``from``, off at its ``to``. A state change is valid
  until the next one of its kind (an ``on`` until its window's end), so a late replay never contradicts a
  newer state. An ``off`` at the instant another window turns on is dropped (no flicker between touching
  windows); a window that lies entirely in a DST gap does not exist that day.
- **water_change** (task ``solution_change``) at ``time_of_day`` on every ``interval_days``-th day counted
  from :data:`WATER_CHANGE_EPOCH` (stable whatever the day the scheduler started), valid
  :data:`WATER_CHANGE_VALIDITY`.

Settings must be valid (:func:`hydrovisor.zones.settings.parse_settings`); an invalid ``HH:MM`` raises.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec

from hydrovisor.scheduler.wallclock import instant, wall_bounds
from hydrovisor.zones.settings import (
    Irrigation,
    Lighting,
    TimeWindow,
    Ventilation,
    WaterChange,
    ZoneSettings,
    parse_hhmm,
)

Kind = Literal["irrigation", "lighting", "ventilation", "water_change"]
TaskType = Literal["irrigation", "lighting", "ventilation", "solution_change"]

IRRIGATION_VALIDITY = dt.timedelta(minutes=15)
WATER_CHANGE_VALIDITY = dt.timedelta(hours=1)
WATER_CHANGE_EPOCH = dt.date(2000, 1, 1)
MAX_KEY_LENGTH = 128
"""A task's correlation id is 8..128 characters (DOMAIN §5); a key is the root of one."""

_DAY = dt.timedelta(days=1)


class Occurrence(msgspec.Struct, frozen=True, kw_only=True):
    """One scheduled run: what (``task_type``, ``payload``), when (``due_at``, ``expires_at``, aware UTC)
    and its stable identity ``key`` (``sched:<zone_uid>:<kind>:<local wall time YYYY-MM-DDTHH:MM>``)."""

    kind: Kind
    task_type: TaskType
    due_at: dt.datetime
    expires_at: dt.datetime
    payload: dict[str, Any]
    key: str


def occurrences(zone_uid: str, settings: ZoneSettings, tz: ZoneInfo, after: dt.datetime,
                until: dt.datetime) -> list[Occurrence]:
    """Every occurrence of the zone's schedules due in ``(after, until]``, by due time then key.

    ``after`` and ``until`` are aware datetimes. Raises ValueError for naive ones, and for a ``zone_uid`` too
    long for a key of at most :data:`MAX_KEY_LENGTH` characters.
    """
    if after.tzinfo is None or until.tzinfo is None:
        raise ValueError("after and until must be aware datetimes")
    if len(_key(zone_uid, "water_change", dt.datetime(2000, 1, 1))) > MAX_KEY_LENGTH:
        raise ValueError(f"zone_uid too long for a {MAX_KEY_LENGTH}-character key: {zone_uid!r}")
    if until <= after:
        return []
    found = [
        *_irrigations(zone_uid, settings.irrigation, tz, after, until),
        *_switches(zone_uid, settings.lighting, tz, after, until),
        *_switches(zone_uid, settings.ventilation, tz, after, until),
        *_water_changes(zone_uid, settings.water_cycle.water_change, tz, after, until),
    ]
    return sorted(found, key=lambda item: (item.due_at, item.key))


def _irrigations(zone_uid: str, irrigation: Irrigation, tz: ZoneInfo, after: dt.datetime,
                 until: dt.datetime) -> Iterator[Occurrence]:
    if not irrigation.enabled:
        return
    # the next run (within the validity) bounds the expiry of a run due at ``until``: look that far ahead
    lo, hi = wall_bounds(after, until + IRRIGATION_VALIDITY, tz)
    walls: set[dt.datetime] = set()
    for day in _days(lo, hi):
        walls.update(_at(day, hhmm) for hhmm in irrigation.times)
        if irrigation.interval_minutes is not None:
            walls.update(_grid(day, irrigation.window, dt.timedelta(minutes=irrigation.interval_minutes), lo, hi))
    runs = _by_instant(walls, tz)
    payload = {"duration_s": irrigation.duration_s}
    for (due, wall_time), (next_due, _) in zip(runs, [*runs[1:], (None, None)], strict=True):
        if not after < due <= until:  # looked at only for the expiry of another
            continue
        expires = due + IRRIGATION_VALIDITY if next_due is None else min(next_due, due + IRRIGATION_VALIDITY)
        yield Occurrence(kind="irrigation", task_type="irrigation", due_at=due, expires_at=expires,
                         payload=dict(payload), key=_key(zone_uid, "irrigation", wall_time))


def _grid(day: dt.date, window: TimeWindow | None, step: dt.timedelta, lo: dt.datetime,
          hi: dt.datetime) -> list[dt.datetime]:
    """The interval's wall times of the window starting on ``day`` that lie in ``[lo, hi]``."""
    start_minute, end_minute = (0, 0) if window is None else (_minute(window.start), _minute(window.end))
    start = _at_minute(day, start_minute)
    length = dt.timedelta(minutes=(end_minute - start_minute) % 1440 or 1440)  # no window: the whole day
    count = -(-length // step)  # steps k with k x step < length
    # computed rather than filtered: a one-minute grid over a short interval must not build whole days
    first = max(0, -(-(lo - start) // step))
    last = min(count - 1, (hi - start) // step)
    return [start + k * step for k in range(first, last + 1)]


def _switches(zone_uid: str, section: Lighting | Ventilation, tz: ZoneInfo, after: dt.datetime,
              until: dt.datetime) -> Iterator[Occurrence]:
    if not section.enabled or not section.windows:
        return
    kind: Literal["lighting", "ventilation"] = "lighting" if isinstance(section, Lighting) else "ventilation"
    lo, hi = wall_bounds(after, until, tz)
    # two days beyond ``hi`` hold the next state change of the last one in range (every day has an "on")
    ons: list[tuple[dt.datetime, dt.datetime]] = []
    offs: list[tuple[dt.datetime, dt.datetime]] = []
    for day in _days(lo, hi + 2 * _DAY):
        for window in section.windows:
            on_wall = _at(day, window.start)
            off_wall = _at(day, window.end)
            if off_wall <= on_wall:
                off_wall += _DAY
            on, off = instant(on_wall, tz), instant(off_wall, tz)
            if off <= on:  # the whole window fell in a spring-forward gap: it does not exist that day
                continue
            ons.append((on, on_wall))
            offs.append((off, off_wall))
    on_instants = {on for on, _ in ons}
    changes = sorted([(on, on_wall, "on") for on, on_wall in ons]
                     + [(off, off_wall, "off") for off, off_wall in offs if off not in on_instants])
    for (due, wall_time, state), (next_due, _, _) in itertools.pairwise(changes):
        if not after < due <= until:  # looked at only for the expiry of another
            continue
        yield Occurrence(kind=kind, task_type=kind, due_at=due, expires_at=next_due,
                         payload=_switch_payload(section, state), key=_key(zone_uid, kind, wall_time))


def _switch_payload(section: Lighting | Ventilation, state: str) -> dict[str, Any]:
    if not isinstance(section, Lighting):
        return {"state": state}
    payload: dict[str, Any] = {"state": state, "mode": section.mode}
    if section.mode == "pwm" and state == "on":  # a level means something only for lights that are on
        payload["pwm_level"] = section.pwm_level
    return payload


def _water_changes(zone_uid: str, change: WaterChange, tz: ZoneInfo, after: dt.datetime,
                   until: dt.datetime) -> Iterator[Occurrence]:
    if not change.enabled:
        return
    lo, hi = wall_bounds(after, until, tz)
    for day in _days(lo, hi):
        if (day - WATER_CHANGE_EPOCH).days % change.interval_days == 0:
            wall_time = _at(day, change.time_of_day)
            due = instant(wall_time, tz)
            if not after < due <= until:  # a day of the margin
                continue
            yield Occurrence(kind="water_change", task_type="solution_change", due_at=due,
                             expires_at=due + WATER_CHANGE_VALIDITY, payload={},
                             key=_key(zone_uid, "water_change", wall_time))


def _by_instant(walls: set[dt.datetime], tz: ZoneInfo) -> list[tuple[dt.datetime, dt.datetime]]:
    """``(instant, wall time)`` sorted, one per instant: the earliest of the wall times sharing it."""
    first: dict[dt.datetime, dt.datetime] = {}
    for wall_time in sorted(walls):
        first.setdefault(instant(wall_time, tz), wall_time)
    return sorted(first.items())


def _days(lo: dt.datetime, hi: dt.datetime) -> Iterator[dt.date]:
    """The local days whose schedules can reach ``[lo, hi]``: from the day before ``lo`` (a window that
    crosses midnight) to the day of ``hi``."""
    day = lo.date() - _DAY
    while day <= hi.date():
        yield day
        day += _DAY


def _key(zone_uid: str, kind: Kind, wall_time: dt.datetime) -> str:
    return f"sched:{zone_uid}:{kind}:{wall_time.isoformat(timespec='minutes')}"


def _at(day: dt.date, hhmm: str) -> dt.datetime:
    return _at_minute(day, _minute(hhmm))


def _at_minute(day: dt.date, minute: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)


def _minute(hhmm: str) -> int:
    minute = parse_hhmm(hhmm)
    if minute is None:
        raise ValueError(f"not a validated HH:MM: {hhmm!r}")
    return minute
