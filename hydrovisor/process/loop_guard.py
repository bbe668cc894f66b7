"""The loop guard: a plain thread that watches the event loop from outside.

Every ``interval`` it posts a heartbeat callback to the loop; when no heartbeat ran for longer than
``threshold`` the loop is stalled. The guard then opens a ``loop_stall`` incident with a task dump
taken *during* the stall (so the loop thread's stack shows the culprit) and reports it; when
heartbeats run again it closes the incident with the stall's length. It lives outside the loop and
the actor tree on purpose: both may be what is stuck.

The same thread drives what must keep going while the loop is stuck: the state machine's evaluation
cycle (``on_cycle``), the systemd watchdog (``WATCHDOG=1`` only while the loop is healthy, so a loop
that stays stuck gets the process killed), and the hard exit of a FATAL state that a stalled loop
cannot carry out gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from hydrovisor import exitcodes
from hydrovisor.process import task_dump
from hydrovisor.process.incidents import Incident, IncidentKind, IncidentStore
from hydrovisor.process.sd_notify import SdNotifier
from hydrovisor.process.states import new_incident_id

log = logging.getLogger(__name__)

OnStall = Callable[[str, float], None]  # (incident_id, seconds without a heartbeat so far)


class LoopGuard:
    """Watches ``loop`` from its own thread; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float,
        interval: float,
        cycle_interval: float,
        incidents: IncidentStore,
        registry: CollectorRegistry,
        notifier: SdNotifier,
        on_stall: OnStall,
        on_cycle: Callable[[], None],
        related: Callable[[], list[str]] = list,
        hard_exit: Callable[[int], None] = os._exit,
    ) -> None:
        self._loop = loop
        self.threshold = threshold
        self._interval = interval
        self._cycle_interval = cycle_interval
        self._incidents = incidents
        self._notifier = notifier
        self._on_stall = on_stall
        self._on_cycle = on_cycle
        self._related = related
        self._hard_exit = hard_exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop_thread_id: int | None = None
        self._last_beat = time.monotonic()
        self._beat_pending = False
        self._stall_id: str | None = None
        self._stall_worst = 0.0
        self._fatal_at: float | None = None
        self._fatal_grace = 0.0
        self._fatal_deadline = 0.0
        self._cycles_on = True
        self._stalls = Counter("hydrovisor_loop_stalls_total", "Event-loop stalls detected by the loop guard.",
                               registry=registry)
        self._age = Gauge("hydrovisor_loop_heartbeat_age_seconds",
                          "Time since the loop last ran the guard's heartbeat.", registry=registry)
        self._watchdog_pings = Counter("hydrovisor_watchdog_pings_total", "WATCHDOG=1 sent to systemd.",
                                       registry=registry)

    @property
    def healthy(self) -> bool:
        """The loop ran a heartbeat within the threshold."""
        return self.heartbeat_age() <= self.threshold

    @property
    def stall_incident(self) -> str | None:
        """The open stall incident, if the loop is stalled right now."""
        return self._stall_id

    def heartbeat_age(self) -> float:
        """Seconds since the loop last ran a heartbeat."""
        return time.monotonic() - self._last_beat

    def start(self) -> None:
        """Start watching (call on the loop: it records which thread the loop runs on)."""
        self.loop_thread_id = threading.get_ident()
        self._last_beat = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hydrovisor-loop-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def stop_cycles(self) -> None:
        """No more evaluation cycles (shutdown: components stopping on purpose are not errors); stall
        detection, the watchdog and an armed FATAL exit go on until :meth:`stop`."""
        self._cycles_on = False

    def arm_fatal_exit(self, grace: float, deadline: float) -> None:
        """FATAL was reached: if the loop is (or gets) stalled for ``grace`` s, or the graceful exit has
        not finished after ``deadline`` s, end the process with exit code 10 from this thread."""
        if self._fatal_at is None:
            self._fatal_at = time.monotonic()
            self._fatal_grace = grace
            self._fatal_deadline = deadline

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._beat_pending = False

    def _run(self) -> None:
        next_cycle = time.monotonic() + self._cycle_interval
        watchdog_every = self._notifier.watchdog_interval
        next_ping = time.monotonic()
        while not self._stop.wait(self._interval):
            now = time.monotonic()
            self._post_beat()
            age = now - self._last_beat
            self._age.set(age)
            if age > self.threshold:
                self._stalled(age)
            elif self._stall_id is not None:
                self._resumed()
            if watchdog_every is not None and now >= next_ping:
                next_ping = now + watchdog_every
                if self.healthy:
                    self._notifier.watchdog()
                    self._watchdog_pings.inc()
            if self._cycles_on and now >= next_cycle:
                next_cycle = now + self._cycle_interval
                self._safely(self._on_cycle)
            self._check_fatal(now, age)

    def _post_beat(self) -> None:
        if self._beat_pending:  # one heartbeat in flight at a time: a stalled loop must not pile them up
            return
        self._beat_pending = True
        try:
            self._loop.call_soon_threadsafe(self._beat)
        except RuntimeError:  # the loop is closed: the process is on its way out
            self._stop.set()

    def _stalled(self, age: float) -> None:
        self._stall_worst = max(self._stall_worst, age)
        if self._stall_id is not None:
            return
        incident_id = new_incident_id("stall")
        self._stall_id = incident_id
        self._stalls.inc()
        related = self._related()
        log.critical("LOOP_GUARD_TIMEOUT incident_id=%s no heartbeat for %.2fs (threshold %gs)", incident_id, age,
                     self.threshold, extra={"event": "loop_stall", "incident_id": incident_id,
                                            "blocked_s": round(age, 3), "related": related})
        dump = task_dump.capture(self._loop, incident_id, "LOOP_STALL_DETECTED", loop_thread_id=self.loop_thread_id)
        self._incidents.open(Incident(
            incident_id=incident_id, kind=IncidentKind.LOOP_STALL, title="event loop stalled",
            reason=f"no heartbeat for {age:.2f}s (threshold {self.threshold:g}s)", owner="loop_guard",
            opened_at=time.time() - age, related=related, dump=dump))
        log.critical("TASK_DUMP incident_id=%s tasks=%d threads=%d", incident_id, dump.total_tasks,
                     dump.total_threads, extra={"event": "task_dump", "incident_id": incident_id,
                                                "dump": task_dump.to_json(dump).decode()})
        self._safely(lambda: self._on_stall(incident_id, age))

    def _resumed(self) -> None:
        incident_id, worst = self._stall_id, self._stall_worst
        self._stall_id, self._stall_worst = None, 0.0
        if incident_id is None:
            return
        self._incidents.close(incident_id, attributes={"blocked_s": f"{worst:.3f}"})
        log.warning("LOOP_RECOVERED incident_id=%s the loop runs again after %.2fs", incident_id, worst,
                    extra={"event": "loop_recovered", "incident_id": incident_id, "blocked_s": round(worst, 3)})

    def _check_fatal(self, now: float, age: float) -> None:
        if self._fatal_at is None:
            return
        waited = now - self._fatal_at
        if (age > self._fatal_grace and waited > self._fatal_grace) or waited > self._fatal_deadline:
            log.critical("SYSTEM_EXIT exit_code=%d: FATAL and the loop cannot shut down (stalled %.1fs)",
                         exitcodes.CRITICAL, age, extra={"event": "hard_exit", "exit_code": exitcodes.CRITICAL})
            for handler in logging.getLogger().handlers:
                handler.flush()
            self._hard_exit(exitcodes.CRITICAL)

    def _safely(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:  # the guard must outlive whatever it reports to
            log.exception("loop guard callback failed", extra={"event": "loop_guard_callback_failed"})
