"""``SystemControl``: the state machine wired to the rest of the process.

It owns the machine, the incident store, the loop guard and the systemd notifier, evaluates the
component checks for each cycle (and for ``/health/ready``), turns every transition into a
``STATE_TRANSITION`` log line, an incident, metrics and a ``STATUS=`` line, and on FATAL makes the
process exit with code 10 — gracefully through the loop if it can, from the guard's thread if the
loop is stuck.

A pooled actor's turn stuck on a worker (the pool's watchdog) opens a ``pool_turn_stuck`` incident
with a task dump that names the actor each worker runs; it closes at the first cycle after the turn
ended. It is not an error for the machine: like a hung thread actor it is contained (a spare worker
keeps the pool's capacity, the supervisor's hang detection replaces the actor).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.config import Settings
from hydrovisor.process import checks, task_dump
from hydrovisor.process.incidents import Incident, IncidentKind, IncidentStore
from hydrovisor.process.loop_guard import LoopGuard
from hydrovisor.process.sd_notify import SdNotifier
from hydrovisor.process.state_actor import STATE_PATH, Cycle, LoopStalled, ReportError, ReportFatal
from hydrovisor.process.states import (
    ACTUATION_BLOCKED,
    Snapshot,
    StateMachine,
    SystemState,
    Thresholds,
    Transition,
    new_incident_id,
)
from hydrovisor.supervisors import (
    ROOT,
    ActorStopped,
    ActorSystem,
    ExitKind,
    ExitReason,
    NoSuchActor,
    StuckTurn,
    WorkerPool,
)

log = logging.getLogger("hydrovisor.process")

BROKER_PROBE_INTERVAL = 2.0
TELEMETRY_REPORT_MAX_AGE = 5.0


def is_system_error(path: str, reason: ExitReason) -> bool:
    """Whether an actor exit is a system error (DOMAIN §6) rather than a failure supervision isolates.

    A crash, hang or start failure that its supervisor restarts within intensity is contained, and
    so is an operator's restart (``killed``) or a nested supervisor giving up to a parent that
    restarts it. What is not contained is an escalation reaching a top-level subtree (``/store``,
    ``/nodes`` ...): a whole part of the system restarted. An escalation of the root itself is FATAL
    (reported by the app's root-exit hook). Loop stalls and DB/broker outages reach the machine
    from the loop guard and the health cycle, not from here.
    """
    top_level = path != ROOT and path.count("/") == 1
    return top_level and reason.kind is ExitKind.ESCALATED


class SystemControl:
    """See the module docstring. Create on the loop; :meth:`start` once the tree exists."""

    def __init__(
        self,
        settings: Settings,
        *,
        loop: asyncio.AbstractEventLoop,
        registry: CollectorRegistry,
        system: ActorSystem,
        health: HealthBoard,
        notifier: SdNotifier,
        on_fatal: Callable[[], None],
        related: Callable[[], list[str]] = list,
    ) -> None:
        cfg = settings.system
        self._settings = settings
        self._loop = loop
        self._system = system
        self._health = health
        self.notifier = notifier
        self._on_fatal = on_fatal
        self.machine = StateMachine(Thresholds(
            degraded_after=cfg.degraded_after, safe_mode_after=cfg.safe_mode_after,
            recovery_cycles=cfg.recovery_cycles, safe_mode_ttl=cfg.safe_mode_ttl))
        self.incidents = IncidentStore(Path(settings.data_dir) / "incidents", keep=cfg.incidents_kept)
        self._state_incident: str | None = None
        self._apply_lock = threading.Lock()
        self._related = related
        self._pool: WorkerPool | None = None
        # open pool_turn_stuck incidents: id -> (worker name, when its stuck turn started)
        self._stuck: dict[str, tuple[str, float | None]] = {}
        self._stuck_lock = threading.Lock()
        self.guard = LoopGuard(
            loop, threshold=cfg.loop_stall_threshold, interval=cfg.guard_interval,
            cycle_interval=cfg.cycle_interval, incidents=self.incidents, registry=registry, notifier=notifier,
            on_stall=lambda incident_id, age: self._tell(LoopStalled(incident_id, round(age, 3))),
            on_cycle=self._cycle, related=related)
        self._state_gauge = Gauge("hydrovisor_system_state", "1 for the current system state.", ["state"],
                                  registry=registry)
        self._transitions = Counter("hydrovisor_system_transitions_total", "System state transitions.",
                                    ["from_state", "to_state"], registry=registry)
        self._errors = Counter("hydrovisor_system_errors_reported_total", "Errors reported to the state machine.",
                               ["owner"], registry=registry)
        self._show(SystemState.RUNNING)

    @property
    def state(self) -> SystemState:
        """The current state (lock-free read of one reference)."""
        return self.machine.state

    @property
    def actuation_blocked(self) -> bool:
        """SAFE_MODE or FATAL: new actuation is refused, fail-safe OFF commands excepted."""
        return self.machine.state in ACTUATION_BLOCKED

    def snapshot(self) -> Snapshot:
        """The machine's state and counters."""
        return self.machine.snapshot()

    def start(self) -> None:
        """Start the loop guard (on the loop)."""
        self.guard.start()

    def stopping(self) -> None:
        """Shutdown began: tell systemd, stop evaluating (what stops now stops on purpose)."""
        self.notifier.stopping()
        self.guard.stop_cycles()

    def stop(self) -> None:
        """Stop the loop guard."""
        self.guard.stop()

    # inputs ----------------------------------------------------------------------------------

    def report_error(self, reason: str, owner: str, cause: str | None = None) -> None:
        """From any thread: a component failed."""
        self._errors.labels(owner=owner).inc()
        self._tell(ReportError(reason, owner, cause))

    def report_fatal(self, reason: str, owner: str) -> None:
        """From any thread: an irrecoverable error. Applied directly (the tree may be the thing that died)."""
        transition = self.machine.record_fatal(reason, owner)
        if transition is not None:
            self.apply(transition)

    def child_failed(self, path: str, reason: ExitReason) -> None:
        """Supervisor listener: an actor exited abnormally. Only a system error (:func:`is_system_error`)
        reaches the state machine; the supervisor reports already log every other exit."""
        if is_system_error(path, reason):
            self.report_error(f"subtree {path} gave up: {reason}", "supervisor")

    def watch_pool(self, pool: WorkerPool) -> None:
        """Open an incident for every stuck turn of ``pool``; task dumps name the actor each worker runs."""
        self._pool = pool
        task_dump.watch_pool(pool)
        pool.on_stuck(self.pool_turn_stuck)

    def pool_turn_stuck(self, stuck: StuckTurn) -> None:
        """Pool watchdog listener (its thread): one turn ran past ``stuck_after``. Opens a
        ``pool_turn_stuck`` incident with a task dump; not an error for the machine (module docstring)."""
        incident_id = new_incident_id("stuck")
        pool = self._pool
        started, limit = None, ""
        if pool is not None:
            started = next((w.turn_started for w in pool.workers() if w.name == stuck.worker), None)
            limit = f" (threshold {pool.settings.stuck_after:g}s)"
        log.error("POOL_TURN_STUCK incident_id=%s path=%s worker=%s running_for=%.2fs", incident_id, stuck.path,
                  stuck.worker, stuck.running_for_s, extra={
                      "event": "pool_turn_stuck_incident", "incident_id": incident_id, "path": stuck.path,
                      "worker": stuck.worker, "running_for_s": stuck.running_for_s})
        dump = task_dump.capture(self._loop, incident_id, "POOL_TURN_STUCK", loop_thread_id=self.guard.loop_thread_id)
        try:
            related = self._related()
        except Exception:  # the incident matters more than its links
            log.exception("related incidents unavailable", extra={"event": "related_unavailable"})
            related = []
        self.incidents.open(Incident(
            incident_id=incident_id, kind=IncidentKind.POOL_TURN_STUCK, title=f"turn of {stuck.path} stuck",
            reason=f"{stuck.path} has been running one turn on {stuck.worker} for {stuck.running_for_s:.2f}s{limit}",
            owner="pool_watchdog", opened_at=time.time() - stuck.running_for_s, related=related,
            attributes={"path": stuck.path, "worker": stuck.worker, "stack": stuck.stack}, dump=dump))
        with self._stuck_lock:  # once open: a cycle closes only what it can find
            self._stuck[incident_id] = (stuck.worker, started)

    def _close_ended_stuck_turns(self) -> None:
        """Close the incident of every stuck turn that is over (its worker runs another turn, or is gone)."""
        pool = self._pool
        if pool is None:
            return
        with self._stuck_lock:
            if not self._stuck:
                return
            current = {w.name: w.turn_started for w in pool.workers()}
            ended = [i for i, (worker, started) in self._stuck.items()
                     if started is None or current.get(worker) != started]
            for incident_id in ended:
                del self._stuck[incident_id]
        for incident_id in ended:
            closed = self.incidents.close(incident_id)
            log.warning("POOL_TURN_UNSTUCK incident_id=%s the stuck turn ended", incident_id,
                        extra={"event": "pool_turn_unstuck_incident", "incident_id": incident_id,
                               "duration_s": closed.duration_s if closed is not None else None})

    # the cycle -------------------------------------------------------------------------------

    def _cycle(self) -> None:
        """On the loop guard's thread, every ``cycle_interval``."""
        try:
            self._close_ended_stuck_turns()
        finally:
            self._tell(Cycle())

    def readiness(self) -> dict[str, checks.CheckResult]:
        """Each component's verdict, as ``/health/ready`` and the cycle see it."""
        db_age = 3 * self._settings.database.health_interval + 2
        loop_age = self.guard.heartbeat_age()
        return {
            "db": checks.component(self._health, "db", db_age),
            "broker": checks.component(self._health, "broker", 4 * BROKER_PROBE_INTERVAL),
            "tree": checks.tree(self._system),
            # the writer reports every flush tick: stale means it is stuck, failing means writes make no progress
            "telemetry": checks.component(self._health, "telemetry", TELEMETRY_REPORT_MAX_AGE),
            "loop": checks.CheckResult(True, "ok") if self.guard.healthy else checks.CheckResult(
                False, f"no heartbeat for {loop_age:.1f}s"),
        }

    def failing(self) -> list[str]:
        """The failing checks as ``name: reason`` (the state actor's input)."""
        return [f"{name}: {result.reason}" for name, result in self.readiness().items() if not result.ok]

    # outputs ---------------------------------------------------------------------------------

    def apply(self, transition: Transition) -> None:
        """Log, record and announce one transition; on FATAL start the exit. Called by the state actor and,
        for a fatal report, by whichever thread made it: the lock keeps the incident bookkeeping in order."""
        with self._apply_lock:
            self._announce(transition)

    def _announce(self, transition: Transition) -> None:
        t = transition
        level = logging.INFO if t.to_state is SystemState.RUNNING else logging.CRITICAL
        log.log(level, "STATE_TRANSITION incident_id=%s from=%s to=%s reason=%s owner=%s duration_in_old_state=%.1f",
                t.incident_id, t.from_state, t.to_state, t.reason, t.owner, t.in_old_state_s,
                extra={"event": "state_transition", "incident_id": t.incident_id, "from_state": t.from_state.value,
                       "to_state": t.to_state.value, "reason": t.reason, "owner": t.owner,
                       "duration_in_old_state": t.in_old_state_s, "cause": t.cause})
        self._record(t)
        self._transitions.labels(from_state=t.from_state.value, to_state=t.to_state.value).inc()
        self._show(t.to_state)
        self.notifier.status(f"{t.to_state.value}: {t.reason} ({t.incident_id})")
        if t.to_state is SystemState.FATAL:
            self._on_fatal()

    def _record(self, t: Transition) -> None:
        if self._state_incident is not None:
            self.incidents.close(self._state_incident)
        dump = None
        if t.to_state in (SystemState.SAFE_MODE, SystemState.FATAL):
            dump = task_dump.capture(self._loop, t.incident_id, t.to_state.value,
                                     loop_thread_id=self.guard.loop_thread_id)
        incident = self.incidents.open(Incident(
            incident_id=t.incident_id, kind=IncidentKind.STATE_TRANSITION,
            title=f"{t.from_state.value} -> {t.to_state.value}", reason=t.reason, owner=t.owner, opened_at=t.at,
            related=[t.cause] if t.cause else [], transition=t, dump=dump))
        if t.to_state is SystemState.RUNNING:  # back to normal: nothing left open
            self.incidents.close(incident.incident_id)
            self._state_incident = None
        else:
            self._state_incident = incident.incident_id

    def _show(self, state: SystemState) -> None:
        for each in SystemState:
            self._state_gauge.labels(state=each.value).set(1 if each is state else 0)

    def _tell(self, message: Cycle | ReportError | LoopStalled | ReportFatal) -> None:
        try:
            self._system.tell(STATE_PATH, message)
        except (NoSuchActor, ActorStopped):  # before the tree started or after it stopped
            log.debug("system state actor not running", extra={"event": "system_state_unavailable"})
