"""Continuous event-loop lag measurement: how late a periodic callback runs."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Gauge, Histogram


class LoopLagMonitor:
    """Schedules itself every ``interval`` s and records how late it woke up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float, registry: CollectorRegistry) -> None:
        self._loop = loop
        self._interval = interval
        self._expected = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.last_lag = 0.0
        self.max_lag = 0.0
        self._histogram = Histogram(
            "hydrovisor_event_loop_lag_seconds",
            "Delay between when a loop callback was due and when it ran.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self._gauge = Gauge(
            "hydrovisor_event_loop_lag_last_seconds", "Most recent loop lag sample.", registry=registry
        )

    def start(self) -> None:
        """Begin sampling (call on the loop)."""
        self._schedule()

    def stop(self) -> None:
        """Stop sampling."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        self._expected = time.monotonic() + self._interval
        self._handle = self._loop.call_later(self._interval, self._tick)

    def _tick(self) -> None:
        lag = max(0.0, time.monotonic() - self._expected)
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)
        self._histogram.observe(lag)
        self._gauge.set(lag)
        self._schedule()
