"""Schedule settings (issue 13): irrigation times and window, lighting, ventilation, the catch-up policy.

Every bad value comes back from ``parse_settings`` as a FieldError naming its exact JSON path.
"""

from __future__ import annotations

from typing import Any

import pytest

from hydrovisor.zones.settings import (
    MAX_SCHEDULE_TIMES,
    MAX_SCHEDULE_WINDOWS,
    Irrigation,
    Lighting,
    Scheduler,
    TimeWindow,
    Ventilation,
    ZoneSettings,
    parse_settings,
)

HHMM = "must be HH:MM (00:00..23:59)"


def _errors(raw: Any) -> list[tuple[str, str]]:
    result = parse_settings(raw)
    assert isinstance(result, list), result
    return [(error.path, error.message) for error in result]


def _parsed(raw: Any) -> ZoneSettings:
    result = parse_settings(raw)
    assert isinstance(result, ZoneSettings), result
    return result


def test_the_schedule_defaults_keep_every_schedule_off_and_old_documents_valid() -> None:
    parsed = _parsed(b"{}")
    assert parsed.irrigation == Irrigation(enabled=False, duration_s=60, interval_minutes=60, times=[], window=None)
    assert parsed.lighting == Lighting(enabled=False, windows=[], mode="relay", pwm_level=100)
    assert parsed.ventilation == Ventilation(enabled=False, windows=[])
    assert parsed.scheduler == Scheduler(catch_up="replay_limited", max_dispatch_per_cycle=20)
    # a document written before the schedules existed
    old = _parsed({"irrigation": {"enabled": True, "duration_s": 30, "interval_minutes": 15}})
    assert old.irrigation == Irrigation(enabled=True, duration_s=30, interval_minutes=15)


def test_a_full_schedule_document_parses_with_from_and_to() -> None:
    parsed = _parsed({
        "irrigation": {"enabled": True, "times": ["06:00", "18:30"], "interval_minutes": 45,
                       "window": {"from": "22:00", "to": "02:00"}},
        "lighting": {"enabled": True, "windows": [{"from": "06:00", "to": "12:00"}, {"from": "12:00", "to": "20:00"}],
                     "mode": "pwm", "pwm_level": 65},
        "ventilation": {"enabled": True, "windows": [{"from": "23:00", "to": "01:00"}]},
        "scheduler": {"catch_up": "skip", "max_dispatch_per_cycle": 5},
    })
    assert parsed.irrigation.times == ["06:00", "18:30"]
    assert parsed.irrigation.window == TimeWindow(start="22:00", end="02:00")
    assert parsed.lighting.windows[1] == TimeWindow(start="12:00", end="20:00")  # touching is not overlapping
    assert (parsed.lighting.mode, parsed.lighting.pwm_level) == ("pwm", 65)
    assert parsed.ventilation.windows == [TimeWindow(start="23:00", end="01:00")]
    assert parsed.scheduler == Scheduler(catch_up="skip", max_dispatch_per_cycle=5)


def test_times_only_irrigation_has_a_null_interval() -> None:
    parsed = _parsed({"irrigation": {"enabled": True, "times": ["07:00"], "interval_minutes": None}})
    assert parsed.irrigation.interval_minutes is None


@pytest.mark.parametrize("bad", ["24:00", "7:00", "07:60", "07:00:00", "", "ab:cd"])
def test_a_bad_irrigation_time_is_named_by_its_index(bad: str) -> None:
    assert _errors({"irrigation": {"times": ["06:00", bad]}}) == [("$.irrigation.times[1]", HHMM)]


def test_a_duplicate_irrigation_time_names_the_first_one() -> None:
    assert _errors({"irrigation": {"times": ["06:00", "12:00", "06:00"]}}) == [
        ("$.irrigation.times[2]", "duplicates times[0]")]


def test_too_many_irrigation_times_are_refused() -> None:
    times = [f"{minute // 60:02d}:{minute % 60:02d}" for minute in range(MAX_SCHEDULE_TIMES + 1)]
    assert _errors({"irrigation": {"times": times}}) == [
        ("$.irrigation.times", f"Expected `array` of length <= {MAX_SCHEDULE_TIMES}")]


def test_the_irrigation_window_is_checked_field_by_field() -> None:
    assert _errors({"irrigation": {"window": {"from": "25:00", "to": "6:00"}}}) == [
        ("$.irrigation.window.from", HHMM), ("$.irrigation.window.to", HHMM)]
    assert _errors({"irrigation": {"window": {"from": "06:00", "to": "06:00"}}}) == [
        ("$.irrigation.window.to", "must differ from 'from'")]
    assert _errors({"irrigation": {"window": {"from": "06:00"}}}) == [
        ("$.irrigation.window.to", "missing required field")]


def test_a_window_without_an_interval_is_refused() -> None:
    assert _errors({"irrigation": {"interval_minutes": None, "times": ["06:00"],
                                   "window": {"from": "06:00", "to": "08:00"}}}) == [
        ("$.irrigation.window", "needs interval_minutes")]


