"""One zone's planning step (``plan_zone``), pure: a fixed ``now``, no clock, no database.

Ahead-of-time requests keep their own due time; past occurrences are requested late (``scheduled_for`` = the
occurrence, ``due_at`` = now, so the task contract accepts them); the catch-up policy decides after a gap; the
per-step dispatch limit cuts the past short and the next step continues; water changes are never planned; a
new zone does not replay its past; correlation ids are the occurrences' keys, whatever the steps.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hydrovisor.scheduler import occurrences
from hydrovisor.scheduler.planner import UNPLANNED_KINDS, ZonePlan, plan_zone
from hydrovisor.tasks.contract import TaskRequest, TaskStatus, TaskType, check_request, initial_status
from hydrovisor.zones.settings import CatchUpPolicy, ZoneSettings, parse_settings

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
ZONE = "zn-plan-1"
NOW = dt.datetime(2026, 6, 1, 12, 0, 10, tzinfo=dt.UTC)
TODAY = NOW.date()
MINUTE = dt.timedelta(minutes=1)
LOOKAHEAD = dt.timedelta(seconds=60)
GRACE = dt.timedelta(seconds=60)
JUST_BEFORE = dt.timedelta(microseconds=1)


def _settings(document: dict[str, Any]) -> ZoneSettings:
    parsed = parse_settings(document)
    assert isinstance(parsed, ZoneSettings), parsed
    return parsed


def _at(hhmm: str, day: dt.date = TODAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), dt.UTC)


def _key(kind: str, hhmm: str, day: dt.date = TODAY) -> str:
    return f"sched:{ZONE}:{kind}:{day.isoformat()}T{hhmm}"


def _plan(settings: ZoneSettings, cursor: dt.datetime | None, now: dt.datetime = NOW, *,
          lookahead: dt.timedelta = LOOKAHEAD, grace: dt.timedelta = GRACE, tz: ZoneInfo = UTC,
          cursor_key: str | None = None) -> ZonePlan:
    return plan_zone(ZONE, settings, tz, cursor, now, lookahead=lookahead, grace=grace, cursor_key=cursor_key)


def _ids(plan: ZonePlan) -> list[str]:
    return [request.correlation_id for request in plan.requests]


def _skips(plan: ZonePlan) -> list[tuple[str, str]]:
    return [(skip.occurrence.key, skip.reason) for skip in plan.skipped]


# ahead of time -------------------------------------------------------------------------------------------


def test_future_occurrences_are_requested_ahead_with_their_own_due_time() -> None:
    settings = _settings({"irrigation": {"enabled": True, "interval_minutes": 10, "duration_s": 30}})
    plan = _plan(settings, cursor=NOW, lookahead=dt.timedelta(minutes=30))
    assert plan.requests == [
        TaskRequest(zone_uid=ZONE, task_type=TaskType.IRRIGATION, payload={"duration_s": 30}, due_at=_at(due),
                    expires_at=_at(due) + dt.timedelta(minutes=10), correlation_id=_key("irrigation", due))
        for due in ("12:10", "12:20", "12:30")]
    assert all(request.scheduled_for is None for request in plan.requests)
    assert plan.skipped == []
    assert plan.cursor == NOW + dt.timedelta(minutes=30)  # the horizon: everything up to it is requested
    assert plan.caught_up is True
    # requested before their due time, they are accepted by the task contract (not rejected)
    assert {initial_status(check_request(request), NOW)[0] for request in plan.requests} == {TaskStatus.ACCEPTED}


def test_lighting_changes_are_requested_ahead_with_the_state_as_payload() -> None:
    settings = _settings({"lighting": {"enabled": True, "windows": [{"from": "12:01", "to": "12:02"}]}})
    plan = _plan(settings, cursor=NOW, lookahead=dt.timedelta(minutes=5))
    assert [(r.correlation_id, r.due_at, r.expires_at, r.payload) for r in plan.requests] == [
        (_key("lighting", "12:01"), _at("12:01"), _at("12:02"), {"state": "on", "mode": "relay"}),
        (_key("lighting", "12:02"), _at("12:02"), _at("12:01", NOW.date() + dt.timedelta(days=1)),
         {"state": "off", "mode": "relay"}),
    ]


def test_the_due_time_is_an_instant_and_the_key_the_local_wall_time() -> None:
    settings = _settings({"irrigation": {"enabled": True, "interval_minutes": None, "times": ["14:05"]}})
    plan = _plan(settings, cursor=NOW, lookahead=dt.timedelta(hours=1), tz=BERLIN)  # CEST: UTC+2
    assert [(r.due_at, r.correlation_id) for r in plan.requests] == [(_at("12:05"), _key("irrigation", "14:05"))]


# late: due by now -------------------------------------------------------------------------------------------


def test_a_past_occurrence_is_requested_late_with_due_at_now() -> None:
    settings = _settings({"irrigation": {"enabled": True, "interval_minutes": None, "times": ["12:00", "12:30"],
                                         "duration_s": 45}})
    plan = _plan(settings, cursor=NOW - dt.timedelta(minutes=2))  # the 12:00 run was not planned ahead
    [late] = plan.requests
    assert late == TaskRequest(zone_uid=ZONE, task_type=TaskType.IRRIGATION, payload={"duration_s": 45},
                               scheduled_for=_at("12:00"), due_at=NOW, expires_at=_at("12:15"),
                               correlation_id=_key("irrigation", "12:00"))
    # received at its due_at: accepted, not rejected as "received after due"
    assert initial_status(check_request(late), NOW) == (TaskStatus.ACCEPTED, None)
    assert plan.cursor == NOW + LOOKAHEAD and plan.caught_up is True


def test_an_occurrence_due_exactly_now_is_requested_late() -> None:
    settings = _settings({"irrigation": {"enabled": True, "interval_minutes": None, "times": ["12:00"]}})
    now = _at("12:00")
    [request] = _plan(settings, cursor=now - dt.timedelta(seconds=30), now=now).requests
    assert (request.scheduled_for, request.due_at) == (now, now)


# catch-up after a long gap -------------------------------------------------------------------------------------

GAP_SETTINGS: dict[str, Any] = {
    # every hour on the hour, each valid until the next one or 15 min: only the 12:00 run is still valid
    "irrigation": {"enabled": True, "interval_minutes": 60},
    # on at 06:00 and valid until 22:00: missed, and still valid
    "lighting": {"enabled": True, "windows": [{"from": "06:00", "to": "22:00"}]},
    # 05:00 on and 06:00 off are superseded (expired); the 07:00 on is missed and still valid
    "ventilation": {"enabled": True, "windows": [{"from": "05:00", "to": "06:00"}, {"from": "07:00", "to": "20:00"}]},
}
GAP_CURSOR = _at("04:30")  # the scheduler was down from 04:30 to 12:00:10
GAP_NOW = _at("12:00") + dt.timedelta(seconds=10)


@pytest.mark.parametrize("policy", ["skip", "replay_limited", "replay_all"])
def test_catch_up_after_a_long_gap_follows_the_zone_policy(policy: CatchUpPolicy) -> None:
    settings = _settings({**GAP_SETTINGS, "scheduler": {"catch_up": policy}})
    plan = _plan(settings, cursor=GAP_CURSOR, now=GAP_NOW, lookahead=dt.timedelta(hours=1))
    missed_and_valid = [_key("lighting", "06:00"), _key("ventilation", "07:00")]
    within_grace = _key("irrigation", "12:00")
    ahead = _key("irrigation", "13:00")
    if policy == "skip":
        assert _ids(plan) == [within_grace, ahead]
    else:  # one occurrence of each kind is still valid: replay_limited (3 per kind) and replay_all agree
        assert _ids(plan) == [*missed_and_valid, within_grace, ahead]
    late = [request for request in plan.requests if request.scheduled_for is not None]
    assert all(request.due_at == GAP_NOW for request in late)
    assert plan.requests[-1].due_at == _at("13:00") and plan.requests[-1].scheduled_for is None
    skipped = dict(_skips(plan))
    expected_expired = {_key("irrigation", f"{hour:02d}:00") for hour in range(5, 12)} | {
        _key("ventilation", "05:00"), _key("ventilation", "06:00")}
    assert {key for key, reason in skipped.items() if reason == "expired"} == expected_expired
    assert {key for key, reason in skipped.items() if reason == "catch_up_skipped"} == (
        set(missed_and_valid) if policy == "skip" else set())
    # nothing in the gap is silently dropped: each past occurrence is requested or skipped, once
    past = [item.key for item in occurrences(ZONE, settings, UTC, GAP_CURSOR, GAP_NOW)]
    handled = [key for key in _ids(plan) if key != ahead] + list(skipped)
    assert sorted(handled) == sorted(past) and len(set(handled)) == len(handled)
    assert plan.cursor == GAP_NOW + dt.timedelta(hours=1) and plan.caught_up is True


# the per-step dispatch limit ------------------------------------------------------------------------------------

# three missed, still valid occurrences at three instants (irrigation 11:50, lights on 11:55, fan on 11:58) and
# an irrigation ahead at 12:01; the scheduler was down since 11:40
LIMIT_SETTINGS: dict[str, Any] = {
    "irrigation": {"enabled": True, "interval_minutes": None, "times": ["11:50", "12:01"]},
    "lighting": {"enabled": True, "windows": [{"from": "11:55", "to": "13:00"}]},
    "ventilation": {"enabled": True, "windows": [{"from": "11:58", "to": "13:00"}]},
    "scheduler": {"catch_up": "replay_all", "max_dispatch_per_cycle": 2},
}
LIMIT_CURSOR = _at("11:40")


def test_the_limit_stops_the_cursor_at_the_last_handled_occurrence() -> None:
    plan = _plan(_settings(LIMIT_SETTINGS), cursor=LIMIT_CURSOR)
    assert _ids(plan) == [_key("irrigation", "11:50"), _key("lighting", "11:55")]
    assert (plan.cursor, plan.cursor_key) == (_at("11:55"), _key("lighting", "11:55"))
    assert plan.stored_cursor == _at("11:55") - JUST_BEFORE  # stored: an instant only, just before the cut one
    assert plan.caught_up is False
    assert all(request.scheduled_for is not None for request in plan.requests)  # nothing ahead yet


def test_the_next_step_continues_where_the_limit_stopped_without_loss() -> None:
    settings = _settings(LIMIT_SETTINGS)
    first = _plan(settings, cursor=LIMIT_CURSOR)
    second = _plan(settings, cursor=first.cursor, cursor_key=first.cursor_key, now=NOW + dt.timedelta(seconds=1))
    # right after the last handled occurrence: the rest and what is ahead
    assert _ids(second) == [_key("ventilation", "11:58"), _key("irrigation", "12:01")]
    assert second.caught_up is True and second.cursor == NOW + dt.timedelta(seconds=1) + LOOKAHEAD
    assert set(_ids(first)) | set(_ids(second)) == {
        item.key for item in occurrences(ZONE, settings, UTC, LIMIT_CURSOR, second.cursor)}


def test_skipped_occurrences_do_not_count_against_the_limit() -> None:
    settings = _settings({**LIMIT_SETTINGS, "irrigation": {"enabled": True, "interval_minutes": 1,
                                                           "window": {"from": "11:41", "to": "11:51"}},
                          "scheduler": {"catch_up": "replay_all", "max_dispatch_per_cycle": 2}})
    plan = _plan(settings, cursor=LIMIT_CURSOR)
    # 11:41..11:49 are superseded by the next run (expired); 11:50 is valid until 12:05: dispatched
    assert [key for key, reason in _skips(plan)] == [_key("irrigation", f"11:{m}") for m in range(41, 50)]
    assert {reason for _, reason in _skips(plan)} == {"expired"}
    assert _ids(plan) == [_key("irrigation", "11:50"), _key("lighting", "11:55")]


def test_a_limit_of_one_still_makes_progress() -> None:
    settings = _settings({**LIMIT_SETTINGS, "scheduler": {"catch_up": "replay_all", "max_dispatch_per_cycle": 1}})
    first = _plan(settings, cursor=LIMIT_CURSOR)
    assert _ids(first) == [_key("irrigation", "11:50")] and first.caught_up is False
    second = _plan(settings, cursor=first.cursor, cursor_key=first.cursor_key, now=NOW + dt.timedelta(seconds=1))
    assert _ids(second) == [_key("lighting", "11:55")]


def test_a_restarted_planner_from_the_stored_cursor_requests_the_cut_instant_again_and_loses_nothing() -> None:
    settings = _settings(LIMIT_SETTINGS)
    first = _plan(settings, cursor=LIMIT_CURSOR)
    again = _plan(settings, cursor=first.stored_cursor, now=NOW + dt.timedelta(seconds=1))
    # the handled 11:55 is requested again (its key names the task already made), nothing is skipped over
    assert _ids(again) == [_key("lighting", "11:55"), _key("ventilation", "11:58"), _key("irrigation", "12:01")]


# never planned ---------------------------------------------------------------------------------------------------


def test_water_changes_are_never_planned() -> None:
    assert "water_change" in UNPLANNED_KINDS
    settings = _settings({"water_cycle": {"water_change": {"enabled": True, "interval_days": 1,
                                                           "time_of_day": "12:00"}},
                          "scheduler": {"catch_up": "replay_all"}})
    # the engine lists it, due now, ahead, and missed: the planner requests none of them and skips none
    assert [item.kind for item in occurrences(ZONE, settings, UTC, NOW - dt.timedelta(days=3),
                                              NOW + dt.timedelta(days=2))] == ["water_change"] * 5
    for cursor in (NOW - dt.timedelta(days=3), NOW - dt.timedelta(seconds=30), None):
        plan = _plan(settings, cursor=cursor, lookahead=dt.timedelta(days=2))
        assert plan.requests == [] and plan.skipped == [] and plan.caught_up is True


def test_a_new_zone_does_not_replay_its_past() -> None:
    settings = _settings({"lighting": {"enabled": True, "windows": [{"from": "06:00", "to": "22:00"}]},
                          "irrigation": {"enabled": True, "interval_minutes": None, "times": ["11:30", "12:00"]},
                          "scheduler": {"catch_up": "replay_all"}})
    plan = _plan(settings, cursor=None)
    # the lights' 06:00 "on" (still valid) and the 11:30 run are before the grace: neither run nor skipped
    assert _ids(plan) == [_key("irrigation", "12:00")]  # within the grace: requested late
    assert plan.skipped == []
    assert plan.cursor == NOW + LOOKAHEAD and plan.caught_up is True


# idempotency -------------------------------------------------------------------------------------------------------


def test_correlation_ids_are_the_occurrence_keys_and_stable_across_steps() -> None:
    settings = _settings({"irrigation": {"enabled": True, "interval_minutes": 1},
                          "lighting": {"enabled": True, "windows": [{"from": "12:02", "to": "12:04"}]}})
    start = NOW
    # one step over 10 minutes ...
    whole = _plan(settings, cursor=start, now=start, lookahead=dt.timedelta(minutes=10))
    # ... or many steps of 60 s lookahead, each started at the previous cursor minus half the lookahead
    steps: list[TaskRequest] = []
    cursor: dt.datetime = start
    now = start
    while cursor < whole.cursor:
        plan = _plan(settings, cursor=cursor, now=now, lookahead=min(LOOKAHEAD, whole.cursor - now))
        steps += plan.requests
        cursor, now = plan.cursor, plan.cursor - LOOKAHEAD / 2
    expected = {item.key: item for item in occurrences(ZONE, settings, UTC, start, whole.cursor)}
    assert _ids(whole) == list(expected)
    assert [request.correlation_id for request in steps] == list(expected)  # each once, none lost
    for request in [*whole.requests, *steps]:
        item = expected[request.correlation_id]
        assert (request.due_at, request.expires_at, request.payload) == (item.due_at, item.expires_at, item.payload)
    assert steps == whole.requests  # the same requests, hence the same fingerprints: enqueued twice = one task


def test_a_repeated_step_requests_the_same_tasks() -> None:
    """A step repeated after a crash (the cursor was not stored) names the same tasks."""
    settings = _settings(GAP_SETTINGS)
    once = _plan(settings, cursor=GAP_CURSOR, now=GAP_NOW, lookahead=dt.timedelta(hours=1))
    again = _plan(settings, cursor=GAP_CURSOR, now=GAP_NOW, lookahead=dt.timedelta(hours=1))
    assert once == again
    # later, the late ones are requested with another due_at (a different fingerprint: the store keeps the
    # first task under that id, see SchedulerPlane.plan); the correlation ids do not change
    later = _plan(settings, cursor=GAP_CURSOR, now=GAP_NOW + dt.timedelta(seconds=5), lookahead=dt.timedelta(hours=1))
    assert _ids(later) == _ids(once)
