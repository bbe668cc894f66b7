"""``ZoneActor``: one per zone (``/zones/<uid>/zone``), the zone's live state and its safety verdicts.

It owns a :class:`ZoneState` (``zones/state.py``) and feeds it what the zone's devices report, in the
order the router saw it per node: telemetry, events, error reports, liveness, and the status of every
command to the zone's nodes (SENT = desired, DONE = confirmed). Detections become alerts (deduplicated in
PostgreSQL) and zone events. Every pump or valve start, from automation or an operator, asks it
:class:`CheckStart`, answered from the state by the one gate (``zones/safety.can_run_pump``); a refusal
is recorded as a zone event with its reason.

What must survive lives in PostgreSQL: the settings (versioned), the alerts, the timeline. On (re)start
the actor answers at once and loads its snapshot (settings, the channels of its nodes, its active alerts)
as a message; until then every start is refused (``zone_not_ready``): the gate fails closed. Database
writes go through the bridge and come back as messages; a failed write is logged and retried a tick later
(bounded), never blocks the actor.

Workflows and the water cycle of the zone *watch* it (``WatchZone``, renewed now and then): after every
input they are told a :class:`ZoneObserved` (the state view, settings, devices, the event that came in),
so they never ask it anything. The emergency-stop latch lives here too (loaded with the snapshot, set by
the node's ``emergency_stop_activated`` or the operator's stop, cleared by an operator): while it is set
every start is refused ``emergency_stop_active``. After every snapshot load the zone asks the workflow
runtime to adopt its running workflows (``ZonePlane.adopt``).

Time: the actor does not poll. After every message it asks the state for its next deadline
(``ZoneState.next_deadline``: a running pump's no-flow window, a stop's settling time, a dry switch going
stale, a failure leaving its window) and keeps one timer armed for the earliest of those and of a pending
write retry; an idle zone has no timer at all. The zone clock may run faster than real time: deadlines are
zone seconds, turned into real ones with ``real_seconds``.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec
import pykka

from hydrovisor.protocol import ErrorReport, Event
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.store.repos import events, workflows
from hydrovisor.supervisors import ActorContext, SupervisedActor
from hydrovisor.zoneplane.loading import ZoneSnapshot, load_zone
from hydrovisor.zoneplane.plane import DbCall, ZonePlane
from hydrovisor.zones import safety
from hydrovisor.zones.clock import real_seconds
from hydrovisor.zones.roles import Role
from hydrovisor.zones.settings import FieldError, ResolvedDevice, ZoneSettings, resolve_devices
from hydrovisor.zones.state import ZoneState, ZoneStateView

log = logging.getLogger(__name__)

_UNHANDLED: Any = object()
EMERGENCY_STOP_ACTIVE = "emergency_stop_active"
EMERGENCY_STOP_EVENT = "emergency_stop_activated"
ESTOP_ACTIVE_ERROR = "estop_active"  # the node's refusal while its emergency stop is active (PROTOCOL §5)
WATCH_TTL_S = 60.0  # real seconds a watch lasts without being renewed (a dead watcher is dropped sooner)

MAX_PENDING_WRITES = 500
MIN_TICK_S = 0.05  # real seconds: the shortest timer (a deadline due sooner waits this long)
MAX_WAIT_S = 30.0
"""Zone seconds: while a deadline is pending, look again at least this often. A deadline is armed as a
real delay; if the wall clock steps forward meanwhile (NTP, a resumed VM), zone time reaches it sooner,
and this bounds how late it can then be seen. Idle zones are not concerned: they have no deadline."""
_GATED_TYPES = frozenset({"PUMP", "PERISTALTIC_PUMP", "VALVE"})
_TIMED_COMMANDS = frozenset({"run_pump", "dose"})  # they stop by themselves: DONE means the run is over
ZONE_NOT_READY = "zone_not_ready"
_TERMINAL = frozenset({"DONE", "NO_EFFECT", "ERROR", "INVALID", "BUSY", "TIMEOUT", "SEND_FAILED"})
_ALERT_TYPES = {
    safety.OVERCURRENT: "Pump overcurrent", safety.NO_FLOW: "No flow", safety.DRY_RUN: "Dry run",
    safety.PUMP_STUCK_ON: "Pump stuck on",
}


# --- messages ---------------------------------------------------------------------------------------------

class ZoneReading(msgspec.Struct, frozen=True):
    """A stored-bound telemetry sample of one of the zone's nodes."""

    node_uid: str
    channel: str
    value: float
    ts: float
    flags: dict[str, Any] | None
    received_at: float


