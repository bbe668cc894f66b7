"""The water cycle's clockwork: recirculation off windows and water-change triggers (pure)."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydrovisor.zones.settings import Recirc, RecircWindow, WaterChange
from hydrovisor.zones.water_cycle import off_minutes, recirc_desired, water_change_due

TZ = zoneinfo.ZoneInfo("Europe/Moscow")


def at(hour: int, minute: int, day: int = 10) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=TZ)


def test_disabled_recirculation_is_never_touched() -> None:
    assert recirc_desired(Recirc(enabled=False), at(3, 0)) is None


def test_outside_every_window_the_nc_pump_runs() -> None:
    recirc = Recirc(schedule=[RecircWindow(start="08:00", end="20:00", duty_cycle=0.5)])
    assert recirc_desired(recirc, at(21, 5)) is True
    assert recirc_desired(recirc, at(7, 59)) is True


def test_a_half_duty_window_is_off_for_the_first_half_hour_capped_by_the_limit() -> None:
    recirc = Recirc(schedule=[RecircWindow(start="08:00", end="20:00", duty_cycle=0.5)], max_recirc_off_minutes=20)
    assert [recirc_desired(recirc, at(9, m)) for m in (0, 19, 20, 45)] == [False, False, True, True]


def test_a_window_across_midnight() -> None:
    recirc = Recirc(schedule=[RecircWindow(start="22:00", end="02:00", duty_cycle=0.0)], max_recirc_off_minutes=30)
    assert recirc_desired(recirc, at(23, 10)) is False
    assert recirc_desired(recirc, at(1, 10)) is False
    assert recirc_desired(recirc, at(1, 40)) is True
    assert recirc_desired(recirc, at(2, 10)) is True


@given(duty=st.floats(0.0, 1.0), limit=st.integers(1, 1440))
def test_an_off_window_never_exceeds_the_limit_and_never_fills_the_hour(duty: float, limit: int) -> None:
    recirc = Recirc(schedule=[RecircWindow(start="00:00", end="23:59", duty_cycle=duty)],
                    max_recirc_off_minutes=limit)
    off = off_minutes(recirc, duty)
    assert 0 <= off <= min(limit, 59)
    # walk a day minute by minute: the longest run of "off" is the window, not more
    longest = run = 0
    for minute in range(24 * 60):
        if recirc_desired(recirc, at(minute // 60, minute % 60)) is False:
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    assert longest <= limit


@pytest.mark.parametrize(("started_days_ago", "now", "expected"), [
    (None, at(3, 0), "schedule"),  # never started: the first scheduled time starts one
    (None, at(2, 59), None),
    (7, at(3, 0), "schedule"),
    (6, at(23, 0), None),
    (14, at(1, 0), "solution_age"),
])
def test_water_change_schedule_and_age(started_days_ago: int | None, now: dt.datetime, expected: str | None) -> None:
    change = WaterChange(enabled=True, interval_days=7, time_of_day="03:00", max_solution_age_days=14)
    started = now - dt.timedelta(days=started_days_ago, hours=1) if started_days_ago is not None else None
    assert water_change_due(change, now, started, ec=1.6, ec_target=1.6) == expected


def test_water_change_by_ec_drift_only_when_enabled() -> None:
    now = at(12, 0)
    started = now - dt.timedelta(days=1)
    drifting = WaterChange(enabled=True, trigger_by_ec_drift=True, ec_drift_threshold=0.5)
    assert water_change_due(drifting, now, started, ec=2.2, ec_target=1.6) == "ec_drift"
    assert water_change_due(drifting, now, started, ec=1.9, ec_target=1.6) is None
    assert water_change_due(WaterChange(enabled=True), now, started, ec=3.0, ec_target=1.6) is None
    assert water_change_due(WaterChange(enabled=False), now, None, ec=3.0, ec_target=1.6) is None
