"""One clock for every timer, the zone logic and the simulator (issue 11), with a time scale.

The zone logic never reads time itself: it is handed ``now`` by whoever owns the clock. The owners (actors,
timers, the simulator) take a :class:`Clock` so that a development or test process can run the whole
plant ``scale`` times faster (a simulated day in minutes), and so tests can drive time by hand
(:class:`ManualClock`). A scale above 1 is refused in production (``config/loader.py``).

This module is the one place in ``hydrovisor.zones`` that touches the real clock, and only through
sources injected at construction (defaulting to :mod:`time`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What every timer and the zone logic read time from.

    ``now()`` is unix seconds (what timestamps and schedules use); ``monotonic()`` never goes back (what
    durations and timeouts use); both advance ``scale`` seconds per real second.
    """

    @property
    def scale(self) -> float:
        """Clock seconds per real second (1.0: real time)."""
        ...

    def now(self) -> float:
        """Unix seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never decreases."""
        ...


def real_seconds(clock: Clock, seconds: float) -> float:
    """How long to really sleep for ``seconds`` of ``clock`` time (a timer of 60 s at scale 60 is 1 s)."""
    return seconds / clock.scale


class SystemClock:
    """Real time: ``time.time`` and ``time.monotonic`` (injectable for tests)."""

    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._mono = mono

    @property
    def scale(self) -> float:
        """Always 1.0."""
        return 1.0

    def now(self) -> float:
        """Unix seconds."""
        return self._wall()

    def monotonic(self) -> float:
        """The system's monotonic clock."""
        return self._mono()


class ScaledClock:
    """Time running ``scale`` times faster than real time from an origin.

    At construction the clock reads ``origin_wall`` (unix s) and ``origin_mono``; after ``d`` real seconds
    it reads ``origin + d * scale``. Both readings derive from the one real monotonic source, so a wall
    clock jump (NTP) cannot make scaled time go back.
    """

    def __init__(self, scale: float, origin_wall: float | None = None, origin_mono: float | None = None, *,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"time scale must be a finite number > 0, got {scale!r}")
        self._scale = float(scale)
        self._source = mono
        self._real_origin = mono()
        self._origin_wall = wall() if origin_wall is None else origin_wall
        self._origin_mono = self._real_origin if origin_mono is None else origin_mono

    @property
    def scale(self) -> float:
        """Clock seconds per real second."""
        return self._scale

    def _elapsed(self) -> float:
        return (self._source() - self._real_origin) * self._scale

    def now(self) -> float:
        """Unix seconds on the scaled timeline."""
        return self._origin_wall + self._elapsed()

    def monotonic(self) -> float:
        """Scaled monotonic seconds."""
        return self._origin_mono + self._elapsed()


class ManualClock:
    """A clock that moves only when told to (tests and replays); ``scale`` is nominal."""

    def __init__(self, now: float = 1_700_000_000.0, monotonic: float = 0.0, *, scale: float = 1.0) -> None:
        self._now = now
        self._mono = monotonic
        self._scale = scale

    @property
    def scale(self) -> float:
        """The nominal scale (timers divide by it)."""
        return self._scale

    def now(self) -> float:
        """Unix seconds."""
        return self._now

    def monotonic(self) -> float:
        """Monotonic seconds."""
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both readings forward; a negative step is refused (monotonic time never goes back)."""
        if not seconds >= 0:
            raise ValueError(f"cannot advance by {seconds!r}")
        self._now += seconds
        self._mono += seconds


def clock_for_scale(scale: float) -> Clock:
    """The process clock for the ``time_scale`` setting: real time at 1.0, else a :class:`ScaledClock`."""
    return SystemClock() if scale == 1.0 else ScaledClock(scale)