class ZoneDeviceReport(msgspec.Struct, frozen=True):
    """An event or error report of one of the zone's nodes."""

    node_uid: str
    channel: str | None
    report: Event | ErrorReport
    received_at: float


class ZoneNodeLiveness(msgspec.Struct, frozen=True):
    """One of the zone's nodes went online or offline (its actor decides)."""

    node_uid: str
    online: bool
    at: float


class ZoneCommandStatus(msgspec.Struct, frozen=True):
    """A status of a command to one of the zone's nodes was stored."""

    cmd_id: str
    node_uid: str
    channel: str
    cmd: str
    params: dict[str, Any]
    status: str
    error_code: str | None
    details: dict[str, Any] | None


class ZoneReload(msgspec.Struct, frozen=True):
    """The zone's settings or its nodes' channels changed: load the snapshot again."""


class GetZoneObserved(msgspec.Struct, frozen=True):
    """Ask: the zone as its watchers see it (:class:`ZoneObserved`), or ``ZoneNotReady``."""


class GetZoneState(msgspec.Struct, frozen=True):
    """Ask: the zone's :class:`ZoneStateReply`, or ``ZoneNotReady``."""


class ZoneStateReply(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/zones/{uid}/state``: the live state, with the settings version it runs on and the
    device roles that could not be resolved (an ambiguity leaves those roles unbound: fail closed)."""

    zone_uid: str
    settings_version: int
    device_errors: list[FieldError]
    state: ZoneStateView


class CheckStart(msgspec.Struct, frozen=True):
    """Ask: may ``cmd`` start this channel now? Replies ``safety.Refusal`` or None. ``last``: the caller will
    not ask again (a "still loading" refusal is then final and recorded like any other)."""

    node_uid: str
    channel: str
    cmd: str
    params: dict[str, Any]
    source: str
    last: bool = True


class ResetSafety(msgspec.Struct, frozen=True):
    """Ask: the operator reset the safety locks (resolved, audited and put on the timeline in the database
    by the caller). Replies with the codes the zone let go of."""


class ZoneAlertResolved(msgspec.Struct, frozen=True):
    """An operator resolved one of the zone's alerts."""

    code: str
    dedupe_key: str


class WatchZone(msgspec.Struct, frozen=True):
    """A workflow of the zone wants every change of the zone's state (:class:`ZoneObserved`) told to
    ``ref``. Sent again now and then: a restarted zone actor has no watchers until they do."""

    path: str
    ref: Any


class UnwatchZone(msgspec.Struct, frozen=True):
    """The workflow at ``path`` no longer watches."""

    path: str


class ObservedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A node event as a workflow sees it: its code (lower case), the role it came from, its fields."""

    code: str
    role: str | None
    node_uid: str
    details: dict[str, Any]


class ZoneObserved(msgspec.Struct, frozen=True, kw_only=True):
    """Told to watchers after every input: the zone's state, its settings and devices, and the event that
    came in (if the input was one). ``ready``: the zone has loaded its snapshot."""

    zone_uid: str
    at: float
    ready: bool
    settings: ZoneSettings
    devices: dict[Role, ResolvedDevice]
    state: ZoneStateView
    estop: str | None
    event: ObservedEvent | None = None


class SetEmergencyStop(msgspec.Struct, frozen=True):
    """The emergency stop was latched (``reason``) or cleared (None) in the database by the caller."""

    reason: str | None


class SetWaterState(msgspec.Struct, frozen=True):
    """A workflow left the zone's water in ``water_state`` (stored by it)."""

    water_state: str
    workflow: str | None = None


class ZoneNotReady(msgspec.Struct, frozen=True):
    """The zone has not loaded its snapshot yet."""

    reason: str


class _Loaded(msgspec.Struct, frozen=True):
    seq: int
    outcome: Outcome


class _Written(msgspec.Struct, frozen=True):
    what: str
    call: Any
    outcome: Outcome


class _Tick(msgspec.Struct, frozen=True):
    seq: int = 0  # which arming fired it (a superseded one is cancelled, but may be on its way)


class _Adopt(msgspec.Struct, frozen=True):
    pass


class _Adopted(msgspec.Struct, frozen=True):
    outcome: Outcome


class _ActiveAlert(msgspec.Struct, frozen=True):
    code: str
    dedupe_key: str
    severity: str
    first_seen: float
    last_seen: float
    count: int


class _Boot(msgspec.Struct, frozen=True):
    snapshot: ZoneSnapshot | None
    alerts: list[_ActiveAlert]
    automation: workflows.Automation | None = None


# --- the actor --------------------------------------------------------------------------------------------

class ZoneActor(SupervisedActor):
    """See the module docstring."""

    def __init__(self, ctx: ActorContext, *, uid: str, plane: ZonePlane) -> None:
        super().__init__(ctx)
        self.uid = uid
        self._plane = plane
        self._state = ZoneState()
        self._version = 0
        self._device_errors: list[FieldError] = []
        self._ready = False  # the first snapshot is loaded
        self._loading = True  # a snapshot is being loaded: the gate waits for it
        self._actuator_types: dict[tuple[str, str], str] = {}
        self._load_seq = 0
        # the latest reading of every channel heard from, roles or not: a channel that gets its role later
        # (a node bound, a settings change) is known at once, not after its next sample
        self._latest: dict[tuple[str, str], ZoneReading] = {}
        self._pending: collections.deque[tuple[str, DbCall]] = collections.deque()
        self._retry_at: float | None = None  # zone time the failed writes are retried at
        # the one armed tick: its timer, its sequence number, the zone time it is due at
        self._timer: Timer | None = None
        self._timer_seq = 0
        self._armed_at: float | None = None
        self._watchers: dict[str, tuple[Any, float]] = {}  # path -> (ref, real monotonic time of the last watch)
        self._estop: str | None = None  # the latched emergency stop's reason: every start is refused
        self._estop_load_seq = -1  # the load under way when the latch last changed here

    def on_start(self) -> None:
        self._load()

    def on_stop(self) -> None:
        self._disarm()

    def on_failure(self, *_: Any) -> None:
        self._disarm()

    def on_receive(self, message: Any) -> Any:
        now = self._plane.clock.now()
        reply = self._on_message(message, now)
        if reply is _UNHANDLED:
            return super().on_receive(message)
        self._arm(now)
        if self._watchers and isinstance(message, _OBSERVED_INPUTS):
            self._tell_watchers(now, message)
        return reply

    def _on_message(self, message: Any, now: float) -> Any:
        if isinstance(message, ZoneReading | ZoneDeviceReport):
            self._heard_from(message.node_uid, now)
        if isinstance(message, ZoneReading):
            self._latest[(message.node_uid, message.channel)] = message
            self._reading(message, now)
        elif isinstance(message, ZoneDeviceReport):
            self._device_report(message, now)
        elif isinstance(message, ZoneNodeLiveness):
            self._detected(self._state.apply_node_online(message.node_uid, message.online, now))
        elif isinstance(message, ZoneCommandStatus):
            self._command_status(message, now)
        elif isinstance(message, CheckStart):
            return self._check_start(message, now)
        elif isinstance(message, GetZoneState):
            return self._view(now)
        elif isinstance(message, GetZoneObserved):
            return self._observed(now, None) if self._ready else ZoneNotReady(
                reason=f"zone {self.uid} is still loading its state")
        elif isinstance(message, ResetSafety):
            return self._reset(now)
        elif isinstance(message, ZoneAlertResolved):
            self._state.resolve_alert(message.code, message.dedupe_key)
        elif isinstance(message, ZoneReload):
            self._load()
        elif isinstance(message, _Loaded):
            self._loaded(message, now)
        elif isinstance(message, _Tick):
            if message.seq == self._timer_seq:
                self._timer = self._armed_at = None
            self._detected(self._state.tick(now))
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_writes()
        elif isinstance(message, _Written):
            self._written(message, now)
        elif isinstance(message, _Adopt):
            self._adopt()
        elif isinstance(message, _Adopted):
            if not message.outcome.ok:
                log.warning("zone %s: running workflows not adopted (%s); retrying", self.uid, message.outcome.error,
                            extra={"event": "workflow_adopt_failed", "zone_id": self.uid})
                self.tell_self_after(1.0, _Adopt())
        elif isinstance(message, WatchZone):
            self._watchers[message.path] = (message.ref, time.monotonic())
            self._tell_watchers(now, None, only=message.path)
        elif isinstance(message, UnwatchZone):
            self._watchers.pop(message.path, None)
        elif isinstance(message, SetEmergencyStop):
            self._set_estop(message.reason)
        elif isinstance(message, SetWaterState):
            self._state.water_state = message.water_state
            self._state.workflow = message.workflow
        else:
            return _UNHANDLED
        return None

    # watchers ---------------------------------------------------------------------------------------------

    def _adopt(self) -> None:
        if self._plane.adopt is not None:
            self.pipe_to_self(self._plane.adopt(self.uid, self._state.settings.topology), _Adopted)

    def _observed(self, now: float, message: Any) -> ZoneObserved:
        event = None
        if isinstance(message, ZoneDeviceReport) and isinstance(message.report, Event):
            report = message.report
            channel = message.channel
            role = self._state.role_of(message.node_uid, channel) if channel else None
            event = ObservedEvent(code=report.event_code.lower(), role=role.value if role else None,
                                  node_uid=message.node_uid, details={**(report.details or {}), **report.payload})
        return ZoneObserved(zone_uid=self.uid, at=now, ready=self._ready, settings=self._state.settings,
                            devices=dict(self._state.devices), state=self._state.to_view(now), estop=self._estop,
                            event=event)

    def _tell_watchers(self, now: float, message: Any, only: str | None = None) -> None:
        """Tell the zone's workflows what changed; a watcher gone or not renewed in time is dropped."""
        observed = self._observed(now, message)
        expired_before = time.monotonic() - WATCH_TTL_S
        for path, (ref, renewed) in list(self._watchers.items()):
            if only is not None and path != only:
                continue
            if renewed < expired_before:
                del self._watchers[path]
                continue
            try:
                ref.tell(observed)
            except pykka.ActorDeadError:
                del self._watchers[path]

    # time -------------------------------------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        """Keep one tick armed for the earliest deadline (none when nothing is pending). A later deadline
        than the armed one waits for it (the tick re-arms); an earlier one replaces it."""
        deadline = self._state.next_deadline(now)
        if self._retry_at is not None:
            deadline = self._retry_at if deadline is None else min(deadline, self._retry_at)
        if deadline is None:
            return  # an armed tick that is no longer needed fires once, finds nothing, and is not renewed
        deadline = min(deadline, now + MAX_WAIT_S)
        if self._armed_at is not None and self._armed_at <= deadline:
            return
        self._disarm()
        self._timer_seq += 1
        self._armed_at = deadline
        delay = max(MIN_TICK_S, real_seconds(self._plane.clock, deadline - now))
        self._timer = self.tell_self_after(delay, _Tick(self._timer_seq))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._armed_at = None

    # inputs ------------------------------------------------------------------------------------------

    def _reading(self, message: ZoneReading, now: float) -> None:
        role = self._state.role_of(message.node_uid, message.channel)
        if role is not None:
            self._detected(self._state.apply_telemetry(role, message.value, message.ts, message.flags, now))

    def _heard_from(self, node_uid: str, now: float) -> None:
        """Traffic means online; going offline is the node actor's call (silence, its will)."""
        if self._state.nodes_online.get(node_uid) is not True:
            self._detected(self._state.apply_node_online(node_uid, True, now))

    def _device_report(self, message: ZoneDeviceReport, now: float) -> None:
        report = message.report
        # an error report names its channel as `component` when it comes on the node-level topic
        channel = message.channel or (report.component if isinstance(report, ErrorReport) else None)
        role = self._state.role_of(message.node_uid, channel) if channel else None
        if isinstance(report, Event) and report.event_code.lower() == EMERGENCY_STOP_EVENT and self._estop is None:
            self._latch_estop(message.node_uid, f"node {message.node_uid}: {report.event_code}")
        if isinstance(report, Event):
            # the whole decoded event: level switches carry `state`, failsafes `stopped_pumps`, ...
            details: dict[str, Any] = {"channel": channel, **(report.details or {}), **report.payload}
            self._detected(self._state.apply_event(role, report.event_code.lower(), details, now,
                                                   node_uid=message.node_uid))
        elif (report.level or "").upper() == "ERROR":
            details = {"error_code": report.error_code, "message": report.message, **dict(report.details or {})}
            self._detected(self._state.apply_error(role, report.error_code, details, now))

    def _latch_estop(self, node_uid: str, reason: str) -> None:
        """The node's emergency stop latches the zone's: nothing starts until an operator clears it."""
        self._set_estop(reason)
        log.error("zone %s: emergency stop from %s (%s)", self.uid, node_uid, reason,
                  extra={"event": "zone_emergency_stop", "zone_id": self.uid})

        async def latch(pool: asyncpg.Pool) -> None:
            if await workflows.set_estop(pool, self.uid, reason):
                await events.add_zone_event(pool, self.uid, node_uid, "EMERGENCY_STOP", {"reason": reason},
                                            decision="stop", reason_code=EMERGENCY_STOP_ACTIVE)
        self._write("emergency_stop", latch)

    def _set_estop(self, reason: str | None) -> None:
        self._estop = reason
        self._estop_load_seq = self._load_seq

    def _command_status(self, message: ZoneCommandStatus, now: float) -> None:
        role = self._state.role_of(message.node_uid, message.channel)
        if message.status == "SENT" and role is not None:
            timed = message.cmd in _TIMED_COMMANDS or "duration_ms" in message.params or "timeout_ms" in message.params
            self._detected(self._state.apply_command_sent(
                role, safety.starts_actuator(message.cmd, message.params), message.cmd_id, now, timed=timed))
        elif message.status == "ACK":
            self._detected(self._state.apply_command_ack(message.cmd_id, now))
        elif message.status in _TERMINAL:
            if message.error_code == ESTOP_ACTIVE_ERROR and self._estop is None:
                # the node refused because its own emergency stop is active: its event was lost (or is yet to
                # come); the zone latches on this as on the event, so no further start goes out
                self._latch_estop(message.node_uid, f"node {message.node_uid}: {ESTOP_ACTIVE_ERROR} "
                                                    f"(reply to {message.cmd_id})")
            self._detected(self._state.apply_command_terminal(role, message.cmd_id, message.status,
                                                              message.error_code, now))
            snapshot = (message.details or {}).get("snapshot")
            if message.status == "DONE" and isinstance(snapshot, Mapping):
                self._detected(self._state.apply_snapshot(snapshot, now))

    # the gate -------------------------------------------------------------------------------------------

    def _check_start(self, message: CheckStart, now: float) -> safety.Refusal | None:
        if not safety.starts_actuator(message.cmd, message.params):
            return None  # stops and reads are never gated
        role = self._state.role_of(message.node_uid, message.channel)
        if self._estop is not None and not self._loading:
            refusal: safety.Refusal | None = safety.Refusal(
                reason_code=EMERGENCY_STOP_ACTIVE,
                message=f"the zone's emergency stop is latched ({self._estop}); an operator must clear it")
        elif self._loading:
            # the roles are being resolved again (a node bound, settings changed): no verdict on old ones
            refusal = safety.Refusal(
                reason_code=ZONE_NOT_READY, message=f"zone {self.uid} is still loading its state")
        elif role is None:
            if self._actuator_types.get((message.node_uid, message.channel)) not in _GATED_TYPES:
                return None  # not a pump or a valve: a light, a fan, a heater ...
            refusal = safety.Refusal(
                reason_code=safety.ROLE_NOT_CONFIGURED,
                message=f"{message.node_uid}/{message.channel} is a pump or valve with no role in the zone's "
                        "plant; name it in the settings' devices")
        else:
            refusal = safety.can_run_pump(self._state, self._state.devices, self._state.settings, role, now)
        if refusal is None or (refusal.reason_code == ZONE_NOT_READY and not message.last):
            return refusal
        if refusal.detection is not None:
            self._detected([self._state.record_detection(refusal.detection, now)])
        details = {"node_uid": message.node_uid, "channel": message.channel, "cmd": message.cmd,
                   "role": role.value if role else None, "source": message.source, "message": refusal.message}
        self._write("start_refused", lambda pool: events.add_zone_event(
            pool, self.uid, message.node_uid, "PUMP_START_REFUSED", details, decision="refused",
            reason_code=refusal.reason_code))
        log.warning("zone %s refused %s on %s/%s: %s", self.uid, message.cmd, message.node_uid, message.channel,
                    refusal.reason_code, extra={"event": "pump_start_refused", "zone_id": self.uid,
                                                "reason_code": refusal.reason_code})
        return refusal

    def _reset(self, now: float) -> list[str]:
        codes = sorted({alert.code for alert in self._state.reset_safety_locks()})
        self._detected(self._state.tick(now))  # a condition still present is raised again at once
        return codes

    # detections -> alerts + timeline -----------------------------------------------------------------------

    def _detected(self, detections: list[safety.Detection]) -> None:
        for detection in detections:
            log.warning("zone %s: %s (%s)", self.uid, detection.code, detection.dedupe_key, extra={
                "event": "zone_detection", "zone_id": self.uid, "code": detection.code})
            self._write("alert", _raise(self.uid, detection))

    # views ------------------------------------------------------------------------------------------------

    def _view(self, now: float) -> ZoneStateReply | ZoneNotReady:
        if not self._ready:
            return ZoneNotReady(reason=f"zone {self.uid} is still loading its state")
        return ZoneStateReply(zone_uid=self.uid, settings_version=self._version, device_errors=self._device_errors,
                              state=self._state.to_view(now))

    # loading ----------------------------------------------------------------------------------------------

    def _load(self) -> None:
        self._loading = True
        self._load_seq += 1
        seq = self._load_seq
        self.pipe_to_self(self._plane.db.run(_boot(self.uid)), lambda outcome: _Loaded(seq, outcome))

    def _loaded(self, message: _Loaded, now: float) -> None:
        if message.seq != self._load_seq:
            return  # a newer load is under way: this snapshot may predate the change that asked for it
        outcome = message.outcome
        if not outcome.ok:
            log.warning("zone %s: snapshot not loaded (%s); retrying", self.uid, outcome.error,
                        extra={"event": "zone_load_failed", "zone_id": self.uid})
            self.tell_self_after(1.0, ZoneReload())
            return
        boot: _Boot = outcome.value
        if boot.snapshot is None:
            return  # deleted meanwhile: its supervisor is being stopped
        snapshot = boot.snapshot
        self._actuator_types = {(c.node_uid, c.name): (c.actuator_type or "").upper() for c in snapshot.channels
                                if c.type == "ACTUATOR"}
        if snapshot.settings_errors:
            log.error("zone %s: stored settings v%d no longer valid, running on defaults: %s", self.uid,
                      snapshot.version, snapshot.settings_errors, extra={"event": "zone_settings_invalid",
                                                                         "zone_id": self.uid})
        devices = _devices(snapshot.settings, snapshot.channels)
        if isinstance(devices, list):
            self._device_errors = devices
            log.error("zone %s: device roles not resolved: %s", self.uid, devices,
                      extra={"event": "zone_devices_unresolved", "zone_id": self.uid})
            devices = {}
        else:
            self._device_errors = []
        self._state.update_settings(snapshot.settings, devices)
        self._version = snapshot.version
        if boot.automation is not None:
            # the snapshot may predate a latch (or a clearing) that reached this actor while it was read, or a
            # node's latch whose write is still pending: it latches the zone, never clears it (a message does)
            if boot.automation.estop_active and self._estop_load_seq != message.seq:
                self._estop = boot.automation.estop_reason or "latched"
            self._state.water_state = boot.automation.water_state
        self._adopt()
        if not self._ready:
            for alert in boot.alerts:
                self._state.restore_alert(alert.code, alert.dedupe_key, _severity(alert.severity),
                                          first_seen=alert.first_seen, last_seen=alert.last_seen, count=alert.count)
            for node_uid, online in snapshot.nodes_online.items():  # as stored; node actors correct it
                self._state.nodes_online.setdefault(node_uid, online)
        self._ready = True
        self._loading = False
        for reading in list(self._latest.values()):
            self._reading(reading, now)
        self._detected(self._state.tick(now))

    # database writes -------------------------------------------------------------------------------------

    def _write(self, what: str, call: DbCall) -> None:
        self.pipe_to_self(self._plane.db.run(call), lambda outcome: _Written(what, call, outcome))

    def _written(self, message: _Written, now: float) -> None:
        if message.outcome.ok:
            return
        log.warning("zone %s: %s not stored (%s); will retry", self.uid, message.what, message.outcome.error,
                    extra={"event": "zone_write_failed", "zone_id": self.uid})
        if len(self._pending) < MAX_PENDING_WRITES:
            self._pending.append((message.what, message.call))
            if self._retry_at is None:
                self._retry_at = now + self._plane.tick_interval
        else:
            log.error("zone %s: dropping %s after %d failed writes queued", self.uid, message.what,
                      MAX_PENDING_WRITES, extra={"event": "zone_write_dropped", "zone_id": self.uid})

    def _retry_writes(self) -> None:
        self._retry_at = None
        pending, self._pending = self._pending, collections.deque()
        for what, call in pending:
            self._write(what, call)


# inputs after which the watchers hear of the zone's state (asks and bookkeeping change nothing they see)
_OBSERVED_INPUTS = (ZoneReading, ZoneDeviceReport, ZoneNodeLiveness, ZoneCommandStatus, _Loaded, _Tick,
                    ZoneAlertResolved, SetEmergencyStop, SetWaterState, ResetSafety)


def _devices(settings: ZoneSettings, channels: Any) -> dict[Role, ResolvedDevice] | list[FieldError]:
    return resolve_devices(settings, [(c.node_uid, c.name) for c in channels])


def _severity(value: str) -> safety.Severity:
    return "critical" if value == "critical" else "warning"


def _raise(zone_uid: str, detection: safety.Detection) -> DbCall:
    async def call(pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            raised = await events.raise_alert(
                conn, zone_uid=zone_uid, node_uid=None, source="biz", code=detection.code,
                alert_type=_ALERT_TYPES.get(detection.code, detection.code), details=detection.details,
                dedupe_key=detection.dedupe_key, severity=detection.severity)
            if raised.opened:
                await events.add_zone_event(conn, zone_uid, None, "SAFETY_ALERT",
                                            {"code": detection.code, "role": detection.dedupe_key,
                                             "severity": detection.severity, **detection.details},
                                            decision="alert", reason_code=detection.code)
    return call


def _boot(uid: str) -> DbCall:
    async def call(pool: asyncpg.Pool) -> _Boot:
        snapshot = await load_zone(pool, uid)
        rows = await pool.fetch(
            "SELECT code, dedupe_key, severity, date_part('epoch', first_seen_at) AS first_seen, "
            "date_part('epoch', last_seen_at) AS last_seen, count FROM alerts "
            "WHERE zone_uid = $1 AND status = 'ACTIVE' AND source = 'biz'", uid)
        return _Boot(snapshot, [_ActiveAlert(**dict(r)) for r in rows], await workflows.automation(pool, uid))
    return call