def test_enabled_irrigation_with_nothing_to_run_is_refused() -> None:
    assert _errors({"irrigation": {"enabled": True, "interval_minutes": None}}) == [
        ("$.irrigation.times", "irrigation is enabled but has no time and no interval")]
    # disabled, the same document is fine (a schedule kept for later)
    assert _parsed({"irrigation": {"enabled": False, "interval_minutes": None}}).irrigation.interval_minutes is None


@pytest.mark.parametrize("section", ["lighting", "ventilation"])
def test_bad_window_bounds_are_named_by_index_and_field(section: str) -> None:
    windows = [{"from": "06:00", "to": "08:00"}, {"from": "9:00", "to": "10:00"}, {"from": "11:00", "to": "24:00"}]
    assert _errors({section: {"windows": windows}}) == [
        (f"$.{section}.windows[1].from", HHMM), (f"$.{section}.windows[2].to", HHMM)]


@pytest.mark.parametrize("section", ["lighting", "ventilation"])
def test_an_empty_window_is_refused(section: str) -> None:
    assert _errors({section: {"windows": [{"from": "06:00", "to": "08:00"}, {"from": "10:00", "to": "10:00"}]}}) == [
        (f"$.{section}.windows[1].to", "must differ from 'from'")]


@pytest.mark.parametrize("section", ["lighting", "ventilation"])
@pytest.mark.parametrize(("first", "second"), [
    (("06:00", "12:00"), ("11:59", "13:00")),   # plain overlap
    (("22:00", "02:00"), ("01:00", "03:00")),   # across midnight
    (("06:00", "12:00"), ("08:00", "09:00")),   # inside
    (("08:00", "09:00"), ("23:00", "08:30")),   # a wrapping window containing the other's start
])
def test_overlapping_windows_name_the_later_window(section: str, first: tuple[str, str],
                                                   second: tuple[str, str]) -> None:
    windows = [{"from": first[0], "to": first[1]}, {"from": second[0], "to": second[1]}]
    assert _errors({section: {"windows": windows}}) == [(f"$.{section}.windows[1]", "overlaps windows[0]")]


@pytest.mark.parametrize("section", ["lighting", "ventilation"])
def test_too_many_windows_are_refused(section: str) -> None:
    windows = [{"from": f"{hour % 24:02d}:00", "to": f"{hour % 24:02d}:10"} for hour in range(MAX_SCHEDULE_WINDOWS + 1)]
    assert _errors({section: {"windows": windows}}) == [
        (f"$.{section}.windows", f"Expected `array` of length <= {MAX_SCHEDULE_WINDOWS}")]


@pytest.mark.parametrize("section", ["lighting", "ventilation"])
def test_an_enabled_section_needs_a_window(section: str) -> None:
    assert _errors({section: {"enabled": True}}) == [
        (f"$.{section}.windows", f"{section} is enabled but has no window")]


@pytest.mark.parametrize(("body", "path"), [
    ({"lighting": {"mode": "dimmer"}}, "$.lighting.mode"),
    ({"lighting": {"pwm_level": 0}}, "$.lighting.pwm_level"),
    ({"lighting": {"pwm_level": 101}}, "$.lighting.pwm_level"),
    ({"lighting": {"windows": [{"from": "06:00", "to": "07:00", "level": 3}]}}, "$.lighting.windows[0].level"),
    ({"ventilation": {"speed": 3}}, "$.ventilation.speed"),
    ({"scheduler": {"catch_up": "replay_some"}}, "$.scheduler.catch_up"),
    ({"scheduler": {"max_dispatch_per_cycle": 0}}, "$.scheduler.max_dispatch_per_cycle"),
    ({"scheduler": {"max_dispatch_per_cycle": 101}}, "$.scheduler.max_dispatch_per_cycle"),
    ({"irrigation": {"times": "06:00"}}, "$.irrigation.times"),
    ({"irrigation": {"interval_minutes": 0}}, "$.irrigation.interval_minutes"),
])
def test_type_and_range_errors_name_the_field(body: dict[str, Any], path: str) -> None:
    assert [error_path for error_path, _ in _errors(body)] == [path]


def test_the_errors_of_every_schedule_section_are_reported_together() -> None:
    paths = [path for path, _ in _errors({
        "irrigation": {"times": ["6"]},
        "lighting": {"windows": [{"from": "06:00", "to": "06:00"}]},
        "ventilation": {"windows": [{"from": "x", "to": "07:00"}]},
        "water_cycle": {"recirc": {"schedule": [{"from": "01:00", "to": "03:00"}, {"from": "02:00", "to": "04:00"}]}},
    })]
    assert paths == ["$.water_cycle.recirc.schedule[1]", "$.irrigation.times[0]", "$.lighting.windows[0].to",
                     "$.ventilation.windows[0].from"]
