"""Catch-up after downtime: the policies, expiry, the per-cycle limit and the cursor. A fixed ``now``, no clock."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hydrovisor.scheduler import Cursor, Occurrence, Selection, Skipped, occurrences, query_after, select_due
from hydrovisor.scheduler.occurrences import Kind
from hydrovisor.zones.settings import CatchUpPolicy, ZoneSettings, parse_settings

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
GRACE_S = 60
DAY = dt.timedelta(days=1)


def _at(minutes_ago: float) -> dt.datetime:
    return NOW - dt.timedelta(minutes=minutes_ago)


def _occ(kind: Kind, minutes_ago: float, valid: dt.timedelta = DAY) -> Occurrence:
    due = _at(minutes_ago)
    task_type = "solution_change" if kind == "water_change" else kind
    return Occurrence(kind=kind, task_type=task_type, due_at=due, expires_at=due + valid, payload={},
                      key=f"sched:z1:{kind}:{due.strftime('%Y-%m-%dT%H:%M:%S')}")


def _keys(items: list[Occurrence]) -> list[str]:
    return [item.key for item in items]


def _skips(selection: Selection) -> list[tuple[str, str]]:
    return [(skip.occurrence.key, skip.reason) for skip in selection.skipped]


@pytest.mark.parametrize("policy", ["skip", "replay_limited", "replay_all"])
def test_an_occurrence_within_the_grace_runs_under_every_policy(policy: CatchUpPolicy) -> None:
    current = _occ("irrigation", 1)  # exactly the grace: not missed
    selection = select_due([current], NOW, policy, GRACE_S, 20)
    assert selection == Selection(dispatch=[current], skipped=[], cursor=Cursor(due_at=current.due_at, key=current.key))


def test_skip_runs_only_what_is_within_the_grace() -> None:
    missed = [_occ("lighting", 120), _occ("irrigation", 1.5)]
    current = _occ("irrigation", 0.5)
    selection = select_due([current, *missed], NOW, "skip", GRACE_S, 20)
    assert _keys(selection.dispatch) == [current.key]
    assert _skips(selection) == [(missed[0].key, "catch_up_skipped"), (missed[1].key, "catch_up_skipped")]
    assert selection.cursor == Cursor(due_at=current.due_at, key=current.key)


def test_replay_limited_runs_the_last_three_missed_of_each_kind() -> None:
    lights = [_occ("lighting", minutes) for minutes in (300, 240, 180, 120, 60)]
    irrigations = [_occ("irrigation", minutes) for minutes in (250, 200, 150, 100, 50, 0)]
    selection = select_due([*lights, *irrigations], NOW, "replay_limited", GRACE_S, 20)
    # the current irrigation (due now) is not missed: it runs on top of the three replayed ones
    assert _keys(selection.dispatch) == _keys([lights[2], irrigations[2], lights[3], irrigations[3], lights[4],
                                               irrigations[4], irrigations[5]])
    assert _skips(selection) == [(item.key, "catch_up_skipped") for item in
                                 (lights[0], irrigations[0], lights[1], irrigations[1])]


def test_replay_all_runs_every_missed_occurrence() -> None:
    missed = [_occ("ventilation", minutes) for minutes in (500, 400, 300, 200, 100)]
    selection = select_due(missed, NOW, "replay_all", GRACE_S, 20)
    assert _keys(selection.dispatch) == _keys(missed)
    assert selection.skipped == []


@pytest.mark.parametrize("policy", ["skip", "replay_limited", "replay_all"])
def test_an_expired_occurrence_never_runs(policy: CatchUpPolicy) -> None:
    expired = _occ("irrigation", 30, valid=dt.timedelta(minutes=15))
    at_deadline = _occ("irrigation", 15, valid=dt.timedelta(minutes=15))  # expires exactly now
    still_valid = _occ("irrigation", 0.5, valid=dt.timedelta(minutes=15))
    selection = select_due([expired, at_deadline, still_valid], NOW, policy, GRACE_S, 20)
    assert _skips(selection) == [(expired.key, "expired"), (at_deadline.key, "expired")]
    assert _keys(selection.dispatch) == [still_valid.key]


def test_expired_occurrences_do_not_use_up_the_replayed_windows() -> None:
    expired = [_occ("irrigation", minutes, valid=dt.timedelta(minutes=5)) for minutes in (20, 15, 10)]
    valid = [_occ("irrigation", minutes) for minutes in (60, 50, 40, 30)]
    selection = select_due([*expired, *valid], NOW, "replay_limited", GRACE_S, 20)
    assert _keys(selection.dispatch) == _keys(valid[1:])
    assert _skips(selection) == [(valid[0].key, "catch_up_skipped")] + [(item.key, "expired") for item in expired]


def test_occurrences_not_due_yet_are_left_for_later() -> None:
    due = _occ("lighting", 0)
    future = Occurrence(kind="lighting", task_type="lighting", due_at=NOW + dt.timedelta(seconds=1),
                        expires_at=NOW + DAY, payload={}, key="sched:z1:lighting:future")
    selection = select_due([future, due], NOW, "replay_all", GRACE_S, 20)
    assert selection == Selection(dispatch=[due], skipped=[], cursor=Cursor(due_at=due.due_at, key=due.key))


def test_nothing_to_handle_keeps_the_cursor() -> None:
    cursor = Cursor(due_at=_at(10), key="sched:z1:irrigation:x")
    assert select_due([], NOW, "replay_all", GRACE_S, 20, cursor=cursor) == Selection(dispatch=[], skipped=[],
                                                                                        cursor=cursor)
    assert select_due([], NOW, "replay_all", GRACE_S, 20) == Selection(dispatch=[], skipped=[], cursor=None)


def test_the_limit_stops_the_cursor_and_the_next_calls_continue_without_loss_or_repeat() -> None:
    missed = [_occ("ventilation", minutes) for minutes in range(100, 0, -10)]  # 10 occurrences
    expired = [_occ("irrigation", minutes + 5, valid=dt.timedelta(minutes=1)) for minutes in range(100, 0, -10)]
    handled: list[str] = []
    dispatched_per_call: list[int] = []
    cursor: Cursor | None = None
    for _ in range(10):
        selection = select_due([*missed, *expired], NOW, "replay_all", GRACE_S, 4, cursor=cursor)
        if not selection.dispatch and not selection.skipped:
            break
        dispatched_per_call.append(len(selection.dispatch))
        handled += _keys(selection.dispatch) + [skip.occurrence.key for skip in selection.skipped]
        cursor = selection.cursor
    assert dispatched_per_call == [4, 4, 2]
    assert sorted(handled) == sorted(_keys([*missed, *expired]))  # nothing lost, nothing twice
    assert cursor == Cursor(due_at=missed[-1].due_at, key=missed[-1].key)


def test_the_cursor_can_stop_between_occurrences_due_at_the_same_instant() -> None:
    same = [Occurrence(kind=kind, task_type=kind, due_at=_at(0), expires_at=NOW + DAY, payload={},
                       key=f"sched:z1:{kind}:2026-06-01T12:00") for kind in ("ventilation", "irrigation", "lighting")]
    cursor: Cursor | None = None
    order: list[str] = []
    for _ in range(3):
        selection = select_due(same, NOW, "replay_all", GRACE_S, 1, cursor=cursor)
        order += _keys(selection.dispatch)
        cursor = selection.cursor
    assert order == ["sched:z1:irrigation:2026-06-01T12:00", "sched:z1:lighting:2026-06-01T12:00",
                     "sched:z1:ventilation:2026-06-01T12:00"]
    assert select_due(same, NOW, "replay_all", GRACE_S, 1, cursor=cursor).dispatch == []


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        select_due([], NOW, "replay_all", GRACE_S, 0)


def _zone(document: dict[str, Any]) -> ZoneSettings:
    parsed = parse_settings(document)
    assert isinstance(parsed, ZoneSettings), parsed
    return parsed


DOWNTIME_ZONE = _zone({
    "irrigation": {"enabled": True, "interval_minutes": 5},
    "lighting": {"enabled": True, "windows": [{"from": "06:00", "to": "07:00"}, {"from": "07:30", "to": "12:00"}]},
    # due with the 08:00 irrigation: a limit of 1 stops the cursor between the two
    "ventilation": {"enabled": True, "windows": [{"from": "08:00", "to": "09:00"}]},
})
UTC = ZoneInfo("UTC")


def _run_cycles(policy: CatchUpPolicy, limit: int, since: dt.datetime,
                now: dt.datetime) -> tuple[list[Selection], Cursor | None]:
    cursor: Cursor | None = None
    selections = []
    for _ in range(10):
        after = since if cursor is None else query_after(cursor)
        found = occurrences("z1", DOWNTIME_ZONE, UTC, after, now)
        selection = select_due(found, now, policy, GRACE_S, limit, cursor=cursor)
        if not selection.dispatch and not selection.skipped:
            break
        selections.append(selection)
        cursor = selection.cursor
    return selections, cursor


@pytest.mark.parametrize(("policy", "dispatched", "skipped_lighting"), [
    ("replay_limited", ["lighting:2026-06-01T07:30", "irrigation:2026-06-01T08:00", "ventilation:2026-06-01T08:00"],
     []),
    ("replay_all", ["lighting:2026-06-01T07:30", "irrigation:2026-06-01T08:00", "ventilation:2026-06-01T08:00"], []),
    ("skip", ["irrigation:2026-06-01T08:00", "ventilation:2026-06-01T08:00"],
     [("lighting:2026-06-01T07:30", "catch_up_skipped")]),
])
def test_three_hours_down_with_the_engine(policy: CatchUpPolicy, dispatched: list[str],
                                           skipped_lighting: list[tuple[str, str]]) -> None:
    since = dt.datetime(2026, 6, 1, 5, 0, tzinfo=dt.UTC)
    now = dt.datetime(2026, 6, 1, 8, 0, 30, tzinfo=dt.UTC)
    selections, cursor = _run_cycles(policy, 1, since, now)
    dispatch = [item.key.removeprefix("sched:z1:") for selection in selections for item in selection.dispatch]
    skips = [(skip.occurrence.key.removeprefix("sched:z1:"), skip.reason) for selection in selections
             for skip in selection.skipped]
    assert dispatch == dispatched
    assert [skip for skip in skips if skip[0].startswith("lighting")] == [
        ("lighting:2026-06-01T06:00", "expired"), ("lighting:2026-06-01T07:00", "expired"), *skipped_lighting]
    # every irrigation but the current one expired 5 minutes after it was due (the next one superseded it)
    assert [key for key, reason in skips if key.startswith("irrigation")] == [
        f"irrigation:{since + dt.timedelta(minutes=5 * k):%Y-%m-%dT%H:%M}" for k in range(1, 36)]
    assert {reason for key, reason in skips if key.startswith("irrigation")} == {"expired"}
    assert all(len(selection.dispatch) <= 1 for selection in selections)
    assert cursor is not None and cursor.key == "sched:z1:ventilation:2026-06-01T08:00"


def test_a_skipped_record_says_why() -> None:
    item = _occ("water_change", 600)
    assert select_due([item], NOW, "skip", GRACE_S, 20).skipped == [Skipped(occurrence=item, reason="catch_up_skipped")]
