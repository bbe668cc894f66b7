"""The one clock: real, scaled (a simulated day in minutes) and manual."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.zones.clock import Clock, ManualClock, ScaledClock, SystemClock, clock_for_scale, real_seconds


class FakeSource:
    """A controllable real-time source."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def test_system_clock_reads_its_sources() -> None:
    wall, mono = FakeSource(1_700_000_000.0), FakeSource(5.0)
    clock = SystemClock(wall, mono)
    assert (clock.now(), clock.monotonic(), clock.scale) == (1_700_000_000.0, 5.0, 1.0)
    wall.value, mono.value = 1_700_000_010.0, 15.0
    assert (clock.now(), clock.monotonic()) == (1_700_000_010.0, 15.0)


def test_the_default_system_clock_is_real_time() -> None:
    clock = SystemClock()
    first = clock.monotonic()
    assert clock.monotonic() >= first
    assert clock.now() > 1_600_000_000


def test_scaled_clock_runs_scale_times_faster_from_its_origin() -> None:
    wall, mono = FakeSource(1_000.0), FakeSource(50.0)
    clock = ScaledClock(60.0, origin_wall=1_700_000_000.0, origin_mono=0.0, wall=wall, mono=mono)
    assert (clock.now(), clock.monotonic(), clock.scale) == (1_700_000_000.0, 0.0, 60.0)
    mono.value = 51.0  # one real second: a simulated minute
    assert (clock.now(), clock.monotonic()) == (1_700_000_060.0, 60.0)
    mono.value = 50.0 + 24 * 60  # 24 real minutes: a simulated day
    assert clock.now() == 1_700_000_000.0 + 86_400


def test_scaled_clock_origins_default_to_the_sources_and_ignore_wall_jumps() -> None:
    wall, mono = FakeSource(1_700_000_000.0), FakeSource(7.0)
    clock = ScaledClock(10.0, wall=wall, mono=mono)
    assert (clock.now(), clock.monotonic()) == (1_700_000_000.0, 7.0)
    wall.value = 1_000.0  # the wall clock jumps back (NTP): scaled time does not
    mono.value = 8.0
    assert (clock.now(), clock.monotonic()) == (1_700_000_010.0, 17.0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_scaled_clock_refuses_a_scale_that_is_not_positive_and_finite(scale: float) -> None:
    with pytest.raises(ValueError, match="time scale"):
        ScaledClock(scale)


def test_manual_clock_moves_only_forward_when_told() -> None:
    clock = ManualClock(now=100.0, monotonic=1.0, scale=5.0)
    assert (clock.now(), clock.monotonic(), clock.scale) == (100.0, 1.0, 5.0)
    clock.advance(2.5)
    assert (clock.now(), clock.monotonic()) == (102.5, 3.5)
    for bad in (-0.1, math.nan):
        with pytest.raises(ValueError, match="cannot advance"):
            clock.advance(bad)
    assert clock.now() == 102.5


def test_every_clock_is_a_clock_and_the_setting_picks_one() -> None:
    for clock in (SystemClock(), ScaledClock(2.0), ManualClock()):
        assert isinstance(clock, Clock)
    assert isinstance(clock_for_scale(1.0), SystemClock)
    scaled = clock_for_scale(60.0)
    assert isinstance(scaled, ScaledClock)
    assert scaled.scale == 60.0
    assert real_seconds(scaled, 60.0) == 1.0
    assert real_seconds(SystemClock(), 60.0) == 60.0


@settings(max_examples=200, deadline=None)
@given(scale=st.floats(min_value=1e-3, max_value=1e4),
       steps=st.lists(st.floats(min_value=0, max_value=1e4), max_size=20))
def test_scaled_time_is_monotonic_and_proportional(scale: float, steps: list[float]) -> None:
    mono = FakeSource(0.0)
    clock = ScaledClock(scale, origin_wall=0.0, origin_mono=0.0, wall=FakeSource(0.0), mono=mono)
    previous = clock.monotonic()
    for step in steps:
        mono.value += step
        current = clock.monotonic()
        assert current >= previous
        assert math.isclose(current, mono.value * scale, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(clock.now(), current, rel_tol=1e-9, abs_tol=1e-9)
        previous = current
