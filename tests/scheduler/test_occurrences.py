"""The schedule engine: what is due when, in wall-clock time across DST, exactly once whatever the intervals."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hydrovisor.scheduler import Occurrence, occurrences
from hydrovisor.zones.settings import ZoneSettings, parse_settings

BERLIN = ZoneInfo("Europe/Berlin")
UTC = ZoneInfo("UTC")
SPRING_FORWARD = dt.date(2026, 3, 29)  # Berlin: 02:00 CET -> 03:00 CEST (01:00 UTC)
FALL_BACK = dt.date(2026, 10, 25)  # Berlin: 03:00 CEST -> 02:00 CET (01:00 UTC)
_TICK = dt.timedelta(microseconds=1)


def _settings(document: dict[str, Any]) -> ZoneSettings:
    parsed = parse_settings(document)
    assert isinstance(parsed, ZoneSettings), parsed
    return parsed


def _irrigation(**fields: Any) -> ZoneSettings:
    return _settings({"irrigation": {"enabled": True, "interval_minutes": None, **fields}})


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


def _day(zone: ZoneSettings, tz: ZoneInfo, day: dt.date, uid: str = "z1") -> list[Occurrence]:
    """Everything due in the local day ``day`` of ``tz``: from its 00:00 included to the next one excluded."""
    start = dt.datetime.combine(day, dt.time(), tz).astimezone(dt.UTC) - _TICK
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC) - _TICK
    return occurrences(uid, zone, tz, start, end)


def _wall(item: Occurrence) -> str:
    return item.key.split(":", 3)[3]


# ---------------------------------------------------------------------------------------------- irrigation

def test_irrigation_times_run_at_their_wall_time_with_the_duration() -> None:
    zone = _irrigation(times=["18:30", "06:00"], duration_s=90)
    found = _day(zone, UTC, dt.date(2026, 6, 1), uid="zone-a")
    assert found == [
        Occurrence(kind="irrigation", task_type="irrigation", due_at=_utc("2026-06-01T06:00"),
                   expires_at=_utc("2026-06-01T06:15"), payload={"duration_s": 90},
                   key="sched:zone-a:irrigation:2026-06-01T06:00"),
        Occurrence(kind="irrigation", task_type="irrigation", due_at=_utc("2026-06-01T18:30"),
                   expires_at=_utc("2026-06-01T18:45"), payload={"duration_s": 90},
                   key="sched:zone-a:irrigation:2026-06-01T18:30"),
    ]


def test_an_interval_steps_from_the_window_start_across_midnight() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": 45,
                                     "window": {"from": "22:00", "to": "02:00"}}})
    found = _day(zone, UTC, dt.date(2026, 6, 1))
    # 22:00 + k x 45 min while before 02:00: the early ones belong to the window opened the evening before
    assert [_wall(item) for item in found] == ["2026-06-01T00:15", "2026-06-01T01:00", "2026-06-01T01:45",
                                               "2026-06-01T22:00", "2026-06-01T22:45", "2026-06-01T23:30"]
    assert [item.due_at for item in found] == [_utc(f"2026-06-01T{hhmm}") for hhmm in
                                               ["00:15", "01:00", "01:45", "22:00", "22:45", "23:30"]]
    assert {item.expires_at - item.due_at for item in found} == {dt.timedelta(minutes=15)}


def test_without_a_window_the_interval_restarts_every_midnight() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": 7}})
    found = _day(zone, UTC, dt.date(2026, 6, 1))
    assert len(found) == 206  # 0, 7, ..., 1435 minutes
    assert found[1].due_at == _utc("2026-06-01T00:07")
    assert (_wall(found[0]), _wall(found[-1])) == ("2026-06-01T00:00", "2026-06-01T23:55")
    # valid until the next run: 7 minutes, and 5 for the last one (the grid restarts at midnight)
    assert found[0].expires_at == _utc("2026-06-01T00:07")
    assert found[-1].expires_at == _utc("2026-06-02T00:00")


def test_a_time_on_the_interval_grid_runs_once() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": 30, "times": ["06:30", "06:40"],
                                     "window": {"from": "06:00", "to": "07:00"}}})
    found = _day(zone, UTC, dt.date(2026, 6, 1))
    assert [(_wall(item)[-5:], item.expires_at.strftime("%H:%M")) for item in found] == [
        ("06:00", "06:15"), ("06:30", "06:40"), ("06:40", "06:55")]


def test_disabled_irrigation_has_no_occurrence() -> None:
    zone = _settings({"irrigation": {"enabled": False, "times": ["06:00"]}})
    assert _day(zone, UTC, dt.date(2026, 6, 1)) == []


# ----------------------------------------------------------------------------------- lighting, ventilation

def test_lighting_turns_on_and_off_each_window_and_each_change_holds_until_the_next() -> None:
    zone = _settings({"lighting": {"enabled": True, "mode": "pwm", "pwm_level": 70,
                                   "windows": [{"from": "18:00", "to": "02:00"}, {"from": "06:00", "to": "12:00"}]}})
    found = _day(zone, UTC, dt.date(2026, 6, 1), uid="zone-a")
    on = {"state": "on", "mode": "pwm", "pwm_level": 70}
    off = {"state": "off", "mode": "pwm"}
    assert [(_wall(item)[-5:], item.payload, item.expires_at.strftime("%dT%H:%M")) for item in found] == [
        ("02:00", off, "01T06:00"),  # the window opened the evening before ends
        ("06:00", on, "01T12:00"),
        ("12:00", off, "01T18:00"),
        ("18:00", on, "02T02:00"),
    ]
    assert {(item.kind, item.task_type) for item in found} == {("lighting", "lighting")}
    assert found[0].key == "sched:zone-a:lighting:2026-06-01T02:00"


def test_relay_lighting_carries_no_level() -> None:
    zone = _settings({"lighting": {"enabled": True, "windows": [{"from": "06:00", "to": "12:00"}]}})
    assert [item.payload for item in _day(zone, UTC, dt.date(2026, 6, 1))] == [
        {"state": "on", "mode": "relay"}, {"state": "off", "mode": "relay"}]


def test_touching_windows_never_switch_off_in_between() -> None:
    zone = _settings({"lighting": {"enabled": True,
                                   "windows": [{"from": "06:00", "to": "12:00"}, {"from": "12:00", "to": "20:00"}]}})
    found = _day(zone, UTC, dt.date(2026, 6, 1))
    assert [(_wall(item)[-5:], item.payload["state"], item.expires_at.strftime("%H:%M")) for item in found] == [
        ("06:00", "on", "12:00"), ("12:00", "on", "20:00"), ("20:00", "off", "06:00")]


def test_ventilation_switches_by_window() -> None:
    zone = _settings({"ventilation": {"enabled": True, "windows": [{"from": "23:00", "to": "01:30"}]}})
    found = _day(zone, UTC, dt.date(2026, 6, 1))
    assert [(item.kind, item.task_type, _wall(item), item.payload, item.expires_at) for item in found] == [
        ("ventilation", "ventilation", "2026-06-01T01:30", {"state": "off"}, _utc("2026-06-01T23:00")),
        ("ventilation", "ventilation", "2026-06-01T23:00", {"state": "on"}, _utc("2026-06-02T01:30")),
    ]


def test_disabled_lighting_has_no_occurrence() -> None:
    zone = _settings({"lighting": {"enabled": False, "windows": [{"from": "06:00", "to": "12:00"}]}})
    assert _day(zone, UTC, dt.date(2026, 6, 1)) == []


# -------------------------------------------------------------------------------------------- water change

def test_water_changes_come_every_interval_days_from_the_fixed_epoch() -> None:
    zone = _settings({"water_cycle": {"water_change": {"enabled": True, "interval_days": 3, "time_of_day": "04:15"}}})
    found = occurrences("z1", zone, UTC, _utc("2026-05-31T00:00"), _utc("2026-06-11T00:00"))
    # 2026-06-01 is 9648 days after 2000-01-01, a multiple of 3
    assert [(item.kind, item.task_type, item.due_at, item.expires_at, item.payload, item.key) for item in found] == [
        ("water_change", "solution_change", _utc(f"2026-06-{day:02d}T04:15"), _utc(f"2026-06-{day:02d}T05:15"), {},
         f"sched:z1:water_change:2026-06-{day:02d}T04:15") for day in (1, 4, 7, 10)]


def test_disabled_water_change_has_no_occurrence() -> None:
    zone = _settings({"water_cycle": {"water_change": {"enabled": False, "interval_days": 1}}})
    assert _day(zone, UTC, dt.date(2026, 6, 1)) == []


# ------------------------------------------------------------------------------------------------- DST

def test_spring_forward_a_missing_wall_time_runs_once_at_the_end_of_the_gap() -> None:
    zone = _irrigation(times=["02:30"])
    days = [SPRING_FORWARD - dt.timedelta(days=1), SPRING_FORWARD, SPRING_FORWARD + dt.timedelta(days=1)]
    assert [(_wall(item), item.due_at) for day in days for item in _day(zone, BERLIN, day)] == [
        ("2026-03-28T02:30", _utc("2026-03-28T01:30")),  # CET
        ("2026-03-29T02:30", _utc("2026-03-29T01:00")),  # does not exist: 03:00 CEST
        ("2026-03-30T02:30", _utc("2026-03-30T00:30")),  # CEST
    ]


def test_spring_forward_wall_times_sharing_the_gap_run_once_named_by_the_earliest() -> None:
    zone = _irrigation(times=["03:00", "02:00", "02:30", "01:59"])
    found = _day(zone, BERLIN, SPRING_FORWARD)
    assert [(_wall(item), item.due_at, item.expires_at) for item in found] == [
        ("2026-03-29T01:59", _utc("2026-03-29T00:59"), _utc("2026-03-29T01:00")),
        ("2026-03-29T02:00", _utc("2026-03-29T01:00"), _utc("2026-03-29T01:15")),
    ]


def test_spring_forward_an_interval_keeps_its_wall_clock_grid() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": 30,
                                     "window": {"from": "01:00", "to": "04:00"}}})
    found = _day(zone, BERLIN, SPRING_FORWARD)
    assert [(_wall(item)[-5:], item.due_at.strftime("%H:%M"), item.expires_at.strftime("%H:%M")) for item in found] == [
        ("01:00", "00:00", "00:15"), ("01:30", "00:30", "00:45"),
        ("02:00", "01:00", "01:15"),  # 02:00, 02:30 and 03:00 are all 03:00 CEST: one run
        ("03:30", "01:30", "01:45"),
    ]


def test_fall_back_a_repeated_wall_time_runs_once_at_its_first_pass() -> None:
    zone = _irrigation(times=["02:30"])
    assert [(_wall(item), item.due_at) for item in _day(zone, BERLIN, FALL_BACK)] == [
        ("2026-10-25T02:30", _utc("2026-10-25T00:30"))]  # CEST, not the CET repetition at 01:30 UTC


def test_fall_back_an_interval_keeps_its_wall_clock_grid() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": 30,
                                     "window": {"from": "01:00", "to": "04:00"}}})
    found = _day(zone, BERLIN, FALL_BACK)
    assert [(_wall(item)[-5:], item.due_at.strftime("%dT%H:%M")) for item in found] == [
        ("01:00", "24T23:00"), ("01:30", "24T23:30"), ("02:00", "25T00:00"), ("02:30", "25T00:30"),
        ("03:00", "25T02:00"), ("03:30", "25T02:30"),  # 1.5 h of real time between 02:30 and 03:00
    ]


def test_lighting_across_both_transitions() -> None:
    zone = _settings({"lighting": {"enabled": True, "windows": [{"from": "02:10", "to": "02:50"}]}})
    # spring: the whole window lies in the gap, it does not exist that day (the off of the day before stays)
    before = _day(zone, BERLIN, SPRING_FORWARD - dt.timedelta(days=1))
    assert [(_wall(item)[-5:], item.due_at) for item in before] == [
        ("02:10", _utc("2026-03-28T01:10")), ("02:50", _utc("2026-03-28T01:50"))]
    assert before[-1].expires_at == _utc("2026-03-30T00:10")  # the next "on" is two days later, in CEST
    assert _day(zone, BERLIN, SPRING_FORWARD) == []
    # fall: once, in the first pass
    assert [(_wall(item)[-5:], item.payload["state"], item.due_at) for item in _day(zone, BERLIN, FALL_BACK)] == [
        ("02:10", "on", _utc("2026-10-25T00:10")), ("02:50", "off", _utc("2026-10-25T00:50"))]


def test_a_window_ending_in_the_gap_switches_off_at_its_end() -> None:
    zone = _settings({"ventilation": {"enabled": True, "windows": [{"from": "01:00", "to": "02:30"}]}})
    assert [(item.payload["state"], item.due_at) for item in _day(zone, BERLIN, SPRING_FORWARD)] == [
        ("on", _utc("2026-03-29T00:00")), ("off", _utc("2026-03-29T01:00"))]


def test_water_change_on_the_spring_forward_day_runs_once() -> None:
    zone = _settings({"water_cycle": {"water_change": {"enabled": True, "interval_days": 1, "time_of_day": "02:30"}}})
    found = occurrences("z1", zone, BERLIN, _utc("2026-03-27T23:00"), _utc("2026-03-30T22:00"))
    assert [(_wall(item), item.due_at, item.expires_at) for item in found] == [
        ("2026-03-28T02:30", _utc("2026-03-28T01:30"), _utc("2026-03-28T02:30")),
        ("2026-03-29T02:30", _utc("2026-03-29T01:00"), _utc("2026-03-29T02:00")),
        ("2026-03-30T02:30", _utc("2026-03-30T00:30"), _utc("2026-03-30T01:30")),
    ]


def test_a_zone_without_dst_keeps_the_wall_time_on_both_days() -> None:
    zone = _irrigation(times=["02:30"])
    assert [item.due_at for day in (SPRING_FORWARD, FALL_BACK) for item in _day(zone, UTC, day)] == [
        _utc("2026-03-29T02:30"), _utc("2026-10-25T02:30")]


# ----------------------------------------------------------------------------- interval, order, identity

def test_the_interval_is_half_open_and_sorted_by_due_time_then_key() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": None, "times": ["06:00", "07:00"]},
                      "lighting": {"enabled": True, "windows": [{"from": "06:00", "to": "07:00"}]}})
    found = occurrences("z1", zone, UTC, _utc("2026-06-01T06:00"), _utc("2026-06-01T07:00"))
    assert [item.key for item in found] == ["sched:z1:irrigation:2026-06-01T07:00",
                                            "sched:z1:lighting:2026-06-01T07:00"]
    found = occurrences("z1", zone, UTC, _utc("2026-06-01T05:59"), _utc("2026-06-01T06:00"))
    assert [item.key for item in found] == ["sched:z1:irrigation:2026-06-01T06:00",
                                            "sched:z1:lighting:2026-06-01T06:00"]
    assert occurrences("z1", zone, UTC, _utc("2026-06-01T07:00"), _utc("2026-06-01T06:00")) == []


def test_a_minute_grid_over_one_minute_gives_one_occurrence() -> None:
    zone = _settings({"irrigation": {"enabled": True, "interval_minutes": 1}})
    found = occurrences("z1", zone, BERLIN, _utc("2026-06-01T10:00"), _utc("2026-06-01T10:01"))
    assert [(_wall(item), item.expires_at) for item in found] == [("2026-06-01T12:01", _utc("2026-06-01T10:02"))]


def test_naive_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        occurrences("z1", ZoneSettings(), UTC, dt.datetime(2026, 6, 1), _utc("2026-06-02T00:00"))


def test_the_longest_zone_uid_still_makes_a_correlation_id() -> None:
    zone = _irrigation(times=["06:00"])
    uid = "z" * 64  # the task contract's longest zone uid
    (found,) = _day(zone, UTC, dt.date(2026, 6, 1), uid=uid)
    assert found.key == f"sched:{uid}:irrigation:2026-06-01T06:00"
    assert 8 <= len(found.key) <= 128
    with pytest.raises(ValueError, match="too long"):
        _day(zone, UTC, dt.date(2026, 6, 1), uid="z" * 93)


EVERYTHING = _settings({
    "irrigation": {"enabled": True, "interval_minutes": 20, "times": ["02:30", "02:45", "12:00", "12:05"],
                   "window": {"from": "22:10", "to": "03:30"}},
    "lighting": {"enabled": True, "mode": "pwm", "pwm_level": 40,
                 "windows": [{"from": "02:15", "to": "02:40"}, {"from": "02:40", "to": "09:00"},
                             {"from": "18:00", "to": "01:30"}]},
    "ventilation": {"enabled": True, "windows": [{"from": "02:05", "to": "02:55"}, {"from": "10:00", "to": "11:00"}]},
    "water_cycle": {"water_change": {"enabled": True, "interval_days": 1, "time_of_day": "02:20"}},
})
"""Every kind, with wall times in both DST transitions and windows across midnight."""


@settings(max_examples=150, deadline=None)
# a cut in the second pass of the repeated hour (01:20 UTC, 02:20 CET), and one at the end of the spring gap
@example(tz=BERLIN, day=FALL_BACK, cuts=[98_400])
@example(tz=BERLIN, day=SPRING_FORWARD, cuts=[93_600])
@given(tz=st.sampled_from([BERLIN, UTC]),
       day=st.sampled_from([SPRING_FORWARD, FALL_BACK, dt.date(2026, 6, 15)]),
       # cuts on whole minutes land exactly on due times (the interval is half-open), the others anywhere
       cuts=st.lists(st.integers(min_value=1, max_value=3 * 1440 - 1).map(lambda minute: minute * 60)
                     | st.integers(min_value=1, max_value=3 * 86400 - 1), max_size=40, unique=True))
def test_any_split_of_the_time_gives_each_occurrence_exactly_once(tz: ZoneInfo, day: dt.date,
                                                                   cuts: list[int]) -> None:
    start = dt.datetime.combine(day - dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
    bounds = [start, *(start + dt.timedelta(seconds=cut) for cut in sorted(cuts)), start + dt.timedelta(days=3)]
    pieces = [item for after, until in itertools.pairwise(bounds)
              for item in occurrences("z1", EVERYTHING, tz, after, until)]
    whole = occurrences("z1", EVERYTHING, tz, bounds[0], bounds[-1])
    assert pieces == whole  # same occurrences, same due times, expiries, payloads and keys, in order
    assert len({item.key for item in whole}) == len(whole)
    assert all(item.expires_at > item.due_at for item in whole)


def test_the_split_property_checks_a_rich_schedule() -> None:
    # the property above proves nothing if the schedule is thin: pin what the fall-back day holds
    found = _day(EVERYTHING, BERLIN, FALL_BACK)
    assert {item.kind for item in found} == {"irrigation", "lighting", "ventilation", "water_change"}
    assert len(found) == 29
    assert [_wall(item)[-5:] for item in found if item.kind == "lighting"] == ["01:30", "02:15", "02:40", "09:00",
                                                                               "18:00"]
    irrigation = {_wall(item)[-5:]: item for item in found if item.kind == "irrigation"}
    assert list(irrigation) == ["00:10", "00:30", "00:50", "01:10", "01:30", "01:50", "02:10", "02:30", "02:45",
                                "02:50", "03:10", "12:00", "12:05", "22:10", "22:30", "22:50", "23:10", "23:30",
                                "23:50"]
    # 02:50 CEST is 1 h 20 min of real time before 03:10 CET: the 15-minute validity caps its expiry
    assert (irrigation["02:50"].due_at, irrigation["02:50"].expires_at) == (_utc("2026-10-25T00:50"),
                                                                            _utc("2026-10-25T01:05"))


def test_each_occurrence_computed_alone_is_identical() -> None:
    for tz, day in ((BERLIN, SPRING_FORWARD), (BERLIN, FALL_BACK), (UTC, SPRING_FORWARD)):
        for item in _day(EVERYTHING, tz, day):
            alone = occurrences("z1", EVERYTHING, tz, item.due_at - dt.timedelta(microseconds=1), item.due_at)
            assert item in alone
