"""``HealthProbe``: an actor that checks one infrastructure component on a timer.

It owns nothing asyncio: the check is a coroutine run on the loop through the bridge and its
outcome comes back as a message. Results go to the shared :class:`HealthBoard` (read by
``/health/ready`` and ``/metrics``); every up/down transition is logged once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Gauge

from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.supervisors import ActorContext, SupervisedActor

log = logging.getLogger(__name__)

Check = Callable[[], Coroutine[Any, Any, None]]
# (up, reason, seconds in the previous state) -> what to store about the change (an infra alert)
OnChange = Callable[[bool, str, float], Coroutine[Any, Any, None]]


class ComponentHealth(msgspec.Struct, frozen=True):
    """Latest verdict on one component."""

    ok: bool
    reason: str
    checked_at: float  # monotonic


class HealthBoard:
    """Thread-safe latest health per component, written by probes, read anywhere."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, ComponentHealth] = {}
        self._gauge = Gauge("hydrovisor_component_up", "1 when the component's last check passed.",
                            ["component"], registry=registry)

    def set(self, component: str, ok: bool, reason: str) -> ComponentHealth | None:
        """Record a result; returns the previous one."""
        with self._lock:
            previous = self._state.get(component)
            self._state[component] = ComponentHealth(ok, reason, time.monotonic())
        self._gauge.labels(component=component).set(1 if ok else 0)
        return previous

    def get(self, component: str) -> ComponentHealth | None:
        """Latest result, or ``None`` before the first check."""
        with self._lock:
            return self._state.get(component)


class _Probe(msgspec.Struct, frozen=True):
    pass


class _ProbeDone(msgspec.Struct, frozen=True):
    outcome: Outcome


class _ChangeStored(msgspec.Struct, frozen=True):
    outcome: Outcome


class HealthProbe(SupervisedActor):
    """Runs ``check`` every ``interval`` seconds; a raising check means the component is down."""

    def __init__(self, ctx: ActorContext, component: str, check: Check, interval: float,
                 board: HealthBoard, *, on_change: OnChange | None = None) -> None:
        super().__init__(ctx)
        self._component = component
        self._on_change = on_change
        self._since = time.monotonic()
        self._check = check
        self._interval = interval
        self._board = board
        self._timer: Timer | None = None
        self._in_flight = False

    def on_start(self) -> None:
        self._probe()
        self._timer = self.tell_self_every(self._interval, _Probe())

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_failure(self, *_: Any) -> None:
        self.on_stop()

    def on_receive(self, message: Any) -> None:
        if isinstance(message, _Probe):
            self._probe()
        elif isinstance(message, _ProbeDone):
            self._record(message.outcome)
        elif isinstance(message, _ChangeStored):
            self._change_stored(message.outcome)

    def _probe(self) -> None:
        if self._in_flight:  # a slow check is still running: do not pile up more
            return
        self._in_flight = True
        self.pipe_to_self(self._check(), _ProbeDone)

    def _record(self, outcome: Outcome) -> None:
        self._in_flight = False
        reason = "ok" if outcome.ok else str(outcome.error) or type(outcome.error).__name__
        previous = self._board.set(self._component, outcome.ok, reason)
        if previous is None or previous.ok != outcome.ok:
            level = logging.INFO if outcome.ok else logging.ERROR
            log.log(level, "component %s is %s: %s", self._component, "up" if outcome.ok else "down",
                    reason, extra={"event": "component_health", "component": self._component,
                                   "ok": outcome.ok})
            now = time.monotonic()
            if self._on_change is not None and previous is not None:
                self.pipe_to_self(self._on_change(outcome.ok, reason, now - self._since), _ChangeStored)
            self._since = now

    def _change_stored(self, outcome: Outcome) -> None:
        if not outcome.ok:  # the alert is a record, the health board is the truth: log, do not retry
            log.warning("component %s: its alert was not stored: %s", self._component, outcome.error,
                        extra={"event": "component_alert_failed", "component": self._component})
