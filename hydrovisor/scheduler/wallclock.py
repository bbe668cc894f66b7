"""Wall-clock times of the greenhouse's IANA zone as instants, with one rule for each DST transition.

A schedule names wall times (``06:30``); what runs is an instant. Two wall times per year have no single
instant, and both must run exactly once:

- **spring forward** (a gap, 02:30 on 2026-03-29 in Europe/Berlin): the wall time runs at the first instant
  after the gap (03:00 local), the moment the clock jumps past it.
- **fall back** (a fold, 02:30 on 2026-10-25 in Europe/Berlin): the wall time runs at its first occurrence
  (``fold=0``); the repeated hour does not run it again.

With these rules :func:`instant` never decreases as the wall time grows, which is what lets
:func:`wall_bounds` turn an interval of instants into an interval of wall times exactly.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

UTC = dt.UTC


def instant(wall: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant at which the naive local ``wall`` time is executed (rules above)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    return _end_of_gap(wall, tz)


def wall(moment: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The naive local wall time showing at the aware instant ``moment``."""
    return moment.astimezone(tz).replace(tzinfo=None)


def wall_bounds(after: dt.datetime, until: dt.datetime, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """Naive wall times ``(lo, hi)`` such that every wall time executed in ``(after, until]`` is in ``[lo, hi]``.

    ``lo`` is the wall time at ``after``: an earlier wall time runs no later than it. ``hi`` is the wall
    time at ``until``, extended by the repeated hour when ``until`` is in its second pass: the first pass of
    the later wall times of that hour (which is when they run) is before ``until`` too.
    """
    local = until.astimezone(tz)
    hi = local.replace(tzinfo=None)
    if local.fold:
        first_offset, second_offset = local.replace(fold=0).utcoffset(), local.utcoffset()
        assert first_offset is not None and second_offset is not None  # a ZoneInfo always has an offset
        hi += first_offset - second_offset
    return wall(after, tz), hi


def _end_of_gap(wall_time: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    # In a gap, fold=1 maps with the offset after the transition (an instant before it) and fold=0 with the
    # one before (an instant after it); the transition is the first second with the later offset.
    low = int(wall_time.replace(tzinfo=tz, fold=1).timestamp())
    high = int(wall_time.replace(tzinfo=tz, fold=0).timestamp())
    later = dt.datetime.fromtimestamp(high, tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if dt.datetime.fromtimestamp(middle, tz).utcoffset() == later:
            high = middle
        else:
            low = middle
    return dt.datetime.fromtimestamp(high, UTC)
