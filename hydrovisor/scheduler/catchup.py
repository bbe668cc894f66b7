"""Which due occurrences run now, after downtime or not (DOMAIN §5 catch-up): pure, ``now`` is a parameter.

An occurrence due more than ``grace_s`` ago was *missed* (the scheduler was down or behind). The zone's
``scheduler.catch_up`` policy decides what happens to the missed ones:

- ``skip``: none runs; only occurrences within the grace do.
- ``replay_limited``: the last :data:`REPLAY_LIMITED_WINDOWS` missed occurrences of each kind run, the
  older ones are skipped.
- ``replay_all``: every missed occurrence runs.

Whatever the policy, an occurrence at or past its ``expires_at`` never runs (``expired``): the task would
be refused anyway (DOMAIN §5). A skipped occurrence is recorded with its reason, never silently dropped.

Occurrences are handled in one total order, ``(due_at, key)``, and the :class:`Cursor` is the last one
handled. At most ``limit`` are dispatched per call; the cursor then stops at the last one handled and the
next call continues right after it, even between two occurrences due at the same instant: nothing is lost,
nothing is handled twice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from typing import Literal

import msgspec

from hydrovisor.scheduler.occurrences import Kind, Occurrence
from hydrovisor.zones.settings import CatchUpPolicy

Policy = CatchUpPolicy
SkipReason = Literal["catch_up_skipped", "expired"]

REPLAY_LIMITED_WINDOWS = 3

_BEFORE_CURSOR = dt.timedelta(microseconds=1)


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    """The last occurrence handled (dispatched or skipped): where the next call starts."""

    due_at: dt.datetime
    key: str


class Skipped(msgspec.Struct, frozen=True, kw_only=True):
    """An occurrence that will not run, and why."""

    occurrence: Occurrence
    reason: SkipReason


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """One call's decisions, in handling order, and the cursor to persist (None: nothing handled yet)."""

    dispatch: list[Occurrence]
    skipped: list[Skipped]
    cursor: Cursor | None


def query_after(cursor: Cursor) -> dt.datetime:
    """The ``after`` to give :func:`~hydrovisor.scheduler.occurrences.occurrences` for the call after
    ``cursor``: just before its instant, because occurrences due at that same instant but after it in key
    order are not handled yet (:func:`select_due` drops the ones up to the cursor)."""
    return cursor.due_at - _BEFORE_CURSOR


def select_due(occurrences: Iterable[Occurrence], now: dt.datetime, policy: Policy, grace_s: float, limit: int,
               *, cursor: Cursor | None = None) -> Selection:
    """What to dispatch now among ``occurrences`` (missed and current), what to skip, and the new cursor.

    Occurrences up to ``cursor`` were handled before and are ignored; those due after ``now`` are not due
    yet and are left for a later call. At most ``limit`` (>= 1) are dispatched; skipping does not count.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    grace = dt.timedelta(seconds=grace_s)
    pending = sorted((item for item in occurrences
                      if item.due_at <= now and (cursor is None or _order(item) > (cursor.due_at, cursor.key))),
                     key=_order)
    replayed = _replayed(pending, now, grace, policy)
    dispatch: list[Occurrence] = []
    skipped: list[Skipped] = []
    for item in pending:
        if len(dispatch) == limit:
            break
        if now >= item.expires_at:
            skipped.append(Skipped(occurrence=item, reason="expired"))
        elif now - item.due_at <= grace or item.key in replayed:
            dispatch.append(item)
        else:
            skipped.append(Skipped(occurrence=item, reason="catch_up_skipped"))
        cursor = Cursor(due_at=item.due_at, key=item.key)
    return Selection(dispatch=dispatch, skipped=skipped, cursor=cursor)


def _replayed(pending: list[Occurrence], now: dt.datetime, grace: dt.timedelta, policy: Policy) -> set[str]:
    """Keys of the missed, unexpired occurrences the policy runs."""
    missed: dict[Kind, list[Occurrence]] = defaultdict(list)
    for item in pending:
        if now - item.due_at > grace and now < item.expires_at:
            missed[item.kind].append(item)
    if policy == "skip":
        return set()
    if policy == "replay_limited":  # the newest ones: the state they leave is the one that holds now
        missed = defaultdict(list, {kind: items[-REPLAY_LIMITED_WINDOWS:] for kind, items in missed.items()})
    return {item.key for items in missed.values() for item in items}


def _order(item: Occurrence) -> tuple[dt.datetime, str]:
    return item.due_at, item.key
